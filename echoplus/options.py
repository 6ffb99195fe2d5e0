"""
The option table: every option declared once, with its config key,
command-line flag, C{ECHOPLUS_*} environment variable, help and parser; and
the raw value of an option before it is parsed, remembering its source.

This is what L{echoplus.config} (which resolves and validates the layers)
and L{echoplus.configfile} (which reads the TOML file) share; it imports
neither.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable, Mapping

import attrs

from echoplus.parsers import broker as _broker
from echoplus.parsers import choice as _choice
from echoplus.parsers import delimiter as _delimiter
from echoplus.parsers import endpoints as _endpoints
from echoplus.parsers import framing as _framing
from echoplus.parsers import integer as _integer
from echoplus.parsers import networks as _networks
from echoplus.parsers import optional_text as _optional_text
from echoplus.parsers import positive_seconds as _positive_seconds
from echoplus.parsers import prefix as _prefix
from echoplus.parsers import processors as _processors
from echoplus.parsers import seconds as _seconds

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_SOURCE",
    "OPTIONS",
    "SPECS",
    "OptionSpec",
    "RawValue",
    "did_you_mean",
]

DEFAULT_ENDPOINT = "tcp:5000:interface=127.0.0.1"

#: Where a value comes from when nothing sets it.
DEFAULT_SOURCE = "default"


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
        """
        The environment variable that sets this option.
        """
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
        "broker",
        _broker,
        "where topics are shared: memory (this process), "
        "redis://[:password@]host[:port][/db], rediss://... (TLS) or "
        "unix:///path/redis.sock [default: memory]",
        per_listener=False,
        metavar="URL",
    ),
    OptionSpec(
        "broker_prefix",
        _prefix,
        "Redis key prefix, so several deployments can share one Redis "
        "[default: echoplus]",
        per_listener=False,
        metavar="NAME",
    ),
    OptionSpec(
        "broker_history",
        _integer(0, 10_000_000),
        "per-topic frames kept for a node that reconnects [default: 1000]",
        per_listener=False,
        metavar="N",
    ),
    OptionSpec(
        "broker_ttl",
        _positive_seconds,
        "seconds a node that stopped heart-beating still counts [default: 30]",
        per_listener=False,
        metavar="SECONDS",
    ),
    OptionSpec(
        "log_format",
        _choice("text", "json"),
        "log lines as text or JSON [default: text]",
        per_listener=False,
        metavar="FORMAT",
    ),
)


#: The options by config key.
SPECS: Mapping[str, OptionSpec] = {spec.key: spec for spec in OPTIONS}


@attrs.frozen
class RawValue:
    """
    A raw value and where it came from: C{--flag}, C{ECHOPLUS_X}, or
    C{file:LINE}.

    @ivar typed: the value has its own type (TOML), so a string where a
        number belongs is a mistake; the environment and the command line
        give every value as a string.
    """

    raw: Any
    source: str
    typed: bool = False


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """
    C{" (did you mean 'x'?)"} for the candidate closest to C{name}, or
    C{""} when none is close.
    """
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
