"""
C{--workers N}: one supervising parent and N worker processes sharing the
listening sockets.

The parent binds every listener (in C{privilegedStartService}, before
twistd drops privileges), never accepts on them, and hands them to each
worker the way systemd hands sockets to a service: as descriptors 3, 4,
... with C{LISTEN_FDS}/C{LISTEN_FDNAMES}/C{LISTEN_PID}, which the worker
adopts with Twisted's own C{systemd:} endpoint (C{haproxy:systemd:...}
behind a PROXY-protocol listener).  A worker is an ordinary
C{twistd -n echoplus} run with the parent's options, so it loads new code
and configuration when it starts.

The parent:
  - restarts a worker that exits on its own, after a back-off that doubles
    with each quick failure (L{Backoff});
  - on SIGTERM/SIGINT, forwards the signal to every worker (each drains) and
    exits once all of them have; a second signal is forwarded again, which
    ends the workers' drain at once;
  - forwards SIGHUP (reload the config file) to every worker;
  - on SIGUSR2, replaces the workers one at a time (L{WorkerPool.roll}):
    start a new worker, wait until it is listening, then SIGTERM the old
    one, which stops accepting and drains.  The listening sockets stay open
    in the parent throughout, so no client is refused: connections queue in
    the kernel until a worker accepts them.
  - serves C{/metrics} for all workers with prometheus_client's
    multiprocess mode (each worker writes its samples to files in a
    directory the parent reads) and C{/healthz} (200 while it has a live
    worker and does not stop).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoplus.config import OPTIONS, Settings
from echoplus.endpoints import server_from_string
from echoplus.errors import ConfigError
from echoplus.logs import format_address, use_json_lines
from echoplus.worker import (
    WORKER_ENVIRONMENT,
    WORKER_MAIN,
    adopt_listeners,
    is_worker,
    worker_metrics,
    worker_settings,
)

__all__ = [
    "Backoff",
    "WorkerPool",
    "adopt_listeners",
    "is_worker",
    "option_arguments",
    "worker_metrics",
    "worker_settings",
]

#: Seconds a new worker may take to start listening.
START_TIMEOUT = 30.0
#: A worker that lived this long before exiting resets its back-off.
STABLE_AFTER = 10.0
#: Seconds after the drain timeout before workers still alive are killed.
KILL_GRACE = 5.0


@attrs.define
class Backoff:
    """
    Restart delays: C{first} seconds, doubling per failure up to C{most}.
    """

    first: float = 0.5
    most: float = 30.0
    failures: int = 0

    def next_delay(self, lived: float) -> float:
        """
        The delay before restarting a worker that lived C{lived} seconds.
        """
        if lived >= STABLE_AFTER:
            self.failures = 0
        delay = min(self.first * 2**self.failures, self.most)
        self.failures += 1
        return delay


def option_arguments(options: Mapping[str, Any]) -> list[str]:
    """
    The command-line options that give a worker the same configuration.
    """
    arguments = []
    for spec in OPTIONS:
        value = options.get(spec.option_name)
        if value is None or value == []:
            continue
        for item in value if spec.repeatable else [value]:
            arguments.append(f"--{spec.option_name}={item}")
    return arguments


def _kind(endpoint: str) -> str:
    """
    An endpoint string's type: C{tcp}, C{unix}, C{haproxy}...
    """
    return endpoint.split(":", 1)[0].strip().lower()


def _adopted_endpoint(endpoint: str, index: int, family: str) -> str:
    """
    The endpoint string a worker adopts inherited descriptor C{index} with.
    """
    adopted = f"systemd:domain={family}:index={index}"
    if _kind(endpoint) == "haproxy":
        return "haproxy:" + adopted
    return adopted


def _inner_endpoint(endpoint: str) -> str:
    """
    What the parent binds: the endpoint without its C{haproxy:} wrapper (the
    parent never accepts, so it needs no protocol wrapper).
    """
    if _kind(endpoint) == "haproxy":
        return endpoint.split(":", 1)[1]
    return endpoint


class _Refuse(Factory):
    """
    The parent's factory: it never accepts, but a factory is required.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


