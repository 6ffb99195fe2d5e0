"""
Endpoint strings: Twisted's server endpoint syntax with safer defaults and
the few extensions echoplus needs.

Every listener's endpoint string goes through L{server_from_string}, which
changes what Twisted would do in these ways only:

  - C{tcp:}, C{tcp6:}, C{ssl:} and C{unix:} listen with a backlog of
    L{DEFAULT_BACKLOG} (Twisted's default is 50, too small for a burst of
    connections); a C{backlog=} in the string still wins.
  - C{unix:} socket files are created with mode L{DEFAULT_UNIX_MODE}
    (C{0660}: owner and group only) unless the string has C{mode=};
    Twisted's default, C{0666}, lets every local user connect.
  - C{ssl:} is built by L{echoplus.tls}: Twisted's keys plus C{caCerts=}
    (require client certificates signed by these CAs), C{minTLS=} and
    C{handshakeTimeout=}.
  - C{haproxy:} is served by L{echoplus.proxy} instead of Twisted's
    wrapper, which drops headers split across reads (twisted/twisted#8287);
    it takes C{headerTimeout=} and wraps any of the above.

  - C{systemd:} is built by L{echoplus.systemd}: Twisted's keys, but
    sockets passed without names (no C{LISTEN_FDNAMES}) are accepted too.

Everything else (endpoint plugins) goes to Twisted's C{serverFromString}
unchanged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure

from echoplus.errors import ConfigError

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_UNIX_MODE",
    "listen_now",
    "parse_description",
    "server_from_string",
    "unparse_description",
    "with_defaults",
]

#: The listen backlog used unless the endpoint string gives C{backlog=}.
DEFAULT_BACKLOG = 1024

#: The mode (octal, as in the endpoint string) of UNIX socket files created
#: without C{mode=}.
DEFAULT_UNIX_MODE = "660"

_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def parse_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint string the way Twisted does: C{:} separates
    arguments, the first C{=} of an argument makes it a keyword, and a
    backslash escapes the next character.

    @return: the positional arguments (the endpoint type first) and the
        keyword arguments, unescaped.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    parts: list[str] = []
    current: list[str] = []
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            parts.append("".join(current))
            _add(args, kwargs, parts)
            parts, current = [], []
        elif character == "=" and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    _add(args, kwargs, parts)
    return args, kwargs


def _add(args: list[str], kwargs: dict[str, str], parts: list[str]) -> None:
    if len(parts) == 1:
        args.append(parts[0])
    else:
        kwargs[parts[0]] = parts[1]


def unparse_description(args: list[str], kwargs: dict[str, str]) -> str:
    """
    The inverse of L{parse_description}: an endpoint string that parses
    back to C{args} and C{kwargs}.
    """
    positional = [quoteStringArgument(arg).replace("=", "\\=") for arg in args]
    keywords = [
        f"{quoteStringArgument(key)}={quoteStringArgument(value)}"
        for key, value in kwargs.items()
    ]
    return ":".join(positional + keywords)


def with_defaults(description: str) -> str:
    """
    Add echoplus's defaults (backlog, UNIX socket mode) to an endpoint
    string that does not set them, inside C{haproxy:} too.  Strings of
    other types come back unchanged.
    """
    args, kwargs = parse_description(description)
    kind = args[0].lower() if args else ""
    if kind == "haproxy":
        inner = with_defaults(unparse_description(args[1:], kwargs))
        return "haproxy:" + inner
    if kind not in _BACKLOG_TYPES:
        return description
    changed = dict(kwargs)
    changed.setdefault("backlog", str(DEFAULT_BACKLOG))
    if kind == "unix":
        changed.setdefault("mode", DEFAULT_UNIX_MODE)
    if changed == kwargs:
        return description
    return unparse_description(args, changed)


def server_from_string(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    Build the server endpoint for C{description}, as
    C{twisted.internet.endpoints.serverFromString} would, with echoplus's
    defaults and extensions (see the module docstring).  Nothing is called
    on C{reactor} until the endpoint listens.

    @raise ValueError: (or another exception from an endpoint plugin) the
        string is malformed or names files that cannot be loaded.
    """
    args, kwargs = parse_description(with_defaults(description))
    kind = args[0].lower() if args else ""
    if kind == "haproxy":
        from echoplus.proxy import proxy_endpoint

        timeout = kwargs.pop("headerTimeout", None)
        inner = server_from_string(reactor, unparse_description(args[1:], kwargs))
        return proxy_endpoint(reactor, inner, timeout)
    if kind == "ssl":
        from echoplus.tls import tls_server_endpoint

        return tls_server_endpoint(reactor, args[1:], kwargs)
    if kind == "systemd":
        from echoplus.systemd import systemd_server_endpoint

        return systemd_server_endpoint(reactor, args[1:], kwargs)
    return serverFromString(reactor, with_defaults(description))


def listen_now(
    endpoint: IStreamServerEndpoint, factory: Any, what: str
) -> IListeningPort:
    """
    Listen on C{endpoint} with C{factory} and return the listening port.
    Endpoints that bind a socket (or adopt one) answer at once, so a
    failure is known before anything else happens.

    @param what: the start of the error message, such as C{"cannot listen
        on tcp:5000"}.
    @raise ConfigError: C{"<what>: <reason>"}, the reason without Twisted's
        wrapping (C{Address already in use}).
    """
    outcome: list[Any] = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise ConfigError(f"{what}: no answer")
    if isinstance(outcome[0], Failure):
        raise ConfigError(f"{what}: {_describe(outcome[0].value)}")
    port: IListeningPort = outcome[0]
    return port


def _describe(error: BaseException) -> str:
    """
    The useful part of a bind error, without Twisted's wrapping.
    """
    socket_error = getattr(error, "socketError", None)
    if socket_error is not None:
        return getattr(socket_error, "strerror", None) or str(socket_error)
    return str(error) or type(error).__name__
