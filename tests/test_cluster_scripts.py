"""
The Redis broker's Lua scripts (L{echoplus.cluster.scripts}) run against a
real C{redis-server}: what the fake in tests/cluster_fakes.py assumes of
them.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echoplus.cluster.scripts import HEARTBEAT, SET_COUNT, Keys, Script
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
