"""
Tests for C{--workers N} (L{echoplus.workers}): the supervision logic on a
fake reactor, then real pools of C{twistd -n echoplus} workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import urllib.request
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.config import ListenerSettings, Settings
from echoplus.context import ConnectionContext
from echoplus.errors import ConfigError
from echoplus.interfaces import IProcessor
from echoplus.worker import WORKER_ENVIRONMENT, adopt_listeners
from echoplus.workers import (
    Backoff,
    WorkerPool,
    _adopted_endpoint,
    _inner_endpoint,
    option_arguments,
    worker_settings,
)
from tests.support import Twistd, receive_lines

LISTEN = "tcp:0:interface=127.0.0.1"
STARTED = re.compile(r"Worker (\d+) started \(pid (\d+)\)")
WORKER_LISTENING = r"echoplus listening on systemd:"


@implementer(IProcessor)
class Pid:
    """
    Test-only: replies C{<pid> <message>}; C{slow...} messages after a
    second, so that a test can hold a request in flight.
    """

    def process(self, message: bytes, context: ConnectionContext) -> Any:
        reply = b"%d %s" % (os.getpid(), message)
        if message.startswith(b"slow"):
            return deferLater(context.clock, 1.0, lambda: reply)
        return reply


# The supervision logic, on a fake reactor.


class FakeProcess:
    """
    What C{spawnProcess} returns, recording signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class FakeReactor(MemoryReactorClock):
    """
    A memory reactor that records spawned processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcess, dict[int, Any]]] = []
        self.running = True
        self.refuse = False

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> Any:
        if self.refuse:
            raise PermissionError(13, "Permission denied")
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, process, kw["childFDs"]))
        protocol.makeConnection(process)
        return process


def end(protocol: Any, status: int = 0) -> None:
    reason = ProcessDone(0) if status == 0 else ProcessTerminated(status)
    protocol.processEnded(Failure(reason))


class FakePort:
    stopped = False

    def fileno(self) -> int:
        return 42

    def stopListening(self) -> None:
        self.stopped = True


def pool(workers: int = 2) -> tuple[WorkerPool, FakeReactor]:
    reactor = FakeReactor()
    settings = Settings(listeners=(ListenerSettings(endpoint=LISTEN),), workers=workers)
    service = WorkerPool(settings, reactor, ["--processor=echo"])
    service.ports = [FakePort()]
    service._adopted = {LISTEN: "systemd:domain=INET:index=0"}
    service.running = True
    for slot in range(workers):
        service._spawn(slot)
    return service, reactor


class BackoffTests(SynchronousTestCase):
    def test_doubles_and_caps(self) -> None:
        """
        Quick failures double the delay up to the cap; a worker that lived
        long enough resets it.
        """
        backoff = Backoff(first=0.5, most=3.0)
        delays = [backoff.next_delay(lived=1) for _ in range(5)]
        self.assertEqual(delays, [0.5, 1.0, 2.0, 3.0, 3.0])
        self.assertEqual(backoff.next_delay(lived=60), 0.5)


class HelperTests(SynchronousTestCase):
    def test_option_arguments(self) -> None:
        """
        Workers get every option that was given, repeatable ones repeated.
        """
        options = {
            "listen": ["tcp:1", "unix:/s"],
            "framing": "int16",
            "max-frame": None,
        }
        arguments = option_arguments(options)
        self.assertEqual(
            arguments, ["--listen=tcp:1", "--listen=unix:/s", "--framing=int16"]
        )

    def test_endpoints(self) -> None:
        """
        The parent binds the endpoint without haproxy:, the worker adopts
        the descriptor inside haproxy: again.
        """
        self.assertEqual(_inner_endpoint("haproxy:tcp:5000"), "tcp:5000")
        self.assertEqual(_inner_endpoint("unix:/s"), "unix:/s")
        self.assertEqual(
            _adopted_endpoint("haproxy:tcp:5000", 1, "INET"),
            "haproxy:systemd:domain=INET:index=1",
        )
        self.assertEqual(
            _adopted_endpoint("unix:/s", 0, "UNIX"), "systemd:domain=UNIX:index=0"
        )

    def test_worker_settings(self) -> None:
        """
        A worker runs alone and leaves the metrics endpoint to the parent.
        """
        settings = worker_settings(Settings(workers=4, metrics="tcp:9100"))
        self.assertEqual((settings.workers, settings.metrics), (1, None))


class AdoptTests(SynchronousTestCase):
    def service(self, *endpoints: str) -> Any:
        from echoplus.service import EchoPlusService

        listeners = tuple(ListenerSettings(endpoint=e) for e in endpoints)
        return EchoPlusService(Settings(listeners=listeners), MemoryReactorClock())

    def test_adopts_by_endpoint(self) -> None:
        """
        Each configured listener adopts the descriptor passed for its
        endpoint, whatever the order; its name stays the endpoint.
        """
        service = self.service("tcp:1", "unix:/s")
        plan = {
            "listeners": {
                "unix:/s": "systemd:domain=UNIX:index=1",
                "tcp:1": "systemd:domain=INET:index=0",
            },
            "ready_fd": 99,
        }
        adopt_listeners(service, {WORKER_ENVIRONMENT: json.dumps(plan)})
        listeners = {child.name: child.endpoint for child in service if child.name}
        self.assertEqual(listeners["tcp:1"], "systemd:domain=INET:index=0")
        self.assertEqual(listeners["unix:/s"], "systemd:domain=UNIX:index=1")

    def test_changed_listeners_refused(self) -> None:
        """
        A worker whose configuration names other listeners than the pool
        bound refuses to start, naming the difference.
        """
        service = self.service("tcp:2")
        plan = {"listeners": {"tcp:1": "systemd:domain=INET:index=0"}, "ready_fd": 9}
        error = self.assertRaises(
            ConfigError,
            adopt_listeners,
            service,
            {WORKER_ENVIRONMENT: json.dumps(plan)},
        )
        self.assertIn("tcp:1, tcp:2", str(error))


class SupervisionTests(SynchronousTestCase):
    def test_spawn_passes_sockets(self) -> None:
        """
        Each worker gets the listening sockets from descriptor 3 on and a
        readiness pipe after them.
        """
        service, reactor = pool(2)
        self.assertEqual(len(reactor.spawned), 2)
        _, _, child_fds = reactor.spawned[0]
        self.assertEqual(child_fds[3], 42)
        self.assertEqual(child_fds[4], "r")

    def test_crashed_worker_restarted_with_backoff(self) -> None:
        """
        A worker that exits on its own is replaced after the back-off,
        which doubles when the replacement fails quickly too.
        """
        service, reactor = pool(2)
        first, _, _ = reactor.spawned[0]
        end(first, 1)
        self.assertNotIn(0, service.workers)
        reactor.advance(0.4)
        self.assertEqual(len(reactor.spawned), 2)
        reactor.advance(0.1)
        self.assertEqual(len(reactor.spawned), 3)
        second, _, _ = reactor.spawned[2]
        self.assertIs(service.workers[0], second)
        end(second, 1)
        reactor.advance(0.9)
        self.assertEqual(len(reactor.spawned), 3)
        reactor.advance(0.1)
        self.assertEqual(len(reactor.spawned), 4)

    def test_spawn_failure_retried(self) -> None:
        """
        A worker that cannot even be started (the executable cannot be run)
        is logged and retried after the back-off, not a crash.
        """
        service, reactor = pool(1)
        end(reactor.spawned[0][0], 1)
        reactor.refuse = True
        reactor.advance(0.5)
        self.assertEqual(len(reactor.spawned), 1)
        self.assertNotIn(0, service.workers)
        reactor.refuse = False
        reactor.advance(1.0)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertIn(0, service.workers)

    def test_stop_signals_every_worker_and_waits(self) -> None:
        """
        Stopping makes the pool unhealthy, sends SIGTERM to every worker and
        completes only after the last one exited, without restarting any.
        """
        service, reactor = pool(2)
        self.assertTrue(service.healthy())
        stopped = service.stopService()
        self.assertFalse(service.healthy())
        for _, process, _ in reactor.spawned:
            self.assertEqual(process.signals, [signal.SIGTERM])
        end(reactor.spawned[0][0])
        self.assertNoResult(stopped)
        end(reactor.spawned[1][0])
        self.successResultOf(stopped)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2)

    def test_roll_one_at_a_time(self) -> None:
        """
        A rolling restart starts a new worker, waits until it is ready,
        then stops the old one, then moves to the next slot.
        """
        service, reactor = pool(2)
        rolled: Deferred[bool] = service.roll()
        self.assertEqual(len(reactor.spawned), 3)
        new0, _, fds = reactor.spawned[2]
        old0, old0_process, _ = reactor.spawned[0]
        self.assertEqual(old0_process.signals, [])
        new0.childDataReceived(4, b"ready\n")
        self.assertEqual(old0_process.signals, [signal.SIGTERM])
        self.assertEqual(len(reactor.spawned), 3)
        end(old0)
        self.assertEqual(len(reactor.spawned), 4)
        new1, _, _ = reactor.spawned[3]
        old1, old1_process, _ = reactor.spawned[1]
        new1.childDataReceived(4, b"ready\n")
        end(old1)
        self.assertTrue(self.successResultOf(rolled))
        self.assertEqual(service.workers, {0: new0, 1: new1})
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 4)

    def test_signals(self) -> None:
        """
        SIGHUP is forwarded to every worker; a first stop signal stops the
        reactor (which stops the pool), a second one is forwarded as SIGTERM.
        """
        service, reactor = pool(2)
        service._forward(signal.SIGHUP)
        for _, process, _ in reactor.spawned:
            self.assertEqual(process.signals, [signal.SIGHUP])
        service._stop_signal()
        self.assertTrue(reactor.hasStopped)
        for _, process, _ in reactor.spawned:
            self.assertEqual(process.signals, [signal.SIGHUP])
        service._stop_signal()
        for _, process, _ in reactor.spawned:
            self.assertEqual(process.signals, [signal.SIGHUP, signal.SIGTERM])

    def test_roll_keeps_old_when_new_fails(self) -> None:
        """
        A new worker that exits before listening stops the rolling restart
        and the old worker stays in service.
        """
        service, reactor = pool(1)
        old, old_process, _ = reactor.spawned[0]
        rolled = service.roll()
        new, _, _ = reactor.spawned[1]
        end(new, 1)
        self.assertFalse(self.successResultOf(rolled))
        self.assertIs(service.workers[0], old)
        self.assertEqual(old_process.signals, [])


# Real pools.


def reply_pid(port: int, message: bytes = b"hi") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(message + b"\n")
        [reply] = receive_lines(sock, 1)
    pid, _, echoed = reply.partition(b" ")
    assert echoed == message, reply
    return int(pid)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for_frames(url: str, expected: int, timeout: float = 10) -> None:
    """
    Scrape C{url} until the frames received by all workers reach
    C{expected} (workers flush their counts every second).
    """
    key = f'echoplus_frames_received_total{{listener="{LISTEN}"}}'
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(key + " "):
                    value = float(line.rsplit(" ", 1)[1])
        if value == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"frames received: {value}, expected {expected}")


def start_pool(
    test: SynchronousTestCase, workers: int = 2, *extra: str
) -> tuple[Twistd, dict]:
    server = Twistd(
        [
            "--listen",
            LISTEN,
            "--workers",
            str(workers),
            "--processor",
            "tests.test_workers:Pid",
            *extra,
        ]
    )
    test.addCleanup(server.stop)
    started = server.wait_for(STARTED, count=workers)
    server.wait_for(WORKER_LISTENING, count=workers, timeout=60)
    return server, {int(m.group(1)): int(m.group(2)) for m in started}


class WorkerPoolTests(SynchronousTestCase):
    def test_serve_restart_and_stop(self) -> None:
        """
        Two workers both serve the shared port, and the parent's /metrics
        counts the frames of both; a killed worker is replaced and serving
        goes on; SIGTERM stops the parent and every worker.
        """
        server, pids = start_pool(self, 2, "--metrics", "tcp:0:interface=127.0.0.1")
        [metrics] = re.findall(
            r"echoplus metrics on \S+ at (\S+)", server.drain_output()
        )
        seen = set()
        requests = 0
        for _ in range(60):
            seen.add(reply_pid(server.port))
            requests += 1
            if len(seen) == 2:
                break
        self.assertEqual(seen, set(pids.values()))
        wait_for_frames(f"http://{metrics}/metrics", requests)

        os.kill(pids[0], signal.SIGKILL)
        server.wait_for(rf"Worker 0 \(pid {pids[0]}\) exited")
        restarted = server.wait_for(STARTED)[0]
        self.assertEqual(restarted.group(1), "0")
        server.wait_for(WORKER_LISTENING, timeout=60)
        replacement = int(restarted.group(2))
        seen = set()
        for _ in range(60):
            seen.add(reply_pid(server.port))
            requests += 1
            if replacement in seen:
                break
        self.assertIn(replacement, seen)
        self.assertNotIn(pids[0], seen)
        wait_for_frames(f"http://{metrics}/metrics", requests)

        self.assertEqual(server.stop(timeout=30), 0)
        self.assertFalse(alive(replacement))
        self.assertFalse(alive(pids[1]))

    def test_rolling_restart_under_traffic(self) -> None:
        """
        SIGUSR2 replaces every worker while clients keep connecting: no
        connection is refused, every request is answered, and a request in
        flight on an old worker still gets its reply.
        """
        server, old_pids = start_pool(self)
        failures: list[BaseException] = []
        answered = [0]
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    reply_pid(server.port, b"steady")
                    answered[0] += 1
                except (OSError, AssertionError, ValueError) as error:
                    failures.append(error)

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.addCleanup(stop.set)
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.addCleanup(slow.close)
        slow.sendall(b"slow\n")
        server.signal(signal.SIGUSR2)
        server.wait_for("Rolling restart complete", timeout=90)
        [reply] = receive_lines(slow, 1)
        self.assertEqual(reply.split(b" ", 1)[1], b"slow")
        self.assertIn(int(reply.split()[0]), set(old_pids.values()))
        new_pids = {reply_pid(server.port) for _ in range(10)}
        stop.set()
        thread.join(30)
        self.assertEqual(failures, [])
        self.assertGreater(answered[0], 0)
        self.assertFalse(new_pids & set(old_pids.values()))

    def test_proxy_protocol_listener(self) -> None:
        """
        A haproxy: listener is shared too: workers adopt it inside their
        PROXY-protocol wrapper and processors see the client address from
        the header.
        """
        server = Twistd(
            [
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--workers",
                "2",
                "--processor",
                "tests.test_haproxy:WhoAmI",
            ]
        )
        self.addCleanup(server.stop)
        server.wait_for(r"echoplus listening on haproxy:systemd:", count=2, timeout=60)
        addresses = socket.inet_aton("203.0.113.7") + socket.inet_aton("127.0.0.1")
        addresses += struct.pack("!HH", 4242, server.port)
        header = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(addresses))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(header + addresses + b"hello\n")
            [reply] = receive_lines(sock, 1)
        self.assertEqual(reply.split(b" ", 1)[1], b"203.0.113.7:4242 hello")

    def test_unix_listener(self) -> None:
        """
        A UNIX socket listener is shared by the workers too.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = f"{directory}/pool.sock"
        server = Twistd(["--listen", f"unix:{path}", "--workers", "2"])
        self.addCleanup(server.stop)
        self.assertEqual(server.addresses, [path])
        server.wait_for(
            r"echoplus listening on systemd:domain=UNIX", count=2, timeout=60
        )
        with server.connect() as sock:
            sock.sendall(b"over unix\n")
            self.assertEqual(receive_lines(sock, 1), [b"over unix"])
