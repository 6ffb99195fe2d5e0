"""
Property tests with hostile input: random and mutated byte streams, at
random splits, fed to every decoder and to every wire-format protocol.

What must hold whatever arrives:
  - no exception escapes a decoder's C{feed} or a protocol's
    C{dataReceived};
  - what is held for an incomplete frame stays within C{max_frame} plus
    the framing's own overhead;
  - a decoder's frames do not depend on how the stream was split;
  - a protocol's output is valid frames of its framing: the replies to
    the frames before the fault, then at most one error frame
    C{ERROR <kind>: <message>}, after which it writes nothing more and
    closes;
  - nothing internal (traceback, exception text, path, repr) reaches the
    wire, even from failing processors.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.errors import EchoPlusError, RequestError
from echoplus.framing import (
    Decoder,
    IntPrefixDecoder,
    LineDecoder,
    NetstringDecoder,
    RawDecoder,
)
from echoplus.interfaces import IProcessor
from echoplus.protocols import FRAMINGS, DelimitedProtocol
from echoplus.testing import FrameHarness
from tests.test_policies import Listener

MAX_FRAME = 40

#: Every error frame the framing layer may send.
ERROR_FRAME = re.compile(rb"^ERROR (frame-too-long|bad-frame): [ -~]+$")
#: Every error frame at all.
ANY_ERROR = re.compile(
    rb"^ERROR (frame-too-long|bad-frame|bad-request|processor-failed|timeout|"
    rb"overloaded): [ -~]+$"
)


def _encode_line(delimiter: bytes) -> Callable[[bytes], bytes]:
    return lambda payload: payload.replace(delimiter[:1], b"") + delimiter


def _encode_prefix(size: int) -> Callable[[bytes], bytes]:
    fmt = {1: ">B", 2: ">H", 4: ">I"}[size]
    return lambda payload: struct.pack(fmt, len(payload)) + payload


def _encode_netstring(payload: bytes) -> bytes:
    return b"%d:%b," % (len(payload), payload)


#: name -> (make a decoder for max_frame, encode one payload, overhead)
CODECS: dict[str, tuple[Callable[[int], Decoder], Callable[[bytes], bytes], int]] = {
    "line": (lambda m: LineDecoder(b"\n", m), _encode_line(b"\n"), 0),
    "crlf": (lambda m: LineDecoder(b"\r\n", m), _encode_line(b"\r\n"), 1),
    "int8": (lambda m: IntPrefixDecoder(1, m), _encode_prefix(1), 1),
    "int16": (lambda m: IntPrefixDecoder(2, m), _encode_prefix(2), 2),
    "int32": (lambda m: IntPrefixDecoder(4, m), _encode_prefix(4), 4),
    "netstring": (
        lambda m: NetstringDecoder(m),
        _encode_netstring,
        len(str(MAX_FRAME)) + 2,
    ),
    "raw": (lambda m: RawDecoder(m), lambda payload: payload, 0),
}

#: The protocol framings and the codec that reads their output.
PROTOCOL_CODECS = {
    "line": "line",
    "netstring": "netstring",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
}


@st.composite
def mutated(draw: Any, encode: Callable[[bytes], bytes]) -> bytes:
    """
    A valid stream of frames, then damaged: bytes flipped, inserted,
    deleted, or the stream cut short.
    """
    payloads = draw(st.lists(st.binary(max_size=MAX_FRAME + 8), max_size=6))
    data = bytearray(b"".join(encode(payload) for payload in payloads))
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        position = draw(st.integers(0, len(data)))
        if operation == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


def streams(encode: Callable[[bytes], bytes]) -> st.SearchStrategy[bytes]:
    """
    Random bytes, lines of printable junk, or a mutated valid stream.
    """
    return st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from([b"a", b"\n", b"\r", b":", b",", b"0", b"9", b"\x00"]),
            max_size=120,
        ).map(b"".join),
        mutated(encode),
    )


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    Cut C{data} at the (sorted, bounded) offsets C{cuts}.
    """
    offsets = sorted({min(cut, len(data)) for cut in cuts})
    chunks, start = [], 0
    for offset in [*offsets, len(data)]:
        if offset > start:
            chunks.append(data[start:offset])
            start = offset
    return chunks


