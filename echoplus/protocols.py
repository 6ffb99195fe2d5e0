"""
The wire formats: one protocol class per framing over
L{echoplus.framed.FramedProtocol}, and the framing registry that
C{--framing} names.

To add a wire format, subclass one of:
  - L{DelimitedProtocol}: set C{delimiter}; optionally override
    C{decode_frame} / C{encode_frame} (e.g. strip and add an STX byte);
  - L{LengthPrefixedProtocol}: set C{prefix_size} (1, 2 or 4);
  - L{FramedProtocol}: override C{make_decoder} / C{make_encoder} to return
    your own sans-IO codec (see L{echoplus.framing.BufferedDecoder}).
and serve it with C{--framing yourmodule:YourProtocol}.
"""

from __future__ import annotations

import pkgutil

from echoplus.errors import ConfigError
from echoplus.framed import CLOSE_GRACE, FramedProtocol
from echoplus.framing import (
    Decoder,
    Encoder,
    IntPrefixDecoder,
    IntPrefixEncoder,
    LineDecoder,
    LineEncoder,
    NetstringDecoder,
    NetstringEncoder,
    RawDecoder,
    RawEncoder,
)

__all__ = [
    "CLOSE_GRACE",
    "FRAMINGS",
    "LAZY_FRAMINGS",
    "DelimitedProtocol",
    "FramedProtocol",
    "Int8Protocol",
    "Int16Protocol",
    "Int32Protocol",
    "LengthPrefixedProtocol",
    "LineProtocol",
    "NetstringProtocol",
    "RawProtocol",
    "find_framing",
]


class DelimitedProtocol(FramedProtocol):
    """
    Base for frames that end with a delimiter.

    @cvar delimiter: the bytes that end every frame.
    """

    delimiter: bytes = b"\n"

    def make_decoder(self, max_frame: int) -> Decoder:
        return LineDecoder(self.delimiter, max_frame)

    def make_encoder(self) -> Encoder:
        return LineEncoder(self.delimiter)


class LineProtocol(DelimitedProtocol):
    """
    The C{line} framing: the delimiter comes from the listener's
    C{delimiter} setting (C{\\n} by default).
    """

    @property  # type: ignore[override]
    def delimiter(self) -> bytes:  # type: ignore[override]
        return self.factory.settings.delimiter


class LengthPrefixedProtocol(FramedProtocol):
    """
    Base for frames preceded by their length, a big-endian unsigned integer.

    @cvar prefix_size: the prefix's size in bytes: 1, 2 or 4.
    """

    prefix_size: int = 4

    def make_decoder(self, max_frame: int) -> Decoder:
        return IntPrefixDecoder(self.prefix_size, max_frame)

    def make_encoder(self) -> Encoder:
        return IntPrefixEncoder(self.prefix_size)


class Int8Protocol(LengthPrefixedProtocol):
    """The C{int8} framing: a 1-byte length prefix."""

    prefix_size = 1


class Int16Protocol(LengthPrefixedProtocol):
    """The C{int16} framing: a 2-byte length prefix."""

    prefix_size = 2


class Int32Protocol(LengthPrefixedProtocol):
    """The C{int32} framing: a 4-byte length prefix."""

    prefix_size = 4


class NetstringProtocol(FramedProtocol):
    """The C{netstring} framing: C{<length>:<payload>,}."""

    def make_decoder(self, max_frame: int) -> Decoder:
        return NetstringDecoder(max_frame)

    def make_encoder(self) -> Encoder:
        return NetstringEncoder()


class RawProtocol(FramedProtocol):
    """The C{raw} framing: every chunk received is a message."""

    def make_decoder(self, max_frame: int) -> Decoder:
        return RawDecoder(max_frame)

    def make_encoder(self) -> Encoder:
        return RawEncoder()


#: The built-in framings by name.
FRAMINGS: dict[str, type[FramedProtocol]] = {
    "line": LineProtocol,
    "netstring": NetstringProtocol,
    "int8": Int8Protocol,
    "int16": Int16Protocol,
    "int32": Int32Protocol,
    "raw": RawProtocol,
}


#: Built-in framings whose module is imported only when one is configured,
#: because it needs an optional dependency: name -> (module:Class, extra).
LAZY_FRAMINGS: dict[str, tuple[str, str]] = {
    "websocket": ("echoplus.websocket.protocol:WebSocketProtocol", "websocket"),
}


def find_framing(name: str) -> type[FramedProtocol]:
    """
    Resolve a framing name, or a C{module:Class} path to a
    L{FramedProtocol} subclass.

    @raise ConfigError: no such framing; the message names it.
    """
    if name in FRAMINGS:
        return FRAMINGS[name]
    if name in LAZY_FRAMINGS:
        path, extra = LAZY_FRAMINGS[name]
        try:
            framing: type[FramedProtocol] = pkgutil.resolve_name(path)
        except ImportError as error:
            raise ConfigError(
                f"framing {name!r} needs {error.name or 'a missing module'}: "
                f"pip install 'echoplus[{extra}]'"
            ) from None
        return framing
    if ":" not in name:
        known = ", ".join([*FRAMINGS, *LAZY_FRAMINGS])
        raise ConfigError(
            f"unknown framing {name!r} (known framings: {known}, or module:Class)"
        )
    try:
        target: object = pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"cannot load framing {name!r}: {error}") from None
    if not (isinstance(target, type) and issubclass(target, FramedProtocol)):
        raise ConfigError(f"framing {name!r} is not a FramedProtocol subclass")
    return target
