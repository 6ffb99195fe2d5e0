"""
The codecs behind L{echoplus.framing}: the pure-Python reference and,
compiled from this very file, the accelerated build.

Read L{echoplus.framing} for the decoder contract; import the codecs from
there, never from here.  This file is the one source of both
implementations: run as Python it is the reference and the fallback, and the
build compiles it with Cython in pure-Python mode into
C{echoplus._codecs_c}, with the C types of C{_codecs_c.pxd} beside it.  So
it must stay plain Python that Cython compiles unchanged: no C{cython}
import, and code that only one of the two runs is kept to single steps
spelled two ways (see L{_COMPILED}).  The differential test
(C{tests/test_codecs_differential.py}) feeds both the same input.
"""

from __future__ import annotations

import struct
from typing import Sequence

from echoplus.errors import BadFrame, FrameTooLong, FramingError

DEFAULT_MAX_FRAME = 65536


def _compiled() -> bool:
    """
    Whether this module runs compiled (then its functions are Cython's, not
    Python's).  Only where a compiled build does better with another spelling
    of the same step does the code ask; the differential test covers both.
    """
    return type(_compiled).__name__ != "function"


_COMPILED = _compiled()


class BufferedDecoder:
    """
    The buffering shared by the decoders that parse with offsets, and the
    base for your own (see docs/wire-formats.md).

    Subclasses implement L{parse}; this class holds incomplete input in one
    buffer and calls C{parse} again only once C{need} bytes are held.

    @ivar need: how many bytes the frame at the start of the held input
        needs in total, as C{parse} last said (1 means: parse again on any
        new byte).
    """

    __slots__ = ("_held", "error", "max_frame", "need")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 0:
            raise ValueError(f"max_frame must not be negative, not {max_frame}")
        self.max_frame = max_frame
        self.error: FramingError | None = None
        self._held = bytearray()
        self.need = 1

    @property
    def buffered(self) -> int:
        return len(self._held)

    def set_max_frame(self, max_frame: int) -> None:
        """
        Change the frame limit (a reload), keeping the bytes held.
        """
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview: frames are bytes
        held = self._held
        if held:
            held += data
            if len(held) < self.need:
                return []
            data = bytes(held)
            held.clear()
        frames: list[bytes] = []
        offset = self.parse(data, frames)
        if offset < len(data) and self.error is None:
            held += memoryview(data)[offset:]
        return frames

    def parse(self, data: bytes, frames: list[bytes]) -> int:
        """
        Parse complete frames out of C{data} from offset 0, append them to
        C{frames}, set C{self.need} to the total length the frame starting
        at the returned offset needs (when known), and return that offset:
        the bytes from it on are held for the next call.  On a malformed
        stream set C{self.error} (a L{FramingError}) and return
        C{len(data)}.
        """
        raise NotImplementedError()


