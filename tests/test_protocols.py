"""
Tests for L{echoplus.protocols} on an in-memory transport: every wire
format, reply order and batching, error frames, closing, half-close, the
subclassing hooks and the built-in processors.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides, implementer

from echoplus.config import ListenerSettings
from echoplus.errors import ConfigError, RequestError
from echoplus.factory import EchoPlusFactory
from echoplus.framing import (
    IntPrefixDecoder,
    IntPrefixEncoder,
    LineDecoder,
    NetstringDecoder,
    NetstringEncoder,
)
from echoplus.interfaces import IProcessor
from echoplus.processors.chain import parse_chain
from echoplus.protocols import (
    CLOSE_GRACE,
    FRAMINGS,
    DelimitedProtocol,
    FramedProtocol,
    LengthPrefixedProtocol,
    LineProtocol,
    find_framing,
)

# Processors and protocols that the tests load by dotted path.

SECRET = "do-not-leak-this"


@implementer(IProcessor)
class Explode:
    """
    A processor that raises with a message that must never reach a client.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        raise RuntimeError(SECRET)


@implementer(IProcessor)
class Refuse:
    """
    A processor that refuses C{no} with a L{RequestError} and echoes the rest.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        if message == b"no":
            raise RequestError("no thanks")
        return message


@implementer(IProcessor)
class Later:
    """
    A processor whose reply waits for C{release()}: an asynchronous reply.
    """

    pending: list[tuple[Deferred[bytes], bytes]] = []

    def process(self, message: bytes, context: Any) -> Deferred[bytes]:
        deferred: Deferred[bytes] = Deferred()
        Later.pending.append((deferred, message))
        return deferred

    @classmethod
    def release(cls) -> None:
        """
        Fire every pending reply, newest first, to prove order is restored.
        """
        pending, cls.pending = cls.pending, []
        for deferred, message in reversed(pending):
            deferred.callback(message)


@implementer(IProcessor)
class Pusher:
    """
    Pushes C{pushed} with C{context.send} and replies C{replied}.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        context.send(b"pushed")
        return b"replied"


class StxProtocol(DelimitedProtocol):
    """
    Frames are C{STX payload ETX}; a frame without its STX is malformed.
    """

    delimiter = b"\x03"

    def decode_frame(self, frame: bytes) -> bytes:
        if not frame.startswith(b"\x02"):
            raise ValueError("no STX")
        return frame[1:]

    def encode_frame(self, payload: bytes) -> bytes:
        return b"\x02" + payload


class CountingLineProtocol(LineProtocol):
    """
    A user's subclass with attributes of its own that wraps C{dataReceived}
    (compiled, the method it wraps is the C read path's).
    """

    reads = 0
    seen: list[bytes]

    def connectionMade(self) -> None:
        self.seen = []
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.reads += 1
        self.seen.append(data)
        super().dataReceived(data)


class ShortPrefixProtocol(LengthPrefixedProtocol):
    """
    A two-byte length prefix, by subclassing.
    """

    prefix_size = 2


class NotAProtocol:
    """
    Something that is not a L{FramedProtocol}.
    """


# Helpers.


class CountingTransport(StringTransport):
    """
    A L{StringTransport} that records every write separately.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class HalfCloseableTransport(CountingTransport):
    """
    A transport that can close its write side alone, like TCP's.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect(
    framing: str = "line",
    processors: str = "echo",
    transport: CountingTransport | None = None,
    **limits: Any,
) -> tuple[FramedProtocol, CountingTransport, task.Clock]:
    """
    Connect a protocol of C{framing} with the chain C{processors} to an
    in-memory transport.
    """
    clock = task.Clock()
    settings = ListenerSettings(
        framing=framing, processors=parse_chain(processors), **limits
    )
    factory = EchoPlusFactory(settings, clock)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    transport = transport if transport is not None else CountingTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


