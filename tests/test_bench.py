"""
Tests for L{echoplus.bench}, the C{echoplus bench} load generator, and a
smoke test of the benchmark runner's helpers.

Two integration tests run the load against a real C{twistd -n echoplus} for
about a second each; the rest need no sockets.
"""

from __future__ import annotations

import io
import json
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from echoplus.bench import BenchOptions, BenchResult, format_summary, run_bench
from echoplus.benchclient import parse_client_endpoint, percentiles
from echoplus.cli import main
from tests.support import Twistd

REPO = Path(__file__).resolve().parent.parent
#: A free loopback port: never the default 5000, which may be taken.
LISTEN = ["--listen", "tcp:0:interface=127.0.0.1"]


class ParseClientEndpointTests(SynchronousTestCase):
    """
    L{parse_client_endpoint} understands the client endpoints bench speaks.
    """

    def test_tcp(self) -> None:
        """C{tcp:HOST:PORT} is an IPv4 address and port."""
        self.assertEqual(
            parse_client_endpoint("tcp:127.0.0.1:5000"),
            (socket.AF_INET, ("127.0.0.1", 5000)),
        )

    def test_tcp_keywords_and_ipv6(self) -> None:
        """Keyword arguments and an escaped IPv6 host are accepted."""
        self.assertEqual(
            parse_client_endpoint("tcp:host=\\:\\:1:port=7"),
            (socket.AF_INET6, ("::1", 7)),
        )

    def test_unix(self) -> None:
        """C{unix:PATH} is a UNIX socket path."""
        self.assertEqual(
            parse_client_endpoint("unix:/tmp/echo.sock"),
            (socket.AF_UNIX, "/tmp/echo.sock"),
        )

    def test_unsupported(self) -> None:
        """Anything else is refused with a message naming the endpoint."""
        with self.assertRaises(ValueError) as raised:
            parse_client_endpoint("ssl:localhost:5000")
        self.assertIn("ssl:localhost:5000", str(raised.exception))


class PercentilesTests(SynchronousTestCase):
    """
    Latency percentiles are weighted by how many replies each sample covers.
    """

    def test_weighted(self) -> None:
        """A sample covering most replies is the median."""
        result = percentiles([0.001, 0.002, 0.010], [1, 97, 2])
        self.assertEqual(result["p50"], 2000.0)
        self.assertEqual(result["p99"], 10000.0)

    def test_empty(self) -> None:
        """No samples give zeros rather than an error."""
        self.assertEqual(percentiles([], [])["p50"], 0.0)


class SummaryTests(SynchronousTestCase):
    """
    The summary table shows the figures and warns about a saturated bench.
    """

    def test_bottleneck_warning(self) -> None:
        """A load generator using a whole core is called out."""
        result = BenchResult(
            messages=1000,
            payload_bytes=64000,
            seconds=1.0,
            errors=0,
            cpu=0.98,
            processes=1,
            latencies_us={"p50": 10.0, "p90": 20.0, "p99": 30.0, "p99.9": 40.0},
        )
        text = format_summary(BenchOptions("tcp:127.0.0.1:1"), result)
        self.assertIn("1,000", text)
        self.assertIn("warning", text)

    def test_mismatches_suggest_expect_any(self) -> None:
        """
        Replies that differ from their requests, checked as an echo, end
        the summary with a hint to measure with C{--expect any}; nothing
        else does.
        """
        result = BenchResult(
            messages=0,
            payload_bytes=0,
            seconds=1.0,
            errors=2,
            cpu=0.1,
            processes=1,
            latencies_us={"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0},
            error_samples=("a reply differs from its request",) * 2,
            mismatches=2,
        )
        echo = BenchOptions("tcp:127.0.0.1:1")
        self.assertIn("measure it with --expect any", format_summary(echo, result))
        for options, other in (
            (BenchOptions("tcp:127.0.0.1:1", expect="any"), result),
            (echo, attrs.evolve(result, mismatches=0)),
        ):
            self.assertNotIn("--expect any", format_summary(options, other))


class HelpTests(SynchronousTestCase):
    """
    C{echoplus bench --help} explains every option.
    """

    def test_every_option_described_with_its_default(self) -> None:
        """
        Each tuning option has a description and shows its default.
        """
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit):
            main(["bench", "--help"])
        text = " ".join(out.getvalue().split())
        for option, default in (
            ("connections", "50"),
            ("pipeline", "16"),
            ("warmup", "1"),
            ("processes", "1"),
            ("duration", "5"),
            ("size", "64"),
        ):
            self.assertRegex(
                text, rf"--{option} [A-Z]+ \w[^\[]* \[default: {default}\]", option
            )


