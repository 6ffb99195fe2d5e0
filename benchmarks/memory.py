"""
Server memory under many idle connections and under attack.

    python benchmarks/memory.py                      # 10000 idle connections
    python benchmarks/memory.py --connections 2000 --attackers 2

Starts C{twistd -n echoplus} on a loopback port and reports, from the
server's resident set size (Linux C{/proc/<pid>/status}):

  - RSS per idle connection: connections are opened in batches (each
    proves it is served with one echo), and the RSS increase of each batch
    divided by its size; the median over batches is the figure (target:
    under 10 KiB; issue 6 asks at most 4 KiB at 10,000);
  - RSS growth under the slow-reader attack (clients that send requests
    without ever reading the replies) and the endless-line attack (clients
    that send one line that never ends), sampled every 0.1 s: the median and
    the largest growth over the baseline (target: a few MiB at most); and
    whether a well-behaved client was answered during each attack.

Only loopback is used.  The script raises its own open files limit (and
the server raises its own) to the hard limit; the hard limit must exceed
the number of connections (plus a margin) for the idle test.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_LISTENING = re.compile(r"echoplus listening on \S+ at 127\.0\.0\.1:(\d+)")
KIB = 1024
MIB = 1024 * 1024


def raise_own_limit() -> int:
    """
    Raise this process's soft open files limit to the hard one; return it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1048576
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class Server:
    """
    One C{twistd -n echoplus} on a free loopback port.
    """

    def __init__(self, options: Sequence[str]) -> None:
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")
        }
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), environment.get("PYTHONPATH", "")])
        )
        self.process = subprocess.Popen(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "echoplus",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=str(REPO),
            text=True,
        )
        self.port = self._wait_for_port()
        # Keep reading the log so the server never blocks on a full pipe.
        threading.Thread(target=self._drain_log, daemon=True).start()

    def _wait_for_port(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            match = _LISTENING.search(line)
            if match:
                return int(match.group(1))
            if time.monotonic() > deadline:
                break
        self.stop()
        raise SystemExit("twistd did not start listening")

    def _drain_log(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def rss(self) -> int:
        """
        The server's resident set size, in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KIB
        raise RuntimeError("no VmRSS")

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def echo_once(sock: socket.socket, payload: bytes = b"ping\n") -> bool:
    """
    Send one line and read its echo; whether it came back.
    """
    sock.sendall(payload)
    received = b""
    while not received.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return False
        received += chunk
    return received == payload


def settle(server: Server, seconds: float = 0.5) -> int:
    """
    Let the server settle, then return its RSS.
    """
    time.sleep(seconds)
    return server.rss()


def idle_connections(count: int, batches: int) -> None:
    """
    Report RSS per idle connection, by batch.
    """
    server = Server(["--idle-timeout", "0", "--max-connections", "0"])
    held: list[socket.socket] = []
    try:
        # Warm up: load every code path a connection uses.
        for _ in range(50):
            with server.connect() as sock:
                echo_once(sock)
        size = max(1, count // batches)
        before = settle(server)
        start = before
        per_connection = []
        for batch in range(batches):
            for _ in range(size):
                sock = server.connect()
                if not echo_once(sock):
                    raise SystemExit(f"connection {len(held)} was not served")
                held.append(sock)
            after = settle(server, 0.3)
            per_connection.append((after - before) / size)
            print(
                f"  batch {batch + 1}/{batches}: {len(held):6d} connections, "
                f"RSS {after / MIB:7.1f} MiB, {per_connection[-1] / KIB:5.2f} KiB each"
            )
            before = after
        median = statistics.median(per_connection)
        overall = (before - start) / len(held)
        verdict = "ok" if median < 10 * KIB else "ABOVE TARGET"
        print(
            f"RSS per idle connection: median {median / KIB:.2f} KiB over {batches} "
            f"batches, {overall / KIB:.2f} KiB overall at {len(held)} connections "
            f"(target < 10 KiB: {verdict}; issue 6: <= 4 KiB)"
        )
    finally:
        for sock in held:
            sock.close()
        server.stop()


def slow_reader(server: Server, stop: threading.Event) -> None:
    """
    Send requests as fast as possible and never read a reply.
    """
    line = b"x" * 1000 + b"\n"
    chunk = line * 64
    try:
        with server.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    sock.send(chunk)
                except TimeoutError:
                    continue
    except OSError:
        pass  # closed by the server (overloaded): the expected outcome


def endless_line(server: Server, stop: threading.Event) -> None:
    """
    Send one line that never ends; reconnect when closed.
    """
    chunk = b"y" * 65536
    while not stop.is_set():
        try:
            with server.connect() as sock:
                sock.settimeout(0.2)
                while not stop.is_set():
                    try:
                        sock.send(chunk)
                    except TimeoutError:
                        continue
        except OSError:
            time.sleep(0.01)  # closed with frame-too-long: come again


def attack(
    name: str,
    run: Callable[[Server, threading.Event], None],
    attackers: int,
    seconds: float,
) -> None:
    """
    Report RSS growth while C{attackers} clients run C{run}.
    """
    server = Server([])
    try:
        for _ in range(20):
            with server.connect() as sock:
                echo_once(sock)
        baseline = settle(server)
        stop = threading.Event()
        threads = [
            threading.Thread(target=run, args=(server, stop), daemon=True)
            for _ in range(attackers)
        ]
        for thread in threads:
            thread.start()
        samples = []
        answered = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
            samples.append(server.rss() - baseline)
            if len(samples) % 10 == 0:
                with server.connect(timeout=5) as sock:
                    answered.append(echo_once(sock, b"are you there\n"))
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        growth_median = statistics.median(samples)
        growth_max = max(samples)
        verdict = "ok" if growth_max < 8 * MIB else "ABOVE TARGET"
        served = sum(answered)
        print(
            f"{name} ({attackers} attackers, {seconds:.0f} s): RSS growth median "
            f"{growth_median / MIB:.2f} MiB, max {growth_max / MIB:.2f} MiB over "
            f"{len(samples)} samples (target: a few MiB: {verdict}); "
            f"a normal client was answered {served}/{len(answered)} times"
        )
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per attack")
    arguments = parser.parse_args(argv)
    if not os.path.exists("/proc/self/status"):
        raise SystemExit("memory.py reads /proc: Linux only")
    limit = raise_own_limit()
    if limit < arguments.connections + 100:
        raise SystemExit(
            f"open files hard limit {limit} is too low for {arguments.connections} "
            "connections: raise it (ulimit -Hn) or use --connections"
        )
    print(f"Idle connections ({arguments.connections}):")
    idle_connections(arguments.connections, arguments.batches)
    attack("Slow readers", slow_reader, arguments.attackers, arguments.seconds)
    attack("Endless lines", endless_line, arguments.attackers, arguments.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
