"""
Tests for L{echoplus.resources} and for running out of file descriptors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echoplus.resources import open_files_limit, raise_open_files_limit
from tests.support import REPO, Twistd, receive_lines, twistd_environment

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]


class RecordingLog:
    """
    Records the messages a L{Logger} would get.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, text: str, **fields: Any) -> None:
        self.messages.append(("info", text, fields))

    def warn(self, text: str, **fields: Any) -> None:
        self.messages.append(("warn", text, fields))


def _lower_limit(soft: int, hard: int | None = None) -> Any:
    """
    A C{preexec_fn} lowering the child's C{RLIMIT_NOFILE}.
    """

    def lower() -> None:
        current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard or current_hard))

    return lower


def _cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of a process, from /proc.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RaiseLimitTests(SynchronousTestCase):
    """
    Tests for L{raise_open_files_limit}.
    """

    def setUp(self) -> None:
        if resource is None:
            raise SkipTest("no resource module")

    def test_raised_to_hard_limit(self) -> None:
        """
        In a process whose soft limit is below the hard one, the soft limit
        is raised to the hard one.
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard <= 128:
            raise SkipTest("hard limit too low to lower the soft one")
        code = (
            "from echoplus.resources import raise_open_files_limit, open_files_limit\n"
            "before = open_files_limit()[0]\n"
            "now = raise_open_files_limit()\n"
            "print(before, now, *open_files_limit())\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            env=twistd_environment(),
            cwd=str(REPO),
            preexec_fn=_lower_limit(128),
        )
        before, now, soft, hard_after = (int(value) for value in result.stdout.split())
        self.assertEqual(before, 128)
        self.assertEqual(now, soft)
        self.assertEqual(soft, min(hard_after, 1048576))

    def test_logged(self) -> None:
        """
        The limit in force is logged, and returned.
        """
        log = RecordingLog()
        limit = raise_open_files_limit(log)
        self.assertEqual(limit, open_files_limit()[0])  # type: ignore[index]
        self.assertEqual(len(log.messages), 1)
        self.assertEqual(log.messages[0][0], "info")


class DescriptorExhaustionTests(SynchronousTestCase):
    """
    twistd at its file descriptor limit.
    """

    def setUp(self) -> None:
        if resource is None or not os.path.exists("/proc/self/stat"):
            raise SkipTest("needs POSIX resource limits and /proc")

    def test_at_the_limit(self) -> None:
        """
        Past its descriptor limit twistd refuses (closes) new connections
        through Twisted's reserved-descriptor recovery, without spinning or
        crashing, keeps serving the ones it has, and
        accepts again once some close.
        """
        server = Twistd(
            ["--listen", "tcp:0:interface=127.0.0.1"], preexec_fn=_lower_limit(48, 48)
        )
        self.addCleanup(server.stop)
        held: list[socket.socket] = []
        self.addCleanup(lambda: [sock.close() for sock in held])
        refused = 0
        for number in range(60):
            sock = server.connect(timeout=5)
            sock.sendall(b"ping %d\n" % number)
            try:
                answer = receive_lines(sock, 1)
            except ConnectionResetError:
                answer = [b""]
            if answer == [b"ping %d" % number]:
                held.append(sock)
            else:
                sock.close()
                refused += 1
                if refused == 3:
                    break
        self.assertEqual(refused, 3, "never reached the descriptor limit")
        self.assertGreater(len(held), 10)
        server.wait_for("EMFILE encountered", timeout=5)
        # More clients knock while no descriptor is free: no busy loop.
        knocking = [
            socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)
        ]
        self.addCleanup(lambda: [sock.close() for sock in knocking])
        before = _cpu_seconds(server.process.pid)
        time.sleep(1.0)
        self.assertLess(_cpu_seconds(server.process.pid) - before, 0.3)
        # The connections it has are still served.
        held[0].sendall(b"still here\n")
        self.assertEqual(receive_lines(held[0], 1), [b"still here"])
        # Some close: new clients are served again.
        for sock in held[-5:]:
            sock.close()
        del held[-5:]
        deadline = time.monotonic() + 5
        while True:
            with server.connect(timeout=5) as sock:
                sock.sendall(b"welcome back\n")
                try:
                    if receive_lines(sock, 1) == [b"welcome back"]:
                        break
                except ConnectionResetError:
                    pass
            self.assertLess(time.monotonic(), deadline, "never accepted again")
            time.sleep(0.1)
        self.assertIsNone(server.process.poll())
