"""
The per-read path of every framed connection: the state a read touches and
the steps it takes, from received bytes to the one write of its replies.

L{echoplus.framed.FramedProtocol} inherits these from L{ReadPath}; import
them from there, never from here.  Like C{_codecs.py}, this file is one
source of two builds: run as Python it is the reference and the fallback,
and the build compiles it with Cython in pure-Python mode into
C{echoplus._readpath_c}, with the C types of C{_readpath_c.pxd} beside it.
Compiled, L{ReadPath} is an extension type: the attributes below are C
fields of every connection, read without a dictionary or descriptor
lookup, and its methods are C functions that Twisted's C{dataReceived}
call enters directly.  (Compiling these methods on a plain Python class
was tried, and was slower than the interpreter: it is the C-typed state
that pays.)  So this file stays plain Python that Cython compiles
unchanged, with no C{cython} import.

Everything else a connection does (connecting, errors, closing, flow
control, policies) stays in interpreted Python, where it is read and
subclassed: this class is only what runs on every read and every write.
L{DirectWriter}, the direct send that writes go through on plain TCP and
UNIX transports, is here for the same reason; L{echoplus.transports}
builds it and explains it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from echoplus.errors import EchoPlusError


class ReadPath:
    """
    A connection's per-read state and steps; the base of
    L{echoplus.framed.FramedProtocol}, which documents the behaviour.

    The methods that are not here but are called from here
    (C{_reconfigure}, C{fail}, C{_decode_frames}, C{_encode_each},
    C{_within_budget}, C{_pause}, C{_take_tokens}) are the subclass's:
    each runs only on a reload, an error or a limit.
    """

    # The C fields of the compiled build (see _readpath_c.pxd); slots here.
    __slots__ = (
        "_active",
        "_batch",
        "_bytes_in",
        "_bytes_out",
        "_closing",
        "_decoder",
        "_decodes",
        "_dispatcher",
        "_encoder",
        "_encodes",
        "_frames_in",
        "_frames_out",
        "_generation",
        "_metrics",
        "_progressed",
        "_rate",
        "_send",
        "_sending",
        "_write_paused",
    )

    def dataReceived(self, data: bytes) -> None:
        # The hot path: one pass per read, whatever the number of frames,
        # and one write for all of its replies.
        if self._closing:
            return
        if self._generation != self.factory.generation:  # type: ignore[attr-defined]
            self._reconfigure()  # type: ignore[attr-defined]
        decoder = self._decoder
        frames = decoder.feed(data)
        self._bytes_in += len(data)
        self._active = True  # for the idle timeout's sweep
        if frames:
            self._run_frames(frames)
        if decoder.error is not None:
            self.fail(decoder.error)  # type: ignore[attr-defined]

    # The steps below are C functions when compiled (cdef in the .pxd: no
    # lookup for an override before each call, which Cython caches per call
    # site, so that on a busy server it missed on every read, alternating
    # between connections).  Python code, the protocol's and its
    # subclasses', calls them through these three and _write_payloads.

    def _dispatch_frames(self, frames: list[bytes]) -> None:
        """
        Run the frames of one read through the chain and write every reply
        that is ready in one write.
        """
        self._run_frames(frames)

    def _encode(self, payloads: Sequence[bytes]) -> bytes:
        """
        Frame payloads into one C{bytes}; a payload the framing cannot carry
        becomes an error frame in its place.
        """
        return self._encode_all(payloads)  # type: ignore[no-any-return]

    def _write_encoded(self, count: int, data: bytes) -> None:
        """
        Write C{data}, C{count} frames already encoded: every write passes
        here.
        """
        self._write(count, data)

    def _write_payloads(self, payloads: Sequence[bytes]) -> None:
        """
        Encode payloads and write them in one write: pushes, replies that
        complete after their read, error frames.
        """
        self._write(len(payloads), self._encode_all(payloads))

    def _run_frames(self, frames: list[bytes]) -> None:
        count = len(frames)
        self._frames_in += count
        self._progressed = True  # for the frame timeout's sweep
        error: EchoPlusError | None = None
        if self._decodes:
            frames, error = self._decode_frames(frames)  # type: ignore[attr-defined]
        out: list[bytes] = []
        self._batch = out
        metrics = self._metrics
        try:
            if metrics is None:
                pending = self._dispatcher.dispatch(frames, out)
            else:
                started = metrics.timer()
                pending = self._dispatcher.dispatch(frames, out)
                metrics.observe(metrics.timer() - started)
        finally:
            self._batch = None
        if out:
            self._write(len(out), self._encode_all(out))
        if pending >= self.settings.max_inflight:  # type: ignore[attr-defined]
            self._pause("inflight")  # type: ignore[attr-defined]
        if self._rate is not None:
            self._take_tokens(count)  # type: ignore[attr-defined]
        if error is not None:
            self.fail(error)  # type: ignore[attr-defined]

    def _encode_all(self, payloads: Sequence[bytes]) -> Any:
        if self._encodes:
            payloads = [self.encode_frame(payload) for payload in payloads]  # type: ignore[attr-defined]
        try:
            return self._encoder.encode_batch(payloads)  # type: ignore[no-any-return]
        except ValueError:
            return b"".join(self._encode_each(payloads))  # type: ignore[attr-defined]

    def _write(self, count: int, data: bytes) -> None:
        size = len(data)
        if self._write_paused and not self._within_budget(size):  # type: ignore[attr-defined]
            return  # past --max-write-buffer: closing, output dropped
        self._sending = size
        self._frames_out += count
        self._bytes_out += size
        self._send(data)


class DirectWriter:
    """
    The direct send of one plain TCP or UNIX server transport: see
    L{echoplus.transports}, which builds these and explains why it is safe.
    """

    __slots__ = ("_has_fd_queue", "_producer", "_send", "_transport", "_write")

    def __init__(self, transport: Any, producer: object) -> None:
        self._transport = transport
        self._producer = producer
        self._send = transport.socket.send
        self._write = transport.write
        # unix.Server may have file descriptors queued to go with the next
        # bytes.
        self._has_fd_queue = hasattr(transport, "_sendmsgQueue")

    def __call__(self, data: bytes) -> None:
        t = self._transport
        if (
            t._tempDataLen
            or t.dataBuffer
            or t.disconnecting
            or not t.connected
            or t._writeDisconnecting
            or t._writeDisconnected
            or t.TLS
            or (t.producer is not None and t.producer is not self._producer)
            or (self._has_fd_queue and t._sendmsgQueue)
            or not data
        ):
            self._write(data)
            return
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The peer has gone (EPIPE, ECONNRESET, ...).  Do not raise into
            # dataReceived: Twisted's own write path meets the same error on
            # its next attempt and closes the connection.
            self._write(data)
            return
        if sent < len(data):
            self._write(data[sent:])
