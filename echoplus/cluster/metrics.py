"""
The broker's Prometheus series, C{echoplus_broker_*}, registered in the
service's registry beside the listeners' (see docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BrokerMetrics"]

#: Publish-to-delivery latency buckets, in seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)


class BrokerMetrics:
    """
    What a broker engine counts.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._connected = Gauge(
            "echoplus_broker_connected",
            "1 while the link to the broker is up (memory: always 1); with "
            "--workers, the lowest of the workers.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._publishes = Counter(
            "echoplus_broker_publishes",
            "Frames published through the broker.",
            registry=registry,
        )
        self._failures = Counter(
            "echoplus_broker_publish_failures",
            "Publishes refused (ERROR unavailable: broker): link down, queue "
            "full or no answer.",
            registry=registry,
        )
        self._deliveries = Counter(
            "echoplus_broker_deliveries",
            "Frames pushed to local subscribers.",
            registry=registry,
        )
        self._recovered = Counter(
            "echoplus_broker_recovered",
            "Frames delivered from a topic's history after a hole or a reconnection.",
            registry=registry,
        )
        self._gaps = Counter(
            "echoplus_broker_gaps",
            "Times a topic's subscribers were told GAP: frames may have been lost.",
            registry=registry,
        )
        self._reconnects = Counter(
            "echoplus_broker_reconnects",
            "Times the link to the broker came back after being lost.",
            registry=registry,
        )
        self._latency = Histogram(
            "echoplus_broker_latency_seconds",
            "Publish-to-delivery time, from the publishing node's clock to "
            "this node's.",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def connected(self, up: bool) -> None:
        """
        The link went up or down.
        """
        self._connected.set(1 if up else 0)

    def published(self, subscribers: int) -> None:
        """
        One frame was published.
        """
        self._publishes.inc()

    def publish_failed(self) -> None:
        """
        One publish was refused.
        """
        self._failures.inc()

    def delivered(self, count: int, latency: float | None = None) -> None:
        """
        One frame was pushed to C{count} local subscribers.
        """
        if count:
            self._deliveries.inc(count)
        if latency is not None:
            self._latency.observe(max(latency, 0.0))

    def recovered(self, count: int) -> None:
        """
        C{count} frames came from a topic's history.
        """
        if count:
            self._recovered.inc(count)

    def gap(self) -> None:
        """
        A topic's subscribers were told of a gap.
        """
        self._gaps.inc()

    def reconnected(self) -> None:
        """
        The link came back.
        """
        self._reconnects.inc()
