"""
Cluster broker: pub/sub through Redis across two nodes against the memory
broker on one node, side by side in one run.

    python benchmarks/cluster.py                  # 3 rounds of 5 s, 2 x 50 subscribers
    python benchmarks/cluster.py --quick
    python benchmarks/cluster.py --rounds 5 --subscribers 100 --rate 500

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
of publishes answered C{OK PUB} missing, repeated or out of order, publishes
refused, the load's own CPU, and how long the servers and the load waited
for a CPU (C{/proc/PID/schedstat}: on a shared machine, the part of the
latency that is other people's work).  Then the node CPU per publish, the
broker's fixed cost per message.  The targets are the medians of the
per-round ratios.  Redis's own C{PUBLISH} ceiling on this machine comes from
C{redis-benchmark} (package C{redis-tools}).  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from cluster_load import TOPIC, measure  # noqa: E402

from tests.redis_support import RedisServer, require_redis  # noqa: E402
from tests.support import Twistd  # noqa: E402

CPU_TARGET = 1.5  # redis vs memory, CPU per delivery, at most
P50_TARGET_MS = 1.0
_PINNING = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def _pin_to_server_core() -> None:
    os.sched_setaffinity(0, {0})


class Setup:
    """
    A running setup: node processes, their subscribers and one publisher.

    @ivar nodes: the node processes; their CPU counts as the nodes'.
    @ivar extra: pids whose CPU is measured beside them (Redis).
    @ivar refusal: the first reply to a PUB that was not C{OK PUB}.
    """

    def __init__(self, name: str, stack: ExitStack) -> None:
        self.name = name
        self.stack = stack
        self.nodes: list[Twistd] = []
        self.extra: list[int] = []
        self.subscribers: list[socket.socket] = []
        self.publisher: socket.socket | None = None
        self.refusal = ""

    def start_node(self, arguments: list[str]) -> Twistd:
        """
        Start one pubsub node on a free loopback port, pinned to core 0.
        """
        try:
            node = Twistd(
                ["--listen", "tcp:0:interface=127.0.0.1", "--processor", "pubsub"]
                + arguments,
                preexec_fn=_pin_to_server_core if _PINNING else None,
                timeout=30,
            )
        except AssertionError as failure:
            tail = "\n".join(str(failure).splitlines()[-5:])
            raise SystemExit(
                f"cluster.py: a {self.name} node did not start "
                f"(twistd -n echoplus {' '.join(arguments)}):\n{tail}"
            ) from None
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

    def measure(self, rate: int, duration: float, size: int) -> dict[str, float]:
        """
        One measurement window (see L{cluster_load.measure}).
        """
        assert self.publisher is not None
        pids = [node.process.pid for node in self.nodes]
        figures, tally = measure(
            self.publisher, self.subscribers, pids, self.extra, rate, duration, size
        )
        self.refusal = self.refusal or tally.refusal
        return figures


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
    # heading, width, key, format; "lost" (deliveries of publishes answered
    # OK PUB that never came, or came out of order) is summed over rounds
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


def print_rows(
    results: dict[str, list[dict[str, float]]], refusals: dict[str, str]
) -> None:
    """
    One line per setup: the medians of its rounds (lost: the sum).
    C{srv_wait}/C{lg_wait} are the fractions of the window the busiest
    server and the load spent waiting for a CPU.
    """
    print(f"  {'setup':23}" + "".join(f" {h:>{w - 1}}" for h, w, _, _ in COLUMNS))
    for name, rounds in results.items():
        row = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        row["lost"] = sum(r["missing"] + r["disorder"] for r in rounds)
        cells = [
            "-" if name == "memory" and key == "broker cpu us" else format(row[key], f)
            for _, _, key, f in COLUMNS
        ]
        widths = [width for _, width, _, _ in COLUMNS]
        print(
            f"  {LABELS[name]:23}"
            + "".join(f" {c:>{w - 1}}" for c, w in zip(cells, widths, strict=True))
        )
        notes = [
            (row["lg cpu"] > 0.9, "the load generator was saturated"),
            (
                max(row["server wait"], row["lg wait"]) > 0.05,
                "servers or load waited for a CPU (each other on core 0, or other "
                "work on the machine): "
                "latency includes it",
            ),
        ]
        notes += [
            (
                sum(r[key] for r in rounds) > 0,
                f"{sum(r[key] for r in rounds):.0f} {what}",
            )
            for key, what in (
                ("missing", "deliveries of publishes answered OK PUB never came"),
                ("disorder", "deliveries out of order or repeated"),
                ("timed out", "windows ended 10 s after the last publish, not drained"),
                ("gaps", "GAP lines"),
                ("refused", f"publishes refused (first: {refusals.get(name)!r})"),
                ("errors", "unexpected lines to subscribers"),
                ("miscounts", "OK PUB <n> replies with n not every subscriber"),
            )
        ]
        for shown, note in notes:
            if shown:
                print(f"    ! {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.splitlines()[1:3]))
    parser.add_argument("--rounds", type=int, help="default 3 (--quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds a setup; 5 (2)")
    parser.add_argument("--subscribers", type=int, help="per Redis node; 50 (10)")
    parser.add_argument("--rate", type=int, default=1000, help="publishes a second")
    parser.add_argument("--size", type=int, default=64, help="PUB line bytes")
    parser.add_argument("--ceiling-requests", type=int, help="200000 (50000)")
    parser.add_argument("--quick", action="store_true", help="the smaller defaults")
    options = parser.parse_args(argv)
    defaults = (1, 2.0, 10, 50000) if options.quick else (3, 5.0, 50, 200000)
    for name, default in zip(
        ("rounds", "duration", "subscribers", "ceiling_requests"), defaults, strict=True
    ):
        if getattr(options, name) is None:
            setattr(options, name, default)
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
            setup.measure(options.rate, min(1.0, options.duration), options.size)
        for number in range(options.rounds):
            for setup in setups if number % 2 == 0 else reversed(setups):
                results[setup.name].append(
                    setup.measure(options.rate, options.duration, options.size)
                )
        print_rows(results, {setup.name: setup.refusal for setup in setups})
        print(
            f"  redis-benchmark: {redis_ceiling(redis.port, options.ceiling_requests)}"
        )
    per_publish = {
        name: statistics.median(r["node cpu us/pub"] for r in rounds)
        for name, rounds in results.items()
    }
    print(
        f"  node CPU per publish: memory {per_publish['memory']:.0f} us, redis "
        f"{per_publish['redis']:.0f} us (both nodes): crossing the broker costs "
        f"{per_publish['redis'] - per_publish['memory']:+.0f} us a publish"
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
    refused = sum(r["refused"] for r in results["redis"])
    print(
        f"  {'met   ' if not lost else 'MISSED'} every OK PUB delivered once, in order,"
        f" through redis: {lost:.0f} deliveries missing or out of order"
        f" ({refused:.0f} publishes refused)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
