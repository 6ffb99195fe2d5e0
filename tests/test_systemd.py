"""
Running under a service manager: systemd socket activation (through
C{systemd-socket-activate}, which passes a listening socket the way
C{deploy/echoplus.socket} does) and binding a port below 1024 before
twistd drops privileges with C{--uid/--gid}.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from typing import Sequence

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO, TWISTD, Twistd, receive_lines, twistd_environment

ACTIVATE = shutil.which("systemd-socket-activate")


class Process:
    """
    A command whose output lines are read on a thread.
    """

    def __init__(self, command: Sequence[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=twistd_environment(),
            cwd=str(REPO),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no {pattern!r} in:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port(below: int | None = None) -> int:
    """
    A free loopback port: any, or one below C{below}.
    """
    candidates = range(below - 1, 511, -1) if below else [0]
    for candidate in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise SkipTest("no free port found")


class SocketActivationTests(SynchronousTestCase):
    def test_systemd_endpoint(self) -> None:
        """
        twistd -n echoplus --listen systemd:domain=INET:index=0 serves the
        socket systemd-socket-activate bound and passed to it.
        """
        if ACTIVATE is None:
            raise SkipTest("systemd-socket-activate is not installed (Debian: systemd)")
        port = free_port()
        server = Process(
            [
                ACTIVATE,
                # Twisted requires LISTEN_FDNAMES, which systemd always sets
                # and systemd-socket-activate only with --fdname.
                "--fdname=echoplus",
                "-l",
                f"127.0.0.1:{port}",
                *TWISTD,
                "-n",
                "--pidfile=",
                "echoplus",
                "--listen",
                "systemd:domain=INET:index=0",
                "--processor",
                "upper",
            ]
        )
        self.addCleanup(server.stop)
        server.wait_for(f"Listening on 127.0.0.1:{port}")
        # Like a systemd socket unit, the first connection starts the
        # service; the kernel queues it until twistd adopts the socket.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"activated\n")
            match = server.wait_for(r"echoplus listening on systemd:\S+ at (\S+)")
            self.assertEqual(match.group(1), f"127.0.0.1:{port}")
            self.assertEqual(receive_lines(sock, 1), [b"ACTIVATED"])


class PrivilegeTests(SynchronousTestCase):
    def test_bind_low_port_then_drop(self) -> None:
        """
        Started as root with --uid/--gid, twistd binds a port below 1024
        first, then serves it as the unprivileged user.
        """
        if os.getuid() != 0:
            raise SkipTest("needs root to bind a port below 1024 and change user")
        port = free_port(below=1024)
        server = Twistd(
            ["--listen", f"tcp:{port}:interface=127.0.0.1"],
            twistd_options=["--uid", "65534", "--gid", "65534"],
        )
        self.addCleanup(server.stop)
        server.wait_for("set uid/gid 65534/65534")
        self.assertEqual(server.port, port)
        with open(f"/proc/{server.process.pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:"))
        self.assertEqual(uids.split()[1:], ["65534"] * 4)
        with server.connect() as sock:
            sock.sendall(b"unprivileged\n")
            self.assertEqual(receive_lines(sock, 1), [b"unprivileged"])
