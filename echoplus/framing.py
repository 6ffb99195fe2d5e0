"""
Sans-IO framing: bytes in, frames out, and back.

Nothing here imports Twisted or touches a socket; the protocols in
L{echoplus.protocols} are thin adapters that feed these codecs.

The decoder contract, shared by every decoder in this module:

  - C{feed(data)} takes the next chunk of the byte stream and returns the
    list of every frame it completes, in order (a batch; possibly empty).
  - A decoder never rescans bytes it has already scanned and never copies
    its buffer per chunk: incomplete input is held in one C{bytearray}
    together with how many bytes the next frame still needs.
  - C{max_frame} is enforced as early as the format allows: a length prefix
    over the limit fails as soon as the prefix is read; a delimited frame
    fails as soon as more than C{max_frame} bytes are held without a
    delimiter.  The held buffer therefore never exceeds C{max_frame} plus
    the framing's own overhead.
  - A malformed stream is not raised: the decoder returns the frames that
    precede the fault and stores a L{FramingError} in C{error}.  From then
    on C{feed} returns nothing.  The caller answers the frames it got, then
    reports the error.  This keeps "answer everything before the fault"
    free of exception juggling.
  - C{buffered} is the number of bytes held for an incomplete frame; a
    non-zero value means a frame has started (what the frame timeout
    watches).

Encoders turn reply payloads back into bytes: C{encode(payload)} for one,
C{encode_batch(payloads)} for all replies of one read, as one C{bytes}.  An
encoder raises L{ValueError} for a payload its format cannot carry.

Two implementations, one source: the codecs are written once, in Python, in
C{echoplus/_codecs.py}, which is the reference and the fallback; when
echoplus was installed with a C compiler at hand, the same file compiled by
Cython (C{echoplus._codecs_c}) is used instead.  Both behave identically,
errors and messages included.  L{ACCELERATED} tells which is in use, and
C{ECHOPLUS_NO_EXTENSIONS=1} in the environment forces the Python one.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from echoplus._extensions import ACCELERATED, MODULES, NO_EXTENSIONS_VARIABLE
from echoplus.errors import FramingError

__all__ = [
    "ACCELERATED",
    "DEFAULT_MAX_FRAME",
    "IMPLEMENTATION",
    "NO_EXTENSIONS_VARIABLE",
    "BufferedDecoder",
    "Decoder",
    "Encoder",
    "IntPrefixDecoder",
    "IntPrefixEncoder",
    "LineDecoder",
    "LineEncoder",
    "NetstringDecoder",
    "NetstringEncoder",
    "RawDecoder",
    "RawEncoder",
]


class Decoder(Protocol):
    """
    What every decoder provides; see the module docstring for the contract.
    """

    max_frame: int
    error: FramingError | None

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take the next chunk and return the frames it completes.
        """

    @property
    def buffered(self) -> int:
        """
        How many bytes are held for an incomplete frame.
        """


class Encoder(Protocol):
    """
    What every encoder provides.
    """

    def encode(self, payload: bytes) -> bytes:
        """
        Frame one payload.
        """

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        """
        Frame several payloads into one C{bytes}, in order.
        """


_codecs = MODULES["_codecs"]

#: Which implementation is in use, for logs and C{--version}:
#: C{"compiled"} or C{"pure Python"}.
IMPLEMENTATION: str = "compiled" if ACCELERATED else "pure Python"

DEFAULT_MAX_FRAME: int = _codecs.DEFAULT_MAX_FRAME
BufferedDecoder = _codecs.BufferedDecoder
IntPrefixDecoder = _codecs.IntPrefixDecoder
NetstringDecoder = _codecs.NetstringDecoder
LineDecoder = _codecs.LineDecoder
RawDecoder = _codecs.RawDecoder
LineEncoder = _codecs.LineEncoder
IntPrefixEncoder = _codecs.IntPrefixEncoder
NetstringEncoder = _codecs.NetstringEncoder
RawEncoder = _codecs.RawEncoder

#: The former private name of L{BufferedDecoder}.
_BufferedDecoder = BufferedDecoder
