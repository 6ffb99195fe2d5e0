"""
The brokers in memory: the in-process engine, the Redis engine driven by
a fake Redis (tests/cluster_fakes.py), the cursor that orders and recovers
a topic's frames, and the C{--broker} URL.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echoplus.cluster.envelope import Envelope, decode_envelope, encode_envelope
from echoplus.cluster.memory import MemoryBroker
from echoplus.cluster.recovery import TopicCursor
from echoplus.cluster.redis import RedisBroker
from echoplus.cluster.url import parse_broker_url
from echoplus.interfaces import IBroker
from echoplus.testing import FrameHarness
from tests.cluster_fakes import FakeLink, FakeRedis


def _envelope(offset: int, epoch: bytes = b"e1", frame: bytes = b"") -> Envelope:
    return Envelope(epoch, offset, 0.0, b"-", frame or b"m%d" % offset)


class BrokerInterfaceTests(SynchronousTestCase):
    """
    Both engines provide IBroker.
    """

    def test_memory(self) -> None:
        """
        MemoryBroker provides IBroker.
        """
        self.assertTrue(verifyObject(IBroker, MemoryBroker()))

    def test_redis(self) -> None:
        """
        RedisBroker provides IBroker.
        """
        link = FakeLink(FakeRedis(Clock()), b"n1")
        broker = RedisBroker(link, Clock(), history=10, ttl=30)
        self.assertTrue(verifyObject(IBroker, broker))


class MemoryBrokerTests(SynchronousTestCase):
    """
    The in-process engine: topics shared by every listener of a process.
    """

    def test_listeners_share_topics(self) -> None:
        """
        Two listeners (two framings) on one broker meet in one topic.
        """
        broker = MemoryBroker()
        lines = FrameHarness("line", "pubsub", name="a", broker=broker)
        netstrings = FrameHarness("netstring", "pubsub", name="b", broker=broker)
        lines.send(b"SUB room")
        netstrings.send(b"SUB room", b"PUB room hi")
        self.assertEqual(lines.replies(), [b"OK SUB room", b"MSG room hi"])
        self.assertEqual(
            netstrings.replies(), [b"OK SUB room", b"MSG room hi", b"OK PUB 2"]
        )

    def test_sender_skipped(self) -> None:
        """
        A publish with a sender reaches every subscriber but the sender.
        """
        harness = FrameHarness("line", "broadcast")
        other = harness.client()
        harness.send(b"hello")
        self.assertEqual(other.replies(), [b"hello"])
        self.assertEqual(harness.replies(), [])

    def test_broadcast_group_spans_listeners(self) -> None:
        """
        broadcast(group=...) is one group across listeners of a broker;
        without it each listener is its own group.
        """
        broker = MemoryBroker()
        a = FrameHarness("line", "broadcast(group=lobby)", name="a", broker=broker)
        b = FrameHarness("line", "broadcast(group=lobby)", name="b", broker=broker)
        c = FrameHarness("line", "broadcast", name="c", broker=broker)
        a.send(b"hi")
        self.assertEqual(b.replies(), [b"hi"])
        self.assertEqual(c.replies(), [])

    def test_unsubscribe_all(self) -> None:
        """
        A connection that leaves is in no topic any more.
        """
        broker = MemoryBroker()
        harness = FrameHarness("line", "pubsub", broker=broker)
        harness.send(b"SUB a", b"SUB b")
        harness.close()
        self.assertEqual(broker.local.topics, {})

    def test_status(self) -> None:
        """
        The memory engine reports itself as such.
        """
        self.assertEqual(MemoryBroker().status(), "memory")


class EnvelopeTests(SynchronousTestCase):
    """
    The record carried on a topic's channel and in its history.
    """

    def test_round_trip(self) -> None:
        """
        An encoded envelope decodes to the same fields; the frame may hold
        spaces and any byte.
        """
        data = encode_envelope(b"ep", 7, 12.5, b"n1:9:ab/3", b"MSG t a b\x00\xff")
        self.assertEqual(
            decode_envelope(data),
            Envelope(b"ep", 7, 12.5, b"n1:9:ab/3", b"MSG t a b\x00\xff"),
        )

    def test_not_an_envelope(self) -> None:
        """
        Something else on the channel is a ValueError.
        """
        self.assertRaises(ValueError, decode_envelope, b"hello")
        self.assertRaises(ValueError, decode_envelope, b"e x 1.0 - frame")

    def test_skip_id(self) -> None:
        """
        The sender to skip is named only on the sender's own node.
        """
        envelope = Envelope(b"e", 1, 0.0, b"host:1:aa/42", b"")
        self.assertEqual(envelope.skip_id(b"host:1:aa"), 42)
        self.assertIsNone(envelope.skip_id(b"host:2:bb"))
        self.assertIsNone(_envelope(1).skip_id(b"host:1:aa"))


class TopicCursorTests(SynchronousTestCase):
    """
    One order per topic, each frame once; holes are fetched, losses told.
    """

    def test_in_order(self) -> None:
        """
        Consecutive offsets are delivered as they come; the first one sets
        an unknown position.
        """
        cursor = TopicCursor(10)
        self.assertEqual(cursor.live(_envelope(5)), ([_envelope(5)], False))
        self.assertEqual(cursor.live(_envelope(6)), ([_envelope(6)], False))
        self.assertEqual((cursor.epoch, cursor.offset), (b"e1", 6))

    def test_duplicates_dropped(self) -> None:
        """
        An offset already delivered is not delivered again.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 3)
        self.assertEqual(cursor.live(_envelope(3)), ([], False))
        self.assertEqual(cursor.live(_envelope(2)), ([], False))

    def test_hole_fetches_then_delivers_in_order(self) -> None:
        """
        A hole holds live frames, and the history fills it in order.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 1)
        self.assertEqual(cursor.live(_envelope(4)), ([], True))
        self.assertEqual(cursor.live(_envelope(5)), ([], False))
        outcome = cursor.recovered(b"e1", 4, [_envelope(2), _envelope(3), _envelope(4)])
        self.assertFalse(outcome.gap)
        self.assertEqual(outcome.history, 3)
        self.assertEqual([e.offset for e in outcome.deliver], [2, 3, 4, 5])
        self.assertFalse(outcome.fetch_again)

    def test_gap_when_history_is_short(self) -> None:
        """
        When the history no longer reaches the first missing offset, the
        recovery reports a gap and goes on with what there is.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 1)
        cursor.reconnected()
        outcome = cursor.recovered(b"e1", 9, [_envelope(8), _envelope(9)])
        self.assertTrue(outcome.gap)
        self.assertEqual([e.offset for e in outcome.deliver], [8, 9])
        self.assertEqual(cursor.offset, 9)

    def test_nothing_missed(self) -> None:
        """
        A reconnection that missed nothing is no gap and delivers nothing.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 4)
        cursor.reconnected()
        outcome = cursor.recovered(b"e1", 4, [])
        self.assertEqual((outcome.gap, outcome.deliver), (False, []))

    def test_epoch_lost_while_away_is_a_gap(self) -> None:
        """
        A history reset while the node was away cannot be proven lossless.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 4)
        cursor.reconnected()
        outcome = cursor.recovered(b"e2", 2, [_envelope(1, b"e2"), _envelope(2, b"e2")])
        self.assertTrue(outcome.gap)
        self.assertEqual([e.offset for e in outcome.deliver], [1, 2])
        self.assertEqual((cursor.epoch, cursor.offset), (b"e2", 2))

    def test_history_rewound_while_away_is_a_gap_without_repeats(self) -> None:
        """
        The topic's offset went back while the node was away (Redis
        restarted from a snapshot older than what the node saw, or failed
        over to a replica that lagged): a gap, and what the history still
        holds was delivered already, so none of it again.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 10)
        cursor.reconnected()
        outcome = cursor.recovered(b"e1", 8, [_envelope(n) for n in range(1, 9)])
        self.assertEqual((outcome.gap, outcome.deliver), (True, []))
        self.assertEqual((cursor.epoch, cursor.offset), (b"e1", 8))
        self.assertEqual(cursor.live(_envelope(9)), ([_envelope(9)], False))

    def test_history_rewritten_while_away_is_a_gap(self) -> None:
        """
        The topic rewound while the node was away and was published past
        the node's offset again: the entry now at the node's offset is
        another frame than the one it delivered there, so a gap, then what
        comes after.
        """
        cursor = TopicCursor(10)
        cursor.live(_envelope(1))
        cursor.live(_envelope(2, frame=b"b"))
        cursor.reconnected()
        outcome = cursor.recovered(
            b"e1", 4, [_envelope(3), _envelope(4)], at=_envelope(2, frame=b"c")
        )
        self.assertTrue(outcome.gap)
        self.assertEqual([e.offset for e in outcome.deliver], [3, 4])
        cursor.reconnected()
        outcome = cursor.recovered(b"e1", 5, [_envelope(5)], at=_envelope(4))
        self.assertEqual((outcome.gap, len(outcome.deliver)), (False, 1))

    def test_history_begun_while_away_is_no_gap(self) -> None:
        """
        A topic that had no history when the node left, and whose whole
        history is there, lost nothing.
        """
        cursor = TopicCursor(10)
        cursor.place(b"", 0)
        cursor.reconnected()
        outcome = cursor.recovered(b"e2", 2, [_envelope(1, b"e2"), _envelope(2, b"e2")])
        self.assertFalse(outcome.gap)
        self.assertEqual([e.offset for e in outcome.deliver], [1, 2])

    def test_new_epoch_while_listening(self) -> None:
        """
        A new epoch starting at offset 1 while the node listened is taken
        as it comes.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 7)
        self.assertEqual(
            cursor.live(_envelope(1, b"e2")), ([_envelope(1, b"e2")], False)
        )

    def test_held_overflow_is_fetched_again(self) -> None:
        """
        Live frames beyond the hold limit are dropped and fetched again:
        the hole shows once the recovery ends.
        """
        cursor = TopicCursor(2)
        cursor.place(b"e1", 0)
        cursor.reconnected()
        for offset in (3, 4, 5, 6):
            cursor.live(_envelope(offset))
        outcome = cursor.recovered(b"e1", 2, [_envelope(1), _envelope(2)])
        self.assertEqual([e.offset for e in outcome.deliver], [1, 2, 3, 4])
        self.assertTrue(outcome.fetch_again)
        self.assertTrue(cursor.recovering)

    def test_fetch_stopped_at_its_limit_is_paged(self) -> None:
        """
        A history fetch that returned fewer entries than the topic holds
        (its limit) is not a gap and does not skip the rest: the cursor
        fetches again from the last entry, and held frames wait.
        """
        cursor = TopicCursor(10)
        cursor.place(b"e1", 1)
        cursor.reconnected()
        cursor.live(_envelope(6))
        outcome = cursor.recovered(b"e1", 5, [_envelope(2), _envelope(3)])
        self.assertEqual(
            (outcome.gap, [e.offset for e in outcome.deliver], outcome.fetch_again),
            (False, [2, 3], True),
        )
        self.assertEqual((cursor.offset, cursor.recovering), (3, True))
        outcome = cursor.recovered(b"e1", 6, [_envelope(4), _envelope(5)])
        self.assertEqual(
            (outcome.gap, [e.offset for e in outcome.deliver], outcome.fetch_again),
            (False, [4, 5], True),
        )
        outcome = cursor.recovered(b"e1", 6, [_envelope(6)])
        self.assertEqual(
            (outcome.gap, [e.offset for e in outcome.deliver], outcome.fetch_again),
            (False, [6], False),
        )
        self.assertEqual((cursor.offset, cursor.recovering), (6, False))

    def test_unknown_position_owes_nothing(self) -> None:
        """
        A cursor that never learnt its position starts from the present.
        """
        cursor = TopicCursor(10)
        cursor.reconnected()
        outcome = cursor.recovered(b"e1", 5, [_envelope(5)])
        self.assertEqual((outcome.gap, outcome.deliver), (False, []))
        self.assertEqual(cursor.offset, 5)


