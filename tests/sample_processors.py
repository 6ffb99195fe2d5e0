"""
Processors used only by the tests, loaded by dotted path
(C{tests.sample_processors:Name}) in unit tests and through twistd.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.errors import RequestError
from echoplus.interfaces import IProcessor, IProcessorFactory

#: Text that must never reach a client.
SECRET = "secret-detail-4711"


@implementer(IProcessor)
class Controlled:
    """
    Answers every message with a L{Deferred} the test fires by hand.

    @ivar pending: C{(message, deferred)} pairs not fired yet, oldest first.
    @ivar cancelled: messages whose Deferred was cancelled.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, Deferred[Any]]] = []
        self.cancelled: list[bytes] = []

    def process(self, message: bytes, context: ConnectionContext) -> Deferred[Any]:
        deferred: Deferred[Any] = Deferred(lambda _: self.cancelled.append(message))
        self.pending.append((message, deferred))
        return deferred

    def fire(self, index: int = 0, reply: Any = None) -> None:
        """
        Fire the pending Deferred at C{index} with C{reply} (by default
        the message itself).
        """
        message, deferred = self.pending.pop(index)
        deferred.callback(message if reply is None else reply)


@implementer(IProcessor)
class RandomDelay:
    """
    Replies with the message after a random delay of up to C{most} seconds
    on the connection's clock.
    """

    def __init__(self, most: Any = 0.05, seed: Any = None) -> None:
        self.most = float(most)
        self._random = random.Random(None if seed is None else int(seed))

    def process(self, message: bytes, context: ConnectionContext) -> Deferred[bytes]:
        deferred: Deferred[bytes] = Deferred()
        call = context.clock.callLater(
            self._random.uniform(0, self.most), deferred.callback, message
        )
        deferred.addErrback(lambda failure: (call.cancel(), failure)[1])
        return deferred


@implementer(IProcessor)
class Boom:
    """
    Raises on messages starting with C{boom}, echoes the others.
    """

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        if message.startswith(b"boom"):
            raise RuntimeError(f"{SECRET} in {message!r}")
        return message


@implementer(IProcessor)
class AsyncBoom:
    """
    A coroutine processor that fails on messages starting with C{boom}.
    """

    async def process(self, message: bytes, context: ConnectionContext) -> bytes:
        if message.startswith(b"boom"):
            raise KeyError(SECRET)
        return message


@implementer(IProcessor)
class Refuse:
    """
    Refuses every message with a L{RequestError}.
    """

    def __init__(self, why: str = "refused") -> None:
        self.why = why

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        raise RequestError(self.why)


@implementer(IProcessor)
class Tag:
    """
    Appends C{:tag} to every message (a class with an option).
    """

    def __init__(self, tag: str = "t") -> None:
        self.tag = tag.encode("utf-8")

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        return message + b":" + self.tag


def make_shouter(volume: str = "1") -> Tag:
    """
    A factory callable: a processor that appends C{:!} times C{volume}.
    """
    return Tag("!" * int(volume))


#: An IProcessor provider named directly by a dotted path.
shared_tagger = Tag("shared")


@implementer(IPlugin, IProcessorFactory)
class _TwiceFactory:
    """
    A hand-written IProcessorFactory provider.
    """

    name = "twice"
    description = "reply with the message twice"
    options: dict[str, str] = {}
    per_connection = False

    def __call__(self, **options: Any) -> IProcessor:
        if options:
            raise ValueError(f"twice takes no options, not {sorted(options)}")
        return _Twice()


@implementer(IProcessor)
class _Twice:
    def process(self, message: bytes, context: ConnectionContext) -> list[bytes]:
        return [message, message]


twice = _TwiceFactory()


class NotAProcessor:
    """
    Makes objects without a C{process} method: loading it must fail.
    """


@implementer(IProcessorFactory)
class _IncompleteFactory:
    """
    Claims IProcessorFactory but has no description: fails verifyObject.
    """

    name = "incomplete"

    def __call__(self, **options: Any) -> IProcessor:
        return _Twice()


incomplete_factory = _IncompleteFactory()


def make_labelled(**labels: str) -> Tag:
    """
    A factory callable taking any option: appends the sorted C{key=value}s.
    """
    return Tag(",".join(f"{key}={value}" for key, value in sorted(labels.items())))
