"""
C{ssl:} endpoints: Twisted's keys, plus client certificates, a minimum TLS
version and a handshake timeout.

Twisted's own C{ssl:} endpoint string cannot require client certificates
or raise the minimum TLS version, and a client that never finishes its
handshake holds its connection until the idle timeout.  echoplus builds
C{ssl:} endpoints itself, from the same keys:

  - C{PORT}, C{interface=}, C{backlog=}, C{privateKey=} (default
    C{server.pem}), C{certKey=} (default: the private key file),
    C{extraCertChain=}, C{dhParameters=}: as in Twisted;
  - C{caCerts=FILE}: a PEM file of CA certificates; clients must present a
    certificate signed by one of them, or the handshake fails;
  - C{minTLS=1.2} or C{minTLS=1.3}: the lowest TLS version accepted
    (default 1.2);
  - C{handshakeTimeout=SECONDS}: a client that has not completed its
    handshake by then is disconnected (default 10; 0 waits forever).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    DiffieHellmanParameters,
    PrivateCertificate,
    TLSVersion,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from zope.interface import implementer

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "TLS_VERSIONS",
    "HandshakeTimeoutFactory",
    "certificate_options",
    "tls_server_endpoint",
]

#: Seconds a TLS client has to complete its handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: The values of C{minTLS=}.
TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)

_KEYS = frozenset(
    {
        "interface",
        "backlog",
        "privateKey",
        "certKey",
        "extraCertChain",
        "dhParameters",
        "caCerts",
        "minTLS",
        "handshakeTimeout",
    }
)


def _certificates(path: str, what: str) -> list[Certificate]:
    pems = _PEM_CERTIFICATE.findall(FilePath(path).getContent())
    if not pems:
        raise ValueError(f"{what} file {path!r} holds no PEM certificate")
    return [Certificate.loadPEM(pem) for pem in pems]


def certificate_options(
    private_key: str = "server.pem",
    cert_key: str | None = None,
    extra_cert_chain: str | None = None,
    dh_parameters: str | None = None,
    ca_certs: str | None = None,
    min_tls: str = "1.2",
) -> CertificateOptions:
    """
    Load the server's TLS configuration from PEM files.

    @param private_key: the server's private key (and certificate, when
        C{cert_key} is not given).
    @param cert_key: the server's certificate.
    @param extra_cert_chain: intermediate CA certificates sent to clients.
    @param dh_parameters: Diffie-Hellman parameters for DHE ciphers.
    @param ca_certs: CA certificates; when given, every client must present
        a certificate signed by one of them.
    @param min_tls: the lowest TLS version accepted, C{"1.2"} or C{"1.3"}.
    @raise ValueError: a value is invalid (the message says which).
    @raise OSError: a file cannot be read.
    """
    if min_tls not in TLS_VERSIONS:
        raise ValueError(
            f"minTLS must be one of {', '.join(TLS_VERSIONS)}, not {min_tls!r}"
        )
    key_pem = FilePath(private_key).getContent()
    cert_pem = FilePath(cert_key).getContent() if cert_key else key_pem
    server = PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    options: dict[str, Any] = {"raiseMinimumTo": TLS_VERSIONS[min_tls]}
    if extra_cert_chain:
        chain = _certificates(extra_cert_chain, "extraCertChain")
        options["extraCertChain"] = [certificate.original for certificate in chain]
    if dh_parameters:
        options["dhParameters"] = DiffieHellmanParameters.fromFile(
            FilePath(dh_parameters)
        )
    if ca_certs:
        options["trustRoot"] = trustRootFromCertificates(
            _certificates(ca_certs, "caCerts")
        )
    return CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        **options,
    )


@implementer(IHalfCloseableProtocol)
class _ServerTLS(BufferingTLSTransport):
    """
    A server-side TLS connection with a handshake timeout, and that lets
    its client close the TCP write side the way C{nc -N} does.

    Twisted's TLS transport treats the end of the client's TCP stream as the
    end of the connection: replies still owed, or written but not yet
    flushed, are lost.  Here the application hears C{readConnectionLost}
    (when it can half-close, as L{echoplus.protocols.FramedProtocol} can)
    and answers first.  And since no C{close_notify} can follow the end of
    the stream, closing TLS after it does not wait for one: the TCP
    connection closes as soon as our own C{close_notify} is flushed.
    """

    _handshake_timer: Any = None
    _read_closed = False

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        if factory.handshake_timeout:
            self._handshake_timer = factory.clock.callLater(
                factory.handshake_timeout, self._handshake_expired
            )
        super().makeConnection(transport)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        # _handshakeDone is TLSMemoryBIOProtocol's own record of a finished
        # handshake; Twisted offers no public way to ask.
        if not self._handshakeDone:
            self.factory.log.info(
                "TLS client {peer} did not complete its handshake in time",
                peer=self.getPeer(),
            )
            self.abortConnection()

    def readConnectionLost(self) -> None:
        """
        The client closed its TCP write side without a C{close_notify}
        (after one, TLS closes by itself): nothing more will be read.
        """
        self._read_closed = True
        if self.disconnecting:
            # Our close_notify is out; the client's can no longer come.
            self.transport.loseConnection()
            return
        wrapped = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if wrapped is not None and self._handshakeDone:
            wrapped.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        TLS never half-closes the TCP connection itself: nothing to do.
        """

    def _shutdownTLS(self) -> None:
        # Sends our close_notify; TLSMemoryBIOProtocol then waits for the
        # client's before closing TCP, which cannot come once the client's
        # stream ended: close TCP once ours is flushed instead.
        super()._shutdownTLS()
        if self._read_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        super().connectionLost(reason)


