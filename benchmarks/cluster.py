"""
Cluster broker: pub/sub through Redis across two nodes against the memory
broker on one node, side by side in one run.

    python benchmarks/cluster.py                  # 3 rounds of 5 s, 2 x 50 subscribers
    python benchmarks/cluster.py --quick
    python benchmarks/cluster.py --rounds 5 --duration 5 --subscribers 100 --rate 1000

Setups, all on this machine, servers pinned to core 0 and this process (the
load) to core 1 when there are two cores:

  - C{redis}: a throw-away C{redis-server} and two C{twistd -n echoplus
    --processor pubsub --broker redis://...} nodes, N subscribers on each;
  - C{memory}: one node with C{--broker memory} and the same 2N subscribers.

The publisher is one connection to the first node sending C{PUB bench <seq>
<send time> <padding>} at a steady C{--rate}; every subscriber socket is read
here with C{selectors}.  A round measures each setup for C{--duration}
seconds (who goes first alternates) and then waits for the last deliveries.
Printed: deliveries per second, the nodes' CPU time per delivery (from
C{/proc/PID/stat}; Redis's own beside it), publish-to-delivery latency
p50/p99 (the payload's send time to the read that brought it), deliveries
missing, out of order or duplicated, and the load's own CPU.  The targets are
the medians of the per-round ratios.  Last, Redis's own C{PUBLISH} ceiling on
this machine with C{redis-benchmark}.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.redis_support import RedisServer, require_redis  # noqa: E402
from tests.support import Twistd  # noqa: E402

TOPIC = b"bench"
CPU_TARGET = 1.5  # redis vs memory, CPU per delivery, at most
P50_TARGET_MS = 1.0
_PINNING = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def _pin_to_server_core() -> None:
    os.sched_setaffinity(0, {0})


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far, in seconds.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_seconds(pid: int) -> float:
    """
    How long process C{pid}'s main thread has waited for a CPU so far, in
    seconds (C{/proc/PID/schedstat}): on a shared machine, how much of a
    latency figure is other people's work.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if values else 0.0
    )


class Setup:
    """
    A running setup: node processes, their subscribers and one publisher.

    @ivar servers: pids whose CPU counts as the nodes'.
    @ivar extra: pids measured beside them (Redis).
    """

    def __init__(self, name: str, stack: ExitStack) -> None:
        self.name = name
        self.stack = stack
        self.nodes: list[Twistd] = []
        self.extra: list[int] = []
        self.subscribers: list[socket.socket] = []
        self.publisher: socket.socket | None = None

    def start_node(self, arguments: list[str]) -> Twistd:
        node = Twistd(
            ["--listen", "tcp:0:interface=127.0.0.1", "--processor", "pubsub"]
            + arguments,
            preexec_fn=_pin_to_server_core if _PINNING else None,
            timeout=30,
        )
        self.stack.callback(node.stop)
        self.nodes.append(node)
        return node

    def subscribe(self, node: Twistd, count: int) -> None:
        """
        Open C{count} subscribers on C{node}; wait for each C{OK SUB}.
        """
        opened = []
        for _ in range(count):
            sock = node.connect(timeout=10)
            self.stack.callback(sock.close)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"SUB " + TOPIC + b"\n")
            opened.append(sock)
        for sock in opened:
            if _read_line(sock) != b"OK SUB " + TOPIC:
                raise SystemExit(f"{self.name}: a subscriber was not subscribed")
        self.subscribers += opened

    def connect_publisher(self) -> None:
        self.publisher = self.nodes[0].connect(timeout=10)
        self.stack.callback(self.publisher.close)
        self.publisher.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """
        Publish until a PUB counts every subscriber and each received one
        (the nodes see each other), then drain what is left.
        """
        assert self.publisher is not None
        wanted = len(self.subscribers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publisher.sendall(b"PUB " + TOPIC + b" ready\n")
            reply = _read_line(self.publisher)
            time.sleep(0.3)
            if reply == b"OK PUB %d" % wanted and all(
                _drain(sock) for sock in self.subscribers
            ):
                return
        raise SystemExit(f"{self.name}: not ready within {timeout:g} s ({reply!r})")

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes]


