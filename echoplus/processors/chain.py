"""
Processor chains: what C{--processor upper,reverse} names, resolved.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from echoplus.errors import ConfigError
from echoplus.interfaces import IProcessor, IProcessorFactory
from echoplus.processors.loading import find_factory, verify_processor

__all__ = ["ProcessorChain", "ProcessorEntry", "parse_chain"]


@attrs.frozen
class ProcessorEntry:
    """
    One link of a chain as configured: a name or dotted path and the
    options for its factory.
    """

    name: str
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        options = ",".join(f"{key}={value}" for key, value in self.options.items())
        return f"{self.name}({options})"


def parse_chain(text: str) -> tuple[ProcessorEntry, ...]:
    """
    Parse the command-line chain syntax: comma-separated names or dotted
    paths, each optionally followed by options in parentheses::

        upper,reverse
        prefix(text=>> ),delay(seconds=0.5)
        mypackage.processors:Rot47

    Option values run to the next C{,} or C{)}; values that need those
    characters belong in a config file.

    @raise ConfigError: the text is malformed; the message shows where.
    """
    entries: list[ProcessorEntry] = []
    position = 0
    text = text.strip()
    while position < len(text):
        end = len(text)
        for stop in (",", "("):
            found = text.find(stop, position)
            if found >= 0:
                end = min(end, found)
        name = text[position:end].strip()
        if not name:
            raise ConfigError(f"empty processor name in chain {text!r}")
        options: dict[str, str] = {}
        position = end
        if position < len(text) and text[position] == "(":
            close = text.find(")", position)
            if close < 0:
                raise ConfigError(f"unclosed '(' after {name!r} in chain {text!r}")
            for item in filter(None, text[position + 1 : close].split(",")):
                key, equals, value = item.partition("=")
                if not equals or not key.strip():
                    raise ConfigError(
                        f"option {item!r} of processor {name!r} is not key=value"
                    )
                options[key.strip()] = value
            position = close + 1
        entries.append(ProcessorEntry(name, options))
        if position < len(text):
            if text[position] != ",":
                raise ConfigError(
                    f"expected ',' after processor {name!r} in chain {text!r}"
                )
            position += 1
            if position == len(text):
                raise ConfigError(
                    f"the chain {text!r} ends with ',': a processor name must follow"
                )
    if not entries:
        raise ConfigError("the processor chain is empty")
    return tuple(entries)


@attrs.frozen
class _Link:
    name: str
    factory: IProcessorFactory
    options: Mapping[str, Any]
    shared: Any  # the listener-wide instance, or None when per connection


class ProcessorChain:
    """
    A listener's resolved chain.

    Resolving finds every factory and makes one instance of each (a
    per-connection factory's instance is a trial run that validates the
    options), so that every configuration error shows at launch.  Then
    L{for_connection} hands each connection its processors: the shared
    instances, and fresh ones from factories that declare C{per_connection}.
    """

    def __init__(self, entries: tuple[ProcessorEntry, ...]) -> None:
        self.entries = entries
        links = []
        for entry in entries:
            factory = self._find_factory(entry)
            processor = self._make(entry.name, factory, entry.options)
            per_connection = bool(getattr(factory, "per_connection", False))
            links.append(
                _Link(
                    entry.name,
                    factory,
                    entry.options,
                    None if per_connection else processor,
                )
            )
        self._links = tuple(links)
        self._shared_only = all(link.shared is not None for link in links)
        self._shared = tuple((link.name, link.shared) for link in links)

    def _find_factory(self, entry: ProcessorEntry) -> IProcessorFactory:
        """
        Resolve one entry to its factory; a hook for L{echoplus.testing},
        which also accepts processor objects.
        """
        return find_factory(entry.name)

    @staticmethod
    def _make(
        name: str, factory: IProcessorFactory, options: Mapping[str, Any]
    ) -> IProcessor:
        try:
            processor = factory(**options)
        except (TypeError, ValueError) as error:
            message = str(error)
            if repr(name) not in message:
                message = f"processor {name!r}: {message}"
            raise ConfigError(message) from None
        verify_processor(name, processor)
        return processor  # type: ignore[no-any-return]

    def for_connection(self) -> tuple[tuple[str, IProcessor], ...]:
        """
        The C{(name, processor)} pairs one new connection uses, in order.
        """
        if self._shared_only:
            return self._shared
        return tuple(
            (link.name, link.shared)
            if link.shared is not None
            else (link.name, link.factory(**link.options))
            for link in self._links
        )

    def shared_processors(self) -> tuple[IProcessor, ...]:
        """
        The listener-wide processor instances.
        """
        return tuple(link.shared for link in self._links if link.shared is not None)

    def __str__(self) -> str:
        return ",".join(str(entry) for entry in self.entries)
