"""
Prometheus metrics: the collectors of the contract, per-listener bound
children for the data path, and the HTTP service serving C{/metrics} and
C{/healthz}.

Cost on the data path: frames and bytes cost nothing more than the
per-connection counts every connection keeps anyway (for its
C{connection-closed} log event): L{Metrics.flush} sums them per listener.
The C{echoplus_processing_seconds} histogram costs two clock readings and
one L{ListenerMetrics.observe} per read (the time the chain took for that
whole batch), into plain per-bucket integers.  The flush moves everything
into the prometheus_client collectors before every scrape and once a
second, so the data path never takes a collector's lock or, in
multiprocess mode, writes its file (see C{docs/operations.md} for the
measured cost).

Every collector lives in a L{CollectorRegistry} handed in, never the
global default one, so that several services (and tests) can coexist.  In
prometheus_client's multiprocess mode (C{PROMETHEUS_MULTIPROC_DIR} set, as
C{--workers} does for its workers) the same collectors write to shared
files and the parent serves their sum.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable, Mapping, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from echoplus.errors import ConfigError

__all__ = [
    "HealthResource",
    "Counted",
    "ListenerMetrics",
    "Metrics",
    "MetricsResource",
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
        self.async_processing = Histogram(
            "echoplus_async_seconds",
            "Time each asynchronous request took, from dispatch until its "
            "replies were ready.",
            labels,
            registry=registry,
            buckets=PROCESSING_BUCKETS,
        )
        self._listeners: list[ListenerMetrics] = []
        self._flushing: LoopingCall | None = None
        self.processing = Histogram(
            "echoplus_processing_seconds",
            "Time the chain took, per batch of frames read at once.",
            labels,
            registry=registry,
            buckets=PROCESSING_BUCKETS,
        )

    def for_listener(
        self, listener: str, connections: Mapping[Any, Counted] | None = None
    ) -> ListenerMetrics:
        """
        The metrics of one listener, its label children bound once.

        @param connections: the listener's open connections (its factory's
            C{connections}), whose own counts the frame and byte totals
            are summed from.
        """
        bound = ListenerMetrics(self, listener, connections)
        self._listeners.append(bound)
        return bound

    def flush(self) -> None:
        """
        Move what every listener counted since the last flush into the
        collectors.  Call it on the reactor thread.
        """
        for listener in self._listeners:
            listener.flush()

    def start_flushing(self, clock: IReactorTime, interval: float = 1.0) -> None:
        """
        Flush every C{interval} seconds (what makes the counts of a worker
        visible to its parent's scrapes, which cannot flush it).
        """
        if self._flushing is None:
            self._flushing = LoopingCall(self.flush)
            self._flushing.clock = clock
            self._flushing.start(interval, now=False)

    def stop_flushing(self) -> None:
        """
        Stop the periodic flush, after a last one.
        """
        if self._flushing is not None:
            if self._flushing.running:
                self._flushing.stop()
            self._flushing = None
        self.flush()


class Counted(Protocol):
    """
    A connection as L{ListenerMetrics} sees it.
    """

    def counts(self) -> tuple[int, int, int, int]:
        """
        Frames received, frames sent, bytes received, bytes sent so far.
        """


_TOTALS = ("frames_received", "frames_sent", "bytes_received", "bytes_sent")


class ListenerMetrics:
    """
    One listener's metrics: what its factory and protocols call.

    Frames and bytes cost the data path nothing here: every connection
    already counts them for its C{connection-closed} log event, and
    L{flush} sums those counts (the open connections' plus those of the
    closed ones, added by L{closed}).  The histogram is kept in plain
    per-bucket integers by L{observe}.  L{flush} moves both into the
    prometheus_client collectors (before every scrape and once a second),
    so the data path never takes a collector's lock nor, in multiprocess
    mode, writes its file.  Connections and errors, rare next to reads, go
    straight to the collectors.
    """

    def __init__(
        self,
        metrics: Metrics,
        listener: str,
        connections: Mapping[Any, Counted] | None = None,
    ) -> None:
        self.listener = listener
        self.timer = metrics.timer
        self._connections: Mapping[Any, Counted] = (
            connections if connections is not None else {}
        )
        self._closed_totals = [0, 0, 0, 0]
        self._flushed = [0, 0, 0, 0]
        self._errors = metrics.errors
        self._error_children: dict[str, Any] = {}
        self._open = metrics.connections_open.labels(listener=listener)
        self._accepted = metrics.connections.labels(listener=listener)
        self._totals = [
            getattr(metrics, name).labels(listener=listener) for name in _TOTALS
        ]
        self._async = metrics.async_processing.labels(listener=listener)
        histogram = metrics.processing.labels(listener=listener)
        self._histogram = histogram
        self._bounds: tuple[float, ...] = tuple(getattr(histogram, "_upper_bounds", ()))
        self._batches = [0] * len(self._bounds)
        self._processing_sum = 0.0
        if not (hasattr(histogram, "_buckets") and hasattr(histogram, "_sum")):
            # An unknown prometheus_client: observe each batch directly.
            self.observe = histogram.observe  # type: ignore[method-assign]
        # Export every series from the start, so that rates and dashboards
        # work before the first connection.
        self._accepted.inc(0)
        for child in self._totals:
            child.inc(0)

    def opened(self) -> None:
        """
        A connection was accepted.
        """
        self._accepted.inc()
        self._open.inc()

    def closed(self, counts: tuple[int, int, int, int] = (0, 0, 0, 0)) -> None:
        """
        A connection closed (and left its factory's C{connections}) after
        C{counts}: frames received, frames sent, bytes received, bytes sent.
        """
        self._open.dec()
        totals = self._closed_totals
        for index in range(4):
            totals[index] += counts[index]

    def observe(self, seconds: float) -> None:
        """
        One read's frames took C{seconds} in the chain.
        """
        self._batches[bisect_left(self._bounds, seconds)] += 1
        self._processing_sum += seconds

    def observe_async(self, seconds: float) -> None:
        """
        An asynchronous request took C{seconds} until its replies were
        ready (a request already costs a L{Deferred}; one observation more
        is small next to it).
        """
        self._async.observe(seconds)

    def error(self, kind: str) -> None:
        """
        An error frame of C{kind} was sent.
        """
        child = self._error_children.get(kind)
        if child is None:
            child = self._errors.labels(listener=self.listener, kind=kind)
            self._error_children[kind] = child
        child.inc()

    def totals(self) -> list[int]:
        """
        Frames received, frames sent, bytes received and bytes sent by every
        connection of the listener so far, open or closed.
        """
        totals = list(self._closed_totals)
        for connection in list(self._connections.values()):
            counts = connection.counts()
            for index in range(4):
                totals[index] += counts[index]
        return totals

    def flush(self) -> None:
        """
        Add what was counted since the last flush to the collectors.
        """
        totals = self.totals()
        flushed = self._flushed
        for index, child in enumerate(self._totals):
            if totals[index] > flushed[index]:
                child.inc(totals[index] - flushed[index])
                flushed[index] = totals[index]
        batches, self._batches = self._batches, [0] * len(self._bounds)
        total, self._processing_sum = self._processing_sum, 0.0
        if any(batches):
            # The histogram's own storage: per-bucket counts and the sum,
            # exactly what observe() adds to, once per flush.
            histogram: Any = self._histogram
            for index, count in enumerate(batches):
                if count:
                    histogram._buckets[index].inc(count)
            histogram._sum.inc(total)


class HealthResource(Resource):
    """
    C{/healthz}: 200 while C{healthy()} holds, 503 otherwise; the first
    line is C{ok} or C{draining}, then the lines of C{details()} if given
    (the broker's state).
    """

    isLeaf = True

    def __init__(
        self, healthy: Callable[[], bool], details: Callable[[], str] | None = None
    ) -> None:
        super().__init__()
        self._healthy = healthy
        self._details = details

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        extra = f"{self._details()}\n" if self._details is not None else ""
        if self._healthy():
            return f"ok\n{extra}".encode()
        request.setResponseCode(503)
        return f"draining\n{extra}".encode()

    render_HEAD = render_GET


class _QuietSite(Site):
    """
    A site that does not log every scrape.
    """

    def log(self, request: Request) -> None:
        pass


class MetricsResource(Resource):
    """
    C{/metrics}: flushes the listeners' counts (on the reactor thread, so a
    scrape sees every read so far), then renders the registry in the
    reactor's thread pool, in the format the scraper asks for.
    """

    isLeaf = True

    def __init__(
        self,
        registry: CollectorRegistry,
        reactor: Any,
        flush: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._reactor = reactor
        self._flush = flush

    def render_GET(self, request: Request) -> Any:
        from twisted.internet.threads import deferToThreadPool

        if self._flush is not None:
            self._flush()
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(
            accept.decode("latin-1") if accept else ""
        )
        request.setHeader(b"content-type", content_type.encode("latin-1"))
        finished: list[bool] = []
        request.notifyFinish().addBoth(finished.append)
        rendering = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), encoder, self._registry
        )

        def write(body: bytes) -> None:
            if not finished:
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            self._log.failure("Rendering /metrics failed", failure)
            if not finished:
                request.setResponseCode(500)
                request.finish()

        rendering.addCallbacks(write, failed)
        return NOT_DONE_YET

    _log = Logger()


def metrics_site(
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    reactor: Any,
    flush: Callable[[], None] | None = None,
    details: Callable[[], str] | None = None,
) -> Site:
    """
    A C{twisted.web} site serving C{/metrics} (L{MetricsResource}) and
    C{/healthz} (L{HealthResource}, with C{details} after its verdict).
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry, reactor, flush))
    root.putChild(b"healthz", HealthResource(healthy, details))
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
        flush: Callable[[], None] | None = None,
        details: Callable[[], str] | None = None,
    ) -> None:
        """
        @param endpoint: a Twisted server endpoint string.
        @param registry: the registry to expose.
        @param healthy: whether C{/healthz} answers 200.
        @param reactor: the reactor to listen with.
        @param flush: called before each scrape (L{Metrics.flush}).
        @param details: more lines for C{/healthz} (the broker's state).
        """
        self.flush = flush
        self.details = details
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
        site = metrics_site(
            self.registry, self.healthy, self.reactor, self.flush, self.details
        )
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