def _read_line(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("the server closed a connection")
        data += chunk
    return data[:-1]


def _drain(sock: socket.socket) -> bool:
    """
    Read what is waiting on C{sock} without blocking; whether anything was.
    """
    sock.setblocking(False)
    got = False
    try:
        while sock.recv(65536):
            got = True
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return got


class Tally:
    """
    What one measurement window read: deliveries in order per subscriber,
    their latencies, and the publisher's replies.

    @ivar latencies: nanoseconds from each delivery's send time to its read.
    @ivar counts: C{delivered}, C{disorder} (a sequence number that is not
        the last one plus one: lost, duplicated or reordered), C{gaps}
        (C{GAP} lines), C{errors} (anything else unexpected), C{acks}
        (C{OK PUB} replies), C{miscounts} (C{OK PUB <n>} with n not the
        number of subscribers).
    """

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.latencies: list[int] = []
        self.counts = dict.fromkeys(
            ("delivered", "disorder", "gaps", "errors", "acks", "miscounts"), 0
        )
        self._pending: dict[Any, bytes] = {}
        self._last: dict[Any, int] = {}

    def read(self, sock: Any, publisher: bool = False) -> None:
        """
        Read one chunk from C{sock} and count its complete lines.
        """
        try:
            data = sock.recv(1 << 18)
        except BlockingIOError:
            return
        received = time.perf_counter_ns()
        if not data:
            raise SystemExit("a node closed a connection during the run")
        lines = (self._pending.pop(sock, b"") + data).split(b"\n")
        if lines[-1]:
            self._pending[sock] = lines[-1]
        del lines[-1]
        if publisher:
            self._replies(lines)
        else:
            self._deliveries(sock, lines, received)

    def _replies(self, lines: list[bytes]) -> None:
        counts = self.counts
        expected = b"OK PUB %d" % (self.subscribers,)
        for line in lines:
            if line.startswith(b"OK PUB "):
                counts["acks"] += 1
                counts["miscounts"] += line != expected
            else:
                counts["errors"] += 1

    def _deliveries(self, sock: Any, lines: list[bytes], received: int) -> None:
        counts = self.counts
        last = self._last.get(sock, -1)
        for line in lines:
            parts = line.split(b" ", 4)
            if parts[0] == b"GAP":
                counts["gaps"] += 1
            elif parts[0] == b"MSG" and parts[2:3] == [b"ready"]:
                continue  # wait_ready's probes, late
            elif parts[0] != b"MSG" or len(parts) < 4:
                counts["errors"] += 1
            else:
                seq = int(parts[2])
                self.latencies.append(received - int(parts[3]))
                counts["delivered"] += 1
                counts["disorder"] += seq != last + 1
                last = seq
        self._last[sock] = last


def measure(setup: Setup, rate: int, duration: float, size: int) -> dict[str, float]:
    """
    Publish at C{rate} for C{duration} seconds and read every delivery (or
    give up 10 s after the last publish).
    """
    publisher = setup.publisher
    assert publisher is not None
    total = max(1, int(rate * duration))
    wanted = total * len(setup.subscribers)
    tally = Tally(len(setup.subscribers))
    counts = tally.counts
    selector = selectors.DefaultSelector()
    for sock in [*setup.subscribers, publisher]:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock is publisher)
    padding = b"x" * max(0, size - 30)
    cpu_pids = setup.pids() + setup.extra
    cpu_before = [cpu_seconds(pid) for pid in cpu_pids]
    waits_before = [run_queue_seconds(pid) for pid in [os.getpid(), *cpu_pids]]
    own_before = _own_cpu()
    start = now = time.perf_counter_ns()
    interval = 1e9 / rate
    sent = 0
    drain_deadline = start + int((duration + 10) * 1e9)
    while counts["delivered"] < wanted or counts["acks"] + counts["errors"] < total:
        now = time.perf_counter_ns()
        if sent < total:
            due = min(total, int((now - start) / interval) + 1)
            if due > sent:
                publisher.sendall(
                    b"".join(
                        b"PUB %s %d %d %s\n" % (TOPIC, seq, now, padding)
                        for seq in range(sent, due)
                    )
                )
                sent = due
            wait = (start + sent * interval - time.perf_counter_ns()) / 1e9
        elif now > drain_deadline:
            break
        else:
            wait = 0.1
        for key, _ in selector.select(timeout=max(wait, 0)):
            tally.read(key.fileobj, key.data)
    elapsed = (now - start) / 1e9
    own = _own_cpu() - own_before
    spent = [
        cpu_seconds(pid) - before
        for pid, before in zip(cpu_pids, cpu_before, strict=True)
    ]
    waits = [
        run_queue_seconds(pid) - before
        for pid, before in zip([os.getpid(), *cpu_pids], waits_before, strict=True)
    ]
    selector.close()
    for sock in [*setup.subscribers, publisher]:
        sock.setblocking(True)
    delivered = max(counts["delivered"], 1)
    nodes = len(setup.nodes)
    latencies_ms = [value / 1e6 for value in tally.latencies]
    return {
        "deliveries/s": counts["delivered"] / elapsed,
        "node cpu us": sum(spent[:nodes]) / delivered * 1e6,
        "broker cpu us": sum(spent[nodes:]) / delivered * 1e6,
        "p50 ms": statistics.median(latencies_ms) if latencies_ms else 0.0,
        "p99 ms": percentile(latencies_ms, 0.99),
        "missing": wanted - counts["delivered"],
        "disorder": counts["disorder"],
        "gaps": counts["gaps"],
        "errors": counts["errors"],
        "miscounts": counts["miscounts"],
        "lg cpu": own / elapsed,
        "lg wait": waits[0] / elapsed,
        "server wait": max(waits[1:]) / elapsed,
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_ceiling(port: int, requests: int) -> str:
    """
    Redis's own PUBLISH rate (no subscribers on the channel), from
    C{redis-benchmark} pinned to the load's core.
    """
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return "redis-benchmark not installed (Debian: redis-tools)"
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-q", "-n", str(requests)]
    command += ["PUBLISH", "bench-ceiling", "x" * 64]
    if _PINNING and shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120)
    text = (output.stdout + output.stderr).replace("\r", "\n")
    lines = [line for line in text.splitlines() if "requests per second" in line]
    if not lines:
        return f"redis-benchmark failed: {text.strip()[-200:]}"
    match = re.search(
        r"([\d.]+) requests per second(?:, p50=([\d.]+) msec)?", lines[-1]
    )
    assert match is not None
    p50 = f", p50 {match.group(2)} ms" if match.group(2) else ""
    return f"{float(match.group(1)):,.0f} PUBLISH/s (50 clients, 64-byte messages{p50})"


