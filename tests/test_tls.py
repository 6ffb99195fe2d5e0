"""
Tests for L{echoplus.tls}: C{ssl:} endpoints with client certificates, a
minimum TLS version and a handshake timeout.  Certificates are generated
at test time; no private key is committed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from echoplus.endpoints import server_from_string
from echoplus.protocols import CLOSE_GRACE
from echoplus.proxy import ProxyHeaderFactory
from echoplus.tls import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    HandshakeTimeoutFactory,
    certificate_options,
    tls_server_endpoint,
)
from tests.support import Twistd, receive_lines, receive_until_closed


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    is_ca: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A certificate for C{subject}, signed by C{issuer} (self-signed if None).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (_name(subject), key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(
    directory: Path, name: str, certificate: x509.Certificate, key: object
) -> None:
    (directory / f"{name}.crt").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
    )
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certificates() -> Path:
    """
    A temporary directory holding C{ca}, C{server} and C{client} (signed by
    C{ca}) and C{stranger} (signed by another CA), each as C{.crt}/C{.key}.
    """
    directory = Path(tempfile.mkdtemp())
    ca, ca_key = _issue("echoplus test CA", None, True)
    other_ca, other_key = _issue("some other CA", None, True)
    _write(directory, "ca", ca, ca_key)
    for name, issuer in (
        ("server", (ca.subject, ca_key)),
        ("client", (ca.subject, ca_key)),
        ("stranger", (other_ca.subject, other_key)),
    ):
        _write(directory, name, *_issue(name, issuer, False))
    return directory


_CERTS: Path | None = None


def certificates() -> Path:
    """
    The test certificates, made once per test run.
    """
    global _CERTS
    if _CERTS is None:
        _CERTS = make_certificates()
    return _CERTS


def _client_context(
    certs: Path, client: str | None = None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client is not None:
        context.load_cert_chain(
            str(certs / f"{client}.crt"), str(certs / f"{client}.key")
        )
    if maximum is not None:
        context.maximum_version = maximum
    return context


def _listen_args(certs: Path, extra: str = "") -> list[str]:
    return [
        "--listen",
        f"ssl:0:interface=127.0.0.1:privateKey={certs / 'server.key'}"
        f":certKey={certs / 'server.crt'}{extra}",
    ]


class CertificateOptionsTests(SynchronousTestCase):
    """
    Tests for L{certificate_options}.
    """

    def test_client_certificates_required(self) -> None:
        """
        With ca_certs, client certificates are verified and required.
        """
        certs = certificates()
        options = certificate_options(
            str(certs / "server.key"),
            str(certs / "server.crt"),
            ca_certs=str(certs / "ca.crt"),
        )
        self.assertTrue(options.verify)
        self.assertTrue(options.requireCertificate)

    def test_no_client_certificates_by_default(self) -> None:
        """
        Without ca_certs, clients are not asked for a certificate.
        """
        certs = certificates()
        options = certificate_options(
            str(certs / "server.key"), str(certs / "server.crt")
        )
        self.assertFalse(options.verify)

    def test_bad_values(self) -> None:
        """
        An unknown minimum version, or a CA file without certificates, is a
        ValueError.
        """
        certs = certificates()
        key, crt = str(certs / "server.key"), str(certs / "server.crt")
        self.assertRaises(ValueError, certificate_options, key, crt, min_tls="1.0")
        self.assertRaises(ValueError, certificate_options, key, crt, ca_certs=key)

    def test_endpoint_keys(self) -> None:
        """
        tls_server_endpoint refuses unknown keys and bad timeouts, and
        listens on TCP with TLS around the factory.
        """
        certs = certificates()
        keys = {
            "privateKey": str(certs / "server.key"),
            "certKey": str(certs / "server.crt"),
        }
        self.assertRaises(
            ValueError, tls_server_endpoint, None, ["0"], {**keys, "bogus": "1"}
        )
        self.assertRaises(
            ValueError,
            tls_server_endpoint,
            None,
            ["0"],
            {**keys, "handshakeTimeout": "-1"},
        )
        memory = MemoryReactorClock()
        endpoint = tls_server_endpoint(memory, ["0"], {**keys, "backlog": "9"})
        endpoint.listen(Factory.forProtocol(Protocol))
        _, factory, backlog, _ = memory.tcpServers[0]
        self.assertIsInstance(factory, HandshakeTimeoutFactory)
        self.assertEqual(backlog, 9)
        self.assertEqual(factory.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT)


class ProxyOverTLSTests(SynchronousTestCase):
    """
    C{haproxy:ssl:} endpoints: the PROXY header comes before TLS, in clear.
    """

    def test_factory_order(self) -> None:
        """
        The PROXY factory is outermost, the TLS factory inside it.
        """
        certs = certificates()
        memory = MemoryReactorClock()
        endpoint = server_from_string(
            memory,
            f"haproxy:headerTimeout=3:ssl:0:privateKey={certs / 'server.key'}"
            f":certKey={certs / 'server.crt'}",
        )
        endpoint.listen(Factory.forProtocol(Protocol))
        _, factory, backlog, _ = memory.tcpServers[0]
        self.assertIsInstance(factory, ProxyHeaderFactory)
        self.assertEqual((factory.timeout, backlog), (3.0, 1024))
        self.assertIsInstance(factory.wrappedFactory, HandshakeTimeoutFactory)

    def test_real_client_over_tls(self) -> None:
        """
        twistd on haproxy:ssl: reads a split v1 header in clear, then
        serves TLS, and processors see the address from the header.
        """
        certs = certificates()
        server = Twistd(
            [
                "--listen",
                f"haproxy:ssl:0:interface=127.0.0.1:privateKey={certs / 'server.key'}"
                f":certKey={certs / 'server.crt'}",
                "--processor",
                "tests.test_proxy:Peer",
            ]
        )
        self.addCleanup(server.stop)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        header = b"PROXY TCP4 203.0.113.7 192.0.2.1 4321 443\r\n"
        raw.sendall(header[:4])
        time.sleep(0.05)
        raw.sendall(header[4:])
        context = _client_context(certs)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"who am I\n")
            self.assertEqual(receive_lines(sock, 1), [b"203.0.113.7 4321"])


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    Tests for the handshake timeout of L{HandshakeTimeoutFactory}.
    """

    def connect(self, timeout: float) -> tuple[task.Clock, StringTransport]:
        certs = certificates()
        clock = task.Clock()
        options = certificate_options(
            str(certs / "server.key"), str(certs / "server.crt")
        )
        factory = HandshakeTimeoutFactory(
            options, Factory.forProtocol(Protocol), clock, timeout
        )
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return clock, transport

    def test_silent_client_cut_off(self) -> None:
        """
        A client that sends nothing is aborted when the timeout expires, not
        before.
        """
        clock, transport = self.connect(3)
        clock.advance(2.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_zero_waits_forever(self) -> None:
        """
        A timeout of 0 schedules nothing.
        """
        clock, transport = self.connect(0)
        self.assertEqual(clock.getDelayedCalls(), [])


class TLSIntegrationTests(SynchronousTestCase):
    """
    twistd serving ssl: endpoints to Python's ssl module.
    """

    def start(self, extra: str = "") -> Twistd:
        server = Twistd(_listen_args(certificates(), extra))
        self.addCleanup(server.stop)
        return server

    def tls_connect(self, server: Twistd, context: ssl.SSLContext) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    def test_client_certificate(self) -> None:
        """
        With caCerts=, a client with a certificate from that CA is served and
        clients without one, or with one from another CA, are refused.
        """
        certs = certificates()
        server = self.start(f":caCerts={certs / 'ca.crt'}")
        with self.tls_connect(server, _client_context(certs, "client")) as sock:
            sock.sendall(b"trusted\n")
            self.assertEqual(receive_lines(sock, 1), [b"trusted"])
        for client in (None, "stranger"):
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                with self.tls_connect(server, _client_context(certs, client)) as sock:
                    # TLS 1.3 reports the refusal on the first read.
                    sock.sendall(b"let me in\n")
                    self.assertEqual(receive_until_closed(sock), b"")
                    raise ConnectionError("closed without a reply")

    def test_error_frame_then_close(self) -> None:
        """
        An over-long line over TLS gets its error frame, after the replies
        before it, and a clean close: no error in the server's log.
        """
        server = Twistd([*_listen_args(certificates()), "--max-frame", "10"])
        self.addCleanup(server.stop)
        with self.tls_connect(server, _client_context(certificates())) as sock:
            sock.sendall(b"ok\n" + b"x" * 50 + b"\n")
            received = receive_until_closed(sock)
        self.assertTrue(received.startswith(b"ok\nERROR frame-too-long: "), received)
        self.assertTrue(received.endswith(b"\n"), received)
        self.assertEqual(server.stop(), 0)
        self.assertNotIn("Unhandled Error", server.drain_output())

    def test_minimum_version(self) -> None:
        """
        With minTLS=1.3, a TLS 1.2 client fails its handshake.
        """
        certs = certificates()
        server = self.start(":minTLS=1.3")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.tls_connect(
                server, _client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
            )
        with self.tls_connect(server, _client_context(certs)) as sock:
            self.assertEqual(sock.version(), "TLSv1.3")

    def test_handshake_timeout(self) -> None:
        """
        A TLS client gets its lines echoed, while a client that connects
        and never starts its handshake is cut off after handshakeTimeout=.
        """
        server = self.start(":handshakeTimeout=0.5")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
            with self.tls_connect(server, _client_context(certificates())) as sock:
                sock.sendall(b"secret\nsauce\n")
                self.assertEqual(receive_lines(sock, 2), [b"secret", b"sauce"])
            try:
                self.assertEqual(silent.recv(100), b"")
            except ConnectionResetError:
                pass  # aborted: as good as closed


_CLOSED_AFTER = r"closed after (\d+\.\d+)s"


class TLSCloseTests(SynchronousTestCase):
    """
    A TLS connection closed for a fatal error lets go of its slot as soon
    as the client is done, whatever the client does, as plain TCP does:
    never after the whole close grace unless TCP waits too.
    """

    #: The most a prompt close may take here: well under the close grace.
    PROMPT = CLOSE_GRACE / 2

    def start(self, *arguments: str, tls: bool = True) -> Twistd:
        listen = (
            _listen_args(certificates())
            if tls
            else ["--listen", "tcp:0:interface=127.0.0.1"]
        )
        server = Twistd([*listen, *arguments])
        self.addCleanup(server.stop)
        return server

    def connect(self, server: Twistd) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        return _client_context(certificates()).wrap_socket(
            raw, server_hostname="localhost"
        )

    def too_long(self, server: Twistd) -> ssl.SSLSocket:
        """
        A TLS connection that has sent one good line and one over
        C{--max-frame 10}.
        """
        sock = self.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"ok\n" + b"x" * 50 + b"\n")
        return sock

    def closed_after(self, server: Twistd) -> float:
        """
        How long the next connection the server closes was open, from its
        log.
        """
        [match] = server.wait_for(_CLOSED_AFTER, timeout=2 * CLOSE_GRACE)
        return float(match.group(1))

    def assert_answered(self, received: bytes) -> None:
        self.assertEqual(
            received, b"ok\nERROR frame-too-long: line exceeds the limit of 10 bytes\n"
        )

    def test_client_half_closes(self) -> None:
        """
        A client that shuts its TCP write side after sending (as C{nc -N}
        does) reads the reply and the error frame, and the server closes
        at once.
        """
        server = self.start("--max-frame", "10")
        sock = self.too_long(server)
        _shut_tcp_write_side(sock)
        self.assert_answered(receive_until_closed(sock))
        self.assertLess(self.closed_after(server), self.PROMPT)

    def test_client_closes_without_close_notify(self) -> None:
        """
        A client that closes without a TLS C{close_notify}, before reading
        anything, is seen to close at once.
        """
        server = self.start("--max-frame", "10")
        self.too_long(server).close()
        self.assertLess(self.closed_after(server), self.PROMPT)

    def test_client_reads_to_end_then_closes(self) -> None:
        """
        A client that reads until the server's C{close_notify} and then
        closes (Python's C{ssl}, without a C{close_notify} of its own) is
        seen to close at once.
        """
        server = self.start("--max-frame", "10")
        sock = self.too_long(server)
        self.assert_answered(receive_until_closed(sock))
        sock.close()
        self.assertLess(self.closed_after(server), self.PROMPT)

    def test_client_answers_close_notify(self) -> None:
        """
        A client that answers the server's C{close_notify} with its own
        completes the TLS close at once.
        """
        server = self.start("--max-frame", "10")
        sock = self.too_long(server)
        self.assert_answered(receive_until_closed(sock))
        sock.unwrap().close()
        self.assertLess(self.closed_after(server), self.PROMPT)

    def test_client_never_closes(self) -> None:
        """
        A client that reads everything but never closes is cut off after
        the close grace over TLS as over TCP, and not later.
        """
        tcp_server = self.start("--max-frame", "10", tls=False)
        server = self.start("--max-frame", "10")
        tcp = socket.create_connection(("127.0.0.1", tcp_server.port), timeout=10)
        self.addCleanup(tcp.close)
        tcp.sendall(b"ok\n" + b"x" * 50 + b"\n")
        sock = self.too_long(server)
        self.assert_answered(receive_until_closed(sock))
        self.assert_answered(receive_until_closed(tcp))
        tcp_waited = self.closed_after(tcp_server)
        tls_waited = self.closed_after(server)
        self.assertGreaterEqual(tcp_waited, CLOSE_GRACE)
        self.assertLess(tls_waited, tcp_waited + 1.0)

    def test_half_close_gets_every_reply(self) -> None:
        """
        A client that shuts its TCP write side after its requests gets
        every reply, even those not ready yet, before the server closes.
        """
        server = self.start("--processor", "delay(seconds=0.2)")
        sock = self.connect(server)
        self.addCleanup(sock.close)
        sock.sendall(b"a\nb\n")
        _shut_tcp_write_side(sock)
        self.assertEqual(receive_until_closed(sock), b"a\nb\n")
        self.assertLess(self.closed_after(server), self.PROMPT)


def _shut_tcp_write_side(sock: ssl.SSLSocket) -> None:
    """
    Shut the write side of the TCP connection under C{sock}, as C{nc -N}
    does, without a TLS C{close_notify} (C{SSLSocket.shutdown} would drop
    the TLS layer).
    """
    with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
        duplicate.shutdown(socket.SHUT_WR)


def tearDownModule() -> None:
    if _CERTS is not None:
        for path in _CERTS.iterdir():
            os.remove(path)
        os.rmdir(_CERTS)
