"""
C{echoplus check [CONFIG]}: validate a configuration the way C{twistd -n
echoplus --config CONFIG} would (the file, then C{ECHOPLUS_*} variables
over it; without CONFIG, the environment alone) and print the effective
settings, each value with its source.
"""

from __future__ import annotations

from typing import Any, Mapping, TextIO

import attrs

from echoplus.config import ListenerSettings, Resolved, Settings, resolve
from echoplus.errors import ConfigError
from echoplus.processors.chain import ProcessorEntry

__all__ = [
    "add_check_command",
    "describe",
    "format_value",
    "options_table",
    "run_check",
]


def format_value(value: Any) -> str:
    """
    A setting's value as an operator would write it.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, bytes):
        return value.decode("latin-1").encode("unicode_escape").decode("ascii")
    if isinstance(value, ProcessorEntry):
        return str(value)
    if isinstance(value, tuple):
        return ",".join(format_value(item) for item in value) or "(none)"
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(resolved: Resolved) -> list[str]:
    """
    The lines that show every effective value and where it came from.
    """
    settings = resolved.settings
    lines = ["service:"]
    lines += _rows(settings, Settings, resolved.service_sources, {"listeners"})
    for number, (listener, sources) in enumerate(
        zip(settings.listeners, resolved.listener_sources, strict=True), 1
    ):
        lines.append(f"listener {number}: {listener.endpoint}")
        lines += _rows(listener, ListenerSettings, sources, set())
    return lines


def _rows(
    values: Any, cls: type, sources: Mapping[str, str], skip: set[str]
) -> list[str]:
    rows = []
    for field in attrs.fields(cls):
        if field.name in skip:
            continue
        value = format_value(getattr(values, field.name))
        source = sources.get(field.name, "default")
        rows.append(f"  {field.name:<18} {value:<32} {source}")
    return rows


#: How C{echoplus check} names the source of the file it is given.
ARGUMENT_SOURCE = "CONFIG argument"


def run_check(
    path: str | None, environ: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """
    Check the config file at C{path} under C{environ}; print the effective
    configuration to C{out}, or one C{echoplus: error: ...} line per fault
    to C{err}.

    @param path: the file; C{None} checks what twistd would run without
        C{--config}: the environment (which may name a file in
        C{ECHOPLUS_CONFIG}) over the defaults.
    @return: the exit status: 0 when valid, 1 when not.
    """
    options = {} if path is None else {"config": path}
    name = path or environ.get("ECHOPLUS_CONFIG") or "environment and defaults"
    try:
        resolved = resolve(options, environ, {"config": ARGUMENT_SOURCE})
    except ConfigError as error:
        for line in str(error).splitlines():
            err.write(f"echoplus: error: {line}\n")
        err.write(f"echoplus: {name}: invalid configuration\n")
        return 1
    for warning in resolved.warnings:
        err.write(f"echoplus: warning: {warning}\n")
    out.write(f"{name}: valid\n")
    for line in describe(resolved):
        out.write(line + "\n")
    return 0


def add_check_command(commands: Any) -> None:
    """
    Add C{check [CONFIG]} to the C{echoplus} command's subparsers.
    """
    parser = commands.add_parser(
        "check",
        help="validate a config file and print the effective configuration",
        description=(
            "Validate CONFIG as twistd -n echoplus --config CONFIG would, with "
            "the ECHOPLUS_* environment variables over it, and print every "
            "listener's effective settings and where each value came from.  "
            "Without CONFIG, check the environment alone, as twistd -n "
            "echoplus would run with it.  Exit status 0 only when the "
            "configuration is valid."
        ),
    )
    parser.add_argument(
        "config",
        metavar="CONFIG",
        nargs="?",
        help="the TOML config file [default: none, or ECHOPLUS_CONFIG]",
    )
    parser.set_defaults(run=_run)


def _run(arguments: Any) -> int:
    import os
    import sys

    try:
        return run_check(arguments.config, os.environ, sys.stdout, sys.stderr)
    except BrokenPipeError:  # `echoplus check FILE | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def options_table() -> str:
    """
    The Markdown table of every option (key, flag, environment variable,
    scope, meaning) for docs/configuration.md, generated from
    L{echoplus.config.OPTIONS}.
    """
    from echoplus.config import OPTIONS

    rows = [
        "| key | flag | environment | scope | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in OPTIONS:
        scope = "listener" if spec.per_listener else "service"
        meaning = spec.help.replace("|", "\\|")
        rows.append(
            f"| `{spec.key}` | `--{spec.option_name} {spec.metavar}` | "
            f"`{spec.environment_variable}` | {scope} | {meaning} |"
        )
    return "\n".join(rows)
