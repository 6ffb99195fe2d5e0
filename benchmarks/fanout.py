"""
Fan-out: what one PUB to many subscribers costs.

    python benchmarks/fanout.py                      # both parts, 1000 subscribers
    python benchmarks/fanout.py --subscribers 200 --publishes 100

Part 1, in process: the real factory and protocols on null transports; one
push to N connections with C{fan_out} (the frame encoded once per wire
format, through C{context.send_shared}) against N separate C{context.send}
calls (encoded once per connection).  Reported as deliveries per second.

Part 2, end to end: C{twistd -n echoplus --processor pubsub} on a loopback
port, N subscriber sockets and one publisher, all read by this process with
C{selectors}.  Each PUB waits for every delivery before the next, so the
figures are the publish-to-delivery latency (to the first and to the last
subscriber) and deliveries per second of that closed loop.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from echoplus.config import ListenerSettings  # noqa: E402
from echoplus.factory import EchoPlusFactory  # noqa: E402
from echoplus.processors.shared import fan_out  # noqa: E402
from tests.support import Twistd  # noqa: E402


class _NullTransport(StringTransport):
    """
    A transport that forgets what is written.
    """

    def write(self, data: bytes) -> None:
        pass


def in_process(subscribers: int, rounds: int, framing: str) -> dict[str, float]:
    """
    Deliveries per second of one push to C{subscribers} connections.
    """
    factory = EchoPlusFactory(ListenerSettings(framing=framing), Clock())
    contexts = []
    for _ in range(subscribers):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(_NullTransport())
        contexts.append(protocol.context)
    payload = b"MSG topic " + b"x" * 100
    results = {}
    for name in ("fan_out (shared encode)", "send per connection"):
        started = time.perf_counter()
        for _ in range(rounds):
            if name.startswith("fan_out"):
                fan_out(contexts, payload)
            else:
                for context in contexts:
                    context.send(payload)
        elapsed = time.perf_counter() - started
        results[name] = subscribers * rounds / elapsed
    return results


def end_to_end(subscribers: int, publishes: int, size: int) -> dict[str, float]:
    """
    Publish-to-delivery latency and deliveries per second through twistd.
    """
    server = Twistd(["--listen", "tcp:0:interface=127.0.0.1", "--processor", "pubsub"])
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for _ in range(subscribers):
            sock = server.connect()
            sock.sendall(b"SUB bench\n")
            sockets.append(sock)
        for sock in sockets:
            _read_lines(sock, 1)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        publisher = server.connect()
        message = b"PUB bench " + b"x" * size + b"\n"
        first, last = [], []
        cpu_before = _cpu_seconds(server.process.pid)
        started = time.perf_counter()
        for _ in range(publishes):
            sent = time.perf_counter()
            publisher.sendall(message)
            times = _deliveries(selector, subscribers)
            first.append(times[0] - sent)
            last.append(times[-1] - sent)
            _read_lines(publisher, 1)
        elapsed = time.perf_counter() - started
        server_cpu = _cpu_seconds(server.process.pid) - cpu_before
    finally:
        for sock in sockets:
            sock.close()
        server.stop()
    return {
        "latency to first subscriber, median (ms)": statistics.median(first) * 1e3,
        "latency to last subscriber, median (ms)": statistics.median(last) * 1e3,
        "latency to last subscriber, p99 (ms)": _percentile(last, 0.99) * 1e3,
        "deliveries per second": subscribers * publishes / elapsed,
        "server CPU per delivery (us)": server_cpu / (subscribers * publishes) * 1e6,
    }


def _deliveries(selector: selectors.BaseSelector, count: int) -> list[float]:
    """
    Wait until each subscriber has read one whole line; return when each did.
    """
    pending: dict[socket.socket, bytes] = {}
    done: list[float] = []
    deadline = time.monotonic() + 30
    while len(done) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            data = pending.get(sock, b"") + sock.recv(1 << 16)  # type: ignore[union-attr]
            if data.endswith(b"\n"):
                done.append(time.perf_counter())
                pending.pop(sock, None)  # type: ignore[arg-type]
            else:
                pending[sock] = data  # type: ignore[index]
    if len(done) < count:
        raise SystemExit(f"only {len(done)} of {count} deliveries arrived")
    return done


def _cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far, in seconds.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_lines(sock: socket.socket, count: int) -> None:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("the server closed a connection")
        data += chunk


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--skip-end-to-end", action="store_true")
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"fan-out to {options.subscribers} subscribers")
    for framing in ("line", "int32"):
        for name, rate in in_process(
            options.subscribers, options.rounds, framing
        ).items():
            print(
                f"  in process, {framing:5} {name:26} {rate / 1e6:6.2f} M deliveries/s"
            )
    if not options.skip_end_to_end:
        results = end_to_end(options.subscribers, options.publishes, options.size)
        for name, value in results.items():
            print(f"  twistd, {name:42} {value:10.2f}")


if __name__ == "__main__":
    main()