class _WorkerProcess(ProcessProtocol):
    """
    One worker process: readiness, exit, and its place in the pool.
    """

    def __init__(self, pool: WorkerPool, slot: int, ready_fd: int) -> None:
        self.pool = pool
        self.slot = slot
        self._ready_fd = ready_fd
        self.ready: Deferred[bool] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.retiring = False
        self.started_at = pool.reactor.seconds()
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803
        if childFD == self._ready_fd and b"ready" in data and not self.ready.called:
            self.ready.callback(True)

    def signal(self, signum: int) -> None:
        """
        Send C{signum} to the worker if it still runs.
        """
        try:
            self.transport.signalProcess(signum)
        except (OSError, ProcessExitedAlready):
            pass

    def processEnded(self, reason: Failure) -> None:
        status = getattr(reason.value, "exitCode", None)
        if not self.ready.called:
            self.ready.callback(False)
        self.pool.worker_ended(self, reason)
        self.ended.callback(status)


class WorkerPool(MultiService):
    """
    The parent of C{--workers N}: binds, spawns, supervises, rolls.

    @ivar workers: the current worker of each slot (0 to N-1).
    @ivar draining: set when the pool stops; C{/healthz} answers 503.
    """

    _log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        arguments: Sequence[str],
        command: Sequence[str] = (sys.executable, "-c", WORKER_MAIN),
    ) -> None:
        """
        @param settings: the parent's settings (listeners, workers, metrics).
        @param arguments: the echoplus options passed on to every worker.
        @param command: how to run a worker (before C{arguments}).
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.arguments = list(arguments)
        self.command = list(command)
        self.workers: dict[int, _WorkerProcess] = {}
        self.draining = False
        self.ports: list[Any] = []
        self._adopted: dict[str, str] = {}
        self._backoffs = {slot: Backoff() for slot in range(settings.workers)}
        self._restarts: dict[int, Any] = {}
        self._rolling = False
        self._stop_requests = 0
        self._metrics_dir: str | None = None
        self._live: list[_WorkerProcess] = []
        if settings.metrics:
            self._start_metrics(settings.metrics)

    def setServiceParent(self, parent: Any) -> None:
        """
        Attach to twistd's application; with C{log_format = "json"}, log
        JSON lines like the workers (see L{echoplus.logs}).
        """
        super().setServiceParent(parent)
        if self.settings.log_format == "json":
            use_json_lines(parent)

    # Metrics: multiprocess mode.

    def _start_metrics(self, endpoint: str) -> None:
        from prometheus_client import CollectorRegistry

        from echoplus.metrics import MetricsService

        self._registry = CollectorRegistry()
        MetricsService(
            endpoint, self._registry, self.healthy, self.reactor
        ).setServiceParent(self)

    def _collect_from_workers(self) -> None:
        """
        Make the directory the workers write their samples to, and read it
        for scrapes.  Done in C{startService}, after twistd dropped
        privileges, so that the workers (which run as that user too) can
        write there.
        """
        from prometheus_client.multiprocess import MultiProcessCollector

        self._metrics_dir = tempfile.mkdtemp(prefix="echoplus-metrics-")
        MultiProcessCollector(self._registry, path=self._metrics_dir)

    def healthy(self) -> bool:
        """
        Whether the pool serves: running, not stopping, a worker alive.
        """
        return self.running and not self.draining and bool(self.workers)

    # Life.

    def privilegedStartService(self) -> None:
        for listener in self.settings.listeners:
            self._bind(listener.endpoint)
        super().privilegedStartService()

    def _bind(self, endpoint: str) -> None:
        kind = _kind(_inner_endpoint(endpoint))
        if kind not in ("tcp", "tcp6", "unix", "systemd"):
            raise ConfigError(
                f"cannot share {endpoint} between workers: --workers supports "
                "tcp:, unix:, systemd: and haproxy: listeners (terminate TLS "
                "in front, e.g. in HAProxy)"
            )
        outcome: list[Any] = []
        server_from_string(self.reactor, _inner_endpoint(endpoint)).listen(
            _Refuse()
        ).addBoth(outcome.append)
        if not outcome or isinstance(outcome[0], Failure):
            reason = outcome[0].getErrorMessage() if outcome else "no answer"
            raise ConfigError(f"cannot listen on {endpoint}: {reason}")
        port = outcome[0]
        port.stopReading()  # the workers accept; the parent only holds it
        address = port.getHost()
        family = "UNIX" if not hasattr(address, "port") else "INET"
        if family == "INET" and ":" in address.host:
            family = "INET6"
        self._adopted[endpoint] = _adopted_endpoint(endpoint, len(self.ports), family)
        self.ports.append(port)
        where = format_address(address)
        self._log.info(
            "echoplus listening on {endpoint} at {address} "
            "({workers} workers share it)",
            endpoint=endpoint,
            address=where,
            workers=self.settings.workers,
        )

    def startService(self) -> None:
        super().startService()
        if self.settings.broker == "memory":
            self._log.info(
                "Each worker has its own topics (pubsub, broadcast) with "
                "--broker memory; --broker redis://... shares them"
            )
        if self.settings.metrics and self._metrics_dir is None:
            self._collect_from_workers()
        for slot in range(self.settings.workers):
            try:
                self._spawn(slot)
            except OSError as error:
                raise ConfigError(f"cannot start a worker: {error}") from None
        # On the next turn: after the reactor installed its own handlers.
        self.reactor.callLater(0, self._install_signals)

    def stopService(self) -> Deferred[None]:
        self.draining = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        ended = [worker.ended for worker in self._all_workers()]
        for worker in self._all_workers():
            worker.retiring = True
            worker.signal(signal.SIGTERM)
        self._log.info("Stopping {count} worker(s)", count=len(ended))
        kill = self.reactor.callLater(
            self.settings.drain_timeout + KILL_GRACE, self._kill_all
        )
        waiting = DeferredList(ended)

        def finish(_: Any) -> Any:
            if kill.active():
                kill.cancel()
            for port in self.ports:
                port.stopListening()
            self.ports = []
            stopped = super(WorkerPool, self).stopService()
            return stopped.addBoth(self._cleanup)

        return waiting.addCallback(finish)

    def _cleanup(self, result: Any) -> Any:
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = None
        self._log.info("All workers stopped")
        return result

    def _kill_all(self) -> None:
        for worker in self._all_workers():
            self._log.warn("Killing worker {pid}", pid=worker.pid)
            worker.signal(signal.SIGKILL)

    def _all_workers(self) -> list[_WorkerProcess]:
        return [w for w in self._live if not w.ended.called]

    # Spawning and supervision.

    def _spawn(self, slot: int) -> _WorkerProcess:
        """
        Start a worker for C{slot}; it becomes the slot's current worker.
        """
        count = len(self.ports)
        ready_fd = 3 + count
        worker = _WorkerProcess(self, slot, ready_fd)
        environment = dict(os.environ)
        environment.update(
            {
                WORKER_ENVIRONMENT: json.dumps(
                    {"listeners": self._adopted, "ready_fd": ready_fd, "slot": slot}
                ),
                "LISTEN_FDS": str(count),
                "LISTEN_FDNAMES": ":".join(f"listener{i}" for i in range(count)),
            }
        )
        if self._metrics_dir is not None:
            environment["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        child_fds: dict[int, Any] = {0: 0, 1: 1, 2: 2, ready_fd: "r"}
        for index, port in enumerate(self.ports):
            child_fds[3 + index] = port.fileno()
        self.reactor.spawnProcess(
            worker,
            self.command[0],
            [*self.command, *self.arguments],
            env=environment,
            childFDs=child_fds,
        )
        self._live.append(worker)
        self.workers[slot] = worker
        self._log.info("Worker {slot} started (pid {pid})", slot=slot, pid=worker.pid)
        return worker

    def worker_ended(self, worker: _WorkerProcess, reason: Failure) -> None:
        """
        A worker exited: forget it and, unless it was retired or the pool
        stops, restart its slot after the back-off.
        """
        self._live = [w for w in self._live if w is not worker]
        if self._metrics_dir is not None and worker.pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, self._metrics_dir)
        status = getattr(reason.value, "exitCode", None)
        signum = getattr(reason.value, "signal", None)
        how = f"signal {signum}" if signum else f"status {status}"
        if worker.retiring or self.draining:
            self._log.info(
                "Worker {slot} (pid {pid}) exited ({how})",
                slot=worker.slot,
                pid=worker.pid,
                how=how,
            )
            if self.workers.get(worker.slot) is worker:
                del self.workers[worker.slot]
            return
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        lived = self.reactor.seconds() - worker.started_at
        delay = self._backoffs[worker.slot].next_delay(lived)
        self._log.warn(
            "Worker {slot} (pid {pid}) exited ({how}); restarting in {delay}s",
            slot=worker.slot,
            pid=worker.pid,
            how=how,
            delay=delay,
        )
        self._restarts[worker.slot] = self.reactor.callLater(
            delay, self._restart, worker.slot
        )

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if not self.draining and slot not in self.workers:
            try:
                self._spawn(slot)
            except OSError as error:
                delay = self._backoffs[slot].next_delay(0)
                self._log.error(
                    "Cannot start worker {slot}: {error}; retrying in {delay}s",
                    slot=slot,
                    error=error,
                    delay=delay,
                )
                self._restarts[slot] = self.reactor.callLater(
                    delay, self._restart, slot
                )

    # Rolling restart.

    def roll(self) -> Deferred[bool]:
        """
        Replace every worker, one at a time, by a freshly started one;
        return whether all were replaced.
        """
        if self._rolling:
            self._log.info("Rolling restart already in progress")
            return Deferred.fromCoroutine(_false())
        self._rolling = True
        done = Deferred.fromCoroutine(self._roll())

        def finished(result: Any) -> Any:
            self._rolling = False
            return result

        return done.addBoth(finished)

    async def _roll(self) -> bool:
        self._log.info("Rolling restart of {count} worker(s)", count=len(self.workers))
        for slot in range(self.settings.workers):
            if self.draining:
                return False
            old = self.workers.get(slot)
            try:
                new = self._spawn(slot)
            except OSError as error:
                self._log.error(
                    "Rolling restart stopped: cannot start worker {slot}: {error}",
                    slot=slot,
                    error=error,
                )
                if old is not None:
                    self.workers[slot] = old
                return False
            if old is not None:
                old.retiring = True
            new.ready.addTimeout(START_TIMEOUT, self.reactor)
            try:
                started = await new.ready
            except TimeoutError:
                started = False
            if not started:
                self._log.error(
                    "Rolling restart stopped: the new worker {slot} did not "
                    "start listening; the old one stays",
                    slot=slot,
                )
                new.retiring = True
                new.signal(signal.SIGKILL)
                if old is not None and not old.ended.called:
                    old.retiring = False
                    self.workers[slot] = old
                return False
            if old is not None and not old.ended.called:
                old.signal(signal.SIGTERM)
                await old.ended
        self._log.info("Rolling restart complete")
        return True

    # Signals.

    def _install_signals(self) -> None:
        """
        SIGUSR2 rolls, SIGHUP is forwarded, SIGTERM/SIGINT stop the pool
        (and are forwarded again if repeated).
        """
        handlers: dict[int, Callable[[], Any]] = {
            signal.SIGUSR2: self.roll,
            signal.SIGHUP: lambda: self._forward(signal.SIGHUP),
            signal.SIGTERM: self._stop_signal,
            signal.SIGINT: self._stop_signal,
        }
        for signum, handler in handlers.items():
            signal.signal(signum, _from_signal(self.reactor, handler))

    def _forward(self, signum: int) -> None:
        for worker in self._all_workers():
            worker.signal(signum)

    def _stop_signal(self) -> None:
        self._stop_requests += 1
        if self._stop_requests == 1:
            self._log.info("Stopping: draining every worker")
            self.reactor.stop()
        else:
            self._log.info("Second stop signal: workers stop at once")
            self._forward(signal.SIGTERM)


async def _false() -> bool:
    return False


def _from_signal(reactor: Any, handler: Callable[[], Any]) -> Callable[..., None]:
    def on_signal(signum: int, frame: Any) -> None:
        reactor.callFromThread(handler)

    return on_signal
