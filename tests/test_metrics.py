"""
Tests for L{echoplus.metrics}: the collectors, the counts the data path
makes, C{/healthz}, and a real scrape of C{twistd -n echoplus --metrics}.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from echoplus.config import ListenerSettings, Settings
from echoplus.factory import EchoPlusFactory
from echoplus.metrics import HealthResource, Metrics
from echoplus.processors.chain import ProcessorEntry
from echoplus.service import EchoPlusService
from tests.support import REPO, Twistd, receive_lines

LISTENER = "tcp:0:interface=127.0.0.1"


class FakeTimer:
    """
    A timer that advances by C{step} on every reading.
    """

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeConnection:
    """
    A connection's counts, as L{ListenerMetrics} reads them.
    """

    def __init__(self) -> None:
        self._counts = [0, 0, 0, 0]

    def count(self, *amounts: int) -> None:
        self._counts = [a + b for a, b in zip(self._counts, amounts, strict=True)]

    def counts(self) -> tuple[int, int, int, int]:
        frames_in, frames_out, bytes_in, bytes_out = self._counts
        return frames_in, frames_out, bytes_in, bytes_out


def connect(metrics: Metrics, **settings: object) -> tuple[object, StringTransport]:
    """
    A protocol of a listener counted in C{metrics}, on a StringTransport.
    """
    factory = EchoPlusFactory(ListenerSettings(**settings), Clock())  # type: ignore[arg-type]
    factory.metrics = metrics.for_listener(factory.name, factory.connections)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """
    One sample's value after a flush, as a scrape would see it.
    """
    metrics.flush()
    return metrics.registry.get_sample_value(
        name, {"listener": ListenerSettings().endpoint, **labels}
    )


class MetricsTests(SynchronousTestCase):
    def test_contract_names(self) -> None:
        """
        Every metric name of the contract is exported, labelled by listener.
        """
        metrics = Metrics()
        metrics.for_listener("a")
        names = {
            sample.name
            for family in metrics.registry.collect()
            for sample in family.samples
            if sample.labels.get("listener") == "a"
        }
        for name in [
            "echoplus_connections_open",
            "echoplus_connections_total",
            "echoplus_frames_received_total",
            "echoplus_frames_sent_total",
            "echoplus_bytes_received_total",
            "echoplus_bytes_sent_total",
            "echoplus_processing_seconds_count",
            "echoplus_async_seconds_count",
        ]:
            self.assertIn(name, names)

    def test_dashboard_uses_exported_names(self) -> None:
        """
        Every echoplus metric the Grafana dashboard queries is one the
        service exports.
        """
        metrics = Metrics()
        listener = metrics.for_listener("a")
        listener.error("bad-frame")
        listener.observe(0.001)
        listener.observe_async(0.001)
        exported = {
            sample.name
            for family in metrics.registry.collect()
            for sample in family.samples
        }
        dashboard = (REPO / "deploy" / "grafana-dashboard.json").read_text()
        json.loads(dashboard)
        queried = set(re.findall(r"echoplus_[a-z_]+", dashboard))
        self.assertTrue(queried)
        self.assertEqual(queried - exported, set())

    def test_registries_are_separate(self) -> None:
        """
        Two L{Metrics} count in their own registries, not the global one.
        """
        first, second = Metrics(), Metrics()
        first.for_listener("a").opened()
        self.assertEqual(
            first.registry.get_sample_value(
                "echoplus_connections_total", {"listener": "a"}
            ),
            1.0,
        )
        self.assertIsNone(
            second.registry.get_sample_value(
                "echoplus_connections_total", {"listener": "a"}
            )
        )

    def test_batch_counts(self) -> None:
        """
        A read of three frames counts three frames and its bytes both ways,
        and one observation of the processing histogram.
        """
        metrics = Metrics(timer=FakeTimer(0.25))
        protocol, transport = connect(metrics)
        protocol.dataReceived(b"a\nbb\nccc\n")
        self.assertEqual(transport.value(), b"a\nbb\nccc\n")
        self.assertEqual(sample(metrics, "echoplus_frames_received_total"), 3)
        self.assertEqual(sample(metrics, "echoplus_bytes_received_total"), 9)
        self.assertEqual(sample(metrics, "echoplus_frames_sent_total"), 3)
        self.assertEqual(sample(metrics, "echoplus_bytes_sent_total"), 9)
        self.assertEqual(sample(metrics, "echoplus_processing_seconds_count"), 1)
        self.assertEqual(sample(metrics, "echoplus_processing_seconds_sum"), 0.25)

    def test_partial_frame_counts_bytes_only(self) -> None:
        """
        Bytes of an unfinished frame are counted; the frame only once whole.
        """
        metrics = Metrics()
        protocol, _ = connect(metrics)
        protocol.dataReceived(b"hel")
        self.assertEqual(sample(metrics, "echoplus_bytes_received_total"), 3)
        self.assertEqual(sample(metrics, "echoplus_frames_received_total"), 0)
        protocol.dataReceived(b"lo\n")
        self.assertEqual(sample(metrics, "echoplus_frames_received_total"), 1)

    def test_connections(self) -> None:
        """
        Opening counts a connection and raises the open gauge; closing
        lowers the gauge and keeps the total.
        """
        metrics = Metrics()
        protocol, transport = connect(metrics)
        self.assertEqual(sample(metrics, "echoplus_connections_open"), 1)
        self.assertEqual(sample(metrics, "echoplus_connections_total"), 1)
        protocol.connectionLost(None)
        self.assertEqual(sample(metrics, "echoplus_connections_open"), 0)
        self.assertEqual(sample(metrics, "echoplus_connections_total"), 1)

    def test_error_kinds(self) -> None:
        """
        Error frames are counted by kind: a processor failure and an
        over-long frame.
        """
        metrics = Metrics()
        protocol, transport = connect(
            metrics,
            processors=(ProcessorEntry("tests.sample_processors:Boom"),),
            max_frame=8,
        )
        protocol.dataReceived(b"boom\n")
        self.assertEqual(
            sample(metrics, "echoplus_errors_total", kind="processor-failed"), 1
        )
        self.flushLoggedErrors()
        protocol.dataReceived(b"y" * 20)
        self.assertEqual(
            sample(metrics, "echoplus_errors_total", kind="frame-too-long"), 1
        )

    def test_async_requests_timed(self) -> None:
        """
        Each asynchronous request is observed once, from dispatch until its
        reply was ready, on the connection's clock.
        """
        metrics = Metrics()
        protocol, transport = connect(
            metrics, processors=(ProcessorEntry("delay", {"seconds": 0.5}),)
        )
        protocol.dataReceived(b"a\nb\n")
        self.assertEqual(sample(metrics, "echoplus_async_seconds_count"), 0)
        protocol.factory.clock.advance(0.5)
        self.assertEqual(transport.value(), b"a\nb\n")
        self.assertEqual(sample(metrics, "echoplus_async_seconds_count"), 2)
        self.assertEqual(sample(metrics, "echoplus_async_seconds_sum"), 1.0)
        self.assertEqual(sample(metrics, "echoplus_async_seconds_bucket", le="0.5"), 2)
        self.assertEqual(sample(metrics, "echoplus_async_seconds_bucket", le="0.1"), 0)

    def test_flush_adds_only_new_counts(self) -> None:
        """
        Counts stay out of the collectors until a flush, and each flush
        adds only what came since the previous one.
        """
        metrics = Metrics()
        first, second = FakeConnection(), FakeConnection()
        connections = {1: first}
        listener = metrics.for_listener("a", connections)
        first.count(2, 0, 10, 0)
        value = metrics.registry.get_sample_value
        labels = {"listener": "a"}
        self.assertEqual(value("echoplus_frames_received_total", labels), 0)
        metrics.flush()
        metrics.flush()
        self.assertEqual(value("echoplus_frames_received_total", labels), 2)
        connections[2] = second
        second.count(1, 3, 5, 15)
        metrics.flush()
        self.assertEqual(value("echoplus_frames_received_total", labels), 3)
        self.assertEqual(value("echoplus_bytes_received_total", labels), 15)
        self.assertEqual(value("echoplus_frames_sent_total", labels), 3)
        self.assertEqual(value("echoplus_bytes_sent_total", labels), 15)
        # A connection that closes moves its counts; nothing is counted twice.
        del connections[1]
        listener.closed(first.counts())
        metrics.flush()
        self.assertEqual(value("echoplus_frames_received_total", labels), 3)
        self.assertEqual(listener.totals(), [3, 3, 15, 15])

    def test_flushed_histogram_matches_observe(self) -> None:
        """
        A flushed histogram has the buckets, count and sum that observing
        every value directly gives.
        """
        values = [0.000001, 0.00002, 0.00002, 0.3, 0.3, 7.0, 100.0]
        batched, direct = Metrics(), Metrics()
        listener = batched.for_listener("a")
        for seconds in values:
            listener.observe(seconds)
        batched.flush()
        child = direct.processing.labels(listener="a")
        for seconds in values:
            child.observe(seconds)

        def samples(metrics: Metrics) -> list[tuple[str, dict, float]]:
            return [
                (sample.name, sample.labels, sample.value)
                for family in metrics.registry.collect()
                if family.name == "echoplus_processing_seconds"
                for sample in family.samples
                if not sample.name.endswith("_created")
            ]

        self.assertEqual(samples(batched), samples(direct))

    def test_periodic_flush(self) -> None:
        """
        Once started, flushes happen every interval on the given clock, and
        stopping flushes a last time.
        """
        clock = Clock()
        metrics = Metrics()
        connection = FakeConnection()
        metrics.for_listener("a", {1: connection})
        metrics.start_flushing(clock, 1.0)
        connection.count(1, 0, 1, 0)
        value = metrics.registry.get_sample_value
        labels = {"listener": "a"}
        self.assertEqual(value("echoplus_frames_received_total", labels), 0)
        clock.advance(1.0)
        self.assertEqual(value("echoplus_frames_received_total", labels), 1)
        connection.count(1, 0, 1, 0)
        metrics.stop_flushing()
        self.assertEqual(value("echoplus_frames_received_total", labels), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_off_by_default(self) -> None:
        """
        A factory without metrics serves normally and counts nothing.
        """
        factory = EchoPlusFactory(ListenerSettings(), Clock())
        self.assertIsNone(factory.metrics)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"a\n")
        self.assertEqual(transport.value(), b"a\n")


class HealthTests(SynchronousTestCase):
    def render(self, healthy: bool) -> tuple[int, bytes]:
        request = DummyRequest([b""])
        body = HealthResource(lambda: healthy).render_GET(request)
        return request.responseCode or 200, body

    def test_healthy(self) -> None:
        """
        /healthz answers 200 while the check holds.
        """
        self.assertEqual(self.render(True), (200, b"ok\n"))

    def test_draining(self) -> None:
        """
        /healthz answers 503 when the check fails.
        """
        self.assertEqual(self.render(False), (503, b"draining\n"))

    def test_service_health(self) -> None:
        """
        The service is healthy only while running with its listeners up,
        and not while draining.
        """
        reactor = MemoryReactorClock()
        service = EchoPlusService(
            Settings(listeners=(ListenerSettings(endpoint="tcp:0"),)), reactor
        )
        self.assertFalse(service.healthy())
        service.privilegedStartService()
        service.startService()
        self.assertTrue(service.healthy())
        service.draining = True
        self.assertFalse(service.healthy())
        service.draining = False
        service.stopService()
        self.assertFalse(service.healthy())

    def test_metrics_outlive_the_drain(self) -> None:
        """
        While the service drains an open connection, the metrics endpoint
        stays up and unhealthy; it stops once the drain is over.
        """
        reactor = MemoryReactorClock()
        service = EchoPlusService(
            Settings(
                listeners=(ListenerSettings(endpoint="tcp:0"),),
                metrics="tcp:0:interface=127.0.0.1",
            ),
            reactor,
        )
        service.privilegedStartService()
        service.startService()
        metrics_service = service.metrics_service
        assert metrics_service is not None
        self.assertTrue(metrics_service.running)
        factory = service.factories["tcp:0"]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        stopped = service.stopService()
        self.assertNoResult(stopped)
        self.assertTrue(metrics_service.running)
        self.assertFalse(service.healthy())
        protocol.connectionLost(None)
        reactor.advance(1)
        self.successResultOf(stopped)
        self.assertFalse(metrics_service.running)


def scrape(url: str) -> dict[str, float]:
    """
    Fetch a Prometheus text page; return its samples by full sample line key.
    """
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


class ScrapeTests(SynchronousTestCase):
    def test_scrape_after_traffic(self) -> None:
        """
        After two connections exchanged known traffic, a scrape of /metrics
        over HTTP reports exactly those counts, and /healthz answers 200.
        """
        server = Twistd(
            ["--listen", LISTENER, "--metrics", "tcp:0:interface=127.0.0.1"]
        )
        self.addCleanup(server.stop)
        match = server.wait_for(r"echoplus metrics on \S+ at (\S+)")[0]
        base = f"http://{match.group(1)}"
        for _ in range(2):
            with server.connect() as sock:
                sock.sendall(b"one\ntwo\nthree\n")
                self.assertEqual(receive_lines(sock, 3), [b"one", b"two", b"three"])
        server.wait_for("connection-closed|closed after", count=2)
        values = scrape(base + "/metrics")
        label = f'{{listener="{LISTENER}"}}'
        self.assertEqual(values["echoplus_connections_total" + label], 2)
        self.assertEqual(values["echoplus_connections_open" + label], 0)
        self.assertEqual(values["echoplus_frames_received_total" + label], 6)
        self.assertEqual(values["echoplus_frames_sent_total" + label], 6)
        self.assertEqual(values["echoplus_bytes_received_total" + label], 28)
        self.assertEqual(values["echoplus_bytes_sent_total" + label], 28)
        with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
            self.assertEqual(response.status, 200)
