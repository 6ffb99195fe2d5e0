"""
Settings: one attrs model, built from the command line, the environment
and a config file, and validated before anything binds.

Every option is declared once, in L{OPTIONS}: its config key, its
command-line flag, its C{ECHOPLUS_*} environment variable, its default and
its parser all come from that one table.  Precedence: command line >
environment > config file > defaults.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Mapping, Sequence

import attrs

from echoplus.errors import ConfigError
from echoplus.processors.chain import ProcessorEntry, parse_chain

__all__ = [
    "DEFAULT_ENDPOINT",
    "OPTIONS",
    "ListenerSettings",
    "OptionSpec",
    "Settings",
    "build_settings",
    "check_endpoint",
    "command_line_values",
    "environment_values",
]

DEFAULT_ENDPOINT = "tcp:5000:interface=127.0.0.1"


@attrs.frozen
class ListenerSettings:
    """
    Everything one listener needs: its endpoint, wire format, chain and
    limits.  See the README's option table for what each means.
    """

    endpoint: str = DEFAULT_ENDPOINT
    framing: str = "line"
    delimiter: bytes = b"\n"
    processors: tuple[ProcessorEntry, ...] = (ProcessorEntry("echo"),)
    max_frame: int = 65536
    idle_timeout: float = 300.0
    frame_timeout: float = 30.0
    max_connections: int = 10000
    max_per_peer: int = 0
    max_write_buffer: int = 1048576
    max_inflight: int = 64
    processor_timeout: float = 30.0
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate_limit: float = 0.0
    rate_burst: int = 0


@attrs.frozen
class Settings:
    """
    The whole service: its listeners and the process-wide settings.
    """

    listeners: tuple[ListenerSettings, ...] = (ListenerSettings(),)
    config: str | None = None
    drain_timeout: float = 10.0
    metrics: str | None = None
    workers: int = 1
    log_format: str = "text"


# Parsers: each takes a string (command line, environment) or a TOML value
# and returns the setting's value, or raises ValueError saying why not.


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
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


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number of seconds, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number of seconds, not {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"must be a finite number of seconds >= 0, not {value!r}")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\"}


def _delimiter(value: Any) -> bytes:
    """
    Parse a delimiter, with the escapes C{\\n \\r \\t \\0 \\\\ \\xHH}.
    """
    text = _text(value)

    def unescape(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape.startswith("x"):
            return chr(int(escape[1:], 16))
        return _ESCAPES[escape]

    try:
        result = re.sub(r"\\(x[0-9a-fA-F]{2}|[nrt0\\])", unescape, text)
        return result.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"must be bytes or ASCII escapes, not {value!r}") from None


def _framing(value: Any) -> str:
    from echoplus.protocols import find_framing

    name = _text(value)
    try:
        find_framing(name)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return name


def _processors(value: Any) -> tuple[ProcessorEntry, ...]:
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
        return ProcessorEntry(_text(item))
    if isinstance(item, Mapping) and isinstance(item.get("name"), str):
        options = {key: value for key, value in item.items() if key != "name"}
        return ProcessorEntry(item["name"], options)
    raise ValueError(f"a processor is a name or a table with a name, not {item!r}")


def _networks(value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"must be a list of networks, not {value!r}")
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 or IPv6 network") from None
    return tuple(networks)


def _endpoints(value: Any) -> tuple[str, ...]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"must be one or more endpoint strings, not {value!r}")
    return tuple(check_endpoint(_text(item)) for item in items)


def check_endpoint(description: str) -> str:
    """
    Parse a server endpoint string with Twisted's own parser, without
    listening, and return it unchanged.

    @raise ValueError: it is malformed; the message quotes it.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(_NOT_A_REACTOR, description)
    except Exception as error:  # endpoint plugins raise anything at all
        reason = str(error) or type(error).__name__
        raise ValueError(f"bad endpoint {description!r}: {reason}") from None
    return description


# Parsing an endpoint string only records the reactor; nothing is called
# on it until the endpoint listens.
_NOT_A_REACTOR = object()


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return parse


def _optional_text(value: Any) -> str | None:
    return None if value in ("", None) else _text(value)


