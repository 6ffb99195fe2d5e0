"""
The building blocks of processor factories.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
from twisted.plugin import IPlugin
from zope.interface import implementer

from echoplus.interfaces import IBatchProcessor, IProcessorFactory

__all__ = ["ProcessorFactory", "Transform"]


@implementer(IPlugin, IProcessorFactory)
@attrs.frozen
class ProcessorFactory:
    """
    An L{IProcessorFactory} made from a callable.

    Declaring one at module level in an C{echoplus/plugins/} directory is
    all a plugin needs::

        rot47 = ProcessorFactory(
            name="rot47", description="ROT47 of printable ASCII", make=Rot47
        )

    @ivar name: the name used with C{--processor}.
    @ivar description: one line for C{echoplus processors}.
    @ivar make: called with the options to make an L{IProcessor}.
    @ivar options: option name to a one-line description; options not named
        here are refused.
    @ivar per_connection: make one processor per connection instead of one
        per listener.
    @ivar any_options: pass options not named in C{options} through too
        (for a C{make} that takes C{**options}).
    """

    name: str
    description: str
    make: Callable[..., Any] = attrs.field(repr=False)
    options: Mapping[str, str] = attrs.field(factory=dict)
    per_connection: bool = False
    any_options: bool = False

    def __call__(self, **options: Any) -> Any:
        """
        Make a processor with C{options}.

        @raise ValueError: an option is not in C{options}; the message names
            it and the known ones.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown and not self.any_options:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(
                f"processor {self.name!r} has no option "
                f"{', '.join(map(repr, unknown))} (its options: {known})"
            )
        return self.make(**options)


@implementer(IBatchProcessor)
@attrs.frozen
class Transform:
    """
    A stateless processor that replies with C{function(message)}; with a
    pure C{function} it processes a whole read in one call.
    """

    function: Callable[[bytes], bytes]

    def process(self, message: bytes, context: object) -> bytes:
        return self.function(message)

    def process_batch(self, messages: list[bytes], context: object) -> list[bytes]:
        return list(map(self.function, messages))
