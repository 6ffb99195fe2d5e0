"""
Real listeners for tests: a listener on a free loopback port, in-process,
on the running reactor, and a client that speaks its framing.

Exposed as L{echoplus.testing.serve}; the pytest fixture in
L{echoplus.pytest_plugin} is a thin wrapper.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import (
    Deferred,
    ensureDeferred,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from echoplus._testkit import ObjectChain, listener_settings
from echoplus.codec import ClientCodec
from echoplus.endpoints import server_from_string
from echoplus.factory import EchoPlusFactory
from echoplus.protocols import FramedProtocol

__all__ = ["LiveClient", "LiveListener", "serve"]



class LiveClient(Protocol):
    """
    A client of a L{LiveListener} that frames what it sends and decodes
    what it receives in the listener's framing.  Every waiting method
    returns a L{Deferred}, with a timeout on the reactor.

    @ivar closed: fires (with L{None}) once the connection is closed.
    @ivar reason: the L{Failure} that closed it, once closed.
    """

    def __init__(self, codec: FramedProtocol, reactor: Any) -> None:
        self._codec = ClientCodec.for_protocol(codec)
        self._reactor = reactor
        self._frames: deque[bytes] = deque()
        self._waiting: list[tuple[int, Deferred[list[bytes]]]] = []
        self.closed: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.connected_ = False

    def connectionMade(self) -> None:
        """
        The client is connected.
        """
        self.connected_ = True
        opening = self._codec.opening()  # the websocket handshake
        if opening:
            self.transport.write(opening)

    def dataReceived(self, data: bytes) -> None:
        """
        Decode frames and hand them to whoever waits for them.
        """
        self._frames.extend(self._codec.decode(data))
        self._serve_waiters()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail every wait that cannot be satisfied any more; fire C{closed}.
        """
        self.connected_ = False
        waiting, self._waiting = self._waiting, []
        for count, deferred in waiting:
            got = [self._frames.popleft() for _ in range(min(count, len(self._frames)))]
            deferred.errback(
                ConnectionDone(f"closed after {len(got)} of {count} frames: {got!r}")
            )
        self.reason = reason
        self.closed.callback(None)

    def send(self, *payloads: bytes) -> None:
        """
        Frame each payload and write them in one write.
        """
        self.transport.write(self._codec.encode(payloads))

    def receive(self, count: int = 1, timeout: float = 5.0) -> Deferred[list[bytes]]:
        """
        Wait for the next C{count} frames.

        @return: a L{Deferred} of the frames' payloads; it fails with
            C{TimeoutError} after C{timeout} seconds and with
            L{ConnectionDone} if the connection closes first.
        """
        deferred: Deferred[list[bytes]] = Deferred()
        if not self.connected_ and len(self._frames) < count:
            deferred.errback(ConnectionDone("the connection is closed"))
            return deferred
        self._waiting.append((count, deferred))
        self._serve_waiters()
        if not deferred.called:
            deferred.addTimeout(timeout, self._reactor)
            deferred.addErrback(self._forget, deferred)
        return deferred

    def request(self, *payloads: bytes, timeout: float = 5.0) -> Deferred[list[bytes]]:
        """
        Send payloads and wait for as many frames.
        """
        self.send(*payloads)
        return self.receive(len(payloads), timeout)

    def close(self) -> Deferred[None]:
        """
        Close the connection; the L{Deferred} fires once it is closed.
        """
        if self.connected_:
            self.transport.loseConnection()
        return self.closed

    def _serve_waiters(self) -> None:
        frames = self._frames
        while self._waiting and len(frames) >= self._waiting[0][0]:
            count, deferred = self._waiting.pop(0)
            if not deferred.called:
                deferred.callback([frames.popleft() for _ in range(count)])

    def _forget(self, failure: Failure, deferred: Deferred[Any]) -> Failure:
        self._waiting = [item for item in self._waiting if item[1] is not deferred]
        return failure


class LiveListener:
    """
    An echoplus listener serving on a real port of the running reactor.

    @ivar factory: its L{EchoPlusFactory}.
    @ivar port: its C{IListeningPort}.
    @ivar endpoint: a client endpoint string that connects to it (e.g.
        C{tcp:127.0.0.1:54321}), for L{clientFromString} or
        C{echoplus send}.
    @ivar client: the first L{LiveClient} that L{connect} connected, or
        L{None}.
    """

    def __init__(self, factory: EchoPlusFactory, port: IListeningPort, reactor: Any):
        self.factory = factory
        self.port = port
        self._reactor = reactor
        self._clients: list[LiveClient] = []
        self.client: LiveClient | None = None
        host = port.getHost()
        if hasattr(host, "port"):
            self.endpoint = f"tcp:{host.host}:{host.port}"
        else:
            name = host.name.decode() if isinstance(host.name, bytes) else host.name
            self.endpoint = f"unix:{name}"

    def connect(self) -> Deferred[LiveClient]:
        """
        Connect a new L{LiveClient}.
        """
        codec = self.factory.protocol()
        codec.factory = self.factory
        client = LiveClient(codec, self._reactor)
        self._clients.append(client)
        if self.client is None:
            self.client = client
        endpoint = clientFromString(self._reactor, self.endpoint)
        return endpoint.connect(Factory.forProtocol(lambda: client))

    def stop(self) -> Deferred[None]:
        """
        Close every client this listener connected, wait (up to 5 seconds)
        for the server to see every connection closed, and stop listening.
        """
        closing = [client.close() for client in self._clients]
        self._clients = []
        return ensureDeferred(self._stop(closing))

    async def _stop(self, closing: list[Deferred[None]]) -> None:
        await gatherResults(closing)
        for _ in range(500):
            if not self.factory.connections:
                break
            await deferLater(self._reactor, 0.01, lambda: None)
        await maybeDeferred(self.port.stopListening)


def serve(
    reactor: Any,
    framing: Any = "line",
    processors: Any = ("echo",),
    endpoint: str = "tcp:0:interface=127.0.0.1",
    **limits: Any,
) -> Deferred[LiveListener]:
    """
    Start a real listener on C{endpoint} (a free loopback port by default)
    on C{reactor}, with the same arguments as L{FrameHarness}.  The
    endpoint string is read as C{--listen} reads it (echoplus's own
    C{ssl:} and C{haproxy:} included).

    Use it from a trial C{TestCase}::

        listener = yield serve(reactor, "netstring", ["upper"])
        self.addCleanup(listener.stop)
        client = yield listener.connect()
        self.assertEqual((yield client.request(b"hi")), [b"HI"])

    @return: a L{Deferred} of the L{LiveListener}.
    """
    chain = ObjectChain(processors)
    settings = listener_settings(
        framing, chain.entries, {"endpoint": endpoint, **limits}
    )
    factory = EchoPlusFactory(settings, reactor, chain)
    listening = server_from_string(reactor, endpoint).listen(factory)
    return listening.addCallback(lambda port: LiveListener(factory, port, reactor))
