"""
The Redis broker, C{--broker redis://...}: topics shared by every node
(process or host) on one Redis server and C{--broker-prefix}.

Every publish runs one script in Redis (L{echoplus.cluster.scripts}) that
counts the live nodes' subscribers, appends the frame to the topic's
capped history with the next offset of its epoch, and publishes it on the
topic's channel.  Each node subscribes to the channels of the topics it
has local subscribers for, and delivers what arrives through its
L{TopicCursor}: in offset order, each frame once.  Local deliveries take
the same way (there is no shortcut for the publisher's own node), so every
subscriber on every node sees one order per topic.

When the link is lost, publishes answer C{ERROR unavailable: broker};
subscribers stay subscribed locally.  When it is back, the node records its
subscriber counts again, resubscribes, and fetches each topic's history
after its cursor; what the history no longer holds becomes a C{GAP} for the
topic's subscribers.  Heartbeats keep the node counted; a node silent for
C{--broker-ttl} stops counting.
"""

from __future__ import annotations

import itertools
import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    FirstError,
    TimeoutError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus.cluster.envelope import Envelope, decode_envelope
from echoplus.cluster.local import LocalSubscribers
from echoplus.cluster.recovery import TopicCursor
from echoplus.errors import Unavailable
from echoplus.interfaces import IBroker

if TYPE_CHECKING:
    from echoplus.cluster.link import RedisLink
    from echoplus.cluster.metrics import BrokerMetrics
    from echoplus.context import ConnectionContext

__all__ = ["RedisBroker"]

#: Publishes sent to Redis and not yet answered, beyond which a publish is
#: refused at once (a slow or stalled link cannot grow the node's memory).
MAX_QUEUED_PUBLISHES = 1000
#: Seconds a publish may wait for Redis before it answers unavailable.
PUBLISH_TIMEOUT = 5.0
#: The most history entries one fetch asks for, and the most live frames a
#: topic holds while it recovers: a long --broker-history is fetched in
#: pages, so that neither Redis nor this node's reactor is blocked on one
#: huge reply.
FETCH_PAGE = 1000


