"""
Tests of the testing kit itself: L{echoplus.testing.FrameHarness} and its
clients, including the messages a test gets when it uses them wrongly.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.errors import ConfigError
from echoplus.factory import EchoPlusFactory
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors import ProcessorEntry, ProcessorFactory
from echoplus.protocols import LineProtocol
from echoplus.testing import HIGH_WATER, FrameHarness, HarnessError


@implementer(IProcessor)
class Later:
    """
    Replies with a Deferred per message, fired by the test.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[bytes, Deferred[bytes]]] = []

    def process(self, message: bytes, context: object) -> Deferred[bytes]:
        deferred: Deferred[bytes] = Deferred()
        self.waiting.append((message, deferred))
        return deferred


@implementer(IProcessor, IConnectionObserver)
class Recorder:
    """
    Records every call, pushes C{"pushed"} to the sender before replying.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def connection_made(self, context: object) -> None:
        self.calls.append(("made", context))

    def connection_lost(self, context: object, reason: object) -> None:
        self.calls.append(("lost", context))

    def process(self, message: bytes, context: object) -> bytes:
        self.calls.append(("process", context))
        context.send(b"pushed")  # type: ignore[attr-defined]
        return b"reply to " + message


class FrameHarnessTests(SynchronousTestCase):
    """
    One client: the real factory and protocol on an in-memory transport.
    """

    def test_real_factory_and_protocol(self) -> None:
        """
        The harness runs EchoPlusFactory and the framing's own protocol class.
        """
        harness = FrameHarness("line")
        self.assertIsInstance(harness.factory, EchoPlusFactory)
        self.assertIsInstance(harness.protocol, LineProtocol)
        self.assertIs(harness.factory.clock, harness.clock)

    def test_chain_of_names(self) -> None:
        """
        Processors given by name form a chain; replies come back decoded.
        """
        harness = FrameHarness("netstring", ["upper", "reverse"])
        harness.send(b"abc")
        self.assertEqual(harness.replies(), [b"CBA"])
        self.assertEqual(harness.written, b"3:CBA,")

    def test_chain_string_with_options(self) -> None:
        """
        A chain string with options, as on the command line, is accepted.
        """
        harness = FrameHarness("line", "prefix(text=>> ),upper")
        harness.send(b"hi")
        self.assertEqual(harness.replies(), [b">> HI"])

    def test_processor_objects_entries_and_classes(self) -> None:
        """
        Objects, ProcessorEntry values, factories and classes mix with names.
        """
        recorder = Recorder()
        factory = ProcessorFactory("twice", "doubles", lambda: _Twice())
        harness = FrameHarness(
            "line", [ProcessorEntry("prefix", {"text": "<"}), factory, recorder]
        )
        harness.send(b"x")
        self.assertEqual(harness.replies(), [b"pushed", b"reply to <x<x"])
        self.assertEqual([name for name, _ in harness.protocol.processors][1], "twice")

    def test_replies_since_last_call(self) -> None:
        """
        replies() returns only the frames received since it was last called.
        """
        harness = FrameHarness()
        harness.send(b"one", b"two")
        self.assertEqual(harness.replies(), [b"one", b"two"])
        self.assertEqual(harness.replies(), [])
        harness.send(b"three")
        self.assertEqual(harness.replies(), [b"three"])

    def test_every_builtin_framing(self) -> None:
        """
        send() frames and replies() decodes in every built-in framing.
        """
        for framing in ["line", "netstring", "int8", "int16", "int32"]:
            harness = FrameHarness(framing, "reverse")
            harness.send(b"abc", b"", b"de")
            self.assertEqual(harness.replies(), [b"cba", b"", b"ed"], framing)

    def test_raw_framing(self) -> None:
        """
        In the raw framing every write of the server is one reply.
        """
        harness = FrameHarness("raw", "upper")
        harness.feed(b"abc")
        self.assertEqual(harness.replies(), [b"ABC"])

    def test_framing_class(self) -> None:
        """
        A protocol class is accepted as the framing.
        """
        harness = FrameHarness(LineProtocol, "upper")
        harness.send(b"ok")
        self.assertEqual(harness.replies(), [b"OK"])

    def test_delimiter_keyword(self) -> None:
        """
        delimiter= sets the line framing's delimiter, as bytes or escapes.
        """
        for delimiter in [b"\r\n", "\\r\\n"]:
            harness = FrameHarness("line", "upper", delimiter=delimiter)
            harness.feed(b"a\r\nb\r\n")
            self.assertEqual(harness.written, b"A\r\nB\r\n")
            self.assertEqual(harness.replies(), [b"A", b"B"])

    def test_feed_in_pieces(self) -> None:
        """
        Raw bytes fed in pieces are reassembled into frames by the server.
        """
        harness = FrameHarness("int16", "echo")
        for byte in b"\x00\x03abc":
            harness.feed(bytes([byte]))
        self.assertEqual(harness.replies(), [b"abc"])

    def test_unknown_keyword(self) -> None:
        """
        An unknown keyword is a TypeError naming it and the known ones.
        """
        error = self.assertRaises(TypeError, FrameHarness, max_frme=3)
        self.assertIn("max_frme", str(error))
        self.assertIn("max_frame", str(error))

    def test_bad_limit_value(self) -> None:
        """
        A bad value is a ValueError naming the keyword and the rule.
        """
        error = self.assertRaises(ValueError, FrameHarness, max_frame=0)
        self.assertIn("max_frame=0", str(error))
        self.assertIn("must be", str(error))

    def test_bad_processor_option(self) -> None:
        """
        A processor option the processor does not take is a ValueError (a
        ConfigError) naming it, like a bad limit value.
        """
        error = self.assertRaises(ValueError, FrameHarness, "line", ["prefix(txt=>)"])
        self.assertIsInstance(error, ConfigError)
        self.assertIn("'txt'", str(error))

    def test_unknown_processor_and_framing(self) -> None:
        """
        Unknown processors and framings are ConfigErrors naming them.
        """
        error = self.assertRaises(ConfigError, FrameHarness, "line", ["nosuch"])
        self.assertIn("nosuch", str(error))
        error = self.assertRaises(ConfigError, FrameHarness, "morse")
        self.assertIn("morse", str(error))

    def test_not_a_processor(self) -> None:
        """
        An object that is no processor is refused with a clear message.
        """
        error = self.assertRaises(HarnessError, FrameHarness, "line", [42])
        self.assertIn("is not a processor", str(error))

    def test_send_takes_bytes(self) -> None:
        """
        send() and feed() refuse text with a TypeError.
        """
        harness = FrameHarness()
        self.assertRaises(TypeError, harness.send, "text")
        self.assertRaises(TypeError, harness.feed, "text")

    def test_payload_the_framing_cannot_carry(self) -> None:
        """
        send() of a line containing the delimiter points to feed().
        """
        harness = FrameHarness()
        error = self.assertRaises(HarnessError, harness.send, b"two\nlines")
        self.assertIn("feed()", str(error))

    def test_oversize_frame_closes(self) -> None:
        """
        A frame over max_frame is answered with frame-too-long, the server
        closes, and the connection is lost.
        """
        harness = FrameHarness("netstring", "echo", max_frame=4)
        harness.send(b"ok", b"toolong")
        self.assertEqual(
            harness.replies(),
            [b"ok", b"ERROR frame-too-long: frame of 7 bytes exceeds the limit of 4"],
        )
        self.assertTrue(harness.disconnected)
        self.assertIsNotNone(harness.clients[0].lost)

    def test_send_after_server_closed(self) -> None:
        """
        Sending after the server closed the connection is a HarnessError
        saying so.
        """
        harness = FrameHarness("line", "echo", max_frame=2)
        harness.send(b"long")
        error = self.assertRaises(HarnessError, harness.send, b"x")
        self.assertIn("the server closed this connection", str(error))

    def test_send_after_client_closed(self) -> None:
        """
        Sending after closing is a HarnessError saying the client closed.
        """
        harness = FrameHarness()
        harness.close()
        error = self.assertRaises(HarnessError, harness.send, b"x")
        self.assertIn("this client closed", str(error))
        harness.close()  # closing twice is harmless

    def test_half_close_answers_then_closes(self) -> None:
        """
        After a half-close the pending replies still arrive, then the
        server closes; sending is then refused.
        """
        processor = Later()
        harness = FrameHarness("line", [processor])
        harness.send(b"a")
        harness.close_write()
        self.assertFalse(harness.disconnected)
        processor.waiting[0][1].callback(b"A")
        self.assertEqual(harness.replies(), [b"A"])
        self.assertTrue(harness.disconnected)
        error = self.assertRaises(HarnessError, harness.send, b"x")
        self.assertIn("half-closed", str(error))

    def test_async_replies_in_order(self) -> None:
        """
        Asynchronous replies released out of order come back in order.
        """
        processor = Later()
        harness = FrameHarness("line", [processor])
        harness.send(b"1", b"2", b"3")
        for _, deferred in reversed(processor.waiting):
            deferred.callback(b"done")
            if deferred is not processor.waiting[0][1]:
                self.assertEqual(harness.replies(), [])
        self.assertEqual(harness.replies(), [b"done"] * 3)

    def test_clock_drives_delays(self) -> None:
        """
        A delayed processor answers when the clock is advanced, not before.
        """
        harness = FrameHarness("line", "delay(seconds=2)")
        harness.send(b"later")
        harness.clock.advance(1.9)
        self.assertEqual(harness.replies(), [])
        harness.clock.advance(0.1)
        self.assertEqual(harness.replies(), [b"later"])

    def test_clock_runs_calls_at_their_time(self) -> None:
        """
        One large advance runs each timed call at its own due time, so a
        periodic sweep closes an idle connection as soon as it is due.
        """
        harness = FrameHarness("line", "echo", idle_timeout=10)
        harness.send(b"a")
        harness.clock.advance(9)
        self.assertFalse(harness.disconnected)
        harness.clock.advance(4)
        self.assertEqual(harness.replies(), [b"a", b"ERROR timeout: idle for 10 s"])
        self.assertTrue(harness.disconnected)

    def test_processor_timeout(self) -> None:
        """
        processor_timeout= applies: a reply later than it is ERROR timeout.
        """
        harness = FrameHarness("line", [Later()], processor_timeout=1)
        harness.send(b"x")
        harness.clock.advance(1)
        self.assertEqual(
            harness.replies(), [b"ERROR timeout: no reply within 1 seconds"]
        )
        self.assertFalse(harness.disconnected)

    def test_context(self) -> None:
        """
        The context processors get is the harness's connection context.
        """
        recorder = Recorder()
        harness = FrameHarness("line", [recorder], name="test-listener")
        harness.send(b"x")
        self.assertIs(recorder.calls[-1][1], harness.context)
        self.assertEqual(harness.context.listener, "test-listener")
        self.assertEqual(harness.context.peer.host, "127.0.0.1")

    def test_pushes(self) -> None:
        """
        A push during a read joins the batch after the replies so far;
        pushes() tells it apart, replies() shows the wire order.
        """
        harness = FrameHarness("line", [Recorder()])
        harness.send(b"a", b"b")
        self.assertEqual(
            harness.replies(), [b"pushed", b"reply to a", b"pushed", b"reply to b"]
        )
        self.assertEqual(harness.pushes(), [b"pushed", b"pushed"])
        self.assertEqual(harness.pushes(), [])

    def test_push_outside_a_read_is_written_at_once(self) -> None:
        """
        context.send outside any read writes the frame at once.
        """
        harness = FrameHarness("int32")
        harness.context.send(b"news")
        self.assertEqual(harness.written, b"\x00\x00\x00\x04news")
        self.assertEqual(harness.pushes(), [b"news"])

    def test_push_to_closed_connection_is_a_no_op(self) -> None:
        """
        Pushing to a connection that is closed writes nothing and raises
        nothing.
        """
        harness = FrameHarness()
        context = harness.context
        harness.close()
        context.send(b"late")
        self.assertEqual(harness.written, b"")
        self.assertEqual(harness.pushes(), [])

    def test_stop_reading_pauses_the_server(self) -> None:
        """
        A client that does not read leaves output unread; past the high
        water mark the server stops reading from it; input waits meanwhile
        and is handled once the client reads again.
        """
        harness = FrameHarness("line", "echo")
        client = harness.clients[0]
        client.stop_reading()
        chunk = b"x" * 1000
        for _ in range(HIGH_WATER // 1000 + 1):
            harness.send(chunk)
        self.assertTrue(client.reading_paused)
        self.assertGreater(client.unread, HIGH_WATER)
        self.assertEqual(harness.replies(), [])
        harness.send(b"queued")
        client.resume_reading()
        self.assertFalse(client.reading_paused)
        replies = harness.replies()
        self.assertEqual(replies[-1], b"queued")
        self.assertEqual(len(replies), HIGH_WATER // 1000 + 2)


class HarnessClientsTests(SynchronousTestCase):
    """
    Several in-memory clients on one listener.
    """

    def test_clients_share_the_listener(self) -> None:
        """
        Every client is its own connection of the same factory, with its
        own context and peer.
        """
        harness = FrameHarness("line", "echo")
        other = harness.client()
        self.assertIs(other.protocol.factory, harness.factory)
        self.assertNotEqual(other.context.id, harness.context.id)
        self.assertNotEqual(other.peer, harness.clients[0].peer)
        self.assertEqual(len(harness.factory.connections), 2)
        other.send(b"mine")
        self.assertEqual(other.replies(), [b"mine"])
        self.assertEqual(harness.replies(), [])

    def test_observers_hear_every_connection(self) -> None:
        """
        An observer processor hears connection_made and connection_lost of
        every client.
        """
        recorder = Recorder()
        harness = FrameHarness("line", [recorder])
        other = harness.client()
        other.close()
        self.assertEqual(
            [(call, context) for call, context in recorder.calls],
            [
                ("made", harness.context),
                ("made", other.context),
                ("lost", other.context),
            ],
        )
        self.assertEqual(list(harness.factory.connections), [harness.context.id])

    def test_observer_failure_is_isolated(self) -> None:
        """
        An observer raising in connection_made is logged; the connection
        and the others carry on.
        """
        harness = FrameHarness("line", [_BadObserver(), "upper"])
        other = harness.client()
        other.send(b"still")
        self.assertEqual(other.replies(), [b"STILL"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_refused_client(self) -> None:
        """
        A client past max_connections is refused: disconnected, and sending
        on it is a HarnessError.
        """
        harness = FrameHarness("line", "echo", max_connections=1)
        refused = harness.client()
        self.assertTrue(refused.disconnected)
        self.assertRaises(HarnessError, refused.send, b"x")

    def test_stop_closes_everyone(self) -> None:
        """
        stop() closes every client and leaves no connection behind.
        """
        harness = FrameHarness()
        harness.client()
        harness.stop()
        self.assertEqual(harness.factory.connections, {})


@implementer(IProcessor)
class _Twice:
    def process(self, message: bytes, context: object) -> bytes:
        return message * 2


@implementer(IProcessor, IConnectionObserver)
class _BadObserver:
    def connection_made(self, context: object) -> None:
        raise ZeroDivisionError("observer bug")

    def connection_lost(self, context: object, reason: object) -> None:
        pass

    def process(self, message: bytes, context: object) -> bytes:
        return message


class GuideTests(SynchronousTestCase):
    """
    docs/testing.md shows code that works.
    """

    def test_guide_shows_the_tested_example(self) -> None:
        """
        The guide's complete example is tests/test_user_example.py verbatim.
        """
        root = Path(__file__).resolve().parent.parent
        guide = (root / "docs" / "testing.md").read_text()
        example = (root / "tests" / "test_user_example.py").read_text()
        self.assertIn("```python\n" + example + "```", guide)

    def test_guide_several_clients_snippet(self) -> None:
        """
        The guide's pub/sub snippet holds as written.
        """
        harness = FrameHarness("line", "pubsub")
        alice, bob = harness.client(), harness.client()
        alice.send(b"SUB news")
        harness.send(b"PUB news hi")
        self.assertEqual(harness.replies(), [b"OK PUB 1"])
        self.assertEqual(alice.replies(), [b"OK SUB news", b"MSG news hi"])
        self.assertEqual(alice.pushes(), [b"MSG news hi"])
        self.assertEqual(bob.replies(), [])

    def test_readme_snippet(self) -> None:
        """
        The README's 'Testing your code' snippet holds as written.
        """
        harness = FrameHarness("netstring", ["upper", "reverse"], idle_timeout=30)
        harness.send(b"hello")
        self.assertEqual(harness.replies(), [b"OLLEH"])
        harness.clock.advance(40)
        self.assertTrue(harness.disconnected)

    def test_shared_state_guide_snippet(self) -> None:
        """
        The chat snippet of docs/shared-state.md holds as written.
        """
        harness = FrameHarness("line", ["examples.chat.rooms:ChatRooms"])
        alice, bob = harness.clients[0], harness.client()
        alice.send(b"NICK alice", b"JOIN lobby")
        bob.send(b"NICK bob", b"JOIN lobby", b"SAY hi")
        self.assertEqual(
            alice.replies(),
            [b"OK NICK alice", b"OK JOIN lobby", b"* bob joined", b"lobby bob: hi"],
        )
        bob.close()
        self.assertEqual(alice.replies(), [b"* bob left"])
        rooms = harness.protocol.processors[0][1]
        self.assertEqual(list(rooms.where), [alice.context])