def start_setups(
    stack: ExitStack, subscribers: int
) -> tuple[Setup, Setup, RedisServer]:
    """
    Start Redis, the two Redis nodes and the memory node, subscribed and
    ready.
    """
    wrapper = ["taskset", "-c", "0"] if _PINNING and shutil.which("taskset") else []
    redis = RedisServer(wrapper=wrapper)
    stack.callback(redis.close)
    prefix = f"bench{os.getpid()}"
    clustered = Setup("redis", stack)
    clustered.extra = [redis.process.pid] if redis.process else []
    broker = ["--broker", redis.url, "--broker-prefix", prefix]
    for _ in range(2):
        clustered.subscribe(clustered.start_node(broker), subscribers)
    clustered.connect_publisher()
    memory = Setup("memory", stack)
    memory.subscribe(memory.start_node(["--broker", "memory"]), 2 * subscribers)
    memory.connect_publisher()
    for setup in (clustered, memory):
        setup.wait_ready()
    return clustered, memory, redis


def verdict(name: str, values: list[float], bound: float, unit: str) -> str:
    value = statistics.median(values)
    word = "met   " if value <= bound else "MISSED"
    spread = f"rounds {min(values):.2f}-{max(values):.2f}"
    return f"  {word} {name}: {value:.2f}{unit} (target <= {bound:.2f}{unit}; {spread})"


