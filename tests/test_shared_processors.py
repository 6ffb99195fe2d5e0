"""
Tests of the shared-state built-ins C{broadcast} and C{pubsub}, and of the
fan-out push path, with several in-memory clients.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors import find_factory
from echoplus.processors.shared import Broadcast, PubSub, fan_out
from echoplus.protocols import LineProtocol
from echoplus.testing import FrameHarness

FRAMINGS = ["line", "netstring", "int8", "int16", "int32"]


class CountingLineProtocol(LineProtocol):
    """
    A line protocol that counts how often the server encodes a frame (the
    harness's client-side codec, which has no transport, is not counted).
    """

    encoded: ClassVar[int] = 0

    def encode_frame(self, payload: bytes) -> bytes:
        if self.transport is not None:
            CountingLineProtocol.encoded += 1
        return payload


class SharedBuiltinsTests(SynchronousTestCase):
    """
    broadcast and pubsub are built-ins providing the interfaces they need.
    """

    def test_registered(self) -> None:
        """
        Both are found by name, one instance per listener.
        """
        for name in ["broadcast", "pubsub"]:
            factory = find_factory(name)
            self.assertEqual(factory.name, name)
            self.assertFalse(factory.per_connection)

    def test_interfaces(self) -> None:
        """
        Both provide IProcessor and IConnectionObserver.
        """
        for processor in [Broadcast(), PubSub()]:
            verifyObject(IProcessor, processor)
            verifyObject(IConnectionObserver, processor)


class BroadcastTests(SynchronousTestCase):
    """
    broadcast: every message to every other connection, no reply.
    """

    def test_everyone_else_hears_it(self) -> None:
        """
        A message reaches every other client, not the sender, in every
        framing.
        """
        for framing in FRAMINGS:
            harness = FrameHarness(framing, "broadcast")
            bob, carol = harness.client(), harness.client()
            harness.send(b"hi all")
            self.assertEqual(harness.replies(), [], framing)
            self.assertEqual(bob.replies(), [b"hi all"], framing)
            self.assertEqual(carol.replies(), [b"hi all"], framing)
            self.assertEqual(bob.pushes(), [b"hi all"], framing)

    def test_order_of_messages(self) -> None:
        """
        Messages from several senders arrive in the order they were sent.
        """
        harness = FrameHarness("line", "broadcast")
        bob, carol = harness.client(), harness.client()
        harness.send(b"1")
        bob.send(b"2")
        harness.send(b"3", b"4")
        self.assertEqual(carol.replies(), [b"1", b"2", b"3", b"4"])
        self.assertEqual(bob.replies(), [b"1", b"3", b"4"])
        self.assertEqual(harness.replies(), [b"2"])

    def test_closed_connections_leave(self) -> None:
        """
        A closed connection is forgotten and hears nothing more.
        """
        harness = FrameHarness("line", "broadcast")
        bob = harness.client()
        processor = harness.protocol.processors[0][1]
        self.assertEqual(len(processor.connections), 2)
        bob.close()
        self.assertEqual(list(processor.connections), [harness.context])
        harness.send(b"anyone?")
        self.assertEqual(bob.written, b"")

    def test_server_closed_connections_leave(self) -> None:
        """
        A connection the server closes (a bad frame) is forgotten too.
        """
        harness = FrameHarness("netstring", "broadcast")
        bob = harness.client()
        bob.feed(b"x:")
        self.assertTrue(bob.disconnected)
        processor = harness.protocol.processors[0][1]
        self.assertEqual(list(processor.connections), [harness.context])

    def test_one_encode_per_fan_out(self) -> None:
        """
        A broadcast to many connections of one framing encodes the frame
        once, not once per connection.
        """
        harness = FrameHarness(CountingLineProtocol, "broadcast")
        clients = [harness.client() for _ in range(50)]
        CountingLineProtocol.encoded = 0
        harness.send(b"to all")
        self.assertEqual(CountingLineProtocol.encoded, 1)
        self.assertEqual({tuple(c.replies()) for c in clients}, {(b"to all",)})


class PubSubTests(SynchronousTestCase):
    """
    pubsub: the exact wire behaviour of the contract.
    """

    def test_subscribe_publish(self) -> None:
        """
        Exactly the subscribers of a topic get MSG, the publisher gets
        OK PUB with their number, in every framing.
        """
        for framing in FRAMINGS:
            harness = FrameHarness(framing, "pubsub")
            alice, bob, carol = harness.client(), harness.client(), harness.client()
            alice.send(b"SUB news")
            bob.send(b"SUB news")
            carol.send(b"SUB sport")
            self.assertEqual(alice.replies(), [b"OK SUB news"], framing)
            bob.replies()
            carol.replies()
            harness.send(b"PUB news it rained today")
            self.assertEqual(harness.replies(), [b"OK PUB 2"], framing)
            self.assertEqual(alice.replies(), [b"MSG news it rained today"], framing)
            self.assertEqual(bob.replies(), [b"MSG news it rained today"], framing)
            self.assertEqual(carol.replies(), [], framing)

    def test_publish_to_nobody(self) -> None:
        """
        Publishing to a topic without subscribers answers OK PUB 0.
        """
        harness = FrameHarness("line", "pubsub")
        harness.send(b"PUB void hello")
        self.assertEqual(harness.replies(), [b"OK PUB 0"])

    def test_publisher_subscribed_to_its_topic(self) -> None:
        """
        A subscribed publisher gets its MSG too, before its OK PUB (a push
        during a read joins the batch after the replies so far).
        """
        harness = FrameHarness("line", "pubsub")
        harness.send(b"SUB me", b"PUB me echo")
        self.assertEqual(harness.replies(), [b"OK SUB me", b"MSG me echo", b"OK PUB 1"])

    def test_unsubscribe(self) -> None:
        """
        UNSUB answers OK UNSUB and stops deliveries; unsubscribing twice or
        from an unknown topic also answers OK UNSUB.
        """
        harness = FrameHarness("line", "pubsub")
        bob = harness.client()
        bob.send(b"SUB t", b"UNSUB t", b"UNSUB t", b"UNSUB never")
        self.assertEqual(
            bob.replies(),
            [b"OK SUB t", b"OK UNSUB t", b"OK UNSUB t", b"OK UNSUB never"],
        )
        harness.send(b"PUB t x")
        self.assertEqual(harness.replies(), [b"OK PUB 0"])
        self.assertEqual(bob.replies(), [])

    def test_bad_requests(self) -> None:
        """
        Anything else is ERROR bad-request, and the connection goes on.
        """
        harness = FrameHarness("line", "pubsub")
        requests = [b"", b"HELLO", b"sub t", b"SUB", b"SUB two words", b"PUB t"]
        harness.send(*requests)
        replies = harness.replies()
        self.assertEqual(len(replies), len(requests))
        for reply in replies:
            self.assertTrue(reply.startswith(b"ERROR bad-request: "), reply)
        harness.send(b"SUB ok")
        self.assertEqual(harness.replies(), [b"OK SUB ok"])

    def test_empty_payload(self) -> None:
        """
        PUB with a topic and an empty payload delivers an empty message.
        """
        harness = FrameHarness("netstring", "pubsub")
        harness.send(b"SUB t", b"PUB t ")
        self.assertEqual(harness.replies(), [b"OK SUB t", b"MSG t ", b"OK PUB 1"])

    def test_no_leak_of_closed_connections(self) -> None:
        """
        Closed connections leave every topic; empty topics are removed.
        """
        harness = FrameHarness("line", "pubsub")
        processor = harness.protocol.processors[0][1]
        clients = [harness.client() for _ in range(10)]
        for index, client in enumerate(clients):
            client.send(b"SUB all", b"SUB own%d" % index)
        self.assertEqual(len(processor.topics), 11)
        for client in clients:
            client.close()
        self.assertEqual(processor.topics, {})
        self.assertEqual(processor.subscriptions, {})
        harness.send(b"PUB all x")
        self.assertEqual(harness.replies(), [b"OK PUB 0"])

    def test_subscription_limit(self) -> None:
        """
        A connection cannot subscribe to more than max_topics topics;
        re-subscribing to one it has is fine.
        """
        harness = FrameHarness("line", "pubsub(max_topics=2)")
        harness.send(b"SUB a", b"SUB b", b"SUB a", b"SUB c", b"UNSUB a", b"SUB c")
        self.assertEqual(
            harness.replies(),
            [
                b"OK SUB a",
                b"OK SUB b",
                b"OK SUB a",
                b"ERROR bad-request: at most 2 subscriptions",
                b"OK UNSUB a",
                b"OK SUB c",
            ],
        )

    def test_bad_subscription_limit(self) -> None:
        """
        A max_topics that is not a positive whole number is refused.
        """
        for value in ["lots", "0"]:
            self.assertRaises(ValueError, PubSub, value)

    def test_unsubscribe_forgets(self) -> None:
        """
        Unsubscribing from the last topic leaves no table entry behind.
        """
        harness = FrameHarness("line", "pubsub")
        processor = harness.protocol.processors[0][1]
        harness.send(b"SUB a", b"UNSUB a")
        self.assertEqual((processor.topics, processor.subscriptions), ({}, {}))

    def test_one_encode_per_publish(self) -> None:
        """
        One PUB to many subscribers encodes the MSG frame once.
        """
        harness = FrameHarness(CountingLineProtocol, "pubsub")
        subscribers = [harness.client() for _ in range(100)]
        for client in subscribers:
            client.send(b"SUB t")
            client.replies()
        CountingLineProtocol.encoded = 0
        harness.send(b"PUB t hello")
        # One MSG for all subscribers, one OK PUB for the publisher.
        self.assertEqual(CountingLineProtocol.encoded, 2)
        self.assertEqual(harness.replies(), [b"OK PUB 100"])
        for client in subscribers:
            self.assertEqual(client.replies(), [b"MSG t hello"])


class SlowConsumerTests(SynchronousTestCase):
    """
    A subscriber that does not read is cut off by max_write_buffer; the
    publisher and the other subscribers carry on.
    """

    def test_never_reading_subscriber_is_cut_off(self) -> None:
        """
        Past max_write_buffer the silent subscriber gets ERROR overloaded
        and is closed (aborted after the close grace); the others go on.
        """
        harness = FrameHarness("line", "pubsub", max_write_buffer=100_000)
        reader, silent = harness.client(), harness.client()
        reader.send(b"SUB feed")
        silent.send(b"SUB feed")
        reader.replies()
        silent.replies()
        silent.stop_reading()
        payload = b"x" * 1000
        for _ in range(300):
            harness.send(b"PUB feed " + payload)
            self.assertEqual(len(reader.replies()), 1)
        self.assertTrue(silent.disconnected)
        self.assertLess(silent.unread, 300 * 1000)
        harness.clock.advance(10)
        self.assertIsNotNone(silent.lost)
        processor = harness.protocol.processors[0][1]
        self.assertNotIn(silent.context, processor.subscriptions)
        silent.resume_reading()
        self.assertTrue(silent.replies()[-1].startswith(b"ERROR overloaded"))
        harness.send(b"PUB feed still here")
        self.assertEqual(harness.replies()[-1], b"OK PUB 1")
        self.assertEqual(reader.replies(), [b"MSG feed still here"])

    def test_fan_out_skips_closed_connections(self) -> None:
        """
        fan_out to a context whose connection closed is a no-op, and is not
        counted.
        """
        harness = FrameHarness("line", "echo")
        other = harness.client()
        gone = other.context
        other.close()
        self.assertEqual(fan_out([gone, harness.context], b"x"), 1)
        self.assertEqual(other.written, b"")
        self.assertEqual(harness.replies(), [b"x"])


class PushOrderingTests(SynchronousTestCase):
    """
    context.send against replies: replies keep request order, pushes go out
    when sent.
    """

    def test_push_overtakes_pending_reply(self) -> None:
        """
        A push while replies are pending goes out at once, before them; the
        replies themselves stay in order.
        """
        harness = FrameHarness("line", ["delay(seconds=1)"])
        harness.send(b"slow", b"slower")
        harness.context.send(b"pushed now")
        self.assertEqual(harness.replies(), [b"pushed now"])
        harness.clock.advance(1)
        self.assertEqual(harness.replies(), [b"slow", b"slower"])

    def test_push_from_another_connections_processing(self) -> None:
        """
        One client's message reaches another through context.send, in the
        receiver's own framing, while the sender's replies stay its own.
        """
        harness = FrameHarness("netstring", "broadcast")
        listener_b = harness.client()
        harness.send(b"one", b"two")
        self.assertEqual(listener_b.written, b"3:one,3:two,")
        self.assertEqual(harness.written, b"")
