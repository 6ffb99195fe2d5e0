"""
Prometheus metrics: the collectors of the contract, per-listener bound
children for the data path, and the HTTP service serving C{/metrics} and
C{/healthz}.

Cost on the data path: a protocol makes one call per read
(L{ListenerMetrics.received}) and one per write (L{ListenerMetrics.sent}),
whatever the number of frames in them, on label children bound once per
listener; nothing is looked up or allocated per message.  The
C{echoplus_processing_seconds} histogram observes, once per read, the time
the synchronous part of the chain took for that whole batch (see
C{docs/operations.md}).

Every collector lives in a L{CollectorRegistry} handed in, never the
global default one, so that several services (and tests) can coexist.  In
prometheus_client's multiprocess mode (C{PROMETHEUS_MULTIPROC_DIR} set, as
C{--workers} does for its workers) the same collectors write to shared
files and the parent serves their sum.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echoplus.errors import ConfigError

__all__ = [
    "HealthResource",
    "ListenerMetrics",
    "Metrics",
    "MetricsService",
    "metrics_site",
]

#: Buckets of the processing histogram, in seconds: a batch of in-memory
#: processors takes microseconds; a slow processor, seconds.
PROCESSING_BUCKETS = (
    0.00001,
    0.00005,
    0.0001,
    0.0005,
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)


class Metrics:
    """
    The echoplus collectors, registered in one registry.

    @ivar registry: the L{CollectorRegistry} they are registered in.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """
        @param registry: where to register; a new registry when not given.
        @param timer: the clock of the processing histogram (a monotonic
            high-resolution one; a fake in tests).
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        self.timer = timer
        labels = ("listener",)
        registry = self.registry
        self.connections_open = Gauge(
            "echoplus_connections_open",
            "Connections open now.",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "echoplus_connections",
            "Connections accepted.",
            labels,
            registry=registry,
        )
        self.frames_received = Counter(
            "echoplus_frames_received", "Frames received.", labels, registry=registry
        )
        self.frames_sent = Counter(
            "echoplus_frames_sent",
            "Frames sent (replies, pushes and error frames).",
            labels,
            registry=registry,
        )
        self.bytes_received = Counter(
            "echoplus_bytes_received", "Bytes received.", labels, registry=registry
        )
        self.bytes_sent = Counter(
            "echoplus_bytes_sent", "Bytes written.", labels, registry=registry
        )
        self.errors = Counter(
            "echoplus_errors",
            "Error frames sent, by kind.",
            ("listener", "kind"),
            registry=registry,
        )
        self.processing = Histogram(
            "echoplus_processing_seconds",
            "Time the chain took, per batch of frames read at once.",
            labels,
            registry=registry,
            buckets=PROCESSING_BUCKETS,
        )

    def for_listener(self, listener: str) -> ListenerMetrics:
        """
        The children of every collector bound to one listener's label.
        """
        return ListenerMetrics(self, listener)


class _Increment(Protocol):
    def __call__(self, amount: float = 1) -> None: ...


class ListenerMetrics:
    """
    One listener's metrics, with its label children bound once: what the
    factory and protocols of that listener call.
    """

    def __init__(self, metrics: Metrics, listener: str) -> None:
        self.listener = listener
        self.timer = metrics.timer
        self._errors = metrics.errors
        self._error_children: dict[str, _Increment] = {}
        self._open = metrics.connections_open.labels(listener=listener)
        self._accepted: _Increment = metrics.connections.labels(listener=listener).inc
        self._frames_in: _Increment = metrics.frames_received.labels(
            listener=listener
        ).inc
        self._bytes_in: _Increment = metrics.bytes_received.labels(
            listener=listener
        ).inc
        self._frames_out: _Increment = metrics.frames_sent.labels(listener=listener).inc
        self._bytes_out: _Increment = metrics.bytes_sent.labels(listener=listener).inc
        self.observe: Callable[[float], None] = metrics.processing.labels(
            listener=listener
        ).observe
        # Export the series at zero from the start, so that rates and
        # dashboards work before the first connection.
        self._frames_in(0)
        self._bytes_in(0)
        self._frames_out(0)
        self._bytes_out(0)
        self._accepted(0)

    def opened(self) -> None:
        """
        A connection was accepted.
        """
        self._accepted()
        self._open.inc()

    def closed(self) -> None:
        """
        A connection closed.
        """
        self._open.dec()

    def received(self, frames: int, size: int) -> None:
        """
        One read: C{size} bytes holding C{frames} complete frames.
        """
        self._bytes_in(size)
        if frames:
            self._frames_in(frames)

    def sent(self, frames: int, size: int) -> None:
        """
        One write: C{frames} frames in C{size} bytes.
        """
        self._frames_out(frames)
        self._bytes_out(size)

    def error(self, kind: str) -> None:
        """
        An error frame of C{kind} was sent.
        """
        increment = self._error_children.get(kind)
        if increment is None:
            increment = self._errors.labels(listener=self.listener, kind=kind).inc
            self._error_children[kind] = increment
        increment()


class HealthResource(Resource):
    """
    C{/healthz}: 200 while C{healthy()} holds, 503 otherwise.
    """

    isLeaf = True

    def __init__(self, healthy: Callable[[], bool]) -> None:
        super().__init__()
        self._healthy = healthy

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self._healthy():
            return b"ok\n"
        request.setResponseCode(503)
        return b"draining\n"

    render_HEAD = render_GET


class _QuietSite(Site):
    """
    A site that does not log every scrape.
    """

    def log(self, request: Request) -> None:
        pass


def metrics_site(registry: CollectorRegistry, healthy: Callable[[], bool]) -> Site:
    """
    A C{twisted.web} site serving C{/metrics} (prometheus_client's
    C{MetricsResource}, which renders in the reactor's thread pool) and
    C{/healthz}.
    """
    # prometheus_client.twisted imports the global reactor: only import it
    # here, once twistd has installed the reactor.
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(healthy))
    site = _QuietSite(root)
    site.noisy = False
    site.displayTracebacks = False
    return site


class MetricsService(Service):
    """
    Serves L{metrics_site} on a server endpoint string.

    Like the listeners, it binds in C{privilegedStartService} and a bind
    failure is a L{ConfigError} naming the endpoint.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: str,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        reactor: Any,
    ) -> None:
        """
        @param endpoint: a Twisted server endpoint string.
        @param registry: the registry to expose.
        @param healthy: whether C{/healthz} answers 200.
        @param reactor: the reactor to listen with.
        """
        self.endpoint = endpoint
        self.registry = registry
        self.healthy = healthy
        self.reactor = reactor
        self.port: Any = None
        self.name = "metrics"

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        Service.startService(self)
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        site = metrics_site(self.registry, self.healthy)
        outcome: list[Any] = []
        serverFromString(self.reactor, self.endpoint).listen(site).addBoth(
            outcome.append
        )
        if not outcome or isinstance(outcome[0], Failure):
            reason = outcome[0].value if outcome else "no answer"
            raise ConfigError(f"cannot serve metrics on {self.endpoint}: {reason}")
        self.port = outcome[0]
        host = self.port.getHost()
        self._log.info(
            "echoplus metrics on {endpoint} at {address}",
            endpoint=self.endpoint,
            address=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
        )

    def stopService(self) -> Any:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