class _Cluster:
    """
    Nodes of the Redis engine on one fake Redis, each serving pubsub
    through a FrameHarness.
    """

    def __init__(self, nodes: int = 2, history: int = 1000) -> None:
        self.clock = Clock()
        self.server = FakeRedis(self.clock, history=history)
        self.links = [FakeLink(self.server, b"node%d" % n) for n in range(nodes)]
        self.brokers = [
            RedisBroker(link, self.clock, history=history, ttl=30)
            for link in self.links
        ]
        for broker, link in zip(self.brokers, self.links, strict=True):
            broker.start()
            link.connect()
        self.harnesses = [
            FrameHarness("line", "pubsub", name=f"n{n}", broker=broker)
            for n, broker in enumerate(self.brokers)
        ]

    def settle(self) -> None:
        self.server.flush()


class RedisBrokerTests(SynchronousTestCase):
    """
    The Redis engine, on a fake Redis: counts across nodes, one order,
    recovery, gaps, and outages.
    """

    def test_publish_reaches_every_node(self) -> None:
        """
        OK PUB counts the subscribers of every live node and each gets the
        frame once.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        extra = one.client()
        one.send(b"SUB t")
        extra.send(b"SUB t")
        two.send(b"SUB t", b"PUB t hi")
        cluster.settle()
        self.assertEqual(two.replies(), [b"OK SUB t", b"OK PUB 3", b"MSG t hi"])
        self.assertEqual(one.replies(), [b"OK SUB t", b"MSG t hi"])
        self.assertEqual(extra.replies(), [b"OK SUB t", b"MSG t hi"])

    def test_local_deliveries_go_through_the_broker(self) -> None:
        """
        A node's own subscribers get its publishes only from the broker,
        in the broker's order.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        one.send(b"PUB t a")
        two.send(b"PUB t b")
        self.assertEqual(one.replies(), [b"OK SUB t", b"OK PUB 1"])
        cluster.settle()
        self.assertEqual(one.replies(), [b"MSG t a", b"MSG t b"])

    def test_dead_node_stops_counting(self) -> None:
        """
        A node silent for longer than the ttl is not counted.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        cluster.brokers[0]._heartbeat.stop()
        cluster.links[0].up = False  # silent, not gone
        cluster.clock.advance(31)
        two.send(b"PUB t x")
        self.assertEqual(two.replies()[-1], b"OK PUB 0")

    def test_unavailable_while_down(self) -> None:
        """
        While the link is down a publish answers ERROR unavailable: broker,
        request/reply goes on, and SUB is accepted for later.
        """
        cluster = _Cluster(nodes=1)
        (harness,) = cluster.harnesses
        cluster.links[0].drop()
        harness.send(b"PUB t x", b"SUB t", b"nonsense")
        replies = harness.replies()
        self.assertEqual(replies[:2], [b"ERROR unavailable: broker", b"OK SUB t"])
        self.assertTrue(replies[2].startswith(b"ERROR bad-request"))
        self.assertFalse(harness.disconnected)
        self.assertEqual(cluster.brokers[0].status(), "disconnected")

    def test_reconnect_restores_and_recovers(self) -> None:
        """
        What a node missed while its link was down comes from the history,
        in order, once, and its subscriptions are restored.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        two.send(b"PUB t a")
        cluster.settle()
        cluster.links[0].drop()
        two.send(b"PUB t b", b"PUB t c")
        cluster.settle()
        self.assertEqual(two.replies()[-2:], [b"OK PUB 1", b"OK PUB 1"])
        cluster.links[0].connect()
        two.send(b"PUB t d")
        cluster.settle()
        self.assertEqual(
            one.replies(), [b"OK SUB t", b"MSG t a", b"MSG t b", b"MSG t c", b"MSG t d"]
        )

    def test_gap_beyond_history(self) -> None:
        """
        When more was missed than the history holds, subscribers get
        GAP <topic> and the stream goes on.
        """
        cluster = _Cluster(history=2)
        one, two = cluster.harnesses
        one.send(b"SUB t")
        two.send(b"PUB t a")
        cluster.settle()
        cluster.links[0].drop()
        two.send(b"PUB t b", b"PUB t c", b"PUB t d")
        cluster.links[0].connect()
        cluster.settle()
        self.assertEqual(
            one.replies(), [b"OK SUB t", b"MSG t a", b"GAP t", b"MSG t c", b"MSG t d"]
        )

    def test_queue_cap(self) -> None:
        """
        Beyond the cap on unanswered publishes, a publish answers
        unavailable at once; memory stays bounded.
        """
        clock = Clock()
        server = FakeRedis(clock)
        link = FakeLink(server, b"n")
        broker = RedisBroker(link, clock, history=10, ttl=30, max_queued=2)
        broker.start()
        link.connect()
        server.hold_replies = True
        harness = FrameHarness("line", "pubsub", broker=broker)
        harness.send(b"PUB t 1", b"PUB t 2", b"PUB t 3")
        harness.clock.advance(0)
        server.release()
        self.assertEqual(
            harness.replies(), [b"OK PUB 0", b"OK PUB 0", b"ERROR unavailable: broker"]
        )

    def test_publish_timeout(self) -> None:
        """
        A publish Redis does not answer in time answers unavailable.
        """
        clock = Clock()
        server = FakeRedis(clock)
        link = FakeLink(server, b"n")
        broker = RedisBroker(link, clock, history=10, ttl=30, timeout=5)
        broker.start()
        link.connect()
        server.hold_replies = True
        harness = FrameHarness("line", "pubsub", broker=broker)
        harness.send(b"PUB t 1")
        clock.advance(5)
        self.assertEqual(harness.replies(), [b"ERROR unavailable: broker"])

    def test_broadcast_across_nodes(self) -> None:
        """
        broadcast reaches every other connection of the group on every
        node, never the sender.
        """
        clock = Clock()
        server = FakeRedis(clock)
        brokers = []
        for name in (b"a", b"b"):
            link = FakeLink(server, name)
            broker = RedisBroker(link, clock, history=10, ttl=30)
            broker.start()
            link.connect()
            brokers.append(broker)
        one = FrameHarness("line", "broadcast(group=g)", broker=brokers[0])
        mate = one.client()
        two = FrameHarness("line", "broadcast(group=g)", broker=brokers[1])
        server.flush()
        one.send(b"hello")
        server.flush()
        self.assertEqual(
            (one.replies(), mate.replies(), two.replies()), ([], [b"hello"], [b"hello"])
        )

    def test_stop_leaves(self) -> None:
        """
        A stopping node stops counting at once.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        cluster.brokers[0].stop()
        two.send(b"PUB t x")
        self.assertEqual(two.replies(), [b"OK PUB 0"])


class BrokerURLTests(SynchronousTestCase):
    """
    --broker values: the accepted forms, and one-line errors otherwise.
    """

    def test_forms(self) -> None:
        """
        Each documented form parses, and its display hides credentials.
        """
        self.assertTrue(parse_broker_url("memory").is_memory)
        url = parse_broker_url("redis://:secret@127.0.0.1:6380/2")
        self.assertEqual(
            (url.host, url.port, url.db, url.password), ("127.0.0.1", 6380, 2, "secret")
        )
        self.assertNotIn("secret", url.display())
        self.assertEqual(parse_broker_url("redis://h").port, 6379)
        self.assertEqual(parse_broker_url("rediss://h?ca=/x.pem").ca, "/x.pem")
        unix = parse_broker_url("unix:///run/redis.sock?db=3")
        self.assertEqual((unix.path, unix.db), ("/run/redis.sock", 3))

    def test_errors(self) -> None:
        """
        Malformed values are ValueErrors whose message names the value.
        """
        for text in [
            "http://x",
            "redis://",
            "redis://h:0",
            "redis://h/db",
            "unix://x",
            "redis://h?ca=/x",
        ]:
            error = self.assertRaises(ValueError, parse_broker_url, text)
            self.assertIn(repr(text), str(error))


class MakeBrokerTests(SynchronousTestCase):
    """
    The engine the settings name, built at the edge.
    """

    def test_memory(self) -> None:
        """
        The default is the in-process engine.
        """
        from echoplus.cluster.service import make_broker
        from echoplus.config import Settings

        self.assertIsInstance(make_broker(Settings(), Clock()), MemoryBroker)

    def test_redis(self) -> None:
        """
        A Redis URL makes the Redis engine, named without its password.
        """

        from echoplus.cluster.service import make_broker
        from echoplus.config import Settings

        broker = make_broker(
            Settings(broker="redis://:pw@10.0.0.1:7000/1"), MemoryReactorClock()
        )
        self.assertIsInstance(broker, RedisBroker)
        self.assertEqual(broker.name, "redis://10.0.0.1:7000/1")
        self.assertEqual(broker.status(), "disconnected")

    def test_missing_client(self) -> None:
        """
        Without the redis extra, a Redis URL is a one-line ConfigError that
        says what to install.
        """
        import sys

        from echoplus.cluster.service import make_broker
        from echoplus.config import Settings
        from echoplus.errors import ConfigError

        saved = {
            name: sys.modules.get(name)
            for name in ("txredisapi", "echoplus.cluster.link")
        }

        def restore() -> None:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module

        self.addCleanup(restore)
        sys.modules["txredisapi"] = None  # type: ignore[assignment]
        sys.modules.pop("echoplus.cluster.link", None)
        error = self.assertRaises(
            ConfigError, make_broker, Settings(broker="redis://h"), Clock()
        )
        self.assertIn("pip install 'echoplus[redis]'", str(error))


class LinkFactoryTests(SynchronousTestCase):
    """
    The link's protocol factory.
    """

    def test_reason_belongs_to_one_connection(self) -> None:
        """
        Why one connection was refused is not reported again for the next
        one, which may fail for another reason.
        """
        import txredisapi

        from echoplus.cluster.link import _Factory

        factory = _Factory(txredisapi.RedisProtocol, parse_broker_url("redis://h"))
        factory.connectionError("Redis error: could not auth: WRONGPASS")
        factory.buildProtocol(None)
        self.assertIsNone(factory.error)
