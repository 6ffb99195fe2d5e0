"""
Tests for L{echoplus.transports}: the direct send and its fallbacks.

The transports here are real C{twisted.internet.tcp.Server} and
C{unix.Server} objects over one end of a C{socket.socketpair()}, driven by
a L{MemoryReactor}: nothing runs a reactor, so a byte that reaches the
other end of the pair was sent directly, not on a later reactor turn.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import main, tcp, unix
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from echoplus.transports import can_send_directly, choose_writer


class _Producer:
    """A stand-in push producer."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _pair(
    test: SynchronousTestCase, kind: type = tcp.Server
) -> tuple[Any, socket.socket, MemoryReactor]:
    """
    Return a server transport of class C{kind} over one end of a socket
    pair, the other end (non-blocking), and the reactor it registers with.
    """
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    test.addCleanup(ours.close)
    test.addCleanup(peer.close)
    reactor = MemoryReactor()
    client: Any = "peer" if kind is unix.Server else ("127.0.0.1", 40000)
    transport = kind(ours, Protocol(), client, None, 0, reactor)
    transport.repstr = "<test transport>"
    return transport, peer, reactor


def _receive_all(peer: socket.socket) -> bytes:
    """
    Everything the peer end can read now, without waiting.
    """
    chunks = []
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _fill(sock: socket.socket) -> None:
    """
    Send on C{sock} until its buffers are full.
    """
    sock.setblocking(False)
    block = b"x" * 65536
    while True:
        try:
            sock.send(block)
        except BlockingIOError:
            return


def _flush(transport: Any, peer: socket.socket, limit: int = 1000) -> bytes:
    """
    Alternate the peer reading and the transport's own C{doWrite} until the
    transport's buffer is empty; return what the peer read.
    """
    received = []
    for _ in range(limit):
        received.append(_receive_all(peer))
        if not (transport.dataBuffer or transport._tempDataLen):
            break
        result = transport.doWrite()
        assert result is None, result
    received.append(_receive_all(peer))
    return b"".join(received)


class ChooseWriterTests(SynchronousTestCase):
    """
    L{choose_writer} picks the direct send only for plain socket transports.
    """

    def test_plain_tcp_server_sends_directly(self) -> None:
        """A C{tcp.Server} gets a direct writer, not its own C{write}."""
        transport, _, _ = _pair(self)
        self.assertTrue(can_send_directly(transport))
        self.assertNotEqual(choose_writer(transport, None), transport.write)

    def test_plain_unix_server_sends_directly(self) -> None:
        """A C{unix.Server} gets a direct writer."""
        transport, _, _ = _pair(self, unix.Server)
        self.assertTrue(can_send_directly(transport))

    def test_string_transport_falls_back(self) -> None:
        """A C{StringTransport} is written through its own C{write}."""
        transport = StringTransport()
        self.assertFalse(can_send_directly(transport))
        self.assertEqual(choose_writer(transport, None), transport.write)

    def test_subclass_falls_back(self) -> None:
        """A subclass of C{tcp.Server} is not trusted: it may override write."""

        class Custom(tcp.Server):
            pass

        transport, _, _ = _pair(self, Custom)
        self.assertFalse(can_send_directly(transport))
        self.assertEqual(choose_writer(transport, None), transport.write)

    def test_tls_started_falls_back(self) -> None:
        """A transport with TLS started is never sent to directly."""
        transport, _, _ = _pair(self)
        transport.TLS = True
        self.assertFalse(can_send_directly(transport))


