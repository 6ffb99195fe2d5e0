"""
The built-in request/reply processors.
"""

from __future__ import annotations

import hashlib
import json as _json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.errors import RequestError
from echoplus.interfaces import IBatchProcessor, IProcessor
from echoplus.processors.base import ProcessorFactory, Transform
from echoplus.processors.shared import SHARED_BUILTINS

__all__ = ["BUILTINS"]


@implementer(IBatchProcessor)
class Echo:
    """
    Reply with the message itself.
    """

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        return message

    def process_batch(
        self, messages: list[bytes], context: ConnectionContext
    ) -> list[bytes]:
        return messages


_ROT13 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)


def _rot13(message: bytes) -> bytes:
    return message.translate(_ROT13)


def _reverse(message: bytes) -> bytes:
    return message[::-1]


def _sha256(message: bytes) -> bytes:
    return hashlib.sha256(message).hexdigest().encode("ascii")


def _canonical_json(message: bytes) -> bytes:
    try:
        value = _json.loads(message)
    except UnicodeDecodeError:
        raise RequestError("invalid JSON: not UTF-8") from None
    except ValueError as error:
        reason = getattr(error, "msg", "cannot parse")
        raise RequestError(f"invalid JSON: {reason}") from None
    return _json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def _prefix(text: Any = "") -> Transform:
    if not isinstance(text, str):
        raise ValueError(f"prefix text must be a string, not {text!r}")
    prefix = text.encode("utf-8")
    return Transform(lambda message: prefix + message)


@implementer(IProcessor)
class Delay:
    """
    Reply with the message after C{seconds}, on the connection's clock.
    """

    def __init__(self, seconds: Any = 0.1) -> None:
        try:
            self.seconds = float(seconds)
        except (TypeError, ValueError):
            raise ValueError(f"delay seconds must be a number, not {seconds!r}")
        if not self.seconds >= 0:
            raise ValueError(f"delay seconds must not be negative, not {seconds!r}")

    def process(self, message: bytes, context: ConnectionContext) -> Deferred[bytes]:
        return deferLater(context.clock, self.seconds, lambda: message)


@implementer(IProcessor)
class Counter:
    """
    Reply with how many messages this connection has sent, itself included.
    """

    def __init__(self) -> None:
        self.count = 0

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        self.count += 1
        return b"%d" % (self.count,)


BUILTINS: tuple[ProcessorFactory, ...] = (
    ProcessorFactory("echo", "reply with the message itself", lambda: Echo()),
    ProcessorFactory(
        "upper", "ASCII upper-case the message", lambda: Transform(bytes.upper)
    ),
    ProcessorFactory(
        "lower", "ASCII lower-case the message", lambda: Transform(bytes.lower)
    ),
    ProcessorFactory(
        "reverse", "reverse the message's bytes", lambda: Transform(_reverse)
    ),
    ProcessorFactory(
        "rot13", "ROT13 the message's ASCII letters", lambda: Transform(_rot13)
    ),
    ProcessorFactory(
        "sha256",
        "reply with the hex SHA-256 of the message",
        lambda: Transform(_sha256),
    ),
    ProcessorFactory(
        "json",
        "re-emit JSON compact and canonical (sorted keys); invalid JSON is a "
        "bad-request",
        lambda: Transform(_canonical_json),
    ),
    ProcessorFactory(
        "prefix",
        "prepend text to the message",
        _prefix,
        options={"text": "the text to prepend (default: empty)"},
    ),
    ProcessorFactory(
        "delay",
        "reply with the message after a delay on the reactor",
        Delay,
        options={"seconds": "how long to wait before replying (default 0.1)"},
    ),
    ProcessorFactory(
        "counter",
        "reply with how many messages this connection has sent",
        Counter,
        per_connection=True,
    ),
    *SHARED_BUILTINS,
)