ENCODERS = {
    "line": lambda payloads: b"".join(p + b"\n" for p in payloads),
    "netstring": NetstringEncoder().encode_batch,
    "int8": IntPrefixEncoder(1).encode_batch,
    "int16": IntPrefixEncoder(2).encode_batch,
    "int32": IntPrefixEncoder(4).encode_batch,
}

DECODERS = {
    "line": lambda: LineDecoder(b"\n"),
    "netstring": NetstringDecoder,
    "int8": lambda: IntPrefixDecoder(1),
    "int16": lambda: IntPrefixDecoder(2),
    "int32": lambda: IntPrefixDecoder(4),
}


def decode(framing: str, data: bytes) -> list[bytes]:
    """
    Split server output in C{framing} back into payloads.
    """
    decoder = DECODERS[framing]()
    frames = decoder.feed(data)
    assert decoder.error is None and decoder.buffered == 0, data
    return frames


class WireFormatTests(SynchronousTestCase):
    """
    Every built-in framing answers in request order, in one write per read.
    """

    def test_every_framing_answers_in_order(self) -> None:
        """
        Several requests in one read are answered in order, in the
        connection's framing, in one transport write.
        """
        requests = [b"one", b"two", b"", b"three"]
        for framing, encode in ENCODERS.items():
            protocol, transport, _ = connect(framing, "upper")
            protocol.dataReceived(encode(requests))
            self.assertEqual(len(transport.writes), 1, framing)
            self.assertEqual(
                decode(framing, transport.value()),
                [b"ONE", b"TWO", b"", b"THREE"],
                framing,
            )
            self.assertFalse(transport.disconnecting, framing)

    def test_every_framing_byte_by_byte(self) -> None:
        """
        Requests fed one byte at a time are answered as they complete.
        """
        for framing, encode in ENCODERS.items():
            protocol, transport, _ = connect(framing, "reverse")
            for byte in encode([b"abc", b"de"]):
                protocol.dataReceived(bytes([byte]))
            self.assertEqual(decode(framing, transport.value()), [b"cba", b"ed"])
            self.assertEqual(len(transport.writes), 2, framing)

    def test_raw(self) -> None:
        """
        On C{raw}, each read is a message and its reply is written as is.
        """
        protocol, transport, _ = connect("raw", "upper")
        protocol.dataReceived(b"abc\ndef")
        protocol.dataReceived(b"\x00xyz")
        self.assertEqual(transport.writes, [b"ABC\nDEF", b"\x00XYZ"])

    def test_registry(self) -> None:
        """
        Every contract framing name is registered.
        """
        self.assertEqual(
            sorted(FRAMINGS), ["int16", "int32", "int8", "line", "netstring", "raw"]
        )
        for name, protocol_class in FRAMINGS.items():
            self.assertIs(find_framing(name), protocol_class)

    def test_line_delimiter_setting(self) -> None:
        """
        The C{line} framing uses the listener's delimiter both ways.
        """
        protocol, transport, _ = connect("line", "upper", delimiter=b"\r\n")
        protocol.dataReceived(b"a\nb\r\nc\r\n")
        self.assertEqual(transport.value(), b"A\nB\r\nC\r\n")

    def test_no_write_without_replies(self) -> None:
        """
        An incomplete frame writes nothing.
        """
        protocol, transport, _ = connect("line")
        protocol.dataReceived(b"partial")
        self.assertEqual(transport.writes, [])

    def test_async_replies_keep_order(self) -> None:
        """
        Replies completing in reverse order still leave in request order,
        in one write when they complete together.
        """
        protocol, transport, _ = connect("line", "tests.test_protocols:Later")
        protocol.dataReceived(b"1\n2\n3\n")
        self.assertEqual(transport.writes, [])
        Later.release()
        self.assertEqual(transport.writes, [b"1\n2\n3\n"])

    def test_push_joins_the_batch(self) -> None:
        """
        A push during a read goes out in the same write as the replies, in
        the connection's framing.
        """
        protocol, transport, _ = connect("netstring", "tests.test_protocols:Pusher")
        protocol.dataReceived(b"1:a,")
        self.assertEqual(transport.writes, [b"6:pushed,7:replied,"])
        protocol.context.send(b"later")
        self.assertEqual(transport.writes[-1], b"5:later,")

    def test_context(self) -> None:
        """
        The connection context carries the peer and the listener's name.
        """
        protocol, _, _ = connect("line")
        self.assertEqual(
            protocol.context.peer, IPv4Address("TCP", "192.168.1.1", 54321)
        )
        self.assertEqual(protocol.context.listener, ListenerSettings().endpoint)
        self.assertIsInstance(protocol.context.id, int)


