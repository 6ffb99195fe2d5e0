"""
Tests for L{echoplus.framing}: the sans-IO decoders and encoders.

Every codec is fed its input whole, byte by byte, at random splits and with
trailing bytes; every malformed case is checked for its typed error; and
hypothesis checks the round trip and that arbitrary input yields frames or
a L{FramingError} only, with the held buffer bounded.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Callable, Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from echoplus import framing
from echoplus.errors import BadFrame, FrameTooLong, FramingError
from echoplus.framing import (
    DEFAULT_MAX_FRAME,
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
from tests.support import REPO

PAYLOADS = [b"hello", b"", b"a", b"world, with spaces", bytes(range(14)) + b"z" * 50]


def line_payloads(delimiter: bytes) -> list[bytes]:
    """
    L{PAYLOADS} with every payload that holds C{delimiter} left out.
    """
    return [
        payload.replace(b"\n", b"").replace(b"\r", b"")
        for payload in PAYLOADS
        if delimiter not in payload
    ]


# name -> (make a decoder for a max_frame, make an encoder, held-buffer overhead)
CODECS: dict[str, tuple[Callable[[int], Decoder], Callable[[], Encoder], int]] = {
    "line-lf": (lambda m: LineDecoder(b"\n", m), lambda: LineEncoder(b"\n"), 0),
    "line-crlf": (
        lambda m: LineDecoder(b"\r\n", m),
        lambda: LineEncoder(b"\r\n"),
        1,
    ),
    "netstring": (NetstringDecoder, NetstringEncoder, len(str(DEFAULT_MAX_FRAME)) + 1),
    "int8": (lambda m: IntPrefixDecoder(1, m), lambda: IntPrefixEncoder(1), 1),
    "int16": (lambda m: IntPrefixDecoder(2, m), lambda: IntPrefixEncoder(2), 2),
    "int32": (lambda m: IntPrefixDecoder(4, m), lambda: IntPrefixEncoder(4), 4),
}

DELIMITERS = {"line-lf": b"\n", "line-crlf": b"\r\n"}


def payloads_for(name: str) -> list[bytes]:
    """
    The sample payloads a codec can carry.
    """
    if name in DELIMITERS:
        return line_payloads(DELIMITERS[name])
    return list(PAYLOADS)


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    """
    Cut C{data} at random points into pieces, some of them empty.
    """
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def chunkings(data: bytes, seed: int = 0) -> Iterable[tuple[str, list[bytes]]]:
    """
    The ways each input is fed: whole, byte by byte, and ten random splits.
    """
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for attempt in range(10):
        yield f"random-{attempt}", splits(data, rng)


def feed_all(decoder: Decoder, chunks: Sequence[bytes]) -> list[bytes]:
    """
    Feed every chunk; return all frames in order.
    """
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


def assert_fails(
    case: SynchronousTestCase,
    decoder: Decoder,
    data: bytes,
    error: type[FramingError],
    expected_frames: Sequence[bytes] = (),
) -> None:
    """
    Feeding C{data} in every chunking returns C{expected_frames}, then sets
    an C{error} of type C{error}; later input returns nothing.
    """
    make = type(decoder)
    for how, chunks in chunkings(data):
        fresh = _clone(decoder)
        frames = feed_all(fresh, chunks)
        case.assertEqual(frames, list(expected_frames), (make.__name__, how))
        case.assertIsInstance(fresh.error, error, how)
        case.assertEqual(fresh.feed(b"1:a,\n\x00\x00\x00\x00"), [], how)


def _clone(decoder: Decoder) -> Decoder:
    """
    A fresh decoder configured like C{decoder}.
    """
    if isinstance(decoder, LineDecoder):
        return LineDecoder(decoder.delimiter, decoder.max_frame)
    if isinstance(decoder, IntPrefixDecoder):
        return IntPrefixDecoder(decoder.size, decoder.max_frame)
    if isinstance(decoder, NetstringDecoder):
        return NetstringDecoder(decoder.max_frame)
    return RawDecoder(decoder.max_frame)


class RoundTripTests(SynchronousTestCase):
    """
    Every codec decodes what its encoder produced, however the bytes arrive.
    """

    def test_round_trip_every_chunking(self) -> None:
        """
        Encoded payloads decode to the same payloads fed whole, byte by byte
        and at random splits, with nothing left buffered.
        """
        for name, (make_decoder, make_encoder, _) in CODECS.items():
            payloads = payloads_for(name)
            data = make_encoder().encode_batch(payloads)
            for how, chunks in chunkings(data):
                decoder = make_decoder(DEFAULT_MAX_FRAME)
                self.assertEqual(feed_all(decoder, chunks), payloads, (name, how))
                self.assertIsNone(decoder.error, (name, how))
                self.assertEqual(decoder.buffered, 0, (name, how))

    def test_trailing_bytes_are_held(self) -> None:
        """
        Bytes of an incomplete frame after complete ones are held, counted
        in C{buffered}, and complete a frame once the rest arrives.
        """
        for name, (make_decoder, make_encoder, _) in CODECS.items():
            encoder = make_encoder()
            payloads = payloads_for(name)
            last = encoder.encode(b"trailing")
            data = encoder.encode_batch(payloads) + last[:-1]
            for how, chunks in chunkings(data):
                decoder = make_decoder(DEFAULT_MAX_FRAME)
                self.assertEqual(feed_all(decoder, chunks), payloads, (name, how))
                self.assertGreater(decoder.buffered, 0, (name, how))
                self.assertEqual(decoder.feed(last[-1:]), [b"trailing"], (name, how))
                self.assertEqual(decoder.buffered, 0, (name, how))

    def test_many_frames_one_chunk(self) -> None:
        """
        A thousand frames in one chunk come back as one batch, in order.
        """
        payloads = [b"%d" % i for i in range(1000)]
        for name, (make_decoder, make_encoder, _) in CODECS.items():
            decoder = make_decoder(DEFAULT_MAX_FRAME)
            data = make_encoder().encode_batch(payloads)
            self.assertEqual(decoder.feed(data), payloads, name)

    def test_encode_matches_encode_batch(self) -> None:
        """
        C{encode_batch} equals the concatenation of C{encode} per payload.
        """
        for name, (_, make_encoder, _) in CODECS.items():
            encoder = make_encoder()
            payloads = payloads_for(name)
            self.assertEqual(
                encoder.encode_batch(payloads),
                b"".join(encoder.encode(p) for p in payloads),
                name,
            )

    def test_wire_forms(self) -> None:
        """
        Each encoder produces its documented bytes.
        """
        self.assertEqual(LineEncoder().encode(b"hi"), b"hi\n")
        self.assertEqual(LineEncoder(b"\r\n").encode(b"hi"), b"hi\r\n")
        self.assertEqual(NetstringEncoder().encode(b"hi"), b"2:hi,")
        self.assertEqual(NetstringEncoder().encode(b""), b"0:,")
        self.assertEqual(IntPrefixEncoder(1).encode(b"hi"), b"\x02hi")
        self.assertEqual(IntPrefixEncoder(2).encode(b"hi"), b"\x00\x02hi")
        self.assertEqual(IntPrefixEncoder(4).encode(b"hi"), b"\x00\x00\x00\x02hi")
        self.assertEqual(RawEncoder().encode_batch([b"a", b"bc"]), b"abc")

    def test_empty_batch(self) -> None:
        """
        Encoding no payloads produces no bytes.
        """
        encoders = (
            LineEncoder(),
            LineEncoder(b"\n\n"),
            IntPrefixEncoder(2),
            NetstringEncoder(),
            RawEncoder(),
        )
        for encoder in encoders:
            self.assertEqual(encoder.encode_batch([]), b"")

    def test_decode_returns_nothing_for_empty_input(self) -> None:
        """
        Feeding C{b""} returns no frames and holds nothing.
        """
        for name, (make_decoder, _, _) in CODECS.items():
            decoder = make_decoder(DEFAULT_MAX_FRAME)
            self.assertEqual(decoder.feed(b""), [], name)
            self.assertEqual(decoder.buffered, 0, name)
        self.assertEqual(RawDecoder().feed(b""), [])


class LineTests(SynchronousTestCase):
    """
    L{LineDecoder} and L{LineEncoder}.
    """

    def test_exactly_max_frame_accepted(self) -> None:
        """
        A line of exactly C{max_frame} bytes is a frame, in every chunking.
        """
        for delimiter in (b"\n", b"\r\n"):
            data = b"abcd" + delimiter
            for how, chunks in chunkings(data):
                decoder = LineDecoder(delimiter, 4)
                self.assertEqual(feed_all(decoder, chunks), [b"abcd"], how)
                self.assertIsNone(decoder.error)

    def test_too_long_with_delimiter(self) -> None:
        """
        A complete line over C{max_frame} is C{FrameTooLong}; the lines
        before it are returned.
        """
        for delimiter in (b"\n", b"\r\n"):
            data = b"ok" + delimiter + b"abcde" + delimiter + b"later" + delimiter
            assert_fails(self, LineDecoder(delimiter, 4), data, FrameTooLong, [b"ok"])

    def test_too_long_without_delimiter(self) -> None:
        """
        Once more than C{max_frame} bytes (plus a partial delimiter) are
        held without a delimiter, the line is C{FrameTooLong} at once.
        """
        assert_fails(self, LineDecoder(b"\n", 4), b"ok\nabcde", FrameTooLong, [b"ok"])
        assert_fails(
            self, LineDecoder(b"\r\n", 4), b"ok\r\nabcd\rx", FrameTooLong, [b"ok"]
        )

    def test_max_frame_held_without_delimiter_waits(self) -> None:
        """
        C{max_frame} bytes without a delimiter may still become a valid
        line: no error yet.
        """
        decoder = LineDecoder(b"\r\n", 4)
        self.assertEqual(decoder.feed(b"abcd\r"), [])
        self.assertIsNone(decoder.error)
        self.assertEqual(decoder.feed(b"\n"), [b"abcd"])

    def test_delimiter_straddling_chunks(self) -> None:
        """
        A multi-byte delimiter split across chunks still ends the frame.
        """
        decoder = LineDecoder(b"<END>")
        self.assertEqual(decoder.feed(b"one<E"), [])
        self.assertEqual(decoder.feed(b"N"), [])
        self.assertEqual(decoder.feed(b"D>two<END>"), [b"one", b"two"])

    def test_empty_lines(self) -> None:
        """
        Consecutive delimiters are empty frames.
        """
        self.assertEqual(LineDecoder().feed(b"\n\n"), [b"", b""])

    def test_empty_delimiter_refused(self) -> None:
        """
        An empty delimiter cannot frame anything.
        """
        self.assertRaises(ValueError, LineDecoder, b"")
        self.assertRaises(ValueError, LineEncoder, b"")

    def test_encoder_refuses_delimiter_in_payload(self) -> None:
        """
        A payload carrying the delimiter cannot be encoded, alone or in a
        batch.
        """
        encoder = LineEncoder(b"\r\n")
        self.assertRaises(ValueError, encoder.encode, b"a\r\nb")
        self.assertRaises(ValueError, encoder.encode_batch, [b"ok", b"a\r\nb"])
        self.assertEqual(encoder.encode(b"a\rb\n"), b"a\rb\n\r\n")


class SelfOverlappingDelimiterTests(SynchronousTestCase):
    """
    Delimiters whose start is also their end (C{\\n\\n}, C{aba}).
    """

    def test_payload_running_into_delimiter_refused(self) -> None:
        """
        A payload whose end would join the delimiter early is refused,
        alone and in a batch, instead of being framed ambiguously.
        """
        self.assertRaises(ValueError, LineEncoder(b"\n\n").encode, b"x\n")
        self.assertRaises(ValueError, LineEncoder(b"\n\n").encode_batch, [b"x\n", b"y"])
        self.assertRaises(ValueError, LineEncoder(b"aba").encode, b"xab")

    def test_unambiguous_payloads_round_trip(self) -> None:
        """
        Payloads that stay unambiguous are framed and decode unchanged.
        """
        for delimiter, payloads in (
            (b"\n\n", [b"x", b"\ny", b""]),
            (b"aba", [b"xa", b"bx", b"b"]),
        ):
            data = LineEncoder(delimiter).encode_batch(payloads)
            self.assertEqual(LineDecoder(delimiter).feed(data), payloads)


class NetstringTests(SynchronousTestCase):
    """
    L{NetstringDecoder}: strict netstrings.
    """

    def test_malformed(self) -> None:
        """
        Each malformed netstring is C{BadFrame}, after the frames before it.
        """
        cases = {
            "non-digit": b"x:abc,",
            "non-digit after digit": b"1x:a,",
            "negative": b"-1:a,",
            "space": b" 1:a,",
            "leading zero": b"01:a,",
            "zero zero": b"00:,",
            "missing comma": b"3:abcX",
            "empty length": b":abc,",
        }
        for bad in cases.values():
            assert_fails(self, NetstringDecoder(100), b"2:ok," + bad, BadFrame, [b"ok"])

    def test_zero_length(self) -> None:
        """
        C{0:,} is the empty frame.
        """
        self.assertEqual(NetstringDecoder().feed(b"0:,0:,"), [b"", b""])

    def test_length_over_max(self) -> None:
        """
        A length over C{max_frame} is C{FrameTooLong} once the length is
        read, before any payload arrives.
        """
        assert_fails(self, NetstringDecoder(10), b"2:ok,11:", FrameTooLong, [b"ok"])

    def test_too_many_digits(self) -> None:
        """
        A length field with more digits than C{max_frame} has is
        C{FrameTooLong} before its colon arrives.
        """
        assert_fails(self, NetstringDecoder(99), b"100", FrameTooLong)
        assert_fails(self, NetstringDecoder(65536), b"0000000", BadFrame)
        assert_fails(self, NetstringDecoder(65536), b"999999", FrameTooLong)

    def test_exactly_max_frame_accepted(self) -> None:
        """
        A netstring of exactly C{max_frame} bytes is a frame.
        """
        for how, chunks in chunkings(b"10:0123456789,"):
            decoder = NetstringDecoder(10)
            self.assertEqual(feed_all(decoder, chunks), [b"0123456789"], how)

    def test_payload_may_hold_separators(self) -> None:
        """
        Colons and commas inside the payload are data.
        """
        self.assertEqual(NetstringDecoder().feed(b"3:,:,,"), [b",:,"])


class IntPrefixTests(SynchronousTestCase):
    """
    L{IntPrefixDecoder} and L{IntPrefixEncoder} with 1, 2 and 4 byte
    prefixes.
    """

    def test_over_max_rejected_on_prefix(self) -> None:
        """
        A prefix announcing more than C{max_frame} bytes is C{FrameTooLong}
        as soon as the prefix alone arrives.
        """
        for size in (1, 2, 4):
            prefix = (11).to_bytes(size, "big")
            ok = IntPrefixEncoder(size).encode(b"ok")
            assert_fails(
                self, IntPrefixDecoder(size, 10), ok + prefix, FrameTooLong, [b"ok"]
            )

    def test_exactly_max_frame_accepted(self) -> None:
        """
        A frame of exactly C{max_frame} bytes is accepted.
        """
        for size in (1, 2, 4):
            data = IntPrefixEncoder(size).encode(b"x" * 10)
            for how, chunks in chunkings(data):
                decoder = IntPrefixDecoder(size, 10)
                self.assertEqual(feed_all(decoder, chunks), [b"x" * 10], how)

    def test_largest_payloads(self) -> None:
        """
        The encoder carries the largest length its prefix holds and refuses
        one byte more.
        """
        self.assertEqual(IntPrefixEncoder(1).encode(b"x" * 255)[:1], b"\xff")
        self.assertRaises(ValueError, IntPrefixEncoder(1).encode, b"x" * 256)
        self.assertRaises(ValueError, IntPrefixEncoder(1).encode_batch, [b"x" * 256])
        self.assertEqual(IntPrefixEncoder(2).encode(b"x" * 65535)[:2], b"\xff\xff")
        self.assertRaises(ValueError, IntPrefixEncoder(2).encode, b"x" * 65536)

    def test_prefix_cache_is_bounded(self) -> None:
        """
        The encoders remember the prefixes of lengths they met, up to a
        bound; past it every length is still encoded correctly.
        """
        self.patch(framing._codecs, "_INT_PREFIXES", {1: {}, 2: {}, 4: {}})
        self.patch(framing._codecs, "_NETSTRING_PREFIXES", {})
        self.patch(framing._codecs, "_PREFIXES_LIMIT", 3)
        payloads = [b"x" * n for n in range(10)]
        for encoder, expected in [
            (IntPrefixEncoder(2), lambda p: len(p).to_bytes(2, "big") + p),
            (NetstringEncoder(), lambda p: b"%d:%b," % (len(p), p)),
        ]:
            for _ in range(2):  # the second time, some come from the cache
                self.assertEqual(
                    encoder.encode_batch(payloads),
                    b"".join(expected(p) for p in payloads),
                )
        self.assertEqual(len(framing._codecs._INT_PREFIXES[2]), 3)
        self.assertEqual(len(framing._codecs._NETSTRING_PREFIXES), 3)

    def test_big_endian(self) -> None:
        """
        Lengths are big-endian.
        """
        decoder = IntPrefixDecoder(2)
        self.assertEqual(decoder.feed(b"\x01\x00" + b"y" * 256), [b"y" * 256])

    def test_bad_sizes_refused(self) -> None:
        """
        Only 1, 2 and 4 byte prefixes exist.
        """
        for size in (0, 3, 8):
            self.assertRaises(ValueError, IntPrefixDecoder, size)
            self.assertRaises(ValueError, IntPrefixEncoder, size)

    def test_negative_max_frame_refused(self) -> None:
        """
        A negative C{max_frame} is a programming error.
        """
        self.assertRaises(ValueError, IntPrefixDecoder, 4, -1)
        self.assertRaises(ValueError, LineDecoder, b"\n", -1)
        self.assertRaises(ValueError, RawDecoder, 0)


class RawTests(SynchronousTestCase):
    """
    L{RawDecoder}: every chunk is a frame.
    """

    def test_chunks_are_frames(self) -> None:
        """
        Each chunk comes back as one frame, unchanged.
        """
        decoder = RawDecoder()
        self.assertEqual(decoder.feed(b"abc"), [b"abc"])
        self.assertEqual(decoder.feed(b"\n\x00"), [b"\n\x00"])
        self.assertEqual(decoder.buffered, 0)
        self.assertIsNone(decoder.error)

    def test_large_chunk_cut(self) -> None:
        """
        A chunk over C{max_frame} is cut into frames of at most
        C{max_frame} bytes, in order.
        """
        decoder = RawDecoder(4)
        self.assertEqual(decoder.feed(b"abcdefghij"), [b"abcd", b"efgh", b"ij"])

    def test_round_trip(self) -> None:
        """
        Whatever the chunking, the frames join to the input.
        """
        data = bytes(range(256)) * 4
        for how, chunks in chunkings(data):
            frames = feed_all(RawDecoder(100), chunks)
            self.assertEqual(b"".join(frames), data, how)
            self.assertTrue(all(0 < len(f) <= 100 for f in frames), how)


# Property tests.

_CODEC_NAMES = st.sampled_from(sorted(CODECS))


@st.composite
def _chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class PropertyTests(SynchronousTestCase):
    """
    Hypothesis checks of the decoder contract.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        name=_CODEC_NAMES, payloads=st.lists(st.binary(max_size=300)), data=st.data()
    )
    def test_round_trip(
        self, name: str, payloads: list[bytes], data: st.DataObject
    ) -> None:
        """
        Any payloads the encoder accepts decode back unchanged, however the
        encoding is split.
        """
        make_decoder, make_encoder, _ = CODECS[name]
        if name in DELIMITERS:
            delimiter = DELIMITERS[name]
            payloads = [p for p in payloads if delimiter not in p]
        if name == "int8":
            payloads = [p[:255] for p in payloads]
        encoded = make_encoder().encode_batch(payloads) if payloads else b""
        decoder = make_decoder(300)
        chunks = data.draw(_chunked(encoded))
        self.assertEqual(feed_all(decoder, chunks), payloads)
        self.assertIsNone(decoder.error)
        self.assertEqual(decoder.buffered, 0)

    @settings(max_examples=200, deadline=None)
    @given(
        name=_CODEC_NAMES,
        max_frame=st.integers(0, 40),
        stream=st.binary(max_size=400),
        data=st.data(),
    )
    def test_arbitrary_bytes(
        self, name: str, max_frame: int, stream: bytes, data: st.DataObject
    ) -> None:
        """
        Arbitrary bytes give frames of at most C{max_frame} bytes or a
        typed L{FramingError}, never another exception, and the held
        buffer stays within C{max_frame} plus the framing's overhead.
        """
        make_decoder, _, overhead = CODECS[name]
        decoder = make_decoder(max_frame)
        if name == "netstring":
            overhead = len(str(max_frame)) + 1
        for chunk in data.draw(_chunked(stream)):
            frames = decoder.feed(chunk)
            self.assertTrue(all(len(f) <= max_frame for f in frames), frames)
            self.assertLessEqual(decoder.buffered, max_frame + overhead)
            if decoder.error is not None:
                self.assertIsInstance(decoder.error, FramingError)
                self.assertEqual(decoder.feed(stream), [])
                break

    @settings(max_examples=150, deadline=None)
    @given(
        delimiter=st.binary(min_size=1, max_size=4).map(
            lambda b: bytes(97 + x % 2 for x in b)
        ),
        payloads=st.lists(
            st.binary(max_size=8).map(lambda b: bytes(97 + x % 2 for x in b)),
            max_size=6,
        ),
        data=st.data(),
    )
    def test_line_any_delimiter(
        self, delimiter: bytes, payloads: list[bytes], data: st.DataObject
    ) -> None:
        """
        Over a two-letter alphabet, where delimiters overlap themselves
        often, the line encoder refuses exactly the payloads the decoder
        would not get back, and what it frames decodes unchanged.
        """
        encoder = LineEncoder(delimiter)
        ambiguous = [p for p in payloads if (p + delimiter).find(delimiter) != len(p)]
        try:
            encoded = encoder.encode_batch(payloads)
        except ValueError:
            self.assertTrue(ambiguous)
            return
        self.assertEqual(ambiguous, [])
        decoder = LineDecoder(delimiter, 100)
        chunks = data.draw(_chunked(encoded))
        self.assertEqual(feed_all(decoder, chunks), payloads)

    @settings(max_examples=100, deadline=None)
    @given(stream=st.binary(max_size=400), max_frame=st.integers(1, 50))
    def test_raw_arbitrary_bytes(self, stream: bytes, max_frame: int) -> None:
        """
        Raw frames of arbitrary input rejoin to the input and never exceed
        C{max_frame}.
        """
        frames = RawDecoder(max_frame).feed(stream)
        self.assertEqual(b"".join(frames), stream)
        self.assertTrue(all(0 < len(f) <= max_frame for f in frames))


class IsolationTests(SynchronousTestCase):
    """
    The framing module stands alone.
    """

    def test_no_twisted_import(self) -> None:
        """
        Importing L{echoplus.framing} (and with it L{echoplus.errors}) in
        a fresh interpreter loads no C{twisted} module.
        """
        code = (
            "import sys, echoplus.framing, echoplus.errors\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.assertEqual(result.stdout.strip(), "[]")