@attrs.frozen
class OptionSpec:
    """
    One option: config key C{key}, command-line flag C{--flag}, environment
    variable C{ECHOPLUS_<KEY>}.
    """

    key: str
    parse: Callable[[Any], Any] = attrs.field(repr=False)
    help: str
    per_listener: bool = True
    repeatable: bool = False
    flag: str = ""
    metavar: str = "VALUE"

    @property
    def option_name(self) -> str:
        """
        The long command-line option, without its dashes.
        """
        return self.flag or self.key.replace("_", "-")

    @property
    def environment_variable(self) -> str:
        return "ECHOPLUS_" + self.key.upper()


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "listen",
        _endpoints,
        f"a Twisted server endpoint string (repeatable) [default: {DEFAULT_ENDPOINT}]",
        per_listener=False,
        repeatable=True,
        metavar="ENDPOINT",
    ),
    OptionSpec(
        "framing",
        _framing,
        "wire format: line, netstring, int8, int16, "
        "int32, raw, or module:Class [default: line]",
        metavar="NAME",
    ),
    OptionSpec(
        "delimiter",
        _delimiter,
        "line delimiter; escapes \\n \\r \\t \\0 \\xHH allowed [default: \\n]",
        metavar="TEXT",
    ),
    OptionSpec(
        "processors",
        _processors,
        "comma-separated processor chain; "
        "options in parentheses, e.g. prefix(text=>> ),upper "
        "[default: echo]",
        flag="processor",
        metavar="NAMES",
    ),
    OptionSpec(
        "config", _optional_text, "TOML config file", per_listener=False, metavar="FILE"
    ),
    OptionSpec(
        "max_frame",
        _integer(1, 2**31 - 1),
        "largest frame accepted, in bytes [default: 65536]",
        metavar="BYTES",
    ),
    OptionSpec(
        "idle_timeout",
        _seconds,
        "close a connection idle this long; 0 = never [default: 300]",
        metavar="SECONDS",
    ),
    OptionSpec(
        "frame_timeout",
        _seconds,
        "a started frame must complete within this; 0 = never [default: 30]",
        metavar="SECONDS",
    ),
    OptionSpec(
        "max_connections",
        _integer(0),
        "connections per listener; 0 = unlimited [default: 10000]",
        metavar="N",
    ),
    OptionSpec(
        "max_per_peer",
        _integer(0),
        "connections per client host; 0 = unlimited [default: 0]",
        metavar="N",
    ),
    OptionSpec(
        "max_write_buffer",
        _integer(1),
        "unsent output a connection may hold before it is closed [default: 1048576]",
        metavar="BYTES",
    ),
    OptionSpec(
        "max_inflight",
        _integer(1),
        "requests in progress per connection before reading pauses [default: 64]",
        metavar="N",
    ),
    OptionSpec(
        "processor_timeout",
        _seconds,
        "a reply not ready within this is ERROR timeout; 0 = never [default: 30]",
        metavar="SECONDS",
    ),
    OptionSpec(
        "allow",
        _networks,
        "accept only these client networks (repeatable)",
        repeatable=True,
        metavar="CIDR",
    ),
    OptionSpec(
        "deny",
        _networks,
        "refuse these client networks (repeatable)",
        repeatable=True,
        metavar="CIDR",
    ),
    OptionSpec(
        "rate_limit",
        _seconds,
        "frames per second per connection; 0 = unlimited [default: 0]",
        metavar="FPS",
    ),
    OptionSpec(
        "rate_burst",
        _integer(0),
        "frames a connection may send at once above the rate [default: the rate]",
        metavar="N",
    ),
    OptionSpec(
        "drain_timeout",
        _seconds,
        "on SIGTERM, how long in-flight work may finish [default: 10]",
        per_listener=False,
        metavar="SECONDS",
    ),
    OptionSpec(
        "metrics",
        _optional_text,
        "HTTP endpoint serving /metrics and /healthz [default: off]",
        per_listener=False,
        metavar="ENDPOINT",
    ),
    OptionSpec(
        "workers",
        _integer(1, 256),
        "worker processes sharing the listeners [default: 1]",
        per_listener=False,
        metavar="N",
    ),
    OptionSpec(
        "log_format",
        _choice("text", "json"),
        "log lines as text or JSON [default: text]",
        per_listener=False,
        metavar="FORMAT",
    ),
)

_SPECS = {spec.key: spec for spec in OPTIONS}


@attrs.frozen
class _Value:
    """
    A raw value and where it came from.
    """

    raw: Any
    source: str


def environment_values(environ: Mapping[str, str]) -> dict[str, _Value]:
    """
    The options set through C{ECHOPLUS_*} environment variables.
    """
    return {
        spec.key: _Value(environ[spec.environment_variable], spec.environment_variable)
        for spec in OPTIONS
        if environ.get(spec.environment_variable, "") != ""
    }


def command_line_values(options: Mapping[str, Any]) -> dict[str, _Value]:
    """
    The options given on the command line (those not left at C{None} or
    empty).
    """
    values = {}
    for spec in OPTIONS:
        value = options.get(spec.option_name)
        if value is None or (spec.repeatable and not value):
            continue
        values[spec.key] = _Value(value, "--" + spec.option_name)
    return values


def build_settings(layers: Sequence[Mapping[str, _Value]]) -> Settings:
    """
    Merge option layers, lowest precedence first, and validate the result.

    @raise ConfigError: one line per fault, each naming the option and
        where its value came from.
    """
    merged: dict[str, _Value] = {}
    for layer in layers:
        merged.update(layer)
    errors: list[str] = []
    parsed: dict[str, Any] = {}
    for key, value in merged.items():
        spec = _SPECS[key]
        try:
            parsed[key] = spec.parse(value.raw)
        except ValueError as error:
            errors.append(f"{spec.key} (from {value.source}): {error}")
    if errors:
        raise ConfigError("\n".join(errors))
    listener_fields = {
        key: value for key, value in parsed.items() if _SPECS[key].per_listener
    }
    endpoints = parsed.pop("listen", (DEFAULT_ENDPOINT,))
    listeners = tuple(
        ListenerSettings(endpoint=endpoint, **listener_fields) for endpoint in endpoints
    )
    service_fields = {
        key: value
        for key, value in parsed.items()
        if not _SPECS[key].per_listener and key in attrs.fields_dict(Settings)
    }
    return Settings(listeners=listeners, **service_fields)
