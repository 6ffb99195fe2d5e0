"""
Differential tests: the compiled codecs (C{echoplus._codecs_c}, built by
Cython from C{echoplus/_codecs.py}) against that same source run as Python
(C{echoplus._codecs}), on the same random input.

For every decoder, the same stream, cut into the same random chunks, each
chunk given as C{bytes}, C{bytearray} or C{memoryview}, must give the same
frames (values and types) chunk by chunk, the same bytes held, the same
C{need}, and the same error (type, kind and message).  The streams mix
well-formed frames with the edges of every length field: 0, exactly
C{max_frame}, one more, a prefix's largest value, a frame cut short, and
random bytes.  For every encoder, the same payloads must give the same bytes
or the same L{ValueError} message.

When the extension is not built these tests skip, unless
C{ECHOPLUS_REQUIRE_EXTENSIONS=1} is set (as C{.ci/run} does), where a
missing extension is a failure.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echoplus import _codecs as pure


def compiled_codecs() -> ModuleType:
    """
    The compiled codecs module.

    @raise SkipTest: it is not built (and not required).
    """
    try:
        module = importlib.import_module("echoplus._codecs_c")
    except ImportError as error:
        if os.environ.get("ECHOPLUS_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            raise AssertionError(f"the compiled codecs are required: {error}")
        raise SkipTest(f"the compiled codecs are not built ({error})")
    # A compiled module, not this source imported under another name.
    assert not module.__file__.endswith((".py", ".pyc")), module.__file__
    return module


#: name -> make a decoder from a codecs module and a max_frame.
DECODERS: dict[str, Callable[[ModuleType, int], Any]] = {
    "line-lf": lambda m, limit: m.LineDecoder(b"\n", limit),
    "line-crlf": lambda m, limit: m.LineDecoder(b"\r\n", limit),
    "line-lflf": lambda m, limit: m.LineDecoder(b"\n\n", limit),
    "line-aba": lambda m, limit: m.LineDecoder(b"aba", limit),
    "int8": lambda m, limit: m.IntPrefixDecoder(1, limit),
    "int16": lambda m, limit: m.IntPrefixDecoder(2, limit),
    "int32": lambda m, limit: m.IntPrefixDecoder(4, limit),
    "netstring": lambda m, limit: m.NetstringDecoder(limit),
    "raw": lambda m, limit: m.RawDecoder(max(limit, 1)),
}

#: name -> make an encoder from a codecs module.
ENCODERS: dict[str, Callable[[ModuleType], Any]] = {
    "line-lf": lambda m: m.LineEncoder(b"\n"),
    "line-crlf": lambda m: m.LineEncoder(b"\r\n"),
    "line-lflf": lambda m: m.LineEncoder(b"\n\n"),
    "line-aba": lambda m: m.LineEncoder(b"aba"),
    "int8": lambda m: m.IntPrefixEncoder(1),
    "int16": lambda m: m.IntPrefixEncoder(2),
    "int32": lambda m: m.IntPrefixEncoder(4),
    "netstring": lambda m: m.NetstringEncoder(),
    "raw": lambda m: m.RawEncoder(),
}

DELIMITERS = {
    "line-lf": b"\n",
    "line-crlf": b"\r\n",
    "line-lflf": b"\n\n",
    "line-aba": b"aba",
}
SIZES = {"int8": 1, "int16": 2, "int32": 4}

#: Small limits make the edges (max_frame, max_frame + 1) cheap to reach.
LIMITS = st.sampled_from([0, 1, 2, 5, 9, 10, 17, 99, 100, 255, 256, 1000])


@st.composite
def pieces(draw: st.DrawFn, name: str, limit: int) -> bytes:
    """
    One piece of a stream for the codec C{name}: a frame at one of the
    length edges, a declared length with the wrong body, or random bytes.
    """
    edge = draw(
        st.sampled_from(
            [0, 1, limit, limit + 1, max(limit - 1, 0), draw(st.integers(0, 300))]
        )
    )
    payload = draw(st.binary(min_size=edge, max_size=edge))
    kind = draw(st.sampled_from(["frame", "frame", "frame", "short", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=12))
    if name in DELIMITERS:
        delimiter = DELIMITERS[name]
        if draw(st.booleans()):
            payload = payload.replace(delimiter[:1], b"x")
        return payload + (b"" if kind == "short" else delimiter)
    if name in SIZES:
        size = SIZES[name]
        largest = (1 << (8 * size)) - 1
        payload = payload[:largest]
        declared = draw(st.sampled_from([len(payload), len(payload), largest]))
        prefix = declared.to_bytes(size, "big")
        if kind == "short":
            return prefix + payload[: len(payload) // 2]
        return prefix + payload
    if name == "netstring":
        digits = draw(
            st.sampled_from(
                [
                    b"%d" % len(payload),
                    b"%d" % len(payload),
                    b"0%d" % len(payload),
                    # Length fields the compiled fast path must hand over
                    # to the general one: empty, a stray byte, a sign,
                    # more digits than any limit, more than a C integer.
                    b"",
                    b"%dx" % len(payload),
                    b"+%d" % len(payload),
                    b"9" * 12,
                    b"1" * 21,
                ]
            )
        )
        if kind == "short":
            return digits + b":" + payload[: len(payload) // 2]
        end = draw(st.sampled_from([b",", b",", b",", b";"]))
        return digits + b":" + payload + end
    return payload  # raw


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, int, list[bytes | bytearray | memoryview]]:
    """
    A codec name, a limit, and a stream of pieces cut into random chunks
    of random types.
    """
    name = draw(st.sampled_from(sorted(DECODERS)))
    limit = draw(LIMITS)
    data = b"".join(draw(st.lists(pieces(name, limit), max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks: list[bytes | bytearray | memoryview] = []
    previous = 0
    for cut in [*cuts, len(data)]:
        chunk = data[previous:cut]
        previous = cut
        kind = draw(st.sampled_from([bytes, bytes, bytearray, memoryview]))
        chunks.append(kind(chunk))
    return name, limit, chunks


def state(decoder: Any) -> tuple[Any, ...]:
    """
    What must be equal between the two decoders after each chunk.
    """
    error = decoder.error
    return (
        decoder.buffered,
        getattr(decoder, "need", None),
        None if error is None else (type(error), error.kind, str(error)),
    )


def outcome(function: Callable[..., Any], *arguments: Any) -> tuple[str, Any]:
    """
    What C{function(*arguments)} returned, or the type and message of what
    it raised.
    """
    try:
        return "returned", function(*arguments)
    except Exception as error:
        return "raised", (type(error), str(error))


class DecoderDifferentialTests(SynchronousTestCase):
    """
    The compiled decoders split every stream exactly as the Python ones.
    """

    def setUp(self) -> None:
        self.compiled = compiled_codecs()

    @settings(max_examples=400, deadline=None)
    @given(streams())
    def test_same_frames_leftovers_and_errors(
        self, stream: tuple[str, int, list[bytes | bytearray | memoryview]]
    ) -> None:
        """
        Chunk by chunk: the same frames, of the same type, the same bytes
        held and needed, the same error.
        """
        name, limit, chunks = stream
        reference = DECODERS[name](pure, limit)
        candidate = DECODERS[name](self.compiled, limit)
        for chunk in chunks:
            expected = outcome(reference.feed, chunk)
            got = outcome(candidate.feed, chunk)
            self.assertEqual(got, expected, (name, limit, chunk))
            if got[0] == "returned":
                self.assertEqual(
                    [type(frame) for frame in got[1]],
                    [type(frame) for frame in expected[1]],
                )
            self.assertEqual(state(candidate), state(reference), (name, limit))

    @settings(max_examples=100, deadline=None)
    @given(streams(), LIMITS)
    def test_same_after_a_reload(
        self,
        stream: tuple[str, int, list[bytes | bytearray | memoryview]],
        new_limit: int,
    ) -> None:
        """
        A new limit half-way through (a reload) changes both alike.
        """
        name, limit, chunks = stream
        reference = DECODERS[name](pure, limit)
        candidate = DECODERS[name](self.compiled, limit)
        half = len(chunks) // 2
        for index, chunk in enumerate(chunks):
            if index == half:
                reference.set_max_frame(max(new_limit, 1))
                candidate.set_max_frame(max(new_limit, 1))
            self.assertEqual(
                outcome(candidate.feed, chunk),
                outcome(reference.feed, chunk),
            )
            self.assertEqual(state(candidate), state(reference))

    def test_same_construction_errors(self) -> None:
        """
        Bad arguments are refused with the same error and message.
        """
        for make in [
            lambda m: m.LineDecoder(b"", 10),
            lambda m: m.LineDecoder(b"\n", -1),
            lambda m: m.IntPrefixDecoder(3, 10),
            lambda m: m.IntPrefixDecoder(4, -1),
            lambda m: m.NetstringDecoder(-5),
            lambda m: m.RawDecoder(0),
            lambda m: m.LineEncoder(b""),
            lambda m: m.IntPrefixEncoder(8),
        ]:
            expected = outcome(make, pure)
            self.assertEqual(expected[0], "raised")
            self.assertEqual(outcome(make, self.compiled), expected)


class EncoderDifferentialTests(SynchronousTestCase):
    """
    The compiled encoders frame every payload exactly as the Python ones.
    """

    def setUp(self) -> None:
        self.compiled = compiled_codecs()

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(sorted(ENCODERS)),
        st.lists(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"\n", b"a\n", b"\r\n", b"ab", b"aba", b"x" * 256]),
                st.builds(bytearray, st.binary(max_size=5)),
            ),
            max_size=10,
        ),
    )
    def test_same_bytes_or_errors(
        self, name: str, payloads: list[bytes | bytearray]
    ) -> None:
        """
        C{encode_batch} and C{encode} give the same bytes, or the same
        L{ValueError} message, for payloads the format can and cannot
        carry.
        """
        reference = ENCODERS[name](pure)
        candidate = ENCODERS[name](self.compiled)
        self.assertEqual(
            outcome(candidate.encode_batch, payloads),
            outcome(reference.encode_batch, payloads),
        )
        for payload in payloads:
            self.assertEqual(
                outcome(candidate.encode, payload),
                outcome(reference.encode, payload),
            )

    def test_largest_lengths(self) -> None:
        """
        The largest length each prefix holds, and one more.
        """
        for size in (1, 2):
            largest = (1 << (8 * size)) - 1
            for length in (0, largest, largest + 1):
                payload = b"x" * length
                for method in ("encode", "encode_batch"):
                    argument = payload if method == "encode" else [payload]
                    self.assertEqual(
                        outcome(
                            getattr(self.compiled.IntPrefixEncoder(size), method),
                            argument,
                        ),
                        outcome(getattr(pure.IntPrefixEncoder(size), method), argument),
                    )


class SubclassTests(SynchronousTestCase):
    """
    The compiled classes stay open to Python subclasses, as the pure ones.
    """

    def setUp(self) -> None:
        self.compiled = compiled_codecs()

    def test_buffered_decoder_subclass(self) -> None:
        """
        A Python subclass of the compiled L{BufferedDecoder} that writes
        only C{parse} (the documented way to a custom framing) gets the
        buffering, C{need} and C{error} handling, and may add attributes.
        """
        from echoplus.errors import FrameTooLong

        def parse(self: Any, data: bytes, frames: list[bytes]) -> int:
            # Two-byte frames; "!" is an error.
            offset = 0
            while offset + 2 <= len(data):
                if data[offset : offset + 1] == b"!":
                    self.error = FrameTooLong("bang")
                    return len(data)
                frames.append(data[offset : offset + 2])
                offset += 2
            self.need = 2
            self.seen = getattr(self, "seen", 0) + 1
            return offset

        results = []
        for module in (pure, self.compiled):
            decoder = type("Pairs", (module.BufferedDecoder,), {"parse": parse})(10)
            results.append(
                (
                    decoder.feed(b"abc"),
                    decoder.feed(bytearray(b"d")),
                    decoder.feed(b"!ef"),
                    decoder.buffered,
                    str(decoder.error),
                    decoder.seen,
                )
            )
        self.assertEqual(results[0], ([b"ab"], [b"cd"], [], 0, "bang", 2))
        self.assertEqual(results[1], results[0])
