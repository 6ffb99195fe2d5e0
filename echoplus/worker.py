"""
The worker side of C{--workers N} (see L{echoplus.workers}): a worker is
C{twistd -n echoplus <the parent's options>} whose listeners adopt the
sockets the parent passed, the way a systemd socket unit passes them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Mapping, Sequence

import attrs
from twisted.application.service import MultiService, Service

from echoplus.config import Settings
from echoplus.errors import ConfigError

__all__ = [
    "WORKER_ENVIRONMENT",
    "WORKER_MAIN",
    "adopt_listeners",
    "is_worker",
    "main",
    "worker_metrics",
    "worker_settings",
]

#: The environment variable that tells a worker process what it adopts:
#: JSON with the adopted endpoint strings and the readiness pipe.
WORKER_ENVIRONMENT = "_ECHOPLUS_WORKER"
#: How a worker starts: LISTEN_PID must be set, and echoplus.systemd must
#: read the LISTEN_* variables, before twisted.internet.endpoints is first
#: imported (it deletes them).
WORKER_MAIN = (
    "import os; os.environ['LISTEN_PID'] = str(os.getpid()); "
    "import echoplus.systemd; from echoplus.worker import main; main()"
)


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    """
    Whether this process was started by a L{echoplus.workers.WorkerPool}.
    """
    return WORKER_ENVIRONMENT in environ


def worker_settings(settings: Settings) -> Settings:
    """
    A worker's settings: one process, and no metrics endpoint of its own
    (the parent serves the metrics of all workers).
    """
    return attrs.evolve(settings, workers=1, metrics=None)


class _Ready(Service):
    """
    Tells the parent, through the readiness pipe, that this worker listens.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def startService(self) -> None:
        super().startService()
        try:
            os.write(self._fd, b"ready\n")
            os.close(self._fd)
        except OSError:
            pass


def adopt_listeners(
    service: MultiService, environ: Mapping[str, str] = os.environ
) -> None:
    """
    In a worker: make each listener of C{service} adopt the descriptor the
    parent passed (its name, metrics label and log stay the configured
    endpoint), and tell the parent once listening.
    """
    from echoplus.service import ListenerService

    plan = json.loads(environ[WORKER_ENVIRONMENT])
    adopted: dict[str, str] = plan["listeners"]
    listeners = [child for child in service if isinstance(child, ListenerService)]
    configured = {child.endpoint for child in listeners}
    if configured != set(adopted):
        raise ConfigError(
            "the listeners changed since the worker pool started ("
            + ", ".join(sorted(configured ^ set(adopted)))
            + "); restart the pool to change them"
        )
    for child in listeners:
        child.endpoint = adopted[child.endpoint]
    _Ready(plan["ready_fd"]).setServiceParent(service)


def worker_metrics() -> Any:
    """
    A worker's L{Metrics <echoplus.metrics.Metrics>} when the parent
    collects them (multiprocess mode), else C{None}.
    """
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return None
    from echoplus.metrics import Metrics

    return Metrics()


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run one worker: C{twistd -n echoplus <options>} on inherited sockets
    (see L{WORKER_MAIN}).
    """
    _die_with_parent()
    # Out of the terminal's process group: a Ctrl-C reaches the parent only,
    # which forwards one SIGTERM (a second signal would cut the drain short).
    os.setpgid(0, 0)
    arguments = list(sys.argv[1:] if argv is None else argv)
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "echoplus", *arguments]
    from twisted.scripts.twistd import run

    run()


def _die_with_parent() -> None:
    """
    On Linux, get SIGTERM if the parent dies without stopping us.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