class HandshakeTimeoutFactory(TLSMemoryBIOFactory):
    """
    Server-side TLS around a listener's factory, with a handshake timeout.

    @ivar clock: times the handshake.
    @ivar handshake_timeout: seconds; 0 waits forever.
    """

    protocol = _ServerTLS
    log = Logger()

    def __init__(
        self,
        options: CertificateOptions,
        wrapped_factory: Any,
        clock: Any,
        handshake_timeout: float,
    ) -> None:
        super().__init__(options, False, wrapped_factory, clock)
        self.clock = clock
        self.handshake_timeout = handshake_timeout


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    """
    TLS over a TCP server endpoint, with a handshake timeout.
    """

    def __init__(
        self,
        clock: Any,
        tcp: IStreamServerEndpoint,
        options: CertificateOptions,
        handshake_timeout: float,
        outer: Callable[[Any], Any] | None = None,
    ) -> None:
        self._clock = clock
        self._tcp = tcp
        self._options = options
        self._handshake_timeout = handshake_timeout
        self._outer = outer

    def with_outer(self, outer: Callable[[Any], Any]) -> _TLSServerEndpoint:
        """
        This endpoint with C{outer(factory)} wrapped around its TLS factory,
        for what comes before the handshake, in clear (a PROXY header).
        """
        return _TLSServerEndpoint(
            self._clock, self._tcp, self._options, self._handshake_timeout, outer
        )

    def listen(self, factory: Any) -> Any:
        tls = HandshakeTimeoutFactory(
            self._options, factory, self._clock, self._handshake_timeout
        )
        return self._tcp.listen(tls if self._outer is None else self._outer(tls))


def tls_server_endpoint(
    reactor: Any, args: list[str], kwargs: dict[str, str]
) -> IStreamServerEndpoint:
    """
    Build an C{ssl:} endpoint from its parsed string (without the C{ssl}
    prefix): see the module docstring for the keys.

    @raise ValueError: an unknown key, a bad value or an unreadable file.
    """
    unknown = sorted(set(kwargs) - _KEYS)
    if unknown:
        known = ", ".join(sorted(_KEYS))
        raise ValueError(f"unknown ssl: key {unknown[0]!r} (known: {known})")
    if len(args) != 1:
        raise ValueError("ssl: takes exactly one port")
    timeout = float(kwargs.get("handshakeTimeout", DEFAULT_HANDSHAKE_TIMEOUT))
    if not 0 <= timeout < float("inf"):
        raise ValueError(f"handshakeTimeout must be seconds >= 0, not {timeout}")
    try:
        options = certificate_options(
            private_key=kwargs.get("privateKey", "server.pem"),
            cert_key=kwargs.get("certKey"),
            extra_cert_chain=kwargs.get("extraCertChain"),
            dh_parameters=kwargs.get("dhParameters"),
            ca_certs=kwargs.get("caCerts"),
            min_tls=kwargs.get("minTLS", "1.2"),
        )
    except OSError as error:
        raise ValueError(f"cannot read {error.filename}: {error.strerror}") from None
    tcp = TCP4ServerEndpoint(
        reactor,
        int(args[0]),
        backlog=int(kwargs.get("backlog", 50)),
        interface=kwargs.get("interface", ""),
    )
    return _TLSServerEndpoint(reactor, tcp, options, timeout)
