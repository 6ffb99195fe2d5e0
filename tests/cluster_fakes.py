"""
An in-memory stand-in for one Redis server and the links of the nodes on
it: the same operations as L{echoplus.cluster.link.RedisLink}, with the
Lua scripts' semantics written in Python, so that the Redis engine runs in
unit tests without a socket.  Messages are queued and delivered by
L{FakeRedis.flush}, so tests choose the interleavings.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock

from echoplus.cluster.envelope import encode_envelope
from echoplus.cluster.url import parse_broker_url


class FakeRedis:
    """
    One Redis server's state: topics' epochs, offsets, histories and
    per-node counts, live nodes, and the channel subscriptions of links.
    """

    def __init__(self, clock: Clock, history: int = 1000, ttl: float = 30.0) -> None:
        self.clock = clock
        self.history = history
        self.ttl = ttl
        self.meta: dict[bytes, list[Any]] = {}  # topic -> [epoch, offset]
        self.hist: dict[bytes, list[bytes]] = {}
        self.subs: dict[bytes, dict[bytes, int]] = {}
        self.nodes: dict[bytes, float] = {}
        self.listeners: dict[bytes, list[FakeLink]] = {}
        self.queue: list[tuple[FakeLink, bytes, bytes]] = []
        self.hold_replies = False
        self.held: list[tuple[Deferred[Any], Any]] = []

    def reply(self, value: Any) -> Deferred[Any]:
        if not self.hold_replies:
            return succeed(value)
        waiting: Deferred[Any] = Deferred()
        self.held.append((waiting, value))
        return waiting

    def release(self) -> None:
        held, self.held = self.held, []
        for waiting, value in held:
            waiting.callback(value)

    def flush(self) -> None:
        """
        Deliver every queued channel message (and any they cause).
        """
        while self.queue:
            link, topic, data = self.queue.pop(0)
            if link.up:
                link.on_message(topic, data)

    def wipe(self) -> None:
        """
        Lose every key, as a restart without persistence does.
        """
        self.meta.clear()
        self.hist.clear()
        self.subs.clear()
        self.nodes.clear()

    def live_count(self, topic: bytes) -> int:
        alive = self.clock.seconds() - self.ttl
        return sum(
            count
            for node, count in self.subs.get(topic, {}).items()
            if self.nodes.get(node, -1e18) >= alive
        )


class FakeLink:
    """
    One node's link to a L{FakeRedis}; C{up} is set by L{connect} and
    L{drop}.
    """

    def __init__(self, server: FakeRedis, node: bytes) -> None:
        self.server = server
        self.node = node
        self.url = parse_broker_url("redis://fake:6379")
        self.up = False
        self.started = False
        self.channels: set[bytes] = set()
        self.resets = 0
        #: The subscriber connection answers nothing (stalled).
        self.subscriber_stalled = False
        self.on_up: Callable[[], None] = lambda: None
        self.on_down: Callable[[str], None] = lambda why: None
        self.on_failure: Callable[[str], None] = lambda why: None
        self.on_message: Callable[[bytes, bytes], None] = lambda topic, data: None

    # Test controls.

    def connect(self) -> None:
        self.up = True
        self.on_up()

    def drop(self) -> None:
        self.up = False
        for topic in self.channels:
            self.server.listeners[topic].remove(self)
        self.channels.clear()
        self.on_down("the connection was lost")

    # The link's operations.

    def start(self) -> None:
        self.started = True

    def stop(self) -> Deferred[None]:
        self.started = False
        self.up = False
        return succeed(None)

    def reset(self) -> None:
        self.resets += 1

    def _check(self) -> Deferred[Any] | None:
        if not self.up:
            return fail(ConnectionLost("the broker link is down"))
        return None

    def publish(
        self,
        topic: bytes,
        frame: bytes,
        origin: bytes,
        sender_subscribed: bool,
        epoch: bytes,
        published: float,
    ) -> Deferred[int]:
        down = self._check()
        if down is not None:
            return down
        server = self.server
        count = server.live_count(topic)
        if sender_subscribed and count:
            count -= 1
        meta = server.meta.get(topic)
        if meta is None:
            meta = server.meta[topic] = [epoch, 0]
            server.hist[topic] = []
        meta[1] += 1
        data = encode_envelope(meta[0], meta[1], published, origin, frame)
        history = server.hist[topic]
        history.append(data)
        del history[: max(len(history) - server.history, 0)]
        for link in server.listeners.get(topic, []):
            server.queue.append((link, topic, data))
        return server.reply(count)

    def set_count(self, topic: bytes, count: int) -> Deferred[tuple[bytes, int]]:
        down = self._check()
        if down is not None:
            return down
        counts = self.server.subs.setdefault(topic, {})
        if count > 0:
            counts[self.node] = count
        else:
            counts.pop(self.node, None)
        meta = self.server.meta.get(topic, [b"", 0])
        return self.server.reply((meta[0], meta[1]))

    def count(self, topic: bytes) -> Deferred[int]:
        down = self._check()
        return (
            down
            if down is not None
            else self.server.reply(self.server.live_count(topic))
        )

    def fetch(
        self, topic: bytes, epoch: bytes | None, after: int, limit: int
    ) -> Deferred[tuple[bytes, int, bytes, list[bytes]]]:
        down = self._check()
        if down is not None:
            return down
        meta = self.server.meta.get(topic)
        if meta is None:
            return self.server.reply((b"", 0, b"", []))
        if meta[0] != (epoch or b""):
            after = 0
        at = [
            data
            for data in self.server.hist.get(topic, [])
            if after and int(data.split(b" ", 2)[1]) == after
        ]
        entries = [
            data
            for data in self.server.hist.get(topic, [])
            if int(data.split(b" ", 2)[1]) > after
        ][:limit]
        return self.server.reply((meta[0], meta[1], (at or [b""])[0], entries))

    def heartbeat(self) -> Deferred[tuple[int, bool]]:
        down = self._check()
        if down is not None:
            return down
        server = self.server
        now = server.clock.seconds()
        rejoined = self.node not in server.nodes
        server.nodes[self.node] = now
        dead = [node for node, seen in server.nodes.items() if seen < now - server.ttl]
        for node in dead:
            del server.nodes[node]
            for counts in server.subs.values():
                counts.pop(node, None)
        return server.reply((len(dead), rejoined))

    def leave(self) -> Deferred[Any]:
        self.server.nodes.pop(self.node, None)
        for counts in self.server.subs.values():
            counts.pop(self.node, None)
        return succeed(1)

    def listen(self, topic: bytes) -> Deferred[Any]:
        down = self._check()
        if down is not None:
            return down
        if topic not in self.channels:
            self.channels.add(topic)
            self.server.listeners.setdefault(topic, []).append(self)
        return self.server.reply(None)

    def unlisten(self, topic: bytes) -> Deferred[Any]:
        down = self._check()
        if down is not None:
            return down
        if topic in self.channels:
            self.channels.discard(topic)
            self.server.listeners[topic].remove(self)
        return self.server.reply(None)

    def sync(self) -> Deferred[Any]:
        down = self._check()
        if down is not None:
            return down
        if self.subscriber_stalled:
            return Deferred()
        self.server.flush()
        return self.server.reply(None)
