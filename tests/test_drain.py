"""
Tests for L{echoplus.drain} and C{FramedProtocol.drain}: graceful shutdown
loses no reply owed, stops accepting, ends at the drain timeout or at a
second signal, and exits 0.
"""

from __future__ import annotations

import signal
import socket
import time
from typing import Any, Generator

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoplus.config import ListenerSettings
from echoplus.drain import POLL_INTERVAL, Drainer, install_signal_handlers
from echoplus.factory import EchoPlusFactory
from echoplus.processors.chain import parse_chain
from tests.support import Twistd, receive_until_closed


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that records an abort.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def connect(processors: str = "echo") -> tuple[Any, AbortableTransport, task.Clock]:
    """
    A line protocol with chain C{processors} on a memory transport.
    """
    clock = task.Clock()
    settings = ListenerSettings(processors=parse_chain(processors))
    factory = EchoPlusFactory(settings, clock)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = AbortableTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


class ProtocolDrainTests(SynchronousTestCase):
    """
    Tests for C{FramedProtocol.drain}.
    """

    def test_idle_connection_closes(self) -> None:
        """
        A connection with nothing in progress closes at once and stops
        reading.
        """
        protocol, transport, _ = connect()
        protocol.dataReceived(b"done\n")
        protocol.drain()
        self.assertEqual(transport.value(), b"done\n")
        self.assertTrue(transport.disconnecting)

    def test_in_flight_replies_flushed_first(self) -> None:
        """
        A connection with requests in progress stops reading, writes their
        replies when they complete, then closes.
        """
        protocol, transport, clock = connect("delay(seconds=1)")
        protocol.dataReceived(b"one\ntwo\n")
        protocol.drain()
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertEqual(transport.value(), b"one\ntwo\n")
        self.assertTrue(transport.disconnecting)

    def test_drain_twice(self) -> None:
        """
        Draining a connection that is already closing changes nothing.
        """
        protocol, transport, _ = connect()
        protocol.drain()
        protocol.drain()
        self.assertTrue(transport.disconnecting)


class FakeConnection:
    """
    Stands for a protocol in a factory's C{connections}.
    """

    def __init__(self, factory: FakeFactory, key: int) -> None:
        self.factory = factory
        self.key = key
        self.drained = False
        self.transport = self

        self.aborted = False

    def drain(self) -> None:
        self.drained = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.close()

    def close(self) -> None:
        self.factory.connections.pop(self.key, None)


class FakeFactory:
    """
    Stands for an L{EchoPlusFactory}: only its C{connections}.
    """

    def __init__(self, count: int) -> None:
        self.connections = {key: FakeConnection(self, key) for key in range(count)}


class DrainerTests(SynchronousTestCase):
    """
    Tests for L{Drainer}.
    """

    def make(
        self, *counts: int, timeout: float = 10
    ) -> tuple[Drainer, list[FakeFactory], task.Clock]:
        clock = task.Clock()
        factories = [FakeFactory(count) for count in counts]
        return Drainer(clock, lambda: factories, timeout), factories, clock

    def test_nothing_open(self) -> None:
        """
        With no connections the drain is over at once.
        """
        drainer, _, clock = self.make(0, 0)
        fired: list[object] = []
        drainer.drain().addCallback(fired.append)
        self.assertEqual(fired, [None])
        self.assertTrue(drainer.draining)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_waits_for_every_connection(self) -> None:
        """
        Every connection is asked to drain; the drain ends once all closed,
        and no timer is left behind.
        """
        drainer, factories, clock = self.make(2, 1)
        fired: list[object] = []
        drainer.drain().addCallback(fired.append)
        connections = [c for f in factories for c in list(f.connections.values())]
        self.assertTrue(all(connection.drained for connection in connections))
        for connection in connections[:2]:
            connection.close()
        clock.advance(POLL_INTERVAL)
        self.assertEqual(fired, [])
        connections[2].close()
        clock.advance(POLL_INTERVAL)
        self.assertEqual(fired, [None])
        self.assertFalse(any(connection.aborted for connection in connections))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timeout_aborts(self) -> None:
        """
        Connections still open at the timeout are aborted and the drain
        ends then, not before.
        """
        drainer, factories, clock = self.make(2, timeout=3)
        fired: list[object] = []
        drainer.drain().addCallback(fired.append)
        clock.pump([POLL_INTERVAL] * int(2.9 / POLL_INTERVAL))
        self.assertEqual(fired, [])
        clock.advance(0.2)
        self.assertEqual(fired, [None])
        self.assertEqual(factories[0].connections, {})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_now(self) -> None:
        """
        stop_now aborts every connection and ends the drain at once; every
        caller of drain hears it.
        """
        drainer, factories, clock = self.make(3)
        first: list[object] = []
        second: list[object] = []
        drainer.drain().addCallback(first.append)
        drainer.drain().addCallback(second.append)
        drainer.stop_now()
        self.assertEqual((first, second), ([None], [None]))
        self.assertEqual(factories[0].connections, {})


