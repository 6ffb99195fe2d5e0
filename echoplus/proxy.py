"""
PROXY protocol (v1 and v2) for C{haproxy:} endpoints.

We do not use Twisted's C{HAProxyProtocolWrapper} because:
  - it chooses the header version from the first read and closes the
    connection when that read is shorter than 8 (v1) or 16 (v2) bytes, so
    a header split across TCP segments is refused (twisted/twisted#8287);
  - it connects the wrapped protocol before the header arrives, so
    C{connectionMade} sees the proxy's address instead of the client's,
    and the factory's C{buildProtocol} (connection limits, access control)
    is asked with the proxy's address too;
  - it does not pass half-close on, so a client that shuts down its
    sending side loses the replies it is owed;
  - it waits forever for a header, and lets a v1 header with a lone CR or
    LF, or a bad port number, through to a parser that fails late or raises
    a bare C{ValueError}.

Here the header is framed by L{HeaderReader} (a small sans-IO reader), its
fields are decoded by Twisted's header parsers, and only then is the
listener's protocol built, with the client's address, and connected.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "BadProxyHeader",
    "HeaderReader",
    "ProxyHeaderFactory",
    "ProxyHeaderProtocol",
    "proxy_endpoint",
]

#: Seconds a client of a C{haproxy:} listener has to send a complete header.
DEFAULT_HEADER_TIMEOUT = 5.0

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = V2Parser.PREFIX
#: A v1 header is at most 107 bytes, CRLF included (the PROXY spec, 2.1).
V1_MAX_LENGTH = 107
#: A v2 header: 16 fixed bytes, then as many as its length field says.
V2_FIXED_LENGTH = 16
#: v2 families we accept: UNSPEC, INET, INET6, UNIX (high nibble), each
#: with STREAM or UNSPEC (low nibble).
_V2_FAMILIES = frozenset({0x00, 0x10, 0x11, 0x20, 0x21, 0x30, 0x31})


class BadProxyHeader(Exception):
    """
    The bytes received are not a valid PROXY header.
    """


class HeaderReader:
    """
    Sans-IO reader of one PROXY header, v1 or v2, fed in pieces of any size.

    L{feed} returns C{None} while the header is incomplete, then
    C{(address, rest)}: the client's address (C{None} when the header says
    C{UNKNOWN}/C{LOCAL}: use the connection's own), and the bytes that
    followed the header.  It raises L{BadProxyHeader} as soon as the bytes
    cannot start a valid header; it never buffers more than one header.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[IAddress | None, bytes] | None:
        """
        Add received bytes; see the class docstring.

        @raise BadProxyHeader: the header is malformed.
        """
        buffer = self._buffer = self._buffer + data
        if buffer[:1] == V1_SIGNATURE[:1]:
            return self._feed_v1(buffer)
        return self._feed_v2(buffer)

    def _feed_v1(self, buffer: bytes) -> tuple[IAddress | None, bytes] | None:
        head = buffer[: len(V1_SIGNATURE)]
        if not V1_SIGNATURE.startswith(head):
            raise BadProxyHeader("not a PROXY header")
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        line = buffer[:end] if end >= 0 else buffer[:V1_MAX_LENGTH]
        if b"\n" in line or b"\r" in line.rstrip(b"\r"):
            raise BadProxyHeader("stray CR or LF in a v1 header")
        if b"\r" in line:
            # Only a trailing CR, its LF still to come.
            if len(line) >= V1_MAX_LENGTH:
                raise BadProxyHeader("v1 header too long")
            return None
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise BadProxyHeader("v1 header too long")
            return None
        return _v1_address(line), buffer[end + 2 :]

    def _feed_v2(self, buffer: bytes) -> tuple[IAddress | None, bytes] | None:
        head = buffer[: len(V2_SIGNATURE)]
        if not V2_SIGNATURE.startswith(head):
            raise BadProxyHeader("not a PROXY header")
        if len(buffer) < V2_FIXED_LENGTH:
            return None
        if buffer[12] >> 4 != 2 or buffer[12] & 0x0F > 1:
            raise BadProxyHeader("unknown v2 version or command")
        if buffer[12] & 0x0F == 1 and buffer[13] not in _V2_FAMILIES:
            raise BadProxyHeader("unknown v2 address family or protocol")
        (length,) = struct.unpack("!H", buffer[14:16])
        end = V2_FIXED_LENGTH + length
        if len(buffer) < end:
            return None
        return _v2_address(buffer[:end]), buffer[end:]


def _v1_address(line: bytes) -> IAddress | None:
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        # The rest of an UNKNOWN line is optional and to be ignored; Twisted's
        # parser refuses the short form.
        return None
    try:
        info = V1Parser.parse(line)
    except (InvalidProxyHeader, ValueError, UnicodeDecodeError):
        raise BadProxyHeader("malformed v1 header") from None
    return _checked(info.source)


def _v2_address(header: bytes) -> IAddress | None:
    try:
        info = V2Parser.parse(header)
    except (InvalidProxyHeader, KeyError, ValueError, struct.error):
        raise BadProxyHeader("malformed v2 header") from None
    return _checked(info.source)