def decode_all(
    codec: str, chunks: list[bytes], max_frame: int = MAX_FRAME
) -> tuple[list[bytes], EchoPlusError | None, Decoder]:
    """
    Feed C{chunks} to a new decoder, checking the buffer bound after each.
    """
    make, _, overhead = CODECS[codec]
    decoder = make(max_frame)
    frames: list[bytes] = []
    for chunk in chunks:
        got = decoder.feed(chunk)
        frames += got
        assert decoder.buffered <= max_frame + overhead, (codec, decoder.buffered)
        assert all(len(frame) <= max_frame for frame in got), codec
        if decoder.error is not None:
            assert decoder.feed(b"more\n,:") == [], codec
    return frames, decoder.error, decoder


def codec_case(codec: str) -> Any:
    """
    A hypothesis strategy of (stream, cuts) for one codec.
    """
    return st.tuples(
        streams(CODECS[codec][1]), st.lists(st.integers(0, 400), max_size=20)
    )


class DecoderFuzzTests(SynchronousTestCase):
    """
    Every decoder survives hostile streams with a bounded buffer, and its
    frames do not depend on the split.
    """

    def check(self, codec: str, case: tuple[bytes, list[int]]) -> None:
        data, cuts = case
        whole, whole_error, _ = decode_all(codec, [data])
        chunked, chunked_error, _ = decode_all(codec, split(data, cuts))
        bytewise, bytewise_error, _ = decode_all(
            codec, [data[i : i + 1] for i in range(len(data))]
        )
        self.assertEqual(chunked, whole)
        self.assertEqual(bytewise, whole)
        kinds = {
            None if error is None else error.kind
            for error in (whole_error, chunked_error, bytewise_error)
        }
        self.assertEqual(len(kinds), 1, kinds)
        for error in (whole_error, chunked_error, bytewise_error):
            if error is not None:
                self.assertIn(error.kind, ("frame-too-long", "bad-frame"))
                self.assertTrue(error.fatal)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("line"))
    def test_line(self, case: tuple[bytes, list[int]]) -> None:
        """
        The line decoder.
        """
        self.check("line", case)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("crlf"))
    def test_crlf_line(self, case: tuple[bytes, list[int]]) -> None:
        """
        The line decoder with a two-byte delimiter.
        """
        self.check("crlf", case)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("int8"))
    def test_int8(self, case: tuple[bytes, list[int]]) -> None:
        """
        The 1-byte length-prefix decoder.
        """
        self.check("int8", case)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("int16"))
    def test_int16(self, case: tuple[bytes, list[int]]) -> None:
        """
        The 2-byte length-prefix decoder.
        """
        self.check("int16", case)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("int32"))
    def test_int32(self, case: tuple[bytes, list[int]]) -> None:
        """
        The 4-byte length-prefix decoder.
        """
        self.check("int32", case)

    @settings(max_examples=150, deadline=None)
    @given(case=codec_case("netstring"))
    def test_netstring(self, case: tuple[bytes, list[int]]) -> None:
        """
        The netstring decoder.
        """
        self.check("netstring", case)

    @settings(max_examples=100, deadline=None)
    @given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400)))
    def test_raw(self, data: bytes, cuts: list[int]) -> None:
        """
        The raw decoder returns every byte, in pieces of at most max_frame,
        and never fails.
        """
        frames, error, decoder = decode_all("raw", split(data, cuts))
        self.assertIsNone(error)
        self.assertEqual(b"".join(frames), data)
        self.assertEqual(decoder.buffered, 0)

    def test_huge_length_prefix_fails_at_once(self) -> None:
        """
        A 4 GiB length prefix fails as soon as its four bytes arrive,
        holding nothing.
        """
        decoder = IntPrefixDecoder(4, MAX_FRAME)
        self.assertEqual(decoder.feed(b"\xff\xff\xff\xff"), [])
        assert decoder.error is not None
        self.assertEqual(decoder.error.kind, "frame-too-long")


class StxProtocol(DelimitedProtocol):
    """
    A user's framing with a decoding hook that refuses frames without STX.
    """

    delimiter = b"\x03"

    def decode_frame(self, frame: bytes) -> bytes:
        if not frame.startswith(b"\x02"):
            raise ValueError(f"no STX in {frame!r} at {__file__}")
        return frame[1:]

    def encode_frame(self, payload: bytes) -> bytes:
        return b"\x02" + payload