class FakeReactor:
    """
    Just enough reactor for the signal handler.
    """

    running = True

    def __init__(self) -> None:
        self.stopped = 0

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def stop(self) -> None:
        self.stopped += 1


class SignalTests(SynchronousTestCase):
    """
    Tests for L{install_signal_handlers}.
    """

    def test_first_stops_second_aborts(self) -> None:
        """
        The first SIGTERM/SIGINT stops the reactor; the next one ends the
        drain at once.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            self.addCleanup(signal.signal, signum, previous)
        reactor = FakeReactor()
        factory = FakeFactory(1)
        drainer = Drainer(task.Clock(), lambda: [factory], 10)
        handler = install_signal_handlers(reactor, drainer)
        self.assertIs(signal.getsignal(signal.SIGTERM), handler)
        self.assertIs(signal.getsignal(signal.SIGINT), handler)
        handler(signal.SIGTERM, None)
        self.assertEqual(reactor.stopped, 1)
        self.assertEqual(len(factory.connections), 1)
        handler(signal.SIGINT, None)
        self.assertEqual(reactor.stopped, 1)
        self.assertEqual(factory.connections, {})


class DrainIntegrationTests(SynchronousTestCase):
    """
    SIGTERM to twistd with slow requests in flight.
    """

    def start(self, *extra: str) -> Twistd:
        server = Twistd(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--processor",
                "delay(seconds=1)",
                *extra,
            ]
        )
        self.addCleanup(server.stop)
        return server

    def test_sigterm_loses_no_reply(self) -> None:
        """
        After SIGTERM every reply in flight arrives, new connections are
        refused, and twistd exits with status 0.
        """
        server = self.start()
        clients = [server.connect() for _ in range(3)]
        for number, sock in enumerate(clients):
            sock.sendall(b"first %d\nsecond %d\n" % (number, number))
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        server.wait_for("Draining 3 connection")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2)
        for number, sock in enumerate(clients):
            with sock:
                self.assertEqual(
                    receive_until_closed(sock),
                    b"first %d\nsecond %d\n" % (number, number),
                )
        self.assertEqual(server.process.wait(timeout=10), 0)

    def test_second_signal_stops_at_once(self) -> None:
        """
        A second SIGTERM during the drain ends it at once, exit status 0.
        """
        server = self.start("--processor", "delay(seconds=30)")
        sock = server.connect()
        self.addCleanup(sock.close)
        sock.sendall(b"slow\n")
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        server.wait_for("Draining 1 connection")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        self.assertEqual(server.process.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - started, 5)

    def test_drain_timeout(self) -> None:
        """
        Work still in progress at --drain-timeout is cut off.
        """
        server = self.start(
            "--processor", "delay(seconds=30)", "--drain-timeout", "0.5"
        )
        sock = server.connect()
        self.addCleanup(sock.close)
        sock.sendall(b"slow\n")
        time.sleep(0.3)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        self.assertEqual(server.process.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - started, 5)
        try:
            self.assertEqual(receive_until_closed(sock), b"")
        except ConnectionResetError:
            pass  # aborted: as good as closed


class BufferedRequestDrainTests(TestCase):
    """
    A request already in the socket's buffer when the drain begins is
    answered (a connection accepted just before a rolling restart's
    SIGTERM).  Real loopback sockets and the real reactor: the server side
    stops reading first, so that the request waits unread in the kernel.
    """

    @inlineCallbacks
    def test_buffered_request_answered(self) -> Generator[Deferred[Any], Any, None]:
        """
        The request sent before C{drain()} gets its reply before the close.
        """
        from twisted.internet import reactor

        settings = ListenerSettings(
            endpoint="tcp:0", framing="line", processors=parse_chain("echo")
        )
        factory = EchoPlusFactory(settings, reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port), 5)
        self.addCleanup(client.close)
        for _ in range(500):
            if factory.connections:
                break
            yield deferLater(reactor, 0.01)
        (protocol,) = factory.connections.values()
        protocol.transport.stopReading()  # the reactor leaves it unread
        client.sendall(b"sent before the drain\n")
        yield deferLater(reactor, 0.1)  # in the server's socket buffer
        protocol.drain()
        for _ in range(500):
            if not factory.connections:
                break
            yield deferLater(reactor, 0.01)
        self.assertEqual(receive_until_closed(client), b"sent before the drain\n")