class ErrorFrameTests(SynchronousTestCase):
    """
    Errors become C{ERROR <kind>: ...} frames; fatal ones close.
    """

    def test_frame_too_long_closes(self) -> None:
        """
        A line over C{max_frame} answers the lines before it, then
        C{ERROR frame-too-long}, then the connection closes.
        """
        protocol, transport, _ = connect("line", "upper", max_frame=4)
        protocol.dataReceived(b"ok\nabcdef\nlater\n")
        self.assertEqual(
            transport.value(),
            b"OK\nERROR frame-too-long: line exceeds the limit of 4 bytes\n",
        )
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"more\n")
        self.assertNotIn(b"MORE", transport.value())

    def test_length_prefix_too_long_closes(self) -> None:
        """
        A length prefix over C{max_frame} is refused as soon as it arrives.
        """
        protocol, transport, _ = connect("int32", max_frame=10)
        protocol.dataReceived(b"\x00\x00\x00\x0b")
        [reply] = decode("int32", transport.value())
        self.assertTrue(reply.startswith(b"ERROR frame-too-long: "), reply)
        self.assertTrue(transport.disconnecting)

    def test_bad_frame_closes(self) -> None:
        """
        A malformed netstring answers C{ERROR bad-frame} in netstring
        framing, after the replies owed, and closes.
        """
        protocol, transport, _ = connect("netstring")
        protocol.dataReceived(b"2:ok,x:")
        self.assertEqual(
            decode("netstring", transport.value()),
            [b"ok", b"ERROR bad-frame: netstring length is not a decimal number"],
        )
        self.assertTrue(transport.disconnecting)

    def test_bad_request_goes_on(self) -> None:
        """
        A L{RequestError} answers C{ERROR bad-request: <its message>} and
        the connection goes on.
        """
        protocol, transport, _ = connect("line", "tests.test_protocols:Refuse")
        protocol.dataReceived(b"yes\nno\nagain\n")
        self.assertEqual(
            transport.value(), b"yes\nERROR bad-request: no thanks\nagain\n"
        )
        self.assertFalse(transport.disconnecting)

    def test_processor_failed_hides_exception(self) -> None:
        """
        Any other exception answers C{ERROR processor-failed: <name>}
        without its text, the connection goes on, and the log gets it.
        """
        name = "tests.test_protocols:Explode"
        protocol, transport, _ = connect("line", f"upper,{name}")
        protocol.dataReceived(b"a\nb\n")
        expected = f"ERROR processor-failed: {name}\n".encode()
        self.assertEqual(transport.value(), expected * 2)
        self.assertNotIn(SECRET.encode(), transport.value())
        self.assertNotIn(b"Traceback", transport.value())
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_async_replies_owed_before_fatal_error(self) -> None:
        """
        Asynchronous replies owed before a fatal error are sent before the
        error frame, and the connection closes only then.
        """
        protocol, transport, _ = connect(
            "line", "tests.test_protocols:Later", max_frame=4
        )
        protocol.dataReceived(b"a\nb\ntoo-long\n")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        Later.release()
        self.assertEqual(
            transport.value(),
            b"a\nb\nERROR frame-too-long: line exceeds the limit of 4 bytes\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_lingering_close(self) -> None:
        """
        After a fatal error on a half-closeable transport, the server shuts
        its write side so the client reads the error frame, and aborts
        after the grace period if the client never closes.
        """
        transport = HalfCloseableTransport()
        protocol, _, clock = connect("line", max_frame=2, transport=transport)
        protocol.dataReceived(b"long\n")
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.aborted)
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.aborted)

    def test_tls_close_reads_on(self) -> None:
        """
        After a fatal error on a TLS transport (no half-close of its own),
        the server closes it and resumes reading: the close completes only
        when the client's C{close_notify} or end of stream is read, so a
        paused reader would hold the connection for the whole grace.
        """
        transport = CountingTransport()
        directlyProvides(transport, ISSLTransport)
        protocol, _, clock = connect("line", max_frame=2, transport=transport)
        protocol.dataReceived(b"long\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"ignored\n")
        self.assertEqual(
            transport.value(),
            b"ERROR frame-too-long: line exceeds the limit of 2 bytes\n",
        )
        clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.aborted)

    def test_unframeable_reply(self) -> None:
        """
        A reply the framing cannot carry (a delimiter inside a line) is
        replaced by C{ERROR processor-failed} and the other replies go out.
        """
        protocol, transport, _ = connect("line", "tests.test_protocols:Splitter")
        protocol.dataReceived(b"ok\nsplit me\n")
        self.assertEqual(
            transport.value(),
            b"ok\nERROR processor-failed: reply cannot be framed\n",
        )


