"""
Reading the TOML config file into raw option values that remember where
they came from (C{FILE:LINE}), and reporting what is wrong with its
structure: syntax errors, unknown keys, misplaced keys.

The values themselves are parsed and validated by L{echoplus.config},
with those from the environment and the command line; the option table is
L{echoplus.options}.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Mapping

import attrs

from echoplus.options import SPECS, RawValue, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigFile", "parse_config_text", "read_config_file"]


@attrs.frozen
class ConfigFile:
    """
    A config file, read but not yet validated.

    @ivar path: the file's path as given.
    @ivar top: top-level option values, by key.
    @ivar listeners: one mapping per C{[[listen]]} table (C{endpoint} and
        per-listener overrides), or C{None} when the file names no
        listeners.
    @ivar errors: one line per structural fault.
    """

    path: str
    top: Mapping[str, RawValue]
    listeners: tuple[Mapping[str, RawValue], ...] | None
    errors: tuple[str, ...]


def read_config_file(path: str, source: str = "--config") -> ConfigFile:
    """
    Read and parse the TOML file at C{path}; C{source} says who named it.
    A file that cannot be read or parsed gives a L{ConfigFile} whose only
    content is that error.
    """
    try:
        with open(path, "rb") as stream:
            text = stream.read().decode("utf-8")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return _broken(path, f"config (from {source}): cannot read {path!r}: {reason}")
    except UnicodeDecodeError:
        return _broken(path, f"{path}: the file is not UTF-8 text")
    return parse_config_text(text, path)


def parse_config_text(text: str, path: str) -> ConfigFile:
    """
    Parse a config file's text; C{path} names it in sources and errors.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return _broken(path, f"{path}: TOML syntax error: {error}")
    return _Reader(path, _key_lines(text)).read(data)


def _broken(path: str, error: str) -> ConfigFile:
    return ConfigFile(path, {}, None, (error,))


_LISTEN_HEADER = re.compile(r"\s*\[\[\s*listen\s*\]\]")
_TABLE_HEADER = re.compile(r"\s*\[")
_KEY = re.compile(r"""\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")


def _key_lines(text: str) -> dict[tuple[int | None, str], int]:
    """
    The line where each key is set: C{(None, key)} for top-level keys,
    C{(index, key)} for keys of the C{index}-th C{[[listen]]} table.  Only
    used to point at lines; TOML itself is parsed by C{tomllib}.
    """
    lines: dict[tuple[int | None, str], int] = {}
    table: int | None = None
    other = False
    index = -1
    for number, line in enumerate(text.splitlines(), 1):
        if _LISTEN_HEADER.match(line):
            index += 1
            table, other = index, False
            lines.setdefault((table, "[[listen]]"), number)
        elif _TABLE_HEADER.match(line):
            other = True
        elif not other:
            match = _KEY.match(line)
            if match:
                key = next(group for group in match.groups() if group)
                lines.setdefault((table, key), number)
    return lines


class _Reader:
    """
    Turns the parsed TOML document into a L{ConfigFile}.
    """

    def __init__(self, path: str, lines: dict[tuple[int | None, str], int]) -> None:
        self.path = path
        self.lines = lines
        self.errors: list[str] = []

    def where(self, key: str, table: int | None = None) -> str:
        """
        The source of C{key}: C{FILE:LINE}, plus the C{[[listen]]} number.
        """
        line = self.lines.get((table, key))
        if line is None and table is not None:
            line = self.lines.get(
                (table, "[[listen]]"), self.lines.get((None, "listen"))
            )
        place = f"{self.path}:{line}" if line else self.path
        return place if table is None else f"{place}, [[listen]] #{table + 1}"

    def read(self, data: Mapping[str, Any]) -> ConfigFile:
        top: dict[str, RawValue] = {}
        listeners: tuple[Mapping[str, RawValue], ...] | None = None
        for key, raw in data.items():
            if key == "listen":
                listeners = self.listeners(raw)
            elif key == "config":
                self.errors.append(
                    f"config (from {self.where(key)}): a config file cannot name "
                    "another config file"
                )
            elif key in SPECS:
                self.value(top, key, raw, None)
            else:
                self.unknown(key, None, [*SPECS, "listen"])
        return ConfigFile(self.path, top, listeners, tuple(self.errors))

    def value(
        self, values: dict[str, RawValue], key: str, raw: Any, table: int | None
    ) -> None:
        """
        Store a value with its source in C{values}.
        """
        values[key] = RawValue(raw, self.where(key, table), typed=True)

    def unknown(self, key: str, table: int | None, known: list[str]) -> None:
        self.errors.append(
            f"{key} (from {self.where(key, table)}): unknown key"
            f"{did_you_mean(key, known)}"
        )

    def listeners(self, raw: Any) -> tuple[Mapping[str, RawValue], ...]:
        """
        The C{listen} key: C{[[listen]]} tables, or endpoint strings.
        """
        if isinstance(raw, str):
            raw = raw.split()
        if not isinstance(raw, list) or not raw:
            self.errors.append(
                f"listen (from {self.where('listen')}): must be [[listen]] tables "
                f"or a list of endpoint strings, not {raw!r}"
            )
            return ()
        tables = []
        for index, item in enumerate(raw):
            if isinstance(item, str):
                tables.append({"endpoint": RawValue(item, self.where("listen"))})
            elif isinstance(item, dict):
                tables.append(self.listener(index, item))
            else:
                self.errors.append(
                    f"listen (from {self.where('listen', index)}): a listener is a "
                    f"table or an endpoint string, not {item!r}"
                )
        return tuple(tables)

    def listener(self, index: int, table: Mapping[str, Any]) -> dict[str, RawValue]:
        values: dict[str, RawValue] = {}
        per_listener = [key for key, spec in SPECS.items() if spec.per_listener]
        for key, raw in table.items():
            if key == "endpoint" or (key in SPECS and SPECS[key].per_listener):
                self.value(values, key, raw, index)
            elif key in SPECS:
                self.errors.append(
                    f"{key} (from {self.where(key, index)}): applies to the whole "
                    "service; set it at the top level, not in [[listen]]"
                )
            else:
                self.unknown(key, index, ["endpoint", *per_listener])
        if "endpoint" not in values:
            self.errors.append(
                f"endpoint (from {self.where('[[listen]]', index)}): "
                "every [[listen]] table needs an endpoint"
            )
        return values