class ProtocolFuzzTests(SynchronousTestCase):
    """
    Every wire-format protocol answers hostile streams with valid frames:
    the replies it owes, then at most one error frame, then nothing.
    """

    def check(self, framing: str, case: tuple[bytes, list[int]]) -> None:
        codec = PROTOCOL_CODECS[framing]
        data, cuts = case
        listener = Listener(framing=framing, max_frame=MAX_FRAME)
        protocol, transport = listener.connect()
        overhead = CODECS[codec][2]
        for chunk in split(data, cuts):
            protocol.dataReceived(chunk)
            self.assertLessEqual(protocol._decoder.buffered, MAX_FRAME + overhead)
        expected, error, _ = decode_all(codec, [data])
        # The output decodes completely with the same framing.
        replies, reply_error, reader = decode_all(
            codec, [transport.value()], max_frame=1000
        )
        self.assertIsNone(reply_error)
        self.assertEqual(reader.buffered, 0)
        if error is None:
            self.assertEqual(replies, expected)
            self.assertFalse(transport.write_closed or transport.disconnecting)
            return
        self.assertEqual(replies[:-1], expected)
        self.assertRegex(replies[-1], ERROR_FRAME)
        self.assertEqual(replies[-1].split(b":")[0], b"ERROR " + error.kind.encode())
        self.assertTrue(transport.write_closed or transport.disconnecting)
        written = transport.value()
        protocol.dataReceived(b"after\n5:after,\x00\x01a")
        self.assertEqual(transport.value(), written)

    @settings(max_examples=100, deadline=None)
    @given(case=codec_case("line"))
    def test_line(self, case: tuple[bytes, list[int]]) -> None:
        """
        The line protocol.
        """
        self.check("line", case)

    @settings(max_examples=100, deadline=None)
    @given(case=codec_case("netstring"))
    def test_netstring(self, case: tuple[bytes, list[int]]) -> None:
        """
        The netstring protocol.
        """
        self.check("netstring", case)

    @settings(max_examples=100, deadline=None)
    @given(case=codec_case("int8"))
    def test_int8(self, case: tuple[bytes, list[int]]) -> None:
        """
        The int8 protocol.
        """
        self.check("int8", case)

    @settings(max_examples=100, deadline=None)
    @given(case=codec_case("int16"))
    def test_int16(self, case: tuple[bytes, list[int]]) -> None:
        """
        The int16 protocol.
        """
        self.check("int16", case)

    @settings(max_examples=100, deadline=None)
    @given(case=codec_case("int32"))
    def test_int32(self, case: tuple[bytes, list[int]]) -> None:
        """
        The int32 protocol.
        """
        self.check("int32", case)

    @settings(max_examples=100, deadline=None)
    @given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400)))
    def test_raw(self, data: bytes, cuts: list[int]) -> None:
        """
        The raw protocol echoes every byte and never fails.
        """
        listener = Listener(framing="raw", max_frame=MAX_FRAME)
        protocol, transport = listener.connect()
        for chunk in split(data, cuts):
            protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), data)
        self.assertFalse(transport.disconnecting or transport.write_closed)

    @settings(max_examples=100, deadline=None)
    @given(
        case=st.tuples(
            st.lists(
                st.sampled_from([b"\x02ok", b"bad", b"\x02", b"\x03", b"x" * 50]),
                max_size=8,
            ).map(lambda parts: b"\x03".join(parts)),
            st.lists(st.integers(0, 400), max_size=10),
        )
    )
    def test_subclass_hooks(self, case: tuple[bytes, list[int]]) -> None:
        """
        A subclass whose decode_frame raises answers ERROR bad-frame, with
        none of the exception's text, and closes.
        """
        data, cuts = case
        listener = Listener(
            framing=f"{StxProtocol.__module__}:StxProtocol", max_frame=MAX_FRAME
        )
        protocol, transport = listener.connect()
        for chunk in split(data, cuts):
            protocol.dataReceived(chunk)
        written = transport.value()
        frames = written.split(b"\x03")
        self.assertEqual(frames.pop(), b"")
        for frame in frames:
            self.assertTrue(frame.startswith(b"\x02"), frame)
        errors = [f[1:] for f in frames if f.startswith(b"\x02ERROR")]
        self.assertLessEqual(len(errors), 1)
        if errors:
            self.assertEqual(frames[-1][1:], errors[0])
            self.assertRegex(errors[0], ERROR_FRAME)
            self.assertNotIn(b"STX", written)
            self.assertNotIn(b".py", written)


