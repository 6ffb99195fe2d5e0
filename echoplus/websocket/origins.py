"""
The origin policy of WebSocket listeners, the defence against cross-site
WebSocket hijacking.

A browser lets any page open a WebSocket to any server, and sends the
page's cookies and credentials along; what it cannot fake is the
C{Origin} header, the page's C{scheme://host[:port]}.  A listener accepts:

  - with C{--ws-origins} set: exactly those origins (C{*}: any);
  - without it (the default): a request whose C{Origin} names the host the
    request was sent to (its C{Host} header), and a request without any
    C{Origin} (a non-browser client, which has no cookies to abuse).
"""

from __future__ import annotations

__all__ = ["origin_allowed"]

_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...]
) -> bool:
    """
    Whether a handshake with this C{Origin} and C{Host} header may go on.

    @param origin: the C{Origin} header, or L{None} when absent.
    @param host: the C{Host} header, or L{None} when absent.
    @param allowed: the listener's C{--ws-origins} (lower case); empty for
        the same-host default.
    """
    if allowed:
        return "*" in allowed or (origin is not None and origin.lower() in allowed)
    if origin is None:
        return True
    if host is None:
        return False
    scheme, separator, authority = origin.lower().partition("://")
    if not separator:
        return False  # "null" (a file: page, a sandboxed frame) and the like
    return _authority(authority, scheme) == _authority(host.lower(), scheme)


def _authority(authority: str, scheme: str) -> str:
    """
    C{host[:port]} without the scheme's default port.
    """
    host, colon, port = authority.rpartition(":")
    if colon and port == _DEFAULT_PORTS.get(scheme) and not host.endswith(":"):
        return host
    return authority