def _checked(source: IAddress | None) -> IAddress | None:
    """
    Refuse addresses a well-behaved proxy never sends.
    """
    if source is None or isinstance(source, UNIXAddress):
        return source
    if not isinstance(source, (IPv4Address, IPv6Address)):
        raise BadProxyHeader("unknown address type")
    try:
        ip = ipaddress.ip_address(source.host)
    except ValueError:
        raise BadProxyHeader("bad address") from None
    expected = 4 if isinstance(source, IPv4Address) else 6
    if ip.version != expected or not 0 <= source.port <= 65535:
        raise BadProxyHeader("bad address or port")
    # The usual text form (2001:db8::7, not 2001:db8:0:0:0:0:0:7).
    return type(source)("TCP", str(ip), source.port)


@implementer(IHalfCloseableProtocol)
class ProxyHeaderProtocol(ProtocolWrapper):
    """
    Reads the PROXY header, then builds and connects the listener's
    protocol with the client's address as its peer.

    Until the header is complete no protocol of the listener exists: a
    malformed header, or none within the factory's timeout, closes the
    connection without a byte written.
    """

    _log = Logger()
    wrappedProtocol: IProtocol | None  # type: ignore[assignment]

    def __init__(self, factory: ProxyHeaderFactory, addr: IAddress) -> None:
        super().__init__(factory, None)  # type: ignore[arg-type]
        self._reader: HeaderReader | None = HeaderReader()
        self._source: IAddress | None = None
        self._timer: Any = None

    def makeConnection(self, transport: Any) -> None:
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        timeout = self.factory.timeout
        if timeout:
            self._timer = self.factory.clock.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse("no complete PROXY header in time")

    def _refuse(self, why: str) -> None:
        self._reader = None
        self._log.info(
            "PROXY connection from {peer} refused: {why}",
            peer=self.transport.getPeer(),
            why=why,
        )
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._reader is None:
            if self.wrappedProtocol is not None:
                self.wrappedProtocol.dataReceived(data)
            return
        try:
            outcome = self._reader.feed(data)
        except BadProxyHeader as error:
            self._cancel_timer()
            self._refuse(str(error))
            return
        if outcome is None:
            return
        self._cancel_timer()
        self._reader = None
        self._source, rest = outcome
        self._connect_wrapped(rest)

    def _connect_wrapped(self, rest: bytes) -> None:
        protocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if protocol is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if rest and not self.disconnecting:
            protocol.dataReceived(rest)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def getPeer(self) -> IAddress:
        """
        The client's address from the header, or the connection's own.
        """
        if self._source is not None:
            return self._source
        return self.transport.getPeer()

    def readConnectionLost(self) -> None:
        protocol = self.wrappedProtocol
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        protocol = self.wrappedProtocol
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.writeConnectionLost()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self.factory.unregisterProtocol(self)
        protocol, self.wrappedProtocol = self.wrappedProtocol, None
        if protocol is not None:
            protocol.connectionLost(reason)


class ProxyHeaderFactory(WrappingFactory):
    """
    Wraps a listener's factory: every connection starts with a PROXY header.

    @ivar clock: times the header timeout.
    @ivar timeout: seconds to wait for a complete header; 0 waits forever.
    """

    protocol = ProxyHeaderProtocol  # type: ignore[assignment]

    def __init__(self, wrapped_factory: Any, clock: Any, timeout: float) -> None:
        super().__init__(wrapped_factory)
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: IAddress) -> ProxyHeaderProtocol:  # type: ignore[override]
        return ProxyHeaderProtocol(self, addr)

    def logPrefix(self) -> str:
        return "PROXY"


@implementer(IStreamServerEndpoint)
class _ProxyHeaderEndpoint:
    """
    A server endpoint whose connections start with a PROXY header.
    """

    def __init__(self, clock: Any, wrapped: IStreamServerEndpoint, timeout: float):
        self._clock = clock
        self._wrapped = wrapped
        self._timeout = timeout

    def listen(self, factory: Any) -> Any:
        return self._wrapped.listen(
            ProxyHeaderFactory(factory, self._clock, self._timeout)
        )


def proxy_endpoint(
    clock: Any, wrapped: IStreamServerEndpoint, timeout: str | float | None = None
) -> IStreamServerEndpoint:
    """
    Wrap C{wrapped} so that its connections start with a PROXY header.

    @param clock: an C{IReactorTime} for the header timeout.
    @param timeout: seconds (as the endpoint string's text, or a number) to
        wait for a complete header; L{DEFAULT_HEADER_TIMEOUT} when C{None};
        0 waits forever.
    @raise ValueError: C{timeout} is not a number of seconds >= 0.
    """
    seconds = DEFAULT_HEADER_TIMEOUT if timeout is None else float(timeout)
    if not 0 <= seconds < float("inf"):
        raise ValueError(
            f"headerTimeout must be a number of seconds >= 0, not {timeout}"
        )
    with_outer = getattr(wrapped, "with_outer", None)
    if with_outer is not None:
        # ssl: the header comes first, in clear, then the TLS handshake (as
        # proxies send it); Twisted's haproxy:ssl: expects it inside TLS.
        return with_outer(lambda factory: ProxyHeaderFactory(factory, clock, seconds))
    return _ProxyHeaderEndpoint(clock, wrapped, seconds)
