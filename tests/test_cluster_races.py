"""
The Redis engine under interleavings and failures, on the fake Redis of
tests/cluster_fakes.py: subscriptions racing each other and the link,
counts after an outage or after being forgotten, a stalled link, paged
and rewound histories; and the link's two connections as one, driven over
in-memory transports.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoplus.cluster.link import RedisLink
from echoplus.cluster.redis import FETCH_PAGE, RedisBroker
from echoplus.cluster.url import parse_broker_url
from echoplus.testing import FrameHarness
from tests.cluster_fakes import FakeLink, FakeRedis
from tests.test_cluster import _Cluster


class RedisBrokerRaceTests(SynchronousTestCase):
    """
    The Redis engine under interleavings: subscriptions racing each other
    and the link, counts after an outage, and the publish cap on a link
    that does not answer.
    """

    def _release_all(self, server: FakeRedis) -> None:
        while server.held:
            server.release()

    def test_resubscribe_during_join_answers_every_sub(self) -> None:
        """
        SUB, SUB, UNSUB, SUB of one topic while the first join is in
        flight: every request is answered (the second SUB waited on the
        first join, which a second join must not forget).
        """
        cluster = _Cluster(nodes=1)
        (harness,) = cluster.harnesses
        cluster.server.hold_replies = True
        harness.send(b"SUB t", b"SUB t", b"UNSUB t", b"SUB t")
        self._release_all(cluster.server)
        self.assertEqual(
            harness.replies(), [b"OK SUB t", b"OK SUB t", b"OK UNSUB t", b"OK SUB t"]
        )
        self.assertEqual(cluster.brokers[0]._joining, {})

    def test_publish_after_subscribe_counts_the_subscriber(self) -> None:
        """
        A PUB that follows a SUB of the same topic on this node (pipelined:
        the SUB is not answered yet) counts that subscriber, as after an
        answered SUB and as with the memory broker.
        """
        cluster = _Cluster(nodes=1)
        (harness,) = cluster.harnesses
        cluster.server.hold_replies = True
        harness.send(b"SUB t", b"PUB t x")
        self._release_all(cluster.server)
        cluster.settle()
        self.assertEqual(harness.replies(), [b"OK SUB t", b"OK PUB 1", b"MSG t x"])

    def test_publish_waiting_for_a_join_times_out_unsent(self) -> None:
        """
        A publish that waited for a join longer than the publish timeout
        answers unavailable and is never sent.
        """
        cluster = _Cluster(nodes=1)
        (harness,) = cluster.harnesses
        cluster.server.hold_replies = True
        harness.send(b"SUB t", b"PUB t x")
        cluster.clock.advance(5)
        self._release_all(cluster.server)
        cluster.settle()
        self.assertEqual(harness.replies(), [b"OK SUB t", b"ERROR unavailable: broker"])
        self.assertNotIn(b"t", cluster.server.meta)
        self.assertEqual(cluster.brokers[0]._queued, 0)

    def test_unsubscribed_while_down_stops_counting(self) -> None:
        """
        A topic whose last local subscriber left while the link was down
        no longer counts this node's subscribers once the link is back.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        gone = one.client()
        one.send(b"SUB t")
        gone.send(b"SUB u")
        cluster.links[0].drop()
        one.send(b"UNSUB t")
        gone.close()
        cluster.links[0].connect()
        two.send(b"PUB t x", b"PUB u y")
        self.assertEqual(two.replies(), [b"OK PUB 0", b"OK PUB 0"])
        self.assertEqual(cluster.server.subs, {b"t": {}, b"u": {}})

    def test_timed_out_publishes_stay_queued(self) -> None:
        """
        A publish that timed out is still on its way to Redis (written,
        waiting for its answer): it counts against the cap until Redis
        answers or the link is lost, so a stalled link cannot take more
        than the cap.
        """
        clock = Clock()
        server = FakeRedis(clock)
        link = FakeLink(server, b"n")
        broker = RedisBroker(link, clock, history=10, ttl=300, max_queued=2, timeout=5)
        broker.start()
        link.connect()
        server.hold_replies = True
        harness = FrameHarness("line", "pubsub", broker=broker)
        harness.send(b"PUB t 1", b"PUB t 2")
        clock.advance(5)
        harness.send(b"PUB t 3")
        self.assertEqual(harness.replies(), [b"ERROR unavailable: broker"] * 3)
        self.assertEqual(len(server.held), 2)
        server.release()  # Redis answers at last
        server.hold_replies = False
        harness.send(b"PUB t 4")
        self.assertEqual(harness.replies(), [b"OK PUB 0"])

    def test_forgotten_node_counts_again(self) -> None:
        """
        A node that other nodes forgot (silent past the ttl: a blocked
        reactor) records its subscribers again at its next heartbeat.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        cluster.brokers[0]._heartbeat.stop()
        cluster.clock.advance(31)  # node1 beats and forgets node0
        self.assertNotIn(b"node0", cluster.server.nodes)
        cluster.brokers[0]._heartbeat.start(10, now=True)
        two.send(b"PUB t x")
        self.assertEqual(two.replies(), [b"OK PUB 1"])

    def test_stalled_subscriber_connection_resets_the_link(self) -> None:
        """
        The heartbeat also checks the subscriber connection: when it stalls
        while the command connection answers, the link is dropped and made
        again (else the node's subscribers would miss every frame, and
        still be counted).
        """
        cluster = _Cluster(nodes=1)
        (harness,) = cluster.harnesses
        harness.send(b"SUB t")
        cluster.links[0].subscriber_stalled = True
        cluster.clock.advance(10)
        self.assertEqual(cluster.links[0].resets, 0)
        cluster.clock.advance(10)
        self.assertEqual(cluster.links[0].resets, 1)

    def test_shorter_history_than_the_stream_loses_nothing(self) -> None:
        """
        A node whose --broker-history is shorter than the topic's stream
        (another node or echoplus publish keeps more) recovers every frame
        it missed, not the first page of them.
        """
        clock = Clock()
        server = FakeRedis(clock, history=1000)
        links = [FakeLink(server, b"far"), FakeLink(server, b"near")]
        brokers = [
            RedisBroker(links[0], clock, history=2, ttl=30),
            RedisBroker(links[1], clock, history=1000, ttl=30),
        ]
        for broker, link in zip(brokers, links, strict=True):
            broker.start()
            link.connect()
        far = FrameHarness("line", "pubsub", broker=brokers[0])
        near = FrameHarness("line", "pubsub", broker=brokers[1])
        far.send(b"SUB t")
        links[0].drop()
        near.send(*[b"PUB t %d" % n for n in range(5)])
        links[0].connect()
        server.flush()
        self.assertEqual(
            far.replies(), [b"OK SUB t"] + [b"MSG t %d" % n for n in range(5)]
        )

    def test_long_history_is_fetched_in_pages(self) -> None:
        """
        With a long --broker-history, a recovery asks Redis for at most
        FETCH_PAGE entries at a time (and holds at most as many live
        frames), and still delivers every missed frame.
        """
        cluster = _Cluster(history=10_000)
        one, two = cluster.harnesses
        one.send(b"SUB t")
        cluster.links[0].drop()
        two.send(*[b"PUB t %d" % n for n in range(2500)])
        limits: list[int] = []
        fetch = cluster.links[0].fetch
        cluster.links[0].fetch = (  # type: ignore[method-assign]
            lambda topic, epoch, after, limit: (
                limits.append(limit) or fetch(topic, epoch, after, limit)
            )
        )
        cluster.links[0].connect()
        cluster.settle()
        self.assertEqual(limits, [FETCH_PAGE] * 3)
        self.assertEqual(
            one.replies(), [b"OK SUB t"] + [b"MSG t %d" % n for n in range(2500)]
        )

    def test_history_rewritten_while_away(self) -> None:
        """
        Redis came back from an older snapshot and the topic was published
        past this node's offset before it reconnected: its subscribers get
        GAP (a frame at an offset it had seen was lost), then what follows.
        """
        cluster = _Cluster()
        one, two = cluster.harnesses
        one.send(b"SUB t")
        two.send(b"PUB t a", b"PUB t b")
        cluster.settle()
        cluster.links[0].drop()
        cluster.server.meta[b"t"][1] = 1  # the snapshot had only "a"
        del cluster.server.hist[b"t"][1:]
        two.send(b"PUB t c", b"PUB t d", b"PUB t e")
        cluster.links[0].connect()
        cluster.settle()
        self.assertEqual(
            one.replies(),
            [b"OK SUB t", b"MSG t a", b"MSG t b", b"GAP t", b"MSG t d", b"MSG t e"],
        )

    def test_stalled_link_logs_once(self) -> None:
        """
        Publishes that Redis does not answer are not logged one by one;
        the heartbeat that finds the stall logs one line saying so.
        """
        events: list[dict[str, object]] = []
        cluster = _Cluster(nodes=1)
        broker = cluster.brokers[0]
        broker._log = Logger(observer=events.append)  # type: ignore[misc]
        (harness,) = cluster.harnesses
        cluster.server.hold_replies = True
        harness.send(*[b"PUB t %d" % n for n in range(20)])
        cluster.clock.advance(5)
        self.assertEqual(harness.replies(), [b"ERROR unavailable: broker"] * 20)
        self.assertEqual(events, [])
        cluster.clock.pump([1] * 15)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "Broker redis://fake:6379/0: heartbeat unanswered (no answer within "
                "10 s); reconnecting"
            ],
        )


class _StalledTransport(StringTransport):
    """
    A connection whose path stalled: C{loseConnection} waits for buffered
    bytes that never leave (nothing happens), C{abortConnection} closes it
    at once.
    """

    def abortConnection(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            self.protocol.connectionLost(Failure(ConnectionLost("aborted")))


class _Endpoint:
    """
    Connects each factory's protocol to a L{_StalledTransport} at once.
    """

    def __init__(self) -> None:
        self.protocols: list[Any] = []

    def connect(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(None)
        transport = _StalledTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.protocols.append(protocol)
        return succeed(protocol)


class RedisLinkTests(SynchronousTestCase):
    """
    The link's two connections are one: neither outlives the other.
    """

    def _answer_scripts(self, endpoint: _Endpoint) -> None:
        for protocol in endpoint.protocols:
            for line in protocol.transport.value().split(b"\r\n"):
                if line.upper() == b"LOAD":
                    protocol.dataReceived(b"$40\r\n" + b"0" * 40 + b"\r\n")
            protocol.transport.clear()

    def test_lost_connection_aborts_the_other(self) -> None:
        """
        When one connection is lost, the other is closed at once, even when
        its path stalled: the link does not come up again on it.
        """
        reactor = MemoryReactorClock()
        endpoint = _Endpoint()
        link = RedisLink(
            parse_broker_url("redis://fake:6379"),
            "p",
            b"n",
            reactor,
            ttl=30,
            history=10,
            endpoint=endpoint,  # type: ignore[arg-type]
        )
        link.start()
        self._answer_scripts(endpoint)
        self.assertTrue(link.up)
        command, subscriber = endpoint.protocols
        if command.factory is link._factories["subscriber"]:
            command, subscriber = subscriber, command
        command.transport.abortConnection()
        self.assertFalse(link.up)
        self.assertTrue(subscriber.transport.disconnected)
        reactor.advance(1)
        self._answer_scripts(endpoint)
        self.assertTrue(link.up)
        self.assertNotIn(subscriber, link._protocols.values())
        link.stop()