@implementer(IBroker)
class RedisBroker:
    """
    The Redis engine of L{IBroker}.

    @ivar node: this node's id in Redis.
    @ivar local: this node's subscribers.
    @ivar last_failure: why the last connection attempt failed, if any did.
    """

    last_failure: str | None = None

    _log = Logger()

    def __init__(
        self,
        link: RedisLink,
        clock: IReactorTime,
        history: int,
        ttl: float,
        metrics: BrokerMetrics | None = None,
        max_queued: int = MAX_QUEUED_PUBLISHES,
        timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        """
        @param link: the connections to Redis (or a fake with the same
            operations).
        @param clock: the reactor, or a C{task.Clock} in tests.
        @param history: how many frames a topic's history keeps.
        @param ttl: seconds a silent node still counts.
        """
        self.name = link.url.display()
        self.node = link.node
        self.local = LocalSubscribers()
        self.metrics = metrics
        self._link = link
        self._clock = clock
        self._history = history
        self._page = max(min(history, FETCH_PAGE), 1)
        self._ttl = ttl
        self._max_queued = max_queued
        self._timeout = timeout
        self._queued = 0
        self._cursors: dict[bytes, TopicCursor] = {}
        self._joining: dict[bytes, list[Deferred[None]]] = {}
        # Topics left by their last local subscriber whose count of 0 Redis
        # may not have recorded yet (the link was down or went down).
        self._uncounted: set[bytes] = set()
        # Candidate epochs for a topic's first publish: unique per node and
        # publish, with one random draw per node (not one per publish).
        token = secrets.token_hex(6).encode()
        self._epochs = (b"%s.%d" % (token, n) for n in itertools.count())
        self._was_up = False
        self._ready = False
        self._outage_told = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        link.on_up = self._up
        link.on_down = self._down
        link.on_failure = self._failure
        link.on_message = self._message

    # Lifetime.

    def start(self) -> None:
        """
        Connect, and keep the link and the heartbeat going.
        """
        if self.metrics is not None:
            self.metrics.connected(False)
        self._link.start()
        self._heartbeat.start(max(self._ttl / 3, 0.1), now=False)

    def stop(self) -> Deferred[Any]:
        """
        Leave (this node's subscribers stop counting at once) and close the
        link.
        """
        if self._heartbeat.running:
            self._heartbeat.stop()
        leaving: Deferred[Any] = succeed(None)
        if self._link.up:
            leaving = self._link.leave()
            leaving.addTimeout(1.0, self._clock)
            leaving.addErrback(lambda _: None)
        return leaving.addCallback(lambda _: self._link.stop())

    def status(self) -> str:
        return "connected" if self._ready and self._link.up else "disconnected"

    # IBroker.

    def publish(
        self, topic: bytes, frame: bytes, sender: ConnectionContext | None = None
    ) -> Deferred[int]:
        if not (self._ready and self._link.up) or self._queued >= self._max_queued:
            if self.metrics is not None:
                self.metrics.publish_failed()
            return fail(Unavailable("broker"))
        if sender is None:
            origin, subscribed = b"-", False
        else:
            origin = b"%b/%d" % (self.node, sender.id)
            subscribed = self.local.has(topic, sender)
        self._queued += 1
        answer: Deferred[int] = Deferred()

        def send(_: Any = None) -> None:
            if answer.called:  # timed out while waiting for a join: unsent
                self._queued -= 1
                return
            sent = self._link.publish(
                topic,
                frame,
                origin,
                subscribed,
                next(self._epochs),
                self._clock.seconds(),
            )
            # The publish stays queued until Redis answers or the link is
            # lost, even when its answer timed out: it is written to the
            # connection and counts against the cap until then.
            sent.addBoth(self._unqueue)
            sent.addBoth(self._answer, answer)

        joining = self._joining.get(topic)
        if joining is None:
            send()
        else:
            # A local subscriber of the topic is being counted: publish once
            # it is, as after its SUB was answered (and as in memory).
            waiter: Deferred[None] = Deferred()
            joining.append(waiter)
            waiter.addCallback(send)
        answer.addTimeout(self._timeout, self._clock)
        return answer.addCallbacks(self._published, self._publish_failed)

    def subscribe(
        self, topic: bytes, context: ConnectionContext, gap: bytes | None = None
    ) -> Deferred[None]:
        new = self.local.add(topic, context, gap)
        cursor = self._cursors.get(topic)
        if cursor is None:
            cursor = self._cursors[topic] = TopicCursor(self._page)
        if not self._link.up:
            return succeed(None)  # restored with the link
        if new:
            joined = self._join(topic, cursor)
        elif topic in self._joining:
            waiter: Deferred[None] = Deferred()
            self._joining[topic].append(waiter)
            joined = waiter.addCallback(lambda _: self._count(topic))
        else:
            joined = self._count(topic)
        return joined.addCallbacks(
            lambda _: None, self._quietly, errbackArgs=("subscribe",)
        )

    def unsubscribe(self, topic: bytes, context: ConnectionContext) -> None:
        if not self.local.has(topic, context):
            return
        emptied = self.local.remove(topic, context)
        if emptied:
            self._cursors.pop(topic, None)
            self._uncounted.add(topic)
        if self._link.up:
            if emptied:
                self._link.unlisten(topic).addErrback(self._quietly, "unsubscribe")
            self._count(topic).addErrback(self._quietly, "unsubscribe")

    def unsubscribe_all(self, context: ConnectionContext) -> None:
        for topic in self.local.topics_of(context):
            self.unsubscribe(topic, context)

    def subscribers(self, topic: bytes) -> Deferred[int]:
        if not self._link.up:
            return fail(Unavailable("broker"))
        counted = self._link.count(topic)
        counted.addTimeout(self._timeout, self._clock)
        return counted.addErrback(self._unavailable)

    # Subscribing.

    def _count(self, topic: bytes) -> Deferred[tuple[bytes, int]]:
        count = self.local.count(topic)
        counted = self._link.set_count(topic, count)
        if count == 0:
            counted.addCallback(self._zeroed, topic)
        return counted

    def _zeroed(self, result: Any, topic: bytes) -> Any:
        if not self.local.count(topic):
            self._uncounted.discard(topic)
        return result

    def _join(self, topic: bytes, cursor: TopicCursor) -> Deferred[Any]:
        """
        The node's first subscriber of C{topic}: subscribe to its channel,
        count the subscriber, and learn the topic's position (after every
        frame published before it was received: see L{RedisLink.sync}).
        """
        waiters = self._joining[topic] = []
        position: list[tuple[bytes, int]] = []
        joined = self._link.listen(topic)
        joined.addCallback(lambda _: self._count(topic))
        joined.addCallback(position.append)
        joined.addCallback(lambda _: self._link.sync())
        joined.addCallback(lambda _: cursor.place(*position[0]))

        def release(result: Any) -> Any:
            # Only this join's waiters: the topic may have been left and
            # joined again meanwhile, by a join with waiters of its own.
            if self._joining.get(topic) is waiters:
                del self._joining[topic]
            for waiter in waiters:
                waiter.callback(None)
            return result

        return joined.addBoth(release)

    # Receiving.

    def _message(self, topic: bytes, data: bytes) -> None:
        cursor = self._cursors.get(topic)
        if cursor is None:
            return
        try:
            envelope = decode_envelope(data)
        except ValueError:
            self._log.warn(
                "Broker: ignored a message on topic {topic!r} that is not an "
                "echoplus envelope",
                topic=topic,
            )
            return
        deliver, fetch = cursor.live(envelope)
        for each in deliver:
            self._deliver(topic, each)
        if fetch:
            self._recover(topic, cursor)

    def _deliver(self, topic: bytes, envelope: Envelope) -> None:
        count = self.local.deliver(topic, envelope.frame, envelope.skip_id(self.node))
        if self.metrics is not None:
            self.metrics.delivered(count, self._clock.seconds() - envelope.published)

    def _recover(self, topic: bytes, cursor: TopicCursor) -> None:
        fetched = self._link.fetch(topic, cursor.epoch, cursor.offset, self._page)
        fetched.addTimeout(self._timeout, self._clock)
        fetched.addCallbacks(
            self._recovered,
            self._recovery_failed,
            callbackArgs=(topic, cursor),
        )

    def _recovered(
        self,
        position: tuple[bytes, int, bytes, list[bytes]],
        topic: bytes,
        cursor: TopicCursor,
    ) -> None:
        if self._cursors.get(topic) is not cursor:
            return  # unsubscribed meanwhile
        epoch, current, at_raw, raw = position
        try:
            at = decode_envelope(at_raw) if at_raw else None
        except ValueError:
            at = None
        entries = []
        for data in raw:
            try:
                entries.append(decode_envelope(data))
            except ValueError:
                continue
        outcome = cursor.recovered(epoch, current, entries, at)
        if outcome.gap:
            told = self.local.gap(topic)
            if self.metrics is not None:
                self.metrics.gap()
            self._log.warn(
                "Broker: frames of topic {topic!r} may have been lost while "
                "this node was away (more than the history of {history} "
                "holds, or the broker lost its data); told {told} "
                "subscriber(s) GAP",
                topic=topic,
                history=self._history,
                told=told,
            )
        if self.metrics is not None:
            self.metrics.recovered(outcome.history)
        if outcome.history:
            self._log.info(
                "Broker: delivered {count} missed frame(s) of topic {topic!r} "
                "from its history",
                count=outcome.history,
                topic=topic,
            )
        for envelope in outcome.deliver:
            self._deliver(topic, envelope)
        if outcome.fetch_again:
            self._recover(topic, cursor)

    def _recovery_failed(self, failure: Failure) -> None:
        if self._link.up:
            # No answer while the link looks up: start over on a new link.
            self._log.warn(
                "Broker: fetching a topic's history failed ({why}); reconnecting",
                why=failure.getErrorMessage(),
            )
            self._link.reset()

    # The link.

    def _up(self) -> None:
        """
        The link is (back) up: record this node's subscribers again and
        resubscribe, then take publishes; each topic's history is fetched
        after its cursor as its channel is back.
        """
        restoring = [self._beat()]
        self._uncounted.difference_update(self.local)
        for topic in sorted(self._uncounted):
            # Left while the link was down: stop counting it in Redis.
            restoring.append(self._count(topic))
        for topic in self.local:
            cursor = self._cursors.get(topic)
            if cursor is None:
                cursor = self._cursors[topic] = TopicCursor(self._page)
            cursor.reconnected()
            restored = self._link.listen(topic)
            restored.addCallback(lambda _, topic=topic: self._count(topic))
            restored.addCallback(
                lambda _, topic=topic, cursor=cursor: self._recover(topic, cursor)
            )
            restoring.append(restored)
        DeferredList(restoring, consumeErrors=True).addCallback(
            self._restored, len(self.local.topics)
        )

    def _restored(self, results: list[tuple[bool, Any]], topics: int) -> None:
        if not self._link.up:
            return  # lost again meanwhile; the next _up starts over
        if not all(ok for ok, _ in results):
            self._link.reset()
            return
        self._ready = True
        if self.metrics is not None:
            self.metrics.connected(True)
            if self._was_up:
                self.metrics.reconnected()
        self._log.info(
            "Broker {name} {what}; {topics} topic(s) restored",
            name=self.name,
            what="reconnected" if self._was_up else "connected",
            topics=topics,
        )
        self._was_up = True
        self._outage_told = False

    def _down(self, why: str) -> None:
        self._ready = False
        if self.metrics is not None:
            self.metrics.connected(False)
        self._outage_told = True
        self._log.warn(
            "Broker {name}: {why}; publishes answer ERROR unavailable: broker "
            "until it is back; reconnecting",
            name=self.name,
            why=why,
        )

    def _failure(self, why: str) -> None:
        self.last_failure = why
        if self._outage_told:
            return
        self._outage_told = True
        self._log.warn(
            "Broker {name} unreachable ({why}); serving without it: publishes "
            "answer ERROR unavailable: broker; retrying with backoff",
            name=self.name,
            why=why,
        )

    def _beat(self) -> Deferred[Any]:
        if not self._link.up:
            return succeed(None)
        # Both connections must answer: a stalled subscriber connection
        # would lose every frame while this node is still counted.
        beat = gatherResults(
            [self._link.heartbeat(), self._link.sync()], consumeErrors=True
        )
        beat.addTimeout(max(self._ttl / 3, 0.1), self._clock)
        beat.addCallback(lambda replies: self._beaten(replies[0]))
        return beat.addErrback(self._beat_failed)

    def _beaten(self, reply: tuple[int, bool]) -> None:
        _, rejoined = reply
        if not (rejoined and self._ready):
            return  # (a node coming up records its counts anyway)
        # The other nodes forgot this one (silent past the ttl: a blocked
        # reactor or a slow Redis) and deleted its counts: record them again.
        self._log.warn(
            "Broker {name}: this node was silent for longer than the ttl and "
            "forgotten; recording its {topics} topic(s) again",
            name=self.name,
            topics=len(self.local.topics),
        )
        for topic in self.local:
            self._count(topic).addErrback(self._quietly, "subscribe")

    def _beat_failed(self, failure: Failure) -> None:
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if self._link.up:
            self._log.warn(
                "Broker {name}: heartbeat unanswered ({why}); reconnecting",
                name=self.name,
                why=(
                    f"no answer within {max(self._ttl / 3, 0.1):g} s"
                    if failure.check(TimeoutError, CancelledError)
                    else failure.getErrorMessage() or failure.type.__name__
                ),
            )
            self._link.reset()

    # Outcomes.

    def _unqueue(self, result: Any) -> Any:
        self._queued -= 1
        return result

    def _answer(self, result: Any, answer: Deferred[int]) -> None:
        if not answer.called:
            answer.callback(result)  # a Failure takes the errback chain

    def _published(self, subscribers: int) -> int:
        if self.metrics is not None:
            self.metrics.published(subscribers)
        return subscribers

    def _publish_failed(self, failure: Failure) -> Failure:
        if self.metrics is not None:
            self.metrics.publish_failed()
        if not self._link.up or failure.check(Unavailable, TimeoutError):
            # (No line per publish when Redis does not answer: the
            # heartbeat finds it and says so once.)
            return Failure(Unavailable("broker"))
        self._log.warn(
            "Broker {name}: a publish failed ({why})",
            name=self.name,
            why=failure.getErrorMessage() or failure.type.__name__,
        )
        return Failure(Unavailable("broker"))

    def _unavailable(self, failure: Failure) -> Failure:
        return Failure(Unavailable("broker"))

    def _quietly(self, failure: Failure, what: str) -> None:
        """
        A subscription step failed: the link is down or going down, and
        everything is restored when it is back.
        """
        self._log.debug(
            "Broker: {what} deferred until the link is back ({why})",
            what=what,
            why=failure.getErrorMessage(),
        )
