"""
Option value parsers: each takes a string (from the command line or the
environment) or a TOML value, and returns the setting's value or raises
L{ValueError} with a short reason that names the bad value.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Mapping

from echoplus.errors import ConfigError
from echoplus.processors.chain import ProcessorEntry, parse_chain

__all__ = [
    "broker",
    "check_endpoint",
    "choice",
    "delimiter",
    "endpoints",
    "framing",
    "integer",
    "networks",
    "optional_text",
    "positive_seconds",
    "prefix",
    "processors",
    "seconds",
    "text",
]


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f"must be a whole number, not {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a whole number, not {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"from {minimum} to {maximum}" if maximum else f"at least {minimum}"
            raise ValueError(f"must be {bound}, not {number}")
        return number

    return parse


def seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number of seconds, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number of seconds, not {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"must be a finite number of seconds >= 0, not {value!r}")
    return number


def positive_seconds(value: Any) -> float:
    number = seconds(value)
    if number <= 0:
        raise ValueError(f"must be a number of seconds > 0, not {value!r}")
    return number


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\"}


def delimiter(value: Any) -> bytes:
    """
    Parse a delimiter, with the escapes C{\\n \\r \\t \\0 \\\\ \\xHH}.
    """
    escaped = text(value)

    def unescape(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape.startswith("x"):
            return chr(int(escape[1:], 16))
        return _ESCAPES[escape]

    try:
        result = re.sub(r"\\(x[0-9a-fA-F]{2}|[nrt0\\])", unescape, escaped)
        return result.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"must be bytes or ASCII escapes, not {value!r}") from None


def framing(value: Any) -> str:
    from echoplus.protocols import find_framing

    name = text(value)
    try:
        find_framing(name)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return name


def processors(value: Any) -> tuple[ProcessorEntry, ...]:
    """
    Parse a chain: the command-line syntax as a string, or a TOML list of
    names and C{{name = "...", <options>}} tables.
    """
    from echoplus.processors.chain import ProcessorChain

    if isinstance(value, str):
        try:
            entries = parse_chain(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None
    elif isinstance(value, (list, tuple)) and value:
        entries = tuple(_processor_entry(item) for item in value)
    else:
        raise ValueError(f"must be a processor chain, not {value!r}")
    try:
        ProcessorChain(entries)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return entries


def _processor_entry(item: Any) -> ProcessorEntry:
    if isinstance(item, ProcessorEntry):
        return item
    if isinstance(item, str):
        return ProcessorEntry(text(item))
    if isinstance(item, Mapping) and isinstance(item.get("name"), str):
        options = {key: value for key, value in item.items() if key != "name"}
        return ProcessorEntry(item["name"], options)
    raise ValueError(f"a processor is a name or a table with a name, not {item!r}")


def networks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of networks, not {value!r}")
    items = [
        part
        for item in value
        for part in (
            item.replace(",", " ").split() if isinstance(item, str) else [item]
        )
    ]
    parsed = []
    for item in items:
        try:
            parsed.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 network") from None
    return tuple(parsed)


def endpoints(value: Any) -> tuple[str, ...]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"must be one or more endpoint strings, not {value!r}")
    return tuple(check_endpoint(text(item)) for item in items)


def check_endpoint(description: str) -> str:
    """
    Parse a server endpoint string as the listeners will (Twisted's parser
    behind L{echoplus.endpoints.server_from_string}), without listening,
    and return it unchanged.

    @raise ValueError: it is malformed; the message quotes it.
    """
    from echoplus.endpoints import server_from_string

    try:
        server_from_string(_NOT_A_REACTOR, description)
    except Exception as error:  # endpoint plugins raise anything at all
        reason = str(error) or type(error).__name__
        raise ValueError(f"bad endpoint {description!r}: {reason}") from None
    return description


# Parsing an endpoint string only records the reactor; nothing is called
# on it until the endpoint listens.
_NOT_A_REACTOR = object()


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return parse


def broker(value: Any) -> str:
    """
    A C{--broker} value: C{memory}, C{redis://...}, C{rediss://...} or
    C{unix:///path}; checked here, connected to at start.
    """
    from echoplus.cluster.url import parse_broker_url

    parse_broker_url(text(value))
    return str(value).strip()


def prefix(value: Any) -> str:
    """
    A Redis key prefix: letters, digits and C{_ . -}.
    """
    name = text(value)
    if not all(c.isascii() and (c.isalnum() or c in "_.-") for c in name):
        raise ValueError(f"must be letters, digits, '_', '.' or '-', not {name!r}")
    return name


def optional_text(value: Any) -> str | None:
    return None if value in ("", None) else text(value)
