"""
The load side of C{cluster.py}: publish at a steady rate with the send time
in each payload, read every subscriber with C{selectors}, and count what
arrived (in order, exactly once, how late), with the servers' CPU and
run-queue time from C{/proc}.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import statistics
import time
from typing import Any, Sequence

TOPIC = b"bench"


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


class Tally:
    """
    What one measurement window read: deliveries in order per subscriber,
    their latencies, and the publisher's replies.

    @ivar refusal: the first reply that was not C{OK PUB}, if any.
    @ivar latencies: nanoseconds from each delivery's send time to its read.
    @ivar counts: C{delivered}, C{disorder} (a sequence number not above
        the last one: repeated or reordered; a skipped one is a missing
        delivery, or its publish was refused), C{gaps}
        (C{GAP} lines), C{errors} (anything else unexpected on a
        subscriber), C{acks} (C{OK PUB} replies), C{refused} (any other
        reply to a PUB, such as C{ERROR unavailable: broker}), C{miscounts}
        (C{OK PUB <n>} with n not the number of subscribers).
    """

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.latencies: list[int] = []
        self.counts = dict.fromkeys(
            ("delivered", "disorder", "gaps", "errors", "acks", "refused", "miscounts"),
            0,
        )
        self.refusal = ""
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
                counts["refused"] += 1
                self.refusal = self.refusal or line.decode(errors="replace")

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
                counts["disorder"] += seq <= last  # a skipped seq shows in "missing"
                last = seq
        self._last[sock] = last


def measure(
    publisher: socket.socket,
    subscribers: Sequence[socket.socket],
    node_pids: Sequence[int],
    broker_pids: Sequence[int],
    rate: int,
    duration: float,
    size: int,
) -> tuple[dict[str, float], Tally]:
    """
    Publish at C{rate} for C{duration} seconds and read every delivery (or
    give up 10 s after the last publish).  CPU per delivery is reported for
    C{node_pids} together and C{broker_pids} together.

    @return: the window's figures, and its L{Tally}.
    """
    total = max(1, int(rate * duration))
    wanted = total * len(subscribers)
    tally = Tally(len(subscribers))
    counts = tally.counts
    selector = selectors.DefaultSelector()
    for sock in [*subscribers, publisher]:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock is publisher)
    padding = b"x" * max(0, size - 30)
    cpu_pids = [*node_pids, *broker_pids]
    cpu_before = [cpu_seconds(pid) for pid in cpu_pids]
    waits_before = [run_queue_seconds(pid) for pid in [os.getpid(), *cpu_pids]]
    own_before = _own_cpu()
    start = now = time.perf_counter_ns()
    interval = 1e9 / rate
    sent = 0
    drain_deadline = start + int((duration + 10) * 1e9)
    timed_out = 0
    while counts["delivered"] < wanted or counts["acks"] + counts["refused"] < total:
        # a refused PUB (told to the publisher) is not waited for
        wanted = (total - counts["refused"]) * len(subscribers)
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
            timed_out = 1
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
    for sock in [*subscribers, publisher]:
        sock.setblocking(True)
    delivered = max(counts["delivered"], 1)
    nodes = len(node_pids)
    latencies_ms = [value / 1e6 for value in tally.latencies]
    figures = {
        "deliveries/s": counts["delivered"] / elapsed,
        "node cpu us": sum(spent[:nodes]) / delivered * 1e6,
        "broker cpu us": sum(spent[nodes:]) / delivered * 1e6,
        "node cpu us/pub": sum(spent[:nodes]) / max(counts["acks"], 1) * 1e6,
        "p50 ms": statistics.median(latencies_ms) if latencies_ms else 0.0,
        "p99 ms": percentile(latencies_ms, 0.99),
        "missing": counts["acks"] * len(subscribers) - counts["delivered"],
        "disorder": counts["disorder"],
        "gaps": counts["gaps"],
        "errors": counts["errors"],
        "refused": counts["refused"],
        "timed out": timed_out,
        "miscounts": counts["miscounts"],
        "lg cpu": own / elapsed,
        "lg wait": waits[0] / elapsed,
        "server wait": max(waits[1:]) / elapsed,
    }
    return figures, tally


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