class DirectWriterTests(SynchronousTestCase):
    """
    The direct writer sends at once when it may, and otherwise behaves
    exactly like C{transport.write}.
    """

    def test_sends_at_once(self) -> None:
        """With nothing buffered, the bytes reach the peer with no reactor turn."""
        transport, peer, reactor = _pair(self)
        write = choose_writer(transport, None)
        write(b"hello\n")
        self.assertEqual(_receive_all(peer), b"hello\n")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertNotIn(transport, reactor.getWriters())

    def test_own_producer_allowed(self) -> None:
        """The protocol's own registered producer does not stop the direct send."""
        transport, peer, _ = _pair(self)
        producer = _Producer()
        transport.registerProducer(producer, True)
        choose_writer(transport, producer)(b"mine")
        self.assertEqual(_receive_all(peer), b"mine")

    def test_other_producer_falls_back(self) -> None:
        """Another registered producer sends the bytes through the buffer."""
        transport, peer, reactor = _pair(self)
        transport.registerProducer(_Producer(), True)
        choose_writer(transport, _Producer())(b"queued")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(transport._tempDataBuffer, [b"queued"])
        self.assertIn(transport, reactor.getWriters())

    def test_disconnecting_falls_back(self) -> None:
        """A transport that is closing gets its bytes through its own write."""
        transport, peer, _ = _pair(self)
        write = choose_writer(transport, None)
        transport.loseConnection()
        write(b"late")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(transport._tempDataBuffer, [b"late"])

    def test_tls_started_later_falls_back(self) -> None:
        """TLS started after the writer was chosen turns the direct send off."""
        transport, peer, _ = _pair(self)
        write = choose_writer(transport, None)
        written: list[bytes] = []

        class TLSLayer(Protocol):
            """What startTLS puts between the transport and the protocol."""

            def write(self, data: bytes) -> None:
                written.append(data)

        transport.TLS = True
        transport.protocol = TLSLayer()
        write(b"secret")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(written, [b"secret"])

    def test_partial_send_queues_rest_in_order(self) -> None:
        """A partial send hands the rest to the buffer; later writes queue behind it."""
        transport, peer, reactor = _pair(self)
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write = choose_writer(transport, None)
        first = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes
        write(first)
        self.assertTrue(0 < transport._tempDataLen < len(first))
        self.assertIn(transport, reactor.getWriters())
        write(b"second")
        self.assertEqual(transport._tempDataBuffer[-1], b"second")
        self.assertEqual(_flush(transport, peer), first + b"second")

    def test_would_block_queues_everything(self) -> None:
        """When the socket takes nothing (EAGAIN), all the bytes are buffered."""
        transport, peer, reactor = _pair(self)
        _fill(transport.socket)
        write = choose_writer(transport, None)
        write(b"blocked")
        self.assertEqual(transport._tempDataBuffer, [b"blocked"])
        self.assertIn(transport, reactor.getWriters())
        self.assertTrue(_flush(transport, peer).endswith(b"blocked"))

    def test_queued_data_goes_first(self) -> None:
        """Bytes already in the transport's buffer leave before new ones."""
        transport, peer, _ = _pair(self)
        transport.write(b"first,")
        choose_writer(transport, None)(b"second")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(_flush(transport, peer), b"first,second")

    def test_after_flush_sends_directly_again(self) -> None:
        """Once the buffer has drained, writes go straight to the socket again."""
        transport, peer, _ = _pair(self)
        write = choose_writer(transport, None)
        transport.write(b"a")
        self.assertEqual(_flush(transport, peer), b"a")
        write(b"b")
        self.assertEqual(_receive_all(peer), b"b")

    def test_peer_gone_does_not_raise(self) -> None:
        """A send to a closed peer (EPIPE) is left for Twisted to notice."""
        transport, peer, _ = _pair(self)
        peer.close()
        choose_writer(transport, None)(b"nobody")
        self.assertEqual(transport._tempDataBuffer, [b"nobody"])
        self.assertIs(transport.doWrite(), main.CONNECTION_LOST)

    def test_reset_does_not_raise(self) -> None:
        """A connection reset during the send is not raised to the caller."""
        transport, _, _ = _pair(self)

        class Resetting:
            def send(self, data: bytes) -> int:
                raise ConnectionResetError()

        transport.socket = Resetting()
        write = choose_writer(transport, None)
        write(b"reset")
        self.assertEqual(transport._tempDataBuffer, [b"reset"])

    def test_unix_fd_queue_falls_back(self) -> None:
        """A UNIX transport with file descriptors queued writes through its buffer."""
        transport, peer, _ = _pair(self, unix.Server)
        write = choose_writer(transport, None)
        transport._sendmsgQueue.append(0)
        write(b"with-fd")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(transport._tempDataBuffer, [b"with-fd"])

    def test_empty_write_sends_nothing(self) -> None:
        """Writing no bytes neither sends nor buffers anything."""
        transport, peer, reactor = _pair(self)
        choose_writer(transport, None)(b"")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertNotIn(transport, reactor.getWriters())


class ProtocolDirectSendTests(SynchronousTestCase):
    """
    An echoplus protocol on a plain TCP transport answers a read within
    that read, in one send, before any reactor turn.
    """

    def _connect(self, transport_kind: type = tcp.Server) -> tuple[Any, Any, Any]:
        from twisted.internet.task import Clock

        from echoplus.config import ListenerSettings
        from echoplus.factory import EchoPlusFactory

        factory = EchoPlusFactory(ListenerSettings(endpoint="tcp:0"), Clock())
        transport, peer, reactor = _pair(self, transport_kind)
        protocol = factory.buildProtocol(transport.getPeer())
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost)
        return protocol, peer, reactor

    def test_replies_leave_within_the_read(self) -> None:
        """All replies of one read reach the peer with no reactor turn."""
        protocol, peer, reactor = self._connect()
        protocol.dataReceived(b"one\ntwo\nthree\n")
        self.assertEqual(_receive_all(peer), b"one\ntwo\nthree\n")
        self.assertNotIn(protocol.transport, reactor.getWriters())

    def test_replies_queue_behind_unsent_output(self) -> None:
        """With output already queued, new replies follow it in order."""
        protocol, peer, _ = self._connect()
        protocol.transport.write(b"queued\n")
        protocol.dataReceived(b"next\n")
        self.assertEqual(_receive_all(peer), b"")
        self.assertEqual(_flush(protocol.transport, peer), b"queued\nnext\n")
