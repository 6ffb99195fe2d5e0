"""
Settings: one attrs model, built from the command line, the environment
and a config file, and validated before anything binds.

Every option is declared once, in L{OPTIONS} (L{echoplus.options}): its
config key, its command-line flag, its C{ECHOPLUS_*} environment variable,
its default and its parser all come from that one table.  Precedence:
command line > environment > config file > defaults.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs

from echoplus.configfile import read_config_file
from echoplus.errors import ConfigError
from echoplus.options import (
    DEFAULT_ENDPOINT,
    DEFAULT_SOURCE,
    OPTIONS,
    SPECS,
    OptionSpec,
    RawValue,
    did_you_mean,
)
from echoplus.parsers import check_endpoint
from echoplus.parsers import endpoints as _endpoints
from echoplus.parsers import text as _text
from echoplus.processors.chain import ProcessorEntry

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_SOURCE",
    "OPTIONS",
    "ListenerSettings",
    "OptionSpec",
    "Resolved",
    "Settings",
    "build_settings",
    "check_endpoint",
    "command_line_values",
    "did_you_mean",
    "environment_values",
    "environment_warnings",
    "load_settings",
    "resolve",
]


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
    broker: str = "memory"
    broker_prefix: str = "echoplus"
    broker_history: int = 1000
    broker_ttl: float = 30.0


def _numeric_keys() -> frozenset[str]:
    """
    The options whose setting is a number (their default is one).
    """
    defaults = {
        field.name: field.default
        for cls in (ListenerSettings, Settings)
        for field in attrs.fields(cls)
    }
    return frozenset(
        key
        for key, default in defaults.items()
        if isinstance(default, (int, float)) and not isinstance(default, bool)
    )


_NUMERIC = _numeric_keys()


def environment_values(environ: Mapping[str, str]) -> dict[str, RawValue]:
    """
    The options set through C{ECHOPLUS_*} environment variables (empty
    ones count as unset).
    """
    return {
        spec.key: RawValue(
            environ[spec.environment_variable], spec.environment_variable
        )
        for spec in OPTIONS
        if environ.get(spec.environment_variable, "") != ""
    }


def environment_warnings(environ: Mapping[str, str]) -> list[str]:
    """
    One line for each C{ECHOPLUS_*} variable that names no option (a typo
    would otherwise be silently ignored).
    """
    known = {spec.environment_variable for spec in OPTIONS}
    warnings = []
    for name in sorted(environ):
        if name.startswith("ECHOPLUS_") and name not in known:
            keys = [spec.key for spec in OPTIONS]
            close = difflib.get_close_matches(name[9:].lower(), keys, n=1)
            hint = f" (did you mean ECHOPLUS_{close[0].upper()}?)" if close else ""
            warnings.append(f"unknown environment variable {name} ignored{hint}")
    return warnings


def command_line_values(options: Mapping[str, Any]) -> dict[str, RawValue]:
    """
    The options given on the command line (those not left at C{None} or
    empty).
    """
    values = {}
    for spec in OPTIONS:
        value = options.get(spec.option_name)
        if value is None or (spec.repeatable and not value):
            continue
        values[spec.key] = RawValue(value, "--" + spec.option_name)
    return values


@attrs.frozen
class Resolved:
    """
    Valid settings and where each of their values came from.

    @ivar settings: the L{Settings}.
    @ivar listener_sources: for each listener, its option keys (and
        C{endpoint}) mapped to their sources: C{default}, C{FILE:LINE},
        C{ECHOPLUS_X} or C{--flag}.
    @ivar service_sources: the same for the process-wide options.
    @ivar warnings: problems that do not stop the launch.
    """

    settings: Settings
    listener_sources: tuple[Mapping[str, str], ...]
    service_sources: Mapping[str, str]
    warnings: tuple[str, ...] = ()


def resolve(options: Mapping[str, Any], environ: Mapping[str, str]) -> Resolved:
    """
    Build and validate the settings from parsed command-line options, the
    environment and the config file they name (C{--config} or
    C{ECHOPLUS_CONFIG}).

    Precedence, per option: command line > environment > the file's
    C{[[listen]]} table > the file's top level > default.  C{--listen} or
    C{ECHOPLUS_LISTEN} replace the file's listeners.

    @raise ConfigError: one line per fault, each naming the option and
        where its value came from.
    """
    upper = {**environment_values(environ), **command_line_values(options)}
    warnings = environment_warnings(environ)
    config = upper.get("config")
    path = config.raw if config is not None else None
    if isinstance(path, str) and path:
        return _combine(read_config_file(path, config.source), upper, warnings)
    return _combine(None, upper, warnings)


def load_settings(options: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """
    L{resolve}, for callers that only need the settings.

    @raise ConfigError: the configuration is invalid.
    """
    return resolve(options, environ).settings


def build_settings(layers: Sequence[Mapping[str, RawValue]]) -> Settings:
    """
    Merge option layers, lowest precedence first, and validate the result
    (no config file is read).

    @raise ConfigError: one line per fault, each naming the option and
        where its value came from.
    """
    merged: dict[str, RawValue] = {}
    for layer in layers:
        merged.update(layer)
    return _combine(None, merged, []).settings


class _Parser:
    """
    Parses raw values once each, collecting one error line per bad value.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self._done: dict[int, Any] = {}

    def parse(self, key: str, value: RawValue, parse: Callable[[Any], Any]) -> Any:
        """
        The parsed value, or L{_INVALID} after recording the error.
        """
        if id(value) not in self._done:
            try:
                if value.typed and isinstance(value.raw, str) and key in _NUMERIC:
                    raise ValueError(
                        f"must be a TOML number, not the string {value.raw!r}"
                    )
                self._done[id(value)] = parse(value.raw)
            except ValueError as error:
                self.errors.append(f"{key} (from {value.source}): {error}")
                self._done[id(value)] = _INVALID
        return self._done[id(value)]