LABELS = {"memory": "memory broker, 1 node", "redis": "redis broker, 2 nodes"}
COLUMNS = (
    # heading, width, key, format; "lost" is missing + disorder, summed
    ("deliv/s", 10, "deliveries/s", ",.0f"),
    ("node us/dlv", 12, "node cpu us", ".2f"),
    ("redis us/dlv", 13, "broker cpu us", ".2f"),
    ("p50 ms", 8, "p50 ms", ".3f"),
    ("p99 ms", 8, "p99 ms", ".3f"),
    ("lost", 6, "lost", ".0f"),
    ("lg_cpu", 7, "lg cpu", ".2f"),
    ("srv_wait", 9, "server wait", ".2f"),
    ("lg_wait", 8, "lg wait", ".2f"),
)


def print_rows(results: dict[str, list[dict[str, float]]]) -> None:
    """
    One line per setup: the medians of its rounds (lost: the sum).
    C{srv_wait}/C{lg_wait} are the fractions of the window the busiest
    server and the load spent waiting for a CPU.
    """
    print(f"  {'setup':24}" + "".join(f"{h:>{w}}" for h, w, _, _ in COLUMNS))
    for name, rounds in results.items():
        row = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        row["lost"] = sum(r["missing"] + r["disorder"] for r in rounds)
        cells = [
            "-" if name == "memory" and key == "broker cpu us" else format(row[key], f)
            for _, _, key, f in COLUMNS
        ]
        widths = [width for _, width, _, _ in COLUMNS]
        print(
            f"  {LABELS[name]:24}"
            + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
        notes = [
            (row["lg cpu"] > 0.9, "the load generator was saturated"),
            (
                max(row["server wait"], row["lg wait"]) > 0.05,
                "processes waited for a CPU (other work on the machine): "
                "latency includes it",
            ),
        ]
        notes += [
            (
                sum(r[key] for r in rounds) > 0,
                f"{sum(r[key] for r in rounds):.0f} {what}",
            )
            for key, what in (
                ("gaps", "GAP lines"),
                ("errors", "unexpected lines (ERROR ...)"),
                ("miscounts", "OK PUB <n> replies with n not every subscriber"),
            )
        ]
        for shown, note in notes:
            if shown:
                print(f"    ! {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a setup")
    parser.add_argument("--subscribers", type=int, default=50, help="per Redis node")
    parser.add_argument("--rate", type=int, default=1000, help="publishes a second")
    parser.add_argument("--size", type=int, default=64, help="PUB line bytes")
    parser.add_argument("--ceiling-requests", type=int, default=200000)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 2 x 10")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration, options.subscribers = 1, 2.0, 10
        options.ceiling_requests = 50000
    require_redis()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if _PINNING:
        os.sched_setaffinity(0, {1})
    print(
        f"cluster broker: 2 nodes x {options.subscribers} subscribers vs 1 node x "
        f"{2 * options.subscribers}; {options.rate} PUB/s of {options.size} bytes; "
        f"{options.rounds} rounds of {options.duration:g} s"
        + ("; servers on core 0, load on core 1" if _PINNING else "; not pinned")
    )
    results: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
    with ExitStack() as stack:
        clustered, memory, redis = start_setups(stack, options.subscribers)
        print(f"  redis-server {redis.version()} on port {redis.port}")
        setups = [memory, clustered]
        for setup in setups:  # prime each with a short throw-away window
            measure(setup, options.rate, min(1.0, options.duration), options.size)
        for number in range(options.rounds):
            for setup in setups if number % 2 == 0 else reversed(setups):
                results[setup.name].append(
                    measure(setup, options.rate, options.duration, options.size)
                )
        print_rows(results)
        print(
            f"  redis-benchmark: {redis_ceiling(redis.port, options.ceiling_requests)}"
        )
    cpu_ratios = [
        r["node cpu us"] / m["node cpu us"]
        for r, m in zip(results["redis"], results["memory"], strict=True)
        if m["node cpu us"] > 0
    ]
    print("targets (issue 13):")
    if cpu_ratios:
        print(
            verdict(
                "node CPU per delivery, redis vs memory", cpu_ratios, CPU_TARGET, "x"
            )
        )
    print(
        verdict(
            f"p50 publish-to-delivery through redis at {options.rate}/s",
            [r["p50 ms"] for r in results["redis"]],
            P50_TARGET_MS,
            " ms",
        )
    )
    lost = sum(r["missing"] + r["disorder"] for r in results["redis"])
    print(
        f"  {'met   ' if not lost else 'MISSED'} exactly once, in order: {lost:.0f} off"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