@implementer(IProcessor)
class Hostile:
    """
    A processor that fails in every way it can, with internal details in
    its exceptions.
    """

    def process(self, message: bytes, context: Any) -> Any:
        secret = f"/srv/secret/{id(self)} {self!r} {message!r}"
        kind = message[:1]
        if kind == b"r":
            raise RequestError("nope")
        if kind == b"v":
            raise ValueError(f"Traceback (most recent call last): {secret}")
        if kind == b"k":
            raise KeyError(secret)
        if kind == b"t":
            return 42  # not a valid reply type
        if kind == b"n":
            return None
        return message


class WireHygieneTests(SynchronousTestCase):
    """
    Nothing internal reaches the wire.
    """

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        messages=st.lists(
            st.builds(
                lambda kind, rest: kind + rest,
                st.sampled_from([b"r", b"v", b"k", b"t", b"n", b"e"]),
                st.binary(max_size=10).map(lambda b: b.replace(b"\n", b"")),
            ),
            max_size=10,
        )
    )
    def test_failing_processors(self, messages: list[bytes]) -> None:
        """
        Whatever a processor raises, its client sees only the documented
        error frames, never the exception's text, a path or a repr.
        """
        harness = FrameHarness("line", [Hostile()])
        self.flushLoggedErrors()
        for message in messages:
            harness.send(message)
        replies = harness.replies()
        expected = [m for m in messages if not m.startswith(b"n")]
        self.assertEqual(len(replies), len(expected))
        for message, reply in zip(expected, replies, strict=True):
            if message.startswith(b"e"):
                self.assertEqual(reply, message)
                continue
            self.assertRegex(reply, ANY_ERROR)
            self.assertNotIn(b"/srv/secret", reply)
            self.assertNotIn(b"Traceback", reply)
            self.assertNotIn(b"object at 0x", reply)
        self.flushLoggedErrors()


#: One step of a client's life: (operation, argument).
operations = st.one_of(
    st.tuples(
        st.just("feed"),
        st.lists(st.sampled_from([b"a", b"bb", b"\n", b"x" * 30]), max_size=12).map(
            b"".join
        ),
    ),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.1, 0.6, 1.5, 3.0])),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("push"), st.integers(1, 30_000)),
    st.tuples(st.just("close_read"), st.none()),
)


class PolicyFuzzTests(SynchronousTestCase):
    """
    Random interleavings of input, time, transport pauses and pushes with
    every policy on: the output stays valid and closing never hangs.
    """

    @settings(max_examples=150, deadline=None)
    @given(steps=st.lists(operations, max_size=25))
    def test_policies_interleaved(self, steps: list[tuple[str, Any]]) -> None:
        """
        Replies, pushes, then at most one error frame and nothing after it;
        the connection always ends up closed once the clock runs on.
        """
        listener = Listener(
            "prefix(text=re:)",
            max_frame=MAX_FRAME,
            max_write_buffer=70_000,
            idle_timeout=5,
            frame_timeout=2,
            rate_limit=20,
            rate_burst=5,
        )
        protocol, transport = listener.connect()
        paused = False
        for operation, argument in steps:
            # The transport pauses and resumes only a registered producer.
            producing = transport.producer is protocol
            if operation == "feed" and not transport.disconnecting:
                protocol.dataReceived(argument)
            elif operation == "advance":
                listener.clock.advance(argument)
            elif operation == "pause" and producing and not paused:
                paused = True
                protocol.pauseProducing()
            elif operation == "resume" and producing and paused:
                paused = False
                protocol.resumeProducing()
            elif operation == "push":
                protocol.context.send(b"p" * argument)
            elif operation == "close_read" and not transport.disconnecting:
                protocol.readConnectionLost()
        listener.clock.pump([1.0] * 20)
        self.assertTrue(transport.disconnecting)
        frames, error, reader = decode_all("line", [transport.value()], 1 << 20)
        self.assertIsNone(error)
        self.assertEqual(reader.buffered, 0)
        errors = [i for i, frame in enumerate(frames) if frame.startswith(b"ERROR")]
        self.assertLessEqual(len(errors), 1)
        for index in errors:
            self.assertEqual(index, len(frames) - 1)
            self.assertRegex(frames[index], ANY_ERROR)
        for frame in frames[: len(frames) - len(errors)]:
            self.assertTrue(frame.startswith((b"re:", b"p")), frame[:20])


class FramingsCoveredTests(SynchronousTestCase):
    """
    The fuzz tests keep up with the framing registry.
    """

    def test_every_builtin_framing_fuzzed(self) -> None:
        """
        Every built-in framing is fuzzed by L{ProtocolFuzzTests}.
        """
        self.assertEqual(set(FRAMINGS), {*PROTOCOL_CODECS, "raw"})