class IntPrefixDecoder(BufferedDecoder):
    """
    Frames preceded by their length as a big-endian unsigned integer of
    C{size} bytes (1, 2 or 4: the C{int8}, C{int16} and C{int32} framings).
    """

    __slots__ = ("_unpack_from", "size")

    _formats = {1: ">B", 2: ">H", 4: ">I"}

    def __init__(self, size: int = 4, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        if size not in self._formats:
            raise ValueError(f"prefix size must be 1, 2 or 4 bytes, not {size}")
        self.size = size
        self._unpack_from = struct.Struct(self._formats[size]).unpack_from
        self.need = size

    def parse(self, data: bytes, frames: list[bytes]) -> int:
        size = self.size
        unpack_from = self._unpack_from
        max_frame = self.max_frame
        end_of_data = len(data)
        # Compiled, view is a C pointer into data (see _codecs_c.pxd): its
        # bytes are read, and frames sliced, with no Python object between.
        view = data
        offset = 0
        start = size
        while start <= end_of_data:
            if _COMPILED:
                # Compiled, these are C byte reads: no call, no tuple.
                length = 0
                for index in range(offset, start):
                    length = (length << 8) | view[index]
            else:
                length = unpack_from(data, offset)[0]
            if length > max_frame:
                self.error = FrameTooLong(
                    f"frame of {length} bytes exceeds the limit of {max_frame}"
                )
                return end_of_data
            end = start + length
            if end > end_of_data:
                self.need = end - offset
                return offset
            frames.append(view[start:end])
            offset = end
            start = end + size
        self.need = size
        return offset


#: Netstring length fields already validated, and their values: a dict
#: lookup per frame instead of a digit check and C{int()}.  Shared by every
#: decoder (lengths repeat across connections) and bounded.
_KNOWN_LENGTHS: dict[bytes, int] = {}
_KNOWN_LENGTHS_LIMIT = 4096


class NetstringDecoder(BufferedDecoder):
    """
    Strict netstrings, C{<length>:<payload>,}: the length is ASCII digits
    only, with no leading zeros except C{0:} itself, and the trailing comma
    is required.
    """

    __slots__ = ("_max_digits",)

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._max_digits = len(str(max_frame))

    def set_max_frame(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._max_digits = len(str(max_frame))

    def parse(self, data: bytes, frames: list[bytes]) -> int:
        max_frame = self.max_frame
        max_digits = self._max_digits
        end_of_data = len(data)
        view = data  # a C pointer into data, compiled (see _codecs_c.pxd)
        known_lengths = _KNOWN_LENGTHS
        offset = 0
        while offset < end_of_data:
            length = -1
            if _COMPILED:
                # Compiled, a plain decimal length is read as C bytes: no
                # find, no slice, no dict lookup.  Anything else (a length
                # not all received yet, a leading zero, a stray byte) takes
                # the general path below, which says what is wrong.
                colon = offset
                # (At most 18 digits: a C integer holds them.)
                digits_end = min(offset + min(max_digits, 18), end_of_data)
                value = 0
                while colon < digits_end and 0x30 <= view[colon] <= 0x39:
                    value = value * 10 + (view[colon] - 0x30)
                    colon += 1
                if (
                    offset < colon < end_of_data
                    and view[colon] == 0x3A  # b":"
                    and (view[offset] != 0x30 or colon == offset + 1)
                ):
                    length = value
            if length < 0:
                colon = data.find(b":", offset, offset + max_digits + 1)
                if colon < 0:
                    self._check_length_digits(data[offset : offset + max_digits + 1])
                    if self.error is None:
                        self.need = end_of_data - offset + 1
                        return offset
                    return end_of_data
                digits = data[offset:colon]
                length = known_lengths.get(digits, -1)
                if length < 0:
                    if not digits.isdigit() or (
                        digits[0] == 0x30 and colon - offset > 1
                    ):
                        # Not a plain decimal length; find out what is wrong.
                        self._check_length_digits(digits)
                        if self.error is None:
                            self.error = BadFrame("netstring length is empty")
                        return end_of_data
                    length = int(digits)
                    if len(known_lengths) < _KNOWN_LENGTHS_LIMIT:
                        known_lengths[digits] = length
            if length > max_frame:
                self.error = FrameTooLong(
                    f"frame of {length} bytes exceeds the limit of {max_frame}"
                )
                return end_of_data
            end = colon + 1 + length
            if end >= end_of_data:
                self.need = end + 1 - offset
                return offset
            if view[end] != 0x2C:  # b","
                self.error = BadFrame("netstring is missing its trailing comma")
                return end_of_data
            frames.append(view[colon + 1 : end])
            offset = end + 1
        self.need = 1
        return offset

    def _check_length_digits(self, digits: bytes) -> None:
        """
        Set C{self.error} if C{digits} (a complete or partial length field)
        cannot start a valid netstring of at most C{max_frame} bytes.
        """
        if digits and not digits.isdigit():
            self.error = BadFrame("netstring length is not a decimal number")
        elif len(digits) > 1 and digits[0] == 0x30:  # b"0"
            self.error = BadFrame("netstring length has a leading zero")
        elif len(digits) > self._max_digits:
            self.error = FrameTooLong(
                f"netstring length exceeds the limit of {self.max_frame} bytes"
            )


class LineDecoder:
    """
    Frames terminated by C{delimiter} (default C{b"\\n"}); the delimiter is
    not part of the frame.
    """

    __slots__ = ("_held", "_hold_limit", "delimiter", "error", "max_frame")

    def __init__(
        self, delimiter: bytes = b"\n", max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        if not delimiter:
            raise ValueError("the line delimiter must not be empty")
        if max_frame < 0:
            raise ValueError(f"max_frame must not be negative, not {max_frame}")
        self.delimiter = delimiter
        self.max_frame = max_frame
        self.error: FramingError | None = None
        self._held = bytearray()
        # Longest input that may be held without a complete delimiter: a
        # frame of max_frame bytes followed by all but the last byte of the
        # delimiter.
        self._hold_limit = max_frame + len(delimiter) - 1

    @property
    def buffered(self) -> int:
        return len(self._held)

    def set_max_frame(self, max_frame: int) -> None:
        """
        Change the frame limit (a reload), keeping the bytes held.
        """
        self.max_frame = max_frame
        self._hold_limit = max_frame + len(self.delimiter) - 1

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview: frames are bytes
        held = self._held
        first = None
        if held:
            delimiter = self.delimiter
            # Only the new bytes, and the tail a delimiter could straddle,
            # are searched.
            scan_from = max(0, len(held) - len(delimiter) + 1)
            held += data
            end = held.find(delimiter, scan_from)
            if end < 0:
                if len(held) > self._hold_limit:
                    self._too_long()
                return []
            first = bytes(held[:end])
            data = bytes(held[end + len(delimiter) :])
            held.clear()
            if len(first) > self.max_frame:
                self._too_long()
                return []
        # data now starts at a frame boundary: split it, hold the rest.
        frames = data.split(self.delimiter)
        rest = frames.pop()
        if len(data) > self.max_frame:
            frames = self._check_lengths(frames, rest)
        elif rest:
            held += rest
        if first is not None:
            frames.insert(0, first)
        return frames

    def _check_lengths(self, frames: list[bytes], rest: bytes) -> list[bytes]:
        """
        Of a chunk longer than C{max_frame}, split into C{frames} and the
        incomplete C{rest}: return the frames before the first one too
        long, and hold the rest if it may still become a frame.
        """
        max_frame = self.max_frame
        for index, frame in enumerate(frames):
            if len(frame) > max_frame:
                self._too_long()
                return frames[:index]
        if len(rest) > self._hold_limit:
            self._too_long()
            return frames
        if rest:
            self._held += rest
        return frames

    def _too_long(self) -> None:
        self.error = FrameTooLong(f"line exceeds the limit of {self.max_frame} bytes")
        self._held.clear()


class RawDecoder:
    """
    No framing: every chunk is a frame as it arrives, cut into pieces of at
    most C{max_frame} bytes.
    """

    __slots__ = ("error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be positive for raw, not {max_frame}")
        self.max_frame = max_frame
        self.error: FramingError | None = None

    def set_max_frame(self, max_frame: int) -> None:
        """
        Change the frame limit (a reload).
        """
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        return 0

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview: frames are bytes
        max_frame = self.max_frame
        if len(data) <= max_frame:
            return [data]
        return [data[i : i + max_frame] for i in range(0, len(data), max_frame)]


class LineEncoder:
    """
    Append C{delimiter} to each payload; a payload that the decoder would
    not get back unchanged cannot be framed: one that contains the
    delimiter, or, for a delimiter whose start is also its end (C{\\n\\n},
    C{aba}), one whose end runs into the delimiter (C{x\\n} before
    C{\\n\\n} would decode as C{x}).
    """

    __slots__ = ("_bordered", "delimiter")

    def __init__(self, delimiter: bytes = b"\n") -> None:
        if not delimiter:
            raise ValueError("the line delimiter must not be empty")
        self.delimiter = delimiter
        # Whether an occurrence of the delimiter can overlap another one.
        # Without such a border (LF, CRLF), no occurrence can straddle a
        # payload's end, so counting occurrences checks a whole batch.
        self._bordered = any(
            delimiter[:size] == delimiter[-size:] for size in range(1, len(delimiter))
        )

    def encode(self, payload: bytes) -> bytes:
        framed = payload + self.delimiter
        if framed.find(self.delimiter) != len(payload):
            raise ValueError("a line payload must not contain the delimiter")
        return framed

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        if not payloads:
            return b""
        if self._bordered:
            return b"".join([self.encode(payload) for payload in payloads])
        delimiter = self.delimiter
        joined = delimiter.join(payloads)
        # One C-level pass proves no payload carried a delimiter of its own.
        if _COMPILED and len(delimiter) == 1:
            # Compiled, a plain C loop (view is a C pointer, see the .pxd):
            # bytes.count checks a limit after every match, which keeps it
            # from being vectorised, and costs twice as much on 1 KiB.
            view = joined
            byte = delimiter[0]
            found = 0
            for index in range(len(joined)):
                found += view[index] == byte
        else:
            found = joined.count(delimiter)
        if found != len(payloads) - 1:
            raise ValueError("a line payload must not contain the delimiter")
        return joined + delimiter


#: Encoded length prefixes by prefix size and length, and netstring
#: prefixes (C{b"63:"}) by length: a dict lookup per reply instead of a
#: C{struct.pack} or a C{%} format.  Shared by every encoder and bounded.
#: A plain dict rather than C{functools.lru_cache}: on the per-reply path
#: its C{get} costs about 15 ns less per reply, and lengths met once a
#: table is full are simply packed.
_INT_PREFIXES: dict[int, dict[int, bytes]] = {1: {}, 2: {}, 4: {}}
_NETSTRING_PREFIXES: dict[int, bytes] = {}
_PREFIXES_LIMIT = 4096


class IntPrefixEncoder:
    """
    Prefix each payload with its length as a big-endian unsigned integer of
    C{size} bytes.
    """

    __slots__ = ("_largest", "_pack", "_prefixes", "size")

    def __init__(self, size: int = 4) -> None:
        formats = IntPrefixDecoder._formats
        if size not in formats:
            raise ValueError(f"prefix size must be 1, 2 or 4 bytes, not {size}")
        self.size = size
        self._pack = struct.Struct(formats[size]).pack
        self._largest = (1 << (8 * size)) - 1
        self._prefixes = _INT_PREFIXES[size]

    def encode(self, payload: bytes) -> bytes:
        return self._prefix(len(payload)) + payload

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        prefixes = self._prefixes
        parts: list[bytes] = []
        for payload in payloads:
            length = len(payload)
            # Compiled, the get and the appends are C calls (typed dict and
            # list): no bound method, no tuple.
            parts.append(prefixes.get(length) or self._prefix(length))
            parts.append(payload)
        return b"".join(parts)

    def _prefix(self, length: int) -> bytes:
        """
        The prefix of a payload of C{length} bytes.

        @raise ValueError: the length does not fit the prefix.
        """
        if length > self._largest:
            raise ValueError(
                f"payload of {length} bytes does not fit a "
                f"{self.size}-byte length prefix"
            )
        prefix = self._pack(length)
        if len(self._prefixes) < _PREFIXES_LIMIT:
            self._prefixes[length] = prefix
        return prefix


class NetstringEncoder:
    """
    Encode each payload as C{<length>:<payload>,}.
    """

    __slots__ = ()

    def encode(self, payload: bytes) -> bytes:
        return b"%d:%b," % (len(payload), payload)

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        known = _NETSTRING_PREFIXES
        parts: list[bytes] = []
        for payload in payloads:
            length = len(payload)
            parts.append(known.get(length) or _netstring_prefix(length))
            parts.append(payload)
            parts.append(b",")
        return b"".join(parts)


def _netstring_prefix(length: int) -> bytes:
    """
    The C{<length>:} that starts a netstring of C{length} bytes.
    """
    prefix = b"%d:" % length
    if len(_NETSTRING_PREFIXES) < _PREFIXES_LIMIT:
        _NETSTRING_PREFIXES[length] = prefix
    return prefix


class RawEncoder:
    """
    No framing: payloads are written as they are.
    """

    __slots__ = ()

    def encode(self, payload: bytes) -> bytes:
        return payload

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        return b"".join(payloads)
