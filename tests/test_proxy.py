"""
Tests for L{echoplus.proxy}: PROXY protocol v1 and v2 headers, whole and
split, malformed ones refused, the real client address in C{context.peer}.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.interfaces import IProcessor
from echoplus.proxy import (
    V1_MAX_LENGTH,
    BadProxyHeader,
    HeaderReader,
    ProxyHeaderFactory,
)
from tests.support import Twistd, receive_lines, receive_until_closed

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str = "203.0.113.7", port: int = 4321, family: str = "TCP4") -> bytes:
    """
    A v1 header from C{source:port} to 192.0.2.1:5000.
    """
    destination = "192.0.2.1" if family == "TCP4" else "2001:db8::1"
    return f"PROXY {family} {source} {destination} {port} 5000\r\n".encode()


def v2(
    source: str = "203.0.113.7",
    port: int = 4321,
    command: int = 1,
    family: int = 0x11,
    extra: bytes = b"",
) -> bytes:
    """
    A v2 header; C{family} 0x11 is TCP over IPv4, 0x21 TCP over IPv6.
    """
    if family >> 4 == 2:
        addresses = socket.inet_pton(socket.AF_INET6, source) + bytes(16)
    elif family >> 4 == 3:
        addresses = source.encode().ljust(108, b"\0") + bytes(108)
        port = -1
    else:
        addresses = socket.inet_aton(source) + bytes(4)
    if port >= 0:
        addresses += struct.pack("!HH", port, 5000)
    body = addresses + extra
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(body))
        + body
    )


def feed_whole_and_split(header: bytes) -> list[tuple[Any, bytes]]:
    """
    Feed C{header + b"rest"} whole, byte by byte and in two halves; return
    each outcome.
    """
    data = header + b"rest"
    outcomes = []
    for pieces in (
        [data],
        [data[i : i + 1] for i in range(len(data))],
        [data[:5], data[5:]],
    ):
        reader = HeaderReader()
        results = [reader.feed(piece) for piece in pieces]
        done = [result for result in results if result is not None]
        assert len(done) >= 1, results
        address, rest = done[0]
        later = b"".join(pieces[results.index(done[0]) + 1 :])
        outcomes.append((address, rest + later))
    return outcomes


class HeaderReaderTests(SynchronousTestCase):
    """
    Tests for L{HeaderReader}.
    """

    def assertAccepted(self, header: bytes, expected: Any) -> None:
        for address, rest in feed_whole_and_split(header):
            self.assertEqual(address, expected)
            self.assertEqual(rest, b"rest")

    def assertRefused(self, data: bytes) -> None:
        for size in (len(data), 1):
            reader = HeaderReader()
            with self.assertRaises(BadProxyHeader, msg=repr(data)):
                for start in range(0, len(data), size):
                    reader.feed(data[start : start + size])

    def test_v1(self) -> None:
        """
        v1 headers for IPv4 and IPv6 give the source address, in one piece
        or split anywhere.
        """
        self.assertAccepted(v1(), IPv4Address("TCP", "203.0.113.7", 4321))
        self.assertAccepted(
            v1("2001:db8::7", 80, "TCP6"), IPv6Address("TCP", "2001:db8::7", 80)
        )

    def test_v1_unknown(self) -> None:
        """
        A v1 UNKNOWN header is accepted without an address.
        """
        self.assertAccepted(b"PROXY UNKNOWN\r\n", None)

    def test_v2(self) -> None:
        """
        v2 headers for IPv4, IPv6 and UNIX give the source address, with
        TLVs skipped, whole or split.
        """
        self.assertAccepted(
            v2(extra=b"\x04\x00\x01x"), IPv4Address("TCP", "203.0.113.7", 4321)
        )
        self.assertAccepted(
            v2("2001:db8::7", 80, family=0x21), IPv6Address("TCP", "2001:db8::7", 80)
        )
        self.assertAccepted(v2("/run/client", family=0x31), UNIXAddress(b"/run/client"))

    def test_v2_local(self) -> None:
        """
        A v2 LOCAL header (a proxy's health check) is accepted without an
        address.
        """
        self.assertAccepted(v2(command=0, family=0), None)

    def test_malformed(self) -> None:
        """
        Bad signatures, over-long v1, lone CR or LF, unknown families,
        versions, commands and bad addresses or ports are refused.
        """
        for data in (
            b"GET / HTTP/1.1\r\n",
            b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8),
            b"PROXY TCP4 " + b"1" * V1_MAX_LENGTH,
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4321 5000\n",
            b"PROXY TCP4 203.0.113.7\r192.0.2.1 4321 5000\r\n",
            b"PROXY TCP5 203.0.113.7 192.0.2.1 4321 5000\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 4321 5000\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 5000\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 port 5000\r\n",
            b"PROXY TCP4 203.0.113.7\r\n",
            v2(family=0x41),
            v2(family=0x12),
            v2(command=2),
            V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),
            V2_SIGNATURE + b"\x21\x11\x00\x02" + bytes(2),
        ):
            self.assertRefused(data)

    @given(st.binary(max_size=300))
    def test_fuzz(self, data: bytes) -> None:
        """
        Any bytes give a header, "need more" or BadProxyHeader, never
        another exception, and never more than one header is buffered.
        """
        reader = HeaderReader()
        for start in range(0, len(data), 7):
            try:
                if reader.feed(data[start : start + 7]) is not None:
                    return
            except BadProxyHeader:
                return
            self.assertLessEqual(len(reader._buffer), 16 + 65535)


class Recorder(Protocol):
    """
    Records what the PROXY wrapper delivers.
    """

    def __init__(self) -> None:
        self.peer: Any = None
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.lost = True


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """
    A L{Recorder} that hears half-close.
    """

    read_closed = False

    def readConnectionLost(self) -> None:
        self.read_closed = True

    def writeConnectionLost(self) -> None:
        pass


class RecordingFactory(Factory):
    """
    Builds L{Recorder}s and records the addresses it was asked with.
    """

    def __init__(self, refuse: bool = False, protocol: type = Recorder) -> None:
        self.addresses: list[Any] = []
        self.built: list[Recorder] = []
        self.refuse = refuse
        self.protocol = protocol

    def buildProtocol(self, addr: Any) -> Recorder | None:  # type: ignore[override]
        self.addresses.append(addr)
        if self.refuse:
            return None
        protocol = self.protocol()
        self.built.append(protocol)
        return protocol


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that records an abort.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class ProxyHeaderProtocolTests(SynchronousTestCase):
    """
    Tests for L{ProxyHeaderFactory} and its protocol on a memory transport.
    """

    def connect(
        self, timeout: float = 5.0, **factory_options: Any
    ) -> tuple[RecordingFactory, Any, AbortableTransport, task.Clock]:
        clock = task.Clock()
        inner = RecordingFactory(**factory_options)
        factory = ProxyHeaderFactory(inner, clock, timeout)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 999))
        transport = AbortableTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 999))
        protocol.makeConnection(transport)
        return inner, protocol, transport, clock

    def test_real_peer_before_build(self) -> None:
        """
        The listener's protocol is built only after the header, with the
        client's address, and sees it as its peer; the bytes after the
        header reach it.
        """
        inner, protocol, transport, _ = self.connect()
        protocol.dataReceived(v1()[:3])
        self.assertEqual(inner.addresses, [])
        protocol.dataReceived(v1()[3:] + b"hello\n")
        client = IPv4Address("TCP", "203.0.113.7", 4321)
        self.assertEqual(inner.addresses, [client])
        self.assertEqual(inner.built[0].peer, client)
        self.assertEqual(inner.built[0].received, b"hello\n")
        protocol.dataReceived(b"more\n")
        self.assertEqual(inner.built[0].received, b"hello\nmore\n")

    def test_malformed_aborts(self) -> None:
        """
        A malformed header aborts the connection without building a
        protocol or writing a byte.
        """
        inner, protocol, transport, _ = self.connect()
        protocol.dataReceived(b"PROXY TCP4 1.2.3.4\n")
        self.assertTrue(transport.aborted)
        self.assertEqual((inner.addresses, transport.value()), ([], b""))

    def test_header_timeout(self) -> None:
        """
        No complete header within the timeout aborts the connection; a
        complete one in time cancels the timer.
        """
        inner, protocol, transport, clock = self.connect(timeout=2)
        protocol.dataReceived(b"PROXY ")
        clock.advance(1.9)
        self.assertFalse(transport.aborted)
        clock.advance(0.2)
        self.assertTrue(transport.aborted)
        inner, protocol, transport, clock = self.connect(timeout=2)
        protocol.dataReceived(v2())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refused_by_factory(self) -> None:
        """
        When the listener's factory refuses the client (returns None), the
        connection closes without a byte.
        """
        inner, protocol, transport, _ = self.connect(refuse=True)
        protocol.dataReceived(v1())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_half_close_forwarded(self) -> None:
        """
        A client's half-close reaches a half-closeable protocol.
        """
        inner, protocol, transport, _ = self.connect(protocol=HalfCloseRecorder)
        protocol.dataReceived(v1())
        protocol.readConnectionLost()
        self.assertTrue(inner.built[0].read_closed)
        self.assertFalse(transport.disconnecting)

    def test_connection_lost(self) -> None:
        """
        Losing the connection reaches the listener's protocol once built,
        and cancels the header timer before that.
        """
        inner, protocol, transport, clock = self.connect()
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        inner, protocol, transport, clock = self.connect()
        protocol.dataReceived(v1())
        protocol.connectionLost(None)
        self.assertTrue(inner.built[0].lost)


@implementer(IProcessor)
class Peer:
    """
    Replies with the connection's peer host and port (loaded by twistd).
    """

    def process(self, message: bytes, context: Any) -> bytes:
        return f"{context.peer.host} {context.peer.port}".encode()


class ProxyIntegrationTests(SynchronousTestCase):
    """
    twistd with a haproxy: listener, headers crafted here.
    """

    def setUp(self) -> None:
        self.server = Twistd(
            [
                "--listen",
                "haproxy:headerTimeout=1:tcp:0:interface=127.0.0.1",
                "--processor",
                "tests.test_proxy:Peer",
                "--deny",
                "198.51.100.0/24",
            ]
        )
        self.addCleanup(self.server.stop)

    def connect(self) -> socket.socket:
        sock = self.server.connect(timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def test_real_client_address(self) -> None:
        """
        v1 and v2 headers, whole or split across segments, give processors
        the address from the header.
        """
        cases = [
            (v1(), b"203.0.113.7 4321"),
            (v2("2001:db8::7", 80, family=0x21), b"2001:db8::7 80"),
        ]
        for header, expected in cases:
            for split in (None, 3, 10):
                with self.connect() as sock:
                    if split is None:
                        sock.sendall(header + b"hi\n")
                    else:
                        sock.sendall(header[:split])
                        time.sleep(0.05)
                        sock.sendall(header[split:] + b"hi\n")
                    self.assertEqual(
                        receive_lines(sock, 1), [expected], (header, split)
                    )

    def test_access_control_on_real_address(self) -> None:
        """
        --deny applies to the address in the PROXY header, not to the
        proxy's: a denied client is closed without a byte, others served.
        """
        with self.connect() as sock:
            sock.sendall(v1("198.51.100.9") + b"hi\n")
            self.assertEqual(_read_all(sock), b"")
        with self.connect() as sock:
            sock.sendall(v2("203.0.113.8", 1234) + b"hi\n")
            self.assertEqual(receive_lines(sock, 1), [b"203.0.113.8 1234"])

    def test_malformed_and_silent_refused(self) -> None:
        """
        A malformed header, or none within headerTimeout=, closes that
        connection without a byte; other clients are served meanwhile.
        """
        silent = self.connect()
        self.addCleanup(silent.close)
        for bad in (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), b"PROXY TCP4 1.2.3.4\nhi\n"):
            with self.connect() as sock:
                sock.sendall(bad)
                self.assertEqual(_read_all(sock), b"")
        with self.connect() as sock:
            sock.sendall(v1() + b"hi\n")
            self.assertEqual(receive_lines(sock, 1), [b"203.0.113.7 4321"])
        self.assertEqual(_read_all(silent), b"")


def _read_all(sock: socket.socket) -> bytes:
    """
    Everything until the server closes; a reset counts as closed.
    """
    try:
        return receive_until_closed(sock)
    except ConnectionResetError:
        return b""