@implementer(IProcessor)
class Splitter:
    """
    Replies with a newline inside the payload for C{split me}.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        return message.replace(b" ", b"\n")


class HalfCloseTests(SynchronousTestCase):
    """
    A client that shuts its write side gets every reply it is owed.
    """

    def test_sync_replies_then_close(self) -> None:
        """
        After the client's EOF, the replies already sent stand and the
        connection closes.
        """
        protocol, transport, _ = connect("line", "upper")
        protocol.dataReceived(b"a\nb\n")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"A\nB\n")
        self.assertTrue(transport.disconnecting)

    def test_async_replies_then_close(self) -> None:
        """
        Replies still pending at the client's EOF are sent, then the
        connection closes.
        """
        protocol, transport, _ = connect("line", "tests.test_protocols:Later")
        protocol.dataReceived(b"a\nb\n")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        Later.release()
        self.assertEqual(transport.value(), b"a\nb\n")
        self.assertTrue(transport.disconnecting)

    def test_incomplete_frame_at_eof(self) -> None:
        """
        EOF in the middle of a frame answers what came before, then
        C{ERROR bad-frame}, then closes.
        """
        protocol, transport, _ = connect("line")
        protocol.dataReceived(b"a\nhal")
        protocol.readConnectionLost()
        self.assertEqual(
            transport.value(),
            b"a\nERROR bad-frame: connection closed in the middle of a frame\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_raw_upload_then_eof(self) -> None:
        """
        On C{raw}, every chunk before EOF is answered, then the connection
        closes.
        """
        protocol, transport, _ = connect("raw", "upper")
        for _ in range(3):
            protocol.dataReceived(b"x" * 1000)
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"X" * 3000)
        self.assertTrue(transport.disconnecting)


class SubclassingTests(SynchronousTestCase):
    """
    The subclassing hooks and C{module:Class} framings.
    """

    def test_delimited_hooks(self) -> None:
        """
        A L{DelimitedProtocol} subclass frames with its own delimiter and
        its C{decode_frame} / C{encode_frame} hooks.
        """
        protocol, transport, _ = connect("tests.test_protocols:StxProtocol", "upper")
        self.assertIsInstance(protocol, StxProtocol)
        protocol.dataReceived(b"\x02hi\x03\x02there\x03")
        self.assertEqual(transport.writes, [b"\x02HI\x03\x02THERE\x03"])

    def test_decode_frame_value_error(self) -> None:
        """
        A L{ValueError} from C{decode_frame} is C{ERROR bad-frame} (in the
        subclass's framing), after the frames before it, then close.
        """
        protocol, transport, _ = connect("tests.test_protocols:StxProtocol")
        protocol.dataReceived(b"\x02ok\x03no stx\x03\x02later\x03")
        self.assertEqual(
            transport.value(), b"\x02ok\x03\x02ERROR bad-frame: malformed frame\x03"
        )
        self.assertTrue(transport.disconnecting)

    def test_subclass_wraps_the_read_path(self) -> None:
        """
        A subclass's own attributes and its C{dataReceived} wrapping the
        inherited one work on either build; the read path's state reads
        as attributes.
        """
        protocol, transport, _ = connect("tests.test_protocols:CountingLineProtocol")
        protocol.dataReceived(b"one\ntw")
        protocol.dataReceived(b"o\n")
        self.assertEqual(transport.value(), b"one\ntwo\n")
        self.assertEqual(protocol.reads, 2)
        self.assertEqual(protocol.seen, [b"one\ntw", b"o\n"])
        self.assertEqual(protocol.counts(), (2, 2, 8, 8))
        self.assertEqual((protocol._frames_in, protocol._bytes_out), (2, 8))

    def test_length_prefixed_subclass(self) -> None:
        """
        A L{LengthPrefixedProtocol} subclass frames with its C{prefix_size}.
        """
        protocol, transport, _ = connect(
            "tests.test_protocols:ShortPrefixProtocol", "reverse"
        )
        protocol.dataReceived(b"\x00\x03abc")
        self.assertEqual(transport.value(), b"\x00\x03cba")

    def test_find_framing_dotted(self) -> None:
        """
        C{find_framing} loads a C{module:Class} subclass.
        """
        self.assertIs(find_framing("tests.test_protocols:StxProtocol"), StxProtocol)

    def test_find_framing_refuses(self) -> None:
        """
        Unknown names, missing modules or attributes, and classes that are
        not L{FramedProtocol} subclasses are L{ConfigError}s naming the
        value.
        """
        for name in (
            "nosuch",
            "no_such_module:Thing",
            "tests.test_protocols:Missing",
            "tests.test_protocols:NotAProtocol",
            "tests.test_protocols:SECRET",
        ):
            error = self.assertRaises(ConfigError, find_framing, name)
            self.assertIn(repr(name), str(error))

    def test_base_protocol_needs_codecs(self) -> None:
        """
        A L{FramedProtocol} subclass without codecs says what it must
        define.
        """
        error = self.assertRaises(
            NotImplementedError, FramedProtocol().make_decoder, 10
        )
        self.assertIn("make_decoder", str(error))

    def test_line_protocol_is_delimited(self) -> None:
        """
        The built-in C{line} framing is a L{DelimitedProtocol}.
        """
        self.assertTrue(issubclass(LineProtocol, DelimitedProtocol))


class BuiltinProcessorTests(SynchronousTestCase):
    """
    Each built-in processor, and a chain, over C{line}.
    """

    def answer(self, processors: str, *requests: bytes) -> list[bytes]:
        """
        The replies of a C{line} connection with chain C{processors}.
        """
        protocol, transport, _ = connect("line", processors)
        protocol.dataReceived(b"".join(r + b"\n" for r in requests))
        self.assertFalse(transport.disconnecting)
        return transport.value().split(b"\n")[:-1]

    def test_simple(self) -> None:
        """
        echo, upper, lower, reverse and rot13 transform as named.
        """
        message = b"Hello, World 42"
        self.assertEqual(self.answer("echo", message), [message])
        self.assertEqual(self.answer("upper", message), [b"HELLO, WORLD 42"])
        self.assertEqual(self.answer("lower", message), [b"hello, world 42"])
        self.assertEqual(self.answer("reverse", message), [b"24 dlroW ,olleH"])
        self.assertEqual(self.answer("rot13", message), [b"Uryyb, Jbeyq 42"])

    def test_sha256(self) -> None:
        """
        sha256 answers the hex digest of the message.
        """
        self.assertEqual(
            self.answer("sha256", b"abc"),
            [hashlib.sha256(b"abc").hexdigest().encode()],
        )

    def test_json_canonical(self) -> None:
        """
        json re-emits compact JSON with sorted keys, keeping non-ASCII text.
        """
        request = '{"b": 1, "a": [1, 2.5, "\u00e9", null], "c": {"z": true, "y": {}}}'
        self.assertEqual(
            self.answer("json", request.encode()),
            ['{"a":[1,2.5,"\u00e9",null],"b":1,"c":{"y":{},"z":true}}'.encode()],
        )

    def test_json_invalid_goes_on(self) -> None:
        """
        Invalid JSON (or not UTF-8) is C{ERROR bad-request} and the next
        request is answered.
        """
        replies = self.answer("json", b"{nope", b"\xff", b"[1, 2]")
        self.assertTrue(replies[0].startswith(b"ERROR bad-request: invalid JSON"))
        self.assertEqual(replies[1], b"ERROR bad-request: invalid JSON: not UTF-8")
        self.assertEqual(replies[2], b"[1,2]")

    def test_chain(self) -> None:
        """
        A chain passes each output to the next processor, in order.
        """
        self.assertEqual(self.answer("upper,reverse", b"abc"), [b"CBA"])
        self.assertEqual(self.answer("reverse,prefix(text=>> )", b"abc"), [b">> cba"])


class OwedRepliesTests(SynchronousTestCase):
    """
    A fatal error waits for the replies owed before it, but not forever.
    """

    def test_no_processor_timeout_bounded_by_close_grace(self) -> None:
        """
        With no processor timeout, a reply that never comes holds the error
        frame back for at most C{CLOSE_GRACE} seconds; then the error frame
        is sent and the connection closes.
        """
        from echoplus.protocols import CLOSE_GRACE
        from echoplus.testing import FrameHarness

        never = Deferred()
        harness = FrameHarness(
            processors=[_NeverAnswers(never)], processor_timeout=0, max_frame=8
        )
        harness.feed(b"question\n" + b"x" * 20)
        harness.clock.advance(CLOSE_GRACE - 0.1)
        self.assertEqual(harness.replies(), [])
        self.assertFalse(harness.disconnected)
        harness.clock.advance(0.2)
        [error] = harness.replies()
        self.assertTrue(error.startswith(b"ERROR frame-too-long: "), error)
        self.assertTrue(never.called, "the owed request was cancelled")
        harness.clock.advance(CLOSE_GRACE)
        self.assertTrue(harness.disconnected)

    def test_owed_reply_arriving_in_time_goes_first(self) -> None:
        """
        An owed reply that arrives within the grace goes out before the
        error frame, and the grace timer is cancelled.
        """
        from echoplus.testing import FrameHarness

        later = Deferred()
        harness = FrameHarness(
            processors=[_NeverAnswers(later)], processor_timeout=0, max_frame=8
        )
        harness.feed(b"question\n" + b"x" * 20)
        later.callback(b"answer")
        replies = harness.replies()
        self.assertEqual(replies[0], b"answer")
        self.assertTrue(replies[1].startswith(b"ERROR frame-too-long: "))
        self.assertEqual(
            [
                call
                for call in harness.clock.getDelayedCalls()
                if call.active() and call.func.__name__ == "_give_up_owed_replies"
            ],
            [],
        )


@implementer(IProcessor)
class _NeverAnswers:
    """
    Answers every message with one given Deferred.
    """

    def __init__(self, deferred: Deferred[bytes]) -> None:
        self.deferred = deferred

    def process(self, message: bytes, context: object) -> Deferred[bytes]:
        return self.deferred
