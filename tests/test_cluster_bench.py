"""
Smoke tests of the helpers of C{benchmarks/cluster.py} and
C{cluster_load.py}: how a window's lines are counted, the verdicts, and the
C{redis-benchmark} ceiling against a real throw-away Redis (the benchmark
itself is not part of the test suite).
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.redis_support import RedisServer

REPO = Path(__file__).resolve().parent.parent


def _benchmark(name: str) -> Any:
    """
    Import C{benchmarks/<name>.py}.
    """
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


class TallyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tally = _benchmark("cluster_load").Tally(subscribers=2)
        self.server, self.client = socket.socketpair()
        self.addCleanup(self.server.close)
        self.addCleanup(self.client.close)

    def feed(self, data: bytes, publisher: bool = False) -> None:
        self.server.sendall(data)
        self.tally.read(self.client, publisher)

    def test_deliveries_in_order(self) -> None:
        """
        MSG lines count as deliveries with a latency from their send time,
        also when a line is split across reads.
        """
        sent = time.perf_counter_ns()
        self.feed(b"MSG bench 0 %d xx\nMSG bench 1 %d" % (sent, sent))
        self.assertEqual(self.tally.counts["delivered"], 1)
        self.feed(b" xx\n")
        self.assertEqual(self.tally.counts["delivered"], 2)
        self.assertEqual(self.tally.counts["disorder"], 0)
        self.assertEqual(len(self.tally.latencies), 2)
        self.assertTrue(all(value >= 0 for value in self.tally.latencies))

    def test_disorder_gaps_and_errors(self) -> None:
        """
        A repeated or earlier sequence number is disorder, a skipped one is
        not (its publish may have been refused); GAP and ERROR lines are
        counted apart; the readiness probe is ignored.
        """
        self.feed(
            b"MSG bench ready\nMSG bench 0 1 x\nMSG bench 2 1 x\nMSG bench 2 1 x\n"
            b"MSG bench 1 1 x\n"
            b"GAP bench\nERROR unavailable: broker\n"
        )
        counts = self.tally.counts
        self.assertEqual(counts["delivered"], 4)
        self.assertEqual(counts["disorder"], 2)
        self.assertEqual(counts["gaps"], 1)
        self.assertEqual(counts["errors"], 1)

    def test_publisher_replies(self) -> None:
        """
        OK PUB replies are acknowledgements; a count that is not every
        subscriber is a miscount; anything else is a refused publish.
        """
        self.feed(b"OK PUB 2\nOK PUB 1\nERROR unavailable: broker\n", publisher=True)
        counts = self.tally.counts
        self.assertEqual(counts["acks"], 2)
        self.assertEqual(counts["miscounts"], 1)
        self.assertEqual(counts["refused"], 1)
        self.assertEqual(counts["delivered"], 0)


class HelperTests(SynchronousTestCase):
    def test_verdict(self) -> None:
        """
        A verdict is the median of the rounds against an upper bound.
        """
        cluster = _benchmark("cluster")
        verdict = cluster.verdict("cpu", [1.2, 1.9, 1.4], 1.5, "x")
        self.assertIn("met", verdict)
        self.assertIn("1.40x", verdict)
        self.assertIn("rounds 1.20-1.90", verdict)
        self.assertIn("MISSED", cluster.verdict("p50", [2.0], 1.0, " ms"))

    def test_cpu_seconds_of_self(self) -> None:
        """
        The /proc readers report this process's CPU and run-queue time.
        """
        load = _benchmark("cluster_load")
        self.assertGreater(load.cpu_seconds(os.getpid()), 0)
        self.assertGreaterEqual(load.run_queue_seconds(os.getpid()), 0)
        self.assertEqual(load.cpu_seconds(2**22 + 7), 0.0)

    def test_redis_ceiling(self) -> None:
        """
        The PUBLISH ceiling comes from redis-benchmark against a real Redis.
        """
        if shutil.which("redis-benchmark") is None:
            raise SkipTest("redis-benchmark not installed: apt-get install redis-tools")
        redis = RedisServer.start_for(self)
        line = _benchmark("cluster").redis_ceiling(redis.port, 2000)
        self.assertRegex(line, r"^[\d,]+ PUBLISH/s")
