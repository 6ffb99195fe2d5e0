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

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echoplus.parsers import check_endpoint
from echoplus.systemd import (
    find_passed_socket,
    passed_sockets,
    systemd_server_endpoint,
)
from tests.support import (
    REPO,
    TWISTD,
    Twistd,
    receive_lines,
    stop_process,
    twistd_environment,
)

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
        stop_process(self.process)


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
    def activate(self, activator: list[str], endpoint: str) -> None:
        """
        Run twistd under C{systemd-socket-activate} with C{activator}'s
        options, listening on C{endpoint}, and check that it serves the
        socket the activator bound.
        """
        if ACTIVATE is None:
            raise SkipTest("systemd-socket-activate is not installed (Debian: systemd)")
        port = free_port()
        server = Process(
            [
                ACTIVATE,
                *activator,
                "-l",
                f"127.0.0.1:{port}",
                *TWISTD,
                "-n",
                "--pidfile=",
                "echoplus",
                "--listen",
                endpoint,
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

    def test_systemd_endpoint(self) -> None:
        """
        twistd -n echoplus --listen systemd:domain=INET:name=echoplus serves
        the socket systemd-socket-activate bound and passed to it by that
        name (as a systemd socket unit with FileDescriptorName= does).
        """
        self.activate(["--fdname=echoplus"], "systemd:domain=INET:name=echoplus")

    def test_socket_without_name(self) -> None:
        """
        An activator that passes its socket without a name (no
        LISTEN_FDNAMES: systemd-socket-activate without --fdname) is
        served by index.
        """
        self.activate([], "systemd:domain=INET:index=0")


class PassedSocketTests(SynchronousTestCase):
    """
    L{echoplus.systemd}: finding passed sockets as C{sd_listen_fds} does.
    """

    PID = 4242

    def environ(self, count: int, names: str | None = None) -> dict[str, str]:
        environ = {"LISTEN_PID": str(self.PID), "LISTEN_FDS": str(count)}
        if names is not None:
            environ["LISTEN_FDNAMES"] = names
        return environ

    def test_by_index_without_names(self) -> None:
        """
        LISTEN_PID and LISTEN_FDS are enough: sockets start at descriptor 3.
        """
        environ = self.environ(2)
        self.assertEqual(passed_sockets(environ, self.PID), ([3, 4], None))
        self.assertEqual(find_passed_socket(environ, self.PID, index=1), 4)

    def test_by_name(self) -> None:
        """
        With LISTEN_FDNAMES, a socket is found by name.
        """
        environ = self.environ(2, "web:echoplus")
        self.assertEqual(find_passed_socket(environ, self.PID, name="echoplus"), 4)

    def test_what_is_missing(self) -> None:
        """
        Each way of not finding the socket says what is missing.
        """
        cases = [
            (self.environ(1), {"index": 1}, "index=1, but 1 socket(s) were passed"),
            (self.environ(1), {"name": "x"}, "name=x needs LISTEN_FDNAMES"),
            (self.environ(1, "web"), {"name": "x"}, "no socket named 'x'"),
            ({}, {"index": 0}, "no socket was passed to this process"),
            (
                {**self.environ(1), "LISTEN_PID": "1"},
                {"index": 0},
                "no socket was passed to this process",
            ),
        ]
        for environ, where, message in cases:
            with self.assertRaises(ValueError) as raised:
                find_passed_socket(environ, self.PID, **where)
            self.assertIn(message, str(raised.exception))

    def test_names_that_do_not_match_are_ignored(self) -> None:
        """
        A LISTEN_FDNAMES with a different count names nothing, and the
        sockets stay usable by index.
        """
        environ = self.environ(2, "only-one")
        self.assertEqual(passed_sockets(environ, self.PID), ([3, 4], None))

    def test_endpoint_string_checked_without_sockets(self) -> None:
        """
        The string is checked when parsed, the socket looked up only when
        listening: C{echoplus check} accepts a good string anywhere, and a
        missing socket is a failed listen naming what is missing.
        """
        self.assertEqual(
            check_endpoint("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0"
        )
        for bad, message in (
            ("systemd:domain=INET", "exactly one of index= and name="),
            ("systemd:domain=IPX:index=0", "domain= must be INET, INET6 or UNIX"),
            ("systemd:domain=INET:index=x", "index= must be a number"),
            ("systemd:domain=INET:index=0:port=1", "unexpected 'port'"),
        ):
            with self.assertRaises(ValueError) as raised:
                check_endpoint(bad)
            self.assertIn(message, str(raised.exception))
        endpoint = systemd_server_endpoint(
            MemoryReactor(), [], {"domain": "INET", "index": "0"}, environ={}
        )
        failure = self.failureResultOf(endpoint.listen(Factory()), ValueError)
        self.assertIn("no socket was passed", failure.getErrorMessage())


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
        # Bound before the switch, announced after it.
        self.assertIn("set uid/gid 65534/65534", "".join(server.output))
        self.assertEqual(server.port, port)
        with open(f"/proc/{server.process.pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:"))
        self.assertEqual(uids.split()[1:], ["65534"] * 4)
        with server.connect() as sock:
            sock.sendall(b"unprivileged\n")
            self.assertEqual(receive_lines(sock, 1), [b"unprivileged"])
