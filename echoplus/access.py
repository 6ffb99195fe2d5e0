"""
Access control: which client addresses a listener accepts
(C{--allow CIDR} / C{--deny CIDR}).

The rule, checked once per connection on the real client address (what
C{transport.getPeer()} reports in C{connectionMade}, which behind
C{haproxy:} is the address from the PROXY header):

  - an address in any C{deny} network is refused (deny wins);
  - otherwise, if C{allow} is empty every address is accepted, else only
    addresses in an C{allow} network are;
  - an IPv4-mapped IPv6 address (C{::ffff:192.0.2.1}, what a dual-stack
    socket reports for an IPv4 client) is matched as the IPv4 address;
  - peers without an IP address (UNIX sockets) are accepted: their access
    is governed by the socket file's permissions (C{mode=} in the endpoint).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

import attrs

__all__ = ["AccessPolicy", "peer_ip"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_networks(networks: Iterable[str]) -> tuple[_Network, ...]:
    # strict: 10.0.0.1/8 (host bits set) is a ValueError, as in the options
    return tuple(ipaddress.ip_network(network, strict=True) for network in networks)


def peer_ip(peer: object) -> _Address | None:
    """
    The IP address of a Twisted peer address, or C{None} for a peer that
    has none (a UNIX socket peer, an unknown address type).

    An IPv6 zone (C{fe80::1%eth0}) is dropped; an IPv4-mapped IPv6 address
    becomes its IPv4 address.
    """
    host = getattr(peer, "host", None)
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@attrs.frozen
class AccessPolicy:
    """
    The C{--allow} and C{--deny} networks of one listener.

    @ivar allow: accept only these networks; empty accepts every address.
    @ivar deny: refuse these networks, whatever C{allow} says.
    """

    allow: tuple[_Network, ...] = attrs.field(converter=_parse_networks, default=())
    deny: tuple[_Network, ...] = attrs.field(converter=_parse_networks, default=())

    @property
    def open(self) -> bool:
        """
        Whether this policy accepts every client (no networks configured).
        """
        return not self.allow and not self.deny

    def permits(self, peer: object) -> bool:
        """
        Whether a client at C{peer} (a Twisted address) may connect.
        """
        if not self.allow and not self.deny:
            return True
        address = peer_ip(peer)
        if address is None:
            return True
        if any(address in network for network in self.deny):
            return False
        if not self.allow:
            return True
        return any(address in network for network in self.allow)
