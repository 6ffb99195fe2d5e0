"""
The Redis broker's Lua scripts (L{echoplus.cluster.scripts}) run against a
real C{redis-server}: what the fake in tests/cluster_fakes.py assumes of
them.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echoplus.cluster.scripts import (
    FETCH,
    HEARTBEAT,
    PUBLISH,
    SET_COUNT,
    Keys,
    Script,
)
from tests.redis_support import RedisServer

KEYS = Keys(b"p")


class ScriptTests(SynchronousTestCase):
    """
    One Redis per test case method; each script is run with EVAL.
    """

    def setUp(self) -> None:
        self.redis = RedisServer.start_for(self)

    def run_script(self, script: Script, keys: list[bytes], *args: Any) -> Any:
        return self.redis.command("EVAL", script.source, len(keys), *keys, *args)

    def heartbeat(self, node: bytes, ttl: float = 30) -> Any:
        return self.run_script(HEARTBEAT, [KEYS.nodes], node, ttl, KEYS.prefix)

    def test_heartbeat_tells_a_forgotten_node(self) -> None:
        """
        The heartbeat answers how many nodes it forgot and whether the
        beating node was registered: a node forgotten by another's
        heartbeat learns it (its counts are gone) at its next beat.
        """
        self.assertEqual(self.heartbeat(b"a"), [0, 1])
        self.assertEqual(self.heartbeat(b"a"), [0, 0])
        self.run_script(
            SET_COUNT,
            [KEYS.subs(b"t"), KEYS.node(b"a"), KEYS.meta(b"t")],
            b"a",
            2,
            b"t",
        )
        self.redis.command("ZADD", KEYS.nodes, 1, b"a")  # silent since 1970
        self.assertEqual(self.heartbeat(b"b"), [1, 1])
        self.assertEqual(self.redis.command("HGETALL", KEYS.subs(b"t")), [])
        self.assertEqual(self.heartbeat(b"a"), [0, 1])

    def publish(self, topic: bytes, frame: bytes) -> Any:
        keys = [KEYS.meta(topic), KEYS.hist(topic), KEYS.subs(topic), KEYS.nodes]
        args = [KEYS.channel(topic), frame, b"-", b"0", b"E9", 10, 30, b"1.5", 86400]
        return self.run_script(PUBLISH, keys, *args)

    def test_large_offsets(self) -> None:
        """
        Offsets are written and read as integers, far beyond 2^31 (Lua
        numbers are doubles; its default conversion writes 1e+14).
        """
        topic = b"t"
        for last in (2**31 - 1, 2**32, 10**14 - 1, 2**53 - 5):
            self.redis.command("DEL", KEYS.meta(topic), KEYS.hist(topic))
            self.redis.command("HSET", KEYS.meta(topic), "e", "E1", "o", last)
            self.assertEqual(self.publish(topic, b"MSG t hi"), 0)
            entry = b"E1 %d 1.5 - MSG t hi" % (last + 1,)
            self.assertEqual(
                self.redis.command("XRANGE", KEYS.hist(topic), "-", "+"),
                [[b"%d-0" % (last + 1,), [b"m", entry]]],
            )
            fetched = self.run_script(
                FETCH, [KEYS.meta(topic), KEYS.hist(topic)], b"E1", last, 10
            )
            self.assertEqual(fetched, [b"E1", last + 1, b"", entry])
            fetched = self.run_script(
                FETCH, [KEYS.meta(topic), KEYS.hist(topic)], b"E1", last + 1, 10
            )
            self.assertEqual(fetched, [b"E1", last + 1, entry])
