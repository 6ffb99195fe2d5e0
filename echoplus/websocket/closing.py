"""
How a WebSocket connection closes: the close code and reason of each
error kind (see docs/websocket.md).

A fatal echoplus error becomes a close frame whose reason is the error's
usual C{ERROR <kind>: <message>} text, cut to the 123 bytes a close frame
can carry.  Non-fatal errors stay in-band messages, as in every framing.
"""

from __future__ import annotations

from echoplus.errors import ConnectionTimeout, EchoPlusError, FramingError

__all__ = [
    "GOING_AWAY",
    "MAX_REASON",
    "NORMAL",
    "InvalidText",
    "PingTimeout",
    "close_code",
    "close_reason",
]

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

#: The longest close reason, in bytes (125 bytes of payload minus the code).
MAX_REASON = 123

_BY_KIND = {
    "frame-too-long": MESSAGE_TOO_BIG,
    "bad-frame": PROTOCOL_ERROR,
    "overloaded": TRY_AGAIN_LATER,
    "timeout": NORMAL,
}


class InvalidText(FramingError):
    """
    A text message is not valid UTF-8 (close code 1007).
    """

    kind = "bad-frame"


class PingTimeout(ConnectionTimeout):
    """
    The peer did not answer a ping within C{--ws-ping-timeout} (close code
    1011, as the C{websockets} library's own servers use).
    """


def close_code(error: EchoPlusError) -> int:
    """
    The close code a fatal C{error} closes a WebSocket with.
    """
    if isinstance(error, InvalidText):
        return INVALID_DATA
    if isinstance(error, PingTimeout):
        return INTERNAL_ERROR
    code = getattr(error, "close_code", None)
    if isinstance(code, int):
        return code
    return _BY_KIND.get(error.kind, INTERNAL_ERROR)


def close_reason(error: EchoPlusError) -> str:
    """
    C{ERROR <kind>: <message>}, cut to at most L{MAX_REASON} bytes of UTF-8
    (never in the middle of a character).
    """
    text = error.payload().decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_REASON:
        return text
    return encoded[:MAX_REASON].decode("utf-8", "ignore")