class BenchAgainstTwistdTests(SynchronousTestCase):
    """
    C{echoplus bench} measures a real server and checks every reply.
    """

    def test_echo_run_json(self) -> None:
        """A one-second run against an echo server reports replies and no errors."""
        server = Twistd([*LISTEN, "--framing", "int32"])
        self.addCleanup(server.stop)
        host, port = server.addresses[0]
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            status = main(
                [
                    "bench",
                    f"tcp:{host}:{port}",
                    "--framing",
                    "int32",
                    "--connections",
                    "4",
                    "--pipeline",
                    "4",
                    "--duration",
                    "1",
                    "--warmup",
                    "0.2",
                    "--json",
                ]
            )
        self.assertEqual(status, 0, stderr.getvalue())
        report = json.loads(stdout.getvalue())
        self.assertGreater(report["messages"], 0)
        self.assertEqual(report["errors"], 0)
        self.assertGreater(report["latency_us"]["p50"], 0)
        self.assertIn("msgs/s", stderr.getvalue())  # the live progress line

    def test_websocket(self) -> None:
        """
        bench --framing websocket does the handshake, then checks echoed
        frames (expect=echo) or counts decoded replies (expect=any).
        """
        server = Twistd([*LISTEN, "--framing", "websocket"])
        self.addCleanup(server.stop)
        host, port = server.addresses[0]
        for expect in ("echo", "any"):
            result = run_bench(
                BenchOptions(
                    f"tcp:{host}:{port}",
                    framing="websocket",
                    connections=2,
                    pipeline=4,
                    duration=0.5,
                    warmup=0.1,
                    expect=expect,
                )
            )
            self.assertEqual((result.errors, result.error_samples), (0, ()), expect)
            self.assertGreater(result.messages, 0, expect)

    def test_wrong_replies_are_errors(self) -> None:
        """Replies that differ from their requests are counted as errors."""
        server = Twistd([*LISTEN, "--processor", "upper"])
        self.addCleanup(server.stop)
        host, port = server.addresses[0]
        endpoint = f"tcp:{host}:{port}"
        checked = run_bench(
            BenchOptions(endpoint, connections=2, pipeline=2, duration=0.3, warmup=0)
        )
        self.assertEqual(checked.errors, 2)
        self.assertEqual(checked.messages, 0)
        self.assertEqual(checked.mismatches, 2)
        counted = run_bench(
            BenchOptions(
                endpoint,
                connections=2,
                pipeline=2,
                duration=0.3,
                warmup=0,
                expect="any",
            )
        )
        self.assertEqual(counted.errors, 0)
        self.assertGreater(counted.messages, 0)


class RunnerSmokeTests(SynchronousTestCase):
    """
    The benchmark runner's pure helpers work (the benchmark itself is not
    part of the test suite).
    """

    def setUp(self) -> None:
        sys.path.insert(0, str(REPO / "benchmarks"))
        self.addCleanup(sys.path.remove, str(REPO / "benchmarks"))

    def test_median_and_ratios(self) -> None:
        """The runner's table marks a missed target with MISSED and the figure."""
        import run  # type: ignore[import-not-found]

        verdict = run.target_verdict("line vs LineReceiver", [1.4, 1.5, 2.1], 2.0)
        self.assertIn("MISSED", verdict)
        self.assertIn("1.50x", verdict)
        self.assertIn("rounds 1.40-2.10", verdict)
        self.assertIn("met", run.target_verdict("x", [2.5], 2.0))
        self.assertEqual(run.median([3.0, 1.0, 2.0]), 2.0)

    def test_targets_pair_servers_round_by_round(self) -> None:
        """
        A target is the median of the ratios of servers measured in the
        same round, not the ratio of their medians.
        """
        import scenarios  # type: ignore[import-not-found]

        def row(*rates: float) -> dict[str, object]:
            return {"rounds": [{"msgs_per_s": rate} for rate in rates]}

        results = {
            "line": {
                "echoplus line": row(100.0, 50.0, 300.0),
                "twisted LineReceiver": row(50.0, 20.0, 300.0),
            }
        }
        target = next(t for t in scenarios.TARGETS if t.name == "line vs LineReceiver")
        self.assertEqual(target.ratios(results), [2.0, 2.5, 1.0])
        self.assertIsNone(target.ratios({}))
