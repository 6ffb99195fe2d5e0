"""
Error types of echoplus, each carrying its wire meaning.

This module imports nothing from Twisted: the sans-IO framing code raises and
stores these errors too.  Every error that can reach a client knows its
C{kind}, the word in the C{ERROR <kind>: <message>} frame, and whether the
connection closes after it (C{fatal}).  The protocol turns an error into that
frame with L{error_payload}; nothing else about an exception (its class, its
traceback, a path or a repr) ever reaches the wire.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadFrame",
    "ConfigError",
    "ConnectionTimeout",
    "EchoPlusError",
    "FrameTooLong",
    "FramingError",
    "Overloaded",
    "ProcessorFailed",
    "ProcessorTimeout",
    "RequestError",
    "Unavailable",
    "error_payload",
]


class EchoPlusError(Exception):
    """
    Base of every error that maps to an C{ERROR <kind>: ...} frame.

    @cvar kind: the error's name on the wire.
    @cvar fatal: whether the connection closes after the error frame.
    """

    kind: ClassVar[str] = "internal"
    fatal: ClassVar[bool] = True

    @property
    def message(self) -> str:
        """
        The short, client-safe message of this error.
        """
        return str(self.args[0]) if self.args else self.kind

    def payload(self) -> bytes:
        """
        The payload of the error frame that reports this error to a client.
        """
        return error_payload(self.kind, self.message)


class FramingError(EchoPlusError, ValueError):
    """
    The byte stream cannot be split into frames: the connection closes.

    It is a L{ValueError} so that decoding hooks written against the standard
    library (C{int()}, C{bytes.decode()}) report malformed frames naturally.
    """

    kind = "bad-frame"


class BadFrame(FramingError):
    """
    The byte stream is corrupt for its framing (a bad length, a missing
    delimiter or trailer).
    """

    kind = "bad-frame"


class FrameTooLong(FramingError):
    """
    A frame is, or announces itself as, longer than the configured
    C{max_frame}.
    """

    kind = "frame-too-long"


class RequestError(EchoPlusError):
    """
    Raised by a processor to refuse one request with its own message.

    C{RequestError("why")} answers C{ERROR bad-request: why} and the
    connection goes on.  Its message is the one piece of processor text that
    reaches the client, by design: keep it short and free of secrets.
    """

    kind = "bad-request"
    fatal = False


class Unavailable(RequestError):
    """
    A request needed a shared service that cannot take it now: a publish
    while the broker link is down, or beyond the cap on publishes queued for
    a slow broker.  C{Unavailable("broker")} answers
    C{ERROR unavailable: broker} and the connection goes on; the request was
    not carried out, so the client may retry it.
    """

    kind = "unavailable"


class ProcessorFailed(EchoPlusError):
    """
    A processor raised something other than L{RequestError}; the message is
    the processor's name, never the exception's text.
    """

    kind = "processor-failed"
    fatal = False


class ProcessorTimeout(EchoPlusError):
    """
    A processor's reply was not ready within the processor timeout.
    """

    kind = "timeout"
    fatal = False


class Overloaded(EchoPlusError):
    """
    A limit was exceeded (connections, unsent output): the connection closes.
    """

    kind = "overloaded"


class ConnectionTimeout(EchoPlusError):
    """
    A connection was idle too long, or a started frame did not complete in
    time (C{--idle-timeout}, C{--frame-timeout}): the connection closes.
    """

    kind = "timeout"


class ConfigError(Exception):
    """
    A configuration or launch error: bad option values, unknown framings or
    processors, malformed endpoints.  Its message names the offending key or
    value and is meant for the operator, never for a client.
    """


def error_payload(kind: str, message: str) -> bytes:
    """
    Build the payload of an error frame, C{ERROR <kind>: <message>}.

    Line breaks in C{message} are flattened so that the payload stays one
    line in line-framed protocols.
    """
    text = " ".join(message.split())
    return f"ERROR {kind}: {text}".encode("utf-8", "replace")
