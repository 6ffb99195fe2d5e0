"""
The Twisted side of every wire format: L{FramedProtocol}, a thin adapter
over a sans-IO decoder and encoder of L{echoplus.framing}.

A protocol feeds received bytes to its decoder, hands the batch of frames
to its connection's L{OrderedDispatcher}, and writes every reply of that
batch in one write.  Errors become C{ERROR <kind>: ...} frames in the
connection's own framing.  Around that: the connection's policies
(L{ConnectionPolicies}), pushes (C{context.send}), half-close, the close
with its grace period, drain and the producer interface.  It is one state
machine per connection, which is why it stays one class.

The steps every read takes (C{dataReceived}, the batch's dispatch,
encoding and the one write funnel) and the state they touch are inherited
from C{ReadPath} in C{echoplus/_readpath.py}, which is compiled when
echoplus is built with a C compiler (see docs/architecture.md, "The
compiled path").

The wire formats themselves, and the registry that names them, are in
L{echoplus.protocols}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus._extensions import MODULES
from echoplus.context import ConnectionContext
from echoplus.dispatch import OrderedDispatcher
from echoplus.errors import (
    BadFrame,
    EchoPlusError,
    FramingError,
    error_payload,
)
from echoplus.framing import (
    Decoder,
    Encoder,
    IntPrefixEncoder,
    LineEncoder,
    NetstringEncoder,
    RawEncoder,
)
from echoplus.logs import format_address
from echoplus.policies import ConnectionPolicies
from echoplus.transports import can_send_directly, choose_writer

# The per-read path (dataReceived, the batch's dispatch, encoding, the write
# funnel) and the state it touches: compiled when echoplus was built with a
# C compiler, the same source in Python otherwise (see _extensions).
ReadPath = MODULES["_readpath"].ReadPath

if TYPE_CHECKING:
    from echoplus.factory import EchoPlusFactory

__all__ = ["CLOSE_GRACE", "FramedProtocol"]

#: Seconds a closing connection may linger (for the client to read its
#: error frame, or for unsent replies to flush) before it is aborted.
CLOSE_GRACE = 5.0

#: Encoders whose output depends only on their class, C{delimiter} and
#: C{size}: connections using equal ones can share an encoded frame.
_SHAREABLE_ENCODERS = (LineEncoder, IntPrefixEncoder, NetstringEncoder, RawEncoder)


@implementer(IHalfCloseableProtocol, IPushProducer)
class FramedProtocol(ReadPath, ConnectionPolicies, Protocol):
    """
    The base of every wire format: framing, ordered dispatch, error frames,
    half-close, and flow control.

    Subclasses provide the codec through L{make_decoder} and
    L{make_encoder} and may transform each frame with L{decode_frame} and
    L{encode_frame}.

    @ivar context: this connection's L{ConnectionContext}.
    """

    factory: EchoPlusFactory
    context: ConnectionContext
    _log = Logger()

    # Slots, not a __dict__: a busy server holds one of these per client
    # (about 1.5 KiB less per connection: past 30 attributes CPython gives
    # an instance a dict of its own), and the data path reads and writes
    # these attributes on every read.  Subclasses may still add their own
    # attributes (Protocol instances have a __dict__).
    __slots__ = (
        # The connection's own state.
        "_abort_call",
        "_chain",
        "_fatal",
        "_input_done",
        "_owed_call",
        "_paused",
        "context",
        "opened_at",
        "processors",
        "settings",
        # ConnectionPolicies' state (a mixin without slots of its own: the
        # compiled ReadPath is the one base with a C layout).
        "_discarding",
        "_frame_since",
        "_idle_since",
        "_overload_call",
        "_rate_call",
        "_refused",
        "_unsent",
    )

    _decodes_frames: ClassVar[bool] = False
    _encodes_frames: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Frame hooks cost a call per frame: only pay for them when a
        # subclass overrides one.
        cls._decodes_frames = cls.decode_frame is not FramedProtocol.decode_frame
        cls._encodes_frames = cls.encode_frame is not FramedProtocol.encode_frame

    # The subclass API.

    def make_decoder(self, max_frame: int) -> Decoder:
        """
        Return a new sans-IO decoder for this connection.
        """
        raise NotImplementedError(f"{type(self).__name__} must define make_decoder")

    def make_encoder(self) -> Encoder:
        """
        Return a new sans-IO encoder for this connection.
        """
        raise NotImplementedError(f"{type(self).__name__} must define make_encoder")

    def decode_frame(self, frame: bytes) -> bytes:
        """
        Turn one frame, as the decoder split it, into the message the
        processors get.  Raise L{ValueError} for a malformed frame: the
        client gets C{ERROR bad-frame} and the connection closes.
        """
        return frame

    def encode_frame(self, payload: bytes) -> bytes:
        """
        Turn one reply payload into what the encoder frames.
        """
        return payload

    # Connection life.

    def connectionMade(self) -> None:
        factory = self.factory
        if factory.policies.refuses(self.transport.getPeer()):
            # --allow/--deny: closed without a byte; nothing else set up.
            self._refused = self._closing = True
            self.transport.abortConnection()
            return
        self._refused = self._closing = False
        self._input_done = False
        self._fatal: EchoPlusError | None = None
        # Why reading is paused: a list (an empty set costs 216 bytes).
        self._paused: list[str] = []
        self._batch: list[bytes] | None = None
        self._abort_call = None
        self._owed_call = None
        self._metrics = factory.metrics
        self.opened_at = factory.clock.seconds()
        self._frames_in = self._frames_out = self._bytes_in = self._bytes_out = 0
        # The frame hooks, as the read path reads them.
        self._decodes = self._decodes_frames
        self._encodes = self._encodes_frames
        self.context = ConnectionContext(
            factory.next_connection_id(),
            self.transport.getPeer(),
            factory.name,
            factory.clock,
            push=self.send,
            push_shared=self.send_shared,
            broker=factory.broker,
        )
        self._configure()
        self._init_policies()
        self.transport.registerProducer(self, True)
        # Chosen once per connection: a direct socket send on plain TCP/UNIX
        # transports (twisted/twisted#5303), transport.write elsewhere.
        self._send = choose_writer(self.transport, self)
        refusal = factory.policies.admission(self.context.peer)
        if refusal is not None:  # --max-connections, --max-per-peer
            self.fail(refusal)
            return
        factory.connection_opened(self)

    def _configure(self) -> None:
        """
        Take the listener's current settings and chain.
        """
        settings = self.factory.settings
        self.settings = settings
        self._decoder = self.make_decoder(settings.max_frame)
        self._encoder = self.make_encoder()
        self._use_chain()

    def _use_chain(self) -> None:
        """
        Take the listener's current settings and chain, keeping the codec.
        """
        factory = self.factory
        settings = factory.settings
        self._generation = factory.generation
        self.settings = settings
        self._chain = factory.chain
        self.processors = factory.chain.for_connection()
        self._dispatcher = OrderedDispatcher(
            self.processors,
            self.context,
            self._write_payloads,
            factory.clock,
            settings.processor_timeout,
            self._settled,
        )
        if self._metrics is not None:
            self._dispatcher.on_error = self._count_error
            self._dispatcher.on_async_done = self._metrics.observe_async

    def _reconfigure(self) -> None:
        """
        Pick up a reload of the listener: new limits at once, keeping the
        bytes the decoder holds; the new chain once no reply of the old one
        is pending (replies stay in order).  The framing and delimiter of an
        open connection never change.
        """
        factory = self.factory
        settings = factory.settings
        if settings.max_frame != self.settings.max_frame:
            set_max_frame = getattr(self._decoder, "set_max_frame", None)
            if set_max_frame is not None:
                set_max_frame(settings.max_frame)
        if factory.chain is not self._chain and not self._dispatcher.pending:
            previous = self.processors
            self._use_chain()
            factory.connection_rechained(self, previous)
            return
        self.settings = settings
        self._dispatcher.timeout = settings.processor_timeout
        if factory.chain is self._chain:
            self._generation = factory.generation

    def _decode_frames(
        self, frames: list[bytes]
    ) -> tuple[list[bytes], EchoPlusError | None]:
        """
        Apply L{decode_frame}; stop at the first frame it refuses.
        """
        decoded = []
        for frame in frames:
            try:
                decoded.append(self.decode_frame(frame))
            except FramingError as error:
                return decoded, error
            except ValueError:
                return decoded, BadFrame("malformed frame")
        return decoded, None

    def readConnectionLost(self) -> None:
        """
        The client shut down its write side: answer what it sent, then close.
        """
        self._input_done = True
        if self._closing:
            self.transport.loseConnection()
            return
        if self._decoder.buffered:
            self.fail(BadFrame("connection closed in the middle of a frame"))
            return
        if not self._dispatcher.pending:
            self._close()

    def writeConnectionLost(self) -> None:
        """
        Our write side is closed; nothing more can be sent.
        """
        if not self._closing:
            self._closing = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._refused:
            return
        self._closing = True
        self._stop_policies()
        self._dispatcher.close()
        for call in (self._abort_call, self._owed_call):
            if call is not None and call.active():
                call.cancel()
        self.factory.connection_closed(self, reason)

    # Writing.

    def send(self, payload: bytes) -> None:
        """
        Push one unsolicited frame to this connection (C{context.send}).

        During a read, the push joins that read's batch after the replies
        produced so far; otherwise it is written at once.  A push to a
        closing or closed connection is dropped.
        """
        if self._closing:
            return
        if self._batch is not None:
            self._batch.append(payload)
        else:
            self._write_payloads([payload])

    def send_shared(self, payload: bytes, encodings: dict[Any, bytes]) -> bool:
        """
        Push one frame that is pushed to many connections at once (a
        fan-out): C{encodings} is shared by the whole fan-out, so the frame
        is encoded once per wire format instead of once per connection.
        Otherwise the same as L{send}.

        @return: whether the frame was sent, C{False} when the connection
            is closing.
        """
        if self._closing:
            return False
        key = self.encoding_key() if self._batch is None else None
        if key is None:
            self.send(payload)
            return True
        data = encodings.get(key)
        if data is None:
            data = encodings[key] = self._encode([payload])
        self._write_encoded(1, data)
        return True

    def encoding_key(self) -> Any:
        """
        A hashable key equal for two connections exactly when they encode
        every payload to the same bytes, or L{None} if unknown (then
        L{send_shared} encodes for this connection alone).  The default
        covers the built-in encoders; a subclass whose C{encode_frame}
        depends on per-connection state must return L{None}.
        """
        encoder = self._encoder
        if type(encoder) not in _SHAREABLE_ENCODERS:
            return None
        return (
            type(self),
            type(encoder),
            getattr(encoder, "delimiter", None),
            getattr(encoder, "size", None),
        )

    def _encode_each(self, payloads: Sequence[bytes]) -> list[bytes]:
        """
        Encode payloads one at a time, replacing those the framing cannot
        carry with an error frame.
        """
        encode = self._encoder.encode
        encoded = []
        for payload in payloads:
            try:
                encoded.append(encode(payload))
            except ValueError:
                self._log.error(
                    "Connection {connection_id}: a reply of {size} bytes cannot "
                    "be framed",
                    connection_id=self.context.id,
                    size=len(payload),
                )
                encoded.append(
                    encode(error_payload("processor-failed", "reply cannot be framed"))
                )
        return encoded

    # Errors and closing.

    def fail(self, error: EchoPlusError) -> None:
        """
        Report C{error} to the client as an error frame.  A fatal error
        stops reading, waits for the replies still owed, then closes.
        """
        if not error.fatal:
            self._count_error(error.kind)
            self._write_payloads([error.payload()])
            return
        if self._closing or self._fatal is not None:
            return
        self._log_closing_error(error)
        self._fatal = error
        self._pause("closing")
        if not self._dispatcher.pending:
            self._finish_fatal()
        elif not self.settings.processor_timeout:
            # Owed replies are awaited before the error frame; with no
            # processor timeout nothing else bounds that wait.
            self._owed_call = self.factory.clock.callLater(
                CLOSE_GRACE, self._give_up_owed_replies
            )

    def _give_up_owed_replies(self) -> None:
        """
        Stop waiting for the replies owed before a fatal error, and close.
        """
        self._owed_call = None
        self._dispatcher.close()
        self._finish_fatal()

    def _log_closing_error(self, error: EchoPlusError) -> None:
        """
        Log the error this connection is being closed for.
        """
        self._log.info(
            "Connection {connection_id} from {peer}: {kind}: {message}",
            connection_id=self.context.id,
            peer=format_address(self.context.peer),
            kind=error.kind,
            message=error.message,
        )

    def _count_error(self, kind: str) -> None:
        """
        Count an error frame of C{kind} in the listener's metrics.
        """
        if self._metrics is not None:
            self._metrics.error(kind)

    def counts(self) -> tuple[int, int, int, int]:
        """
        What went through this connection so far: frames received, frames
        sent, bytes received, bytes sent.
        """
        return self._frames_in, self._frames_out, self._bytes_in, self._bytes_out

    def _finish_fatal(self) -> None:
        assert self._fatal is not None
        if self._owed_call is not None and self._owed_call.active():
            self._owed_call.cancel()
        self._count_error(self._fatal.kind)
        self._write_fatal(self._fatal)
        self._close()

    def _write_fatal(self, error: EchoPlusError) -> None:
        """
        Tell the client about the fatal C{error} its connection closes for:
        an error frame here; a close frame on a WebSocket.
        """
        self._write_payloads([error.payload()])

    def _close(self) -> None:
        """
        Close after unsent output flushes, without hanging on a client that
        does not read: half-close our side so the client reads everything
        (no reset loses the last frame), discard what it still sends, and
        abort after L{CLOSE_GRACE} seconds.

        Reading resumes while closing, whatever paused it: a TLS close
        completes only when the client's C{close_notify} or end of stream
        is read, and a client that closes must be seen to close at once,
        not when the grace runs out.
        """
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        # A registered producer that the transport has paused keeps it from
        # ever closing (see FileDescriptor.loseConnection): unregister first.
        transport.unregisterProducer()
        half_close = _can_half_close(transport)
        if half_close and self._input_done:
            transport.loseConnection()  # the client is done sending too
        else:
            self._resume_all()
            if half_close:
                transport.loseWriteConnection()
            else:
                transport.loseConnection()
        self._abort_call = self.factory.clock.callLater(
            CLOSE_GRACE, transport.abortConnection
        )

    def drain(self) -> None:
        """
        Graceful shutdown: answer what the client has already sent, read
        nothing more, let the requests in progress finish, write their
        replies, then close.
        """
        if self._closing:
            return
        if not self._paused and can_send_directly(self.transport):
            # What the client sent before the drain began may still be in
            # the socket's buffer, not yet read (a connection accepted just
            # before a rolling restart's SIGTERM): take it now, through the
            # transport's own read (IReadDescriptor.doRead; Twisted has no
            # "read what is buffered" of its own), so that it is answered.
            self.transport.doRead()
            if self._closing:
                return
        self._input_done = True
        self._pause("draining")
        if not self._dispatcher.pending and self._fatal is None:
            self._close()

    def _settled(self) -> None:
        """
        Pending requests completed: resume reading or finish closing.
        """
        if self._dispatcher.pending:
            if self._dispatcher.pending < self.settings.max_inflight:
                self._resume("inflight")
            return
        if self._fatal is not None:
            self._finish_fatal()
        elif self._input_done:
            self._close()
        else:
            self._resume("inflight")

    # Flow control: reading pauses while any reason to pause holds.

    def _pause(self, reason: str) -> None:
        paused = self._paused
        if not paused:
            self.transport.pauseProducing()
        if reason not in paused:
            paused.append(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._paused:
            self._paused.remove(reason)
            if not self._paused and not self._closing:
                self.transport.resumeProducing()

    def _resume_all(self) -> None:
        if self._paused:
            self._paused.clear()
            self.transport.resumeProducing()

    # IPushProducer: the transport tells us when its write buffer is full.

    def pauseProducing(self) -> None:
        self._write_paused_by_transport()
        self._pause("write")

    def resumeProducing(self) -> None:
        self._write_drained()
        self._resume("write")

    def stopProducing(self) -> None:
        pass


def _can_half_close(transport: object) -> bool:
    """
    Whether C{transport} can close its write side alone.  Twisted's TLS
    transport has no half-close of its own, but passes C{loseWriteConnection}
    on to the TCP connection beneath it, which would cut the TLS stream in
    the middle (and crash its next read): close TLS connections fully.
    """
    return hasattr(transport, "loseWriteConnection") and not ISSLTransport.providedBy(
        transport
    )