_INVALID = object()


def _combine(file: Any, upper: Mapping[str, RawValue], warnings: list[str]) -> Resolved:
    """
    Combine a L{echoplus.configfile.ConfigFile} (or C{None}) with the
    environment and command-line values C{upper} into L{Resolved}.
    """
    errors: list[str] = list(file.errors) if file is not None else []
    parser = _Parser(errors)
    top: dict[str, RawValue] = dict(file.top) if file is not None else {}
    top.update(upper)
    service: dict[str, Any] = {}
    service_sources: dict[str, str] = {}
    for key, value in top.items():
        spec = SPECS[key]
        if not spec.per_listener and key != "listen":
            service[key] = parser.parse(key, value, spec.parse)
            service_sources[key] = value.source
    defaults = {key: value for key, value in top.items() if SPECS[key].per_listener}
    for key, value in defaults.items():  # report bad values even if overridden
        parser.parse(key, value, SPECS[key].parse)
    overrides = {key: value for key, value in upper.items() if SPECS[key].per_listener}
    listeners: list[dict[str, Any]] = []
    listener_sources: list[dict[str, str]] = []
    for table in _listener_tables(file, upper, parser):
        fields, sources = _listener_values({**defaults, **table, **overrides}, parser)
        listeners.append(fields)
        listener_sources.append(sources)
    _check_unique_endpoints(listeners, listener_sources, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    settings = Settings(
        listeners=tuple(_listener(fields) for fields in listeners),
        **_only_fields(Settings, service),
    )
    return Resolved(
        settings,
        tuple(_with_defaults(ListenerSettings, s) for s in listener_sources),
        _with_defaults(Settings, service_sources, exclude={"listeners"}),
        tuple(warnings),
    )


def _listener_values(
    values: Mapping[str, RawValue], parser: _Parser
) -> tuple[dict[str, Any], dict[str, str]]:
    """
    One listener's parsed values and their sources.
    """
    fields: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in values.items():
        check = _endpoint if key == "endpoint" else SPECS[key].parse
        fields[key] = parser.parse(key, value, check)
        sources[key] = value.source
    return fields, sources


def _endpoint(value: Any) -> str:
    return check_endpoint(_text(value))


def _listener_tables(
    file: Any, upper: Mapping[str, RawValue], parser: _Parser
) -> list[Mapping[str, RawValue]]:
    """
    The listeners' own values: one table per C{--listen} / C{ECHOPLUS_LISTEN}
    endpoint if given, else the file's C{[[listen]]} tables, else the
    default endpoint.
    """
    if "listen" in upper:
        value = upper["listen"]
        endpoints = parser.parse("listen", value, _endpoints)
        if endpoints is _INVALID:
            return []
        return [
            {"endpoint": RawValue(endpoint, value.source)} for endpoint in endpoints
        ]
    if file is not None and file.listeners is not None:
        return list(file.listeners)
    return [{"endpoint": RawValue(DEFAULT_ENDPOINT, DEFAULT_SOURCE)}]


def _check_unique_endpoints(
    listeners: list[dict[str, Any]],
    sources: list[dict[str, str]],
    errors: list[str],
) -> None:
    seen: set[Any] = set()
    for fields, where in zip(listeners, sources, strict=True):
        endpoint = fields.get("endpoint")
        if endpoint is _INVALID:
            continue
        if endpoint in seen:
            errors.append(
                f"endpoint (from {where['endpoint']}): {endpoint!r} is listed twice"
            )
        seen.add(endpoint)


def _only_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = attrs.fields_dict(cls)
    return {key: value for key, value in values.items() if key in names}


def _listener(fields: Mapping[str, Any]) -> ListenerSettings:
    return ListenerSettings(**_only_fields(ListenerSettings, fields))


def _with_defaults(
    cls: type, sources: Mapping[str, str], exclude: Iterable[str] = ()
) -> dict[str, str]:
    skip = set(exclude)
    every = {
        name: DEFAULT_SOURCE for name in attrs.fields_dict(cls) if name not in skip
    }
    every.update(sources)
    return every
