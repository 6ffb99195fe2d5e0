"""
A test kit for echoplus processors and wire formats.

L{FrameHarness} runs the real L{EchoPlusFactory} and the real protocol of
a framing on in-memory transports, timed by a L{task.Clock}: no sockets,
no reactor, usable from a C{SynchronousTestCase}::

    harness = FrameHarness("netstring", ["upper", "reverse"])
    harness.send(b"abc")
    assert harness.replies() == [b"CBA"]

Several clients can share one listener (C{harness.client()}), which is how
shared-state processors (chat rooms, pub/sub) are tested.  What a client
receives follows one rule: L{HarnessClient.replies} returns every frame
the server wrote to that client since the last call, replies and pushes
together in wire order, exactly as a socket client would read them;
L{HarnessClient.pushes} additionally tells which payloads arrived through
C{context.send} (the side path), which the wire cannot tell apart.

For tests against a real listener on a loopback port see L{serve} (and the
C{echoplus_listener} pytest fixture in L{echoplus.pytest_plugin}).
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from echoplus._live import LiveClient, LiveListener, serve
from echoplus._testkit import (
    HIGH_WATER,
    HarnessClock,
    HarnessError,
    HarnessTransport,
    ObjectChain,
    ProcessorSpec,
    listener_settings,
)
from echoplus.codec import ClientCodec
from echoplus.context import ConnectionContext
from echoplus.factory import EchoPlusFactory
from echoplus.interfaces import IBroker
from echoplus.protocols import FramedProtocol

__all__ = [
    "HIGH_WATER",
    "FrameHarness",
    "HarnessClient",
    "HarnessError",
    "LiveClient",
    "LiveListener",
    "listener_settings",
    "serve",
]



class HarnessClient:
    """
    One in-memory client connection to a L{FrameHarness} listener.

    @ivar protocol: the server's protocol for this connection (the real
        one), or L{None} when the listener refused the connection.
    @ivar transport: the server side's in-memory transport.
    @ivar lost: the L{Failure} the server's C{connectionLost} got, once the
        connection is gone.
    """

    def __init__(self, harness: FrameHarness, peer: Any) -> None:
        self._harness = harness
        self.peer = peer
        self.lost: Failure | None = None
        self._closed_by_client = False
        self._input_closed = False
        self._half_closed_by_client = False
        self._queued: list[bytes] = []
        self._frames: list[bytes] = []
        self._pushes: list[bytes] = []
        factory = harness.factory
        self.transport = HarnessTransport(peer, IPv4Address("TCP", "127.0.0.1", 1))
        codec_protocol = factory.protocol()
        codec_protocol.factory = factory
        self._codec = ClientCodec.for_protocol(codec_protocol)
        protocol = factory.buildProtocol(peer)
        self.protocol = protocol
        if protocol is None:
            self.transport.disconnecting = True
            self.lost = Failure(ConnectionDone("refused by the listener"))
            return
        _record_pushes(protocol, self.transport, self._pushes)
        protocol.makeConnection(self.transport)

    # What the client sends.

    def send(self, *payloads: bytes) -> None:
        """
        Frame each payload in the listener's framing and feed them all in
        one read.

        @raise HarnessError: the connection is closed, or the framing
            cannot carry a payload (use L{feed} for raw bytes).
        """
        for payload in payloads:
            if not isinstance(payload, bytes):
                raise TypeError(f"send() takes bytes, not {type(payload).__name__}")
        try:
            data = self._codec.encode(payloads)
        except ValueError as error:
            raise HarnessError(
                f"cannot frame that payload in {self.framing}: {error}; use "
                "feed() to send raw bytes"
            ) from None
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """
        Feed raw bytes to the server, as one read.  While the server has
        paused reading, the bytes wait (as in a socket buffer) until it
        resumes.

        @raise HarnessError: the connection is closed.
        """
        if not isinstance(data, bytes):
            raise TypeError(f"feed() takes bytes, not {type(data).__name__}")
        self._check_open("send")
        if self.transport.producerState == "paused" or self._queued:
            self._queued.append(data)
        else:
            self.protocol.dataReceived(data)  # type: ignore[union-attr]
        self._harness.settle()

    def close_write(self) -> None:
        """
        Half-close: the client shuts down its sending side (the server
        answers what it got, then closes).
        """
        self._check_open("half-close")
        self._input_closed = True
        self._half_closed_by_client = True
        if not self._queued:
            self.protocol.readConnectionLost()  # type: ignore[union-attr]
        self._harness.settle()

    def close(self) -> None:
        """
        The client closes its socket: the server's connection is lost now.
        Closing twice does nothing.
        """
        if self.lost is not None:
            return
        self._closed_by_client = True
        self._lose(Failure(ConnectionDone("the client closed the connection")))
        self._harness.settle()

    def stop_reading(self) -> None:
        """
        Stop reading: the server's output is held unread, and past
        L{HIGH_WATER} bytes the transport pauses the protocol, like a real
        socket whose client does not read.
        """
        self.transport.reading = False

    def resume_reading(self) -> None:
        """
        Read everything held and go on reading.
        """
        self.transport.reading = True
        self.transport.read_all()
        self._harness.settle()

    # What the client receives.

    def replies(self) -> list[bytes]:
        """
        Every frame the server sent to this client since the last call,
        decoded: replies and pushes, in wire order.

        @raise HarnessError: the server's output is not valid framing.
        """
        self._harness.settle()
        delivered = self.transport.delivered
        if delivered:
            chunks = list(delivered)
            delivered.clear()
            for chunk in chunks:
                self._frames += self._codec.decode(chunk)
            error = self._codec.decoder.error
            if error is not None:
                raise HarnessError(
                    f"the server's output is not valid {self.framing}: "
                    f"{error.message}"
                )
        frames, self._frames = self._frames, []
        return frames

    def pushes(self) -> list[bytes]:
        """
        The payloads pushed to this client through C{context.send} since
        the last call (they are also among L{replies}, in wire order).
        """
        pushes = list(self._pushes)
        self._pushes.clear()
        return pushes

    @property
    def written(self) -> bytes:
        """
        Every byte the server wrote on this connection, read or not.
        """
        return self.transport.value()

    @property
    def unread(self) -> int:
        """
        How many bytes the server wrote that this client has not read.
        """
        return self.transport.unread_size

    @property
    def context(self) -> ConnectionContext:
        """
        The connection's context: what every processor call gets.
        """
        if self.protocol is None:
            raise HarnessError("the listener refused this connection")
        return self.protocol.context

    @property
    def framing(self) -> str:
        """
        The listener's framing name.
        """
        return self._harness.settings.framing

    @property
    def disconnected(self) -> bool:
        """
        Whether the server closed (or half-closed, or aborted) this
        connection, or it is otherwise gone.
        """
        self._harness.settle()
        transport = self.transport
        return bool(
            transport.disconnecting or transport.write_closed or self.lost is not None
        )

    @property
    def reading_paused(self) -> bool:
        """
        Whether the server has paused reading from this client.
        """
        return self.transport.producerState == "paused"

    # Life of the connection.

    def _check_open(self, action: str) -> None:
        if self.protocol is None:
            raise HarnessError(f"cannot {action}: the listener refused this connection")
        if self._closed_by_client:
            raise HarnessError(f"cannot {action}: this client closed the connection")
        if self._half_closed_by_client:
            raise HarnessError(f"cannot {action}: this client half-closed its side")
        if self.disconnected:
            replies = "; its last frames are in replies()"
            raise HarnessError(
                f"cannot {action}: the server closed this connection{replies}"
            )

    def _lose(self, reason: Failure) -> None:
        if self.lost is not None or self.protocol is None:
            return
        self.lost = reason
        self.transport.connected = False
        self.transport.disconnecting = True
        self.protocol.connectionLost(reason)

    def _settle(self) -> bool:
        """
        Advance this connection as a reactor turn would; return whether
        anything happened.
        """
        transport = self.transport
        if self.lost is not None or self.protocol is None:
            return False
        if transport.disconnected:
            self._lose(Failure(ConnectionAborted()))
            return True
        if self._queued and transport.producerState != "paused":
            if transport.disconnecting or transport.write_closed:
                self._queued.clear()
            else:
                data = b"".join(self._queued)
                self._queued.clear()
                self.protocol.dataReceived(data)
                if self._input_closed and not self._queued:
                    self.protocol.readConnectionLost()
                return True
        if transport.unread:
            return False  # nothing closes while output waits to be read
        if transport.write_closed and not self._input_closed:
            # The client read the server's EOF and closes its side.
            self._input_closed = True
            self.protocol.readConnectionLost()
            return True
        if transport.disconnecting:
            self._lose(Failure(ConnectionDone()))
            return True
        return False


def _record_pushes(
    protocol: FramedProtocol, transport: HarnessTransport, pushes: list[bytes]
) -> None:
    """
    Record what C{context.send} pushes on C{protocol}'s connection.
    """
    send = protocol.send
    send_shared = protocol.send_shared

    def record(payload: bytes) -> None:
        if not (transport.disconnecting or transport.write_closed):
            pushes.append(payload)

    def recording_send(payload: bytes) -> None:
        record(payload)
        send(payload)

    def recording_send_shared(payload: bytes, encodings: dict[Any, bytes]) -> bool:
        record(payload)
        return send_shared(payload, encodings)

    protocol.send = recording_send  # type: ignore[method-assign]
    protocol.send_shared = recording_send_shared  # type: ignore[method-assign]


class FrameHarness:
    """
    The real echoplus listener (factory, protocol, dispatch, processors) on
    in-memory connections, timed by a L{task.Clock}.

    The harness is also its first client: L{send}, L{feed}, L{replies},
    L{pushes}, L{close}, L{disconnected} and the rest act on it.  Call
    L{client} for more clients of the same listener.

    @ivar clock: the L{task.Clock} everything is timed by; C{advance} it to
        fire timeouts and delayed replies.
    @ivar factory: the listener's L{EchoPlusFactory}.
    @ivar settings: the listener's L{ListenerSettings}.
    @ivar clients: every client made so far, the first one included.
    """

    def __init__(
        self,
        framing: str | type[FramedProtocol] = "line",
        processors: ProcessorSpec | Sequence[ProcessorSpec] = ("echo",),
        *,
        name: str = "harness",
        broker: IBroker | None = None,
        **limits: Any,
    ) -> None:
        """
        @param framing: a framing name (C{"line"}, C{"netstring"}, ...), a
            C{module:Class} path or a L{FramedProtocol} subclass.
        @param processors: the chain: a chain string
            (C{"prefix(text=>),upper"}), or a list of names, chain strings,
            L{ProcessorEntry}s, processor objects, processor factories or
            classes implementing L{IProcessor}.
        @param name: the listener's name (C{context.listener}).
        @param broker: the L{IBroker} behind C{context.broker}; a fresh
            in-process one by default.  Pass one
            L{echoplus.cluster.memory.MemoryBroker} to several harnesses to
            test listeners that share topics.
        @param limits: any L{ListenerSettings} field (C{max_frame},
            C{idle_timeout}, C{processor_timeout}, C{delimiter}, ...),
            validated as the command line would.
        @raise TypeError: an unknown keyword.
        @raise ValueError: a bad limit value.
        @raise echoplus.errors.ConfigError: an unknown framing or processor.
        """
        chain = ObjectChain(processors)
        self.settings = listener_settings(framing, chain.entries, limits)
        self.clock = HarnessClock(self.settle)
        self.factory = EchoPlusFactory(
            self.settings, self.clock, chain, name, broker=broker
        )
        self.factory.doStart()
        self.clients: list[HarnessClient] = []
        self._settling = False
        self._first = self.client()

    def client(self, peer: Any = None) -> HarnessClient:
        """
        Connect another in-memory client to this listener.

        @param peer: the client's address; C{127.0.0.1} with a fresh port
            by default.
        """
        if peer is None:
            peer = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.clients))
        client = HarnessClient(self, peer)
        self.clients.append(client)
        self.settle()
        return client

    def settle(self) -> None:
        """
        Do what a reactor turn would: deliver input queued while reading
        was paused, and finish closes (C{connectionLost}).  The harness
        calls this itself after every action and clock advance.
        """
        if self._settling:
            return
        self._settling = True
        try:
            for _ in range(1000):
                if not any([client._settle() for client in list(self.clients)]):
                    break
        finally:
            self._settling = False

    # The first client.

    def send(self, *payloads: bytes) -> None:
        """Frame and feed payloads from the first client (L{HarnessClient.send})."""
        self._first.send(*payloads)

    def feed(self, data: bytes) -> None:
        """Feed raw bytes from the first client (L{HarnessClient.feed})."""
        self._first.feed(data)

    def replies(self) -> list[bytes]:
        """The first client's frames since the last call (L{HarnessClient.replies})."""
        return self._first.replies()

    def pushes(self) -> list[bytes]:
        """The first client's pushes since the last call (L{HarnessClient.pushes})."""
        return self._first.pushes()

    def close(self) -> None:
        """The first client closes its connection (L{HarnessClient.close})."""
        self._first.close()

    def close_write(self) -> None:
        """The first client half-closes (L{HarnessClient.close_write})."""
        self._first.close_write()

    @property
    def disconnected(self) -> bool:
        """Whether the server closed the first client's connection."""
        return self._first.disconnected

    @property
    def written(self) -> bytes:
        """Every byte the server wrote to the first client."""
        return self._first.written

    @property
    def context(self) -> ConnectionContext:
        """The first client's connection context."""
        return self._first.context

    @property
    def protocol(self) -> FramedProtocol | None:
        """The server's protocol for the first client."""
        return self._first.protocol

    @property
    def transport(self) -> StringTransport:
        """The server side's transport for the first client."""
        return self._first.transport

    def stop(self) -> None:
        """
        Close every client still connected and stop the factory.
        """
        for client in self.clients:
            client.close()
        self.factory.doStop()
