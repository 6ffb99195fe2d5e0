"""
The data path without sockets: what one message costs inside echoplus.

    python benchmarks/inprocess.py                  # ns per message, per framing
    python benchmarks/inprocess.py --profile line   # cProfile of one case
    python benchmarks/inprocess.py --instructions   # instructions per message

Each case runs the real L{EchoPlusFactory} and protocol (framing, ordered
dispatch, the chain, default limits) on a C{StringTransport} with a
C{task.Clock}, feeding chunks of C{--batch} pipelined messages, as a busy
connection's reads look.  No reactor, no socket, no other process: the
figure moves only when the code does, so a regression shows even on a
busy machine.  C{--instructions} runs each case under valgrind's callgrind
twice (N and 2N messages) and reports the difference per message, which is
independent of the machine's load altogether.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from echoplus.config import ListenerSettings  # noqa: E402
from echoplus.factory import EchoPlusFactory  # noqa: E402
from echoplus.framing import ACCELERATED, NO_EXTENSIONS_VARIABLE  # noqa: E402
from echoplus.metrics import Metrics  # noqa: E402
from echoplus.processors.chain import parse_chain  # noqa: E402
from echoplus.protocols import FRAMINGS  # noqa: E402

#: The cases: name -> (framing, processor chain).
CASES: dict[str, tuple[str, str]] = {
    "line": ("line", "echo"),
    "int32": ("int32", "echo"),
    "int16": ("int16", "echo"),
    "netstring": ("netstring", "echo"),
    "raw": ("raw", "echo"),
    "line-chain3": ("line", "echo,echo,echo"),
    "line-upper": ("line", "upper"),
    # The same as "line" with Prometheus metrics on: the cost of counting.
    "line-metrics": ("line", "echo"),
}


def connection(case: str) -> tuple[object, StringTransport, bytes, bytes]:
    """
    A connected protocol for C{case}; return it, its transport, one
    message's frame and its payload.
    """
    framing, chain = CASES[case]
    settings = ListenerSettings(
        endpoint="tcp:0", framing=framing, processors=parse_chain(chain)
    )
    factory = EchoPlusFactory(settings, Clock())
    if case.endswith("-metrics"):
        factory.metrics = Metrics().for_listener(factory.name, factory.connections)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    payload = bytes(0x61 + i % 26 for i in range(63))
    encoder = protocol._encoder
    return protocol, transport, encoder.encode(payload), payload


def drive(case: str, messages: int, batch: int) -> float:
    """
    Feed C{messages} messages in chunks of C{batch}; return seconds taken.
    """
    protocol, transport, frame, _ = connection(case)
    framing = CASES[case][0]
    chunk = frame if framing == "raw" else frame * batch
    per_chunk = 1 if framing == "raw" else batch
    rounds = max(1, messages // per_chunk)
    received = protocol.dataReceived
    clear = transport.clear
    start = time.perf_counter()
    for index in range(rounds):
        received(chunk)
        if index & 63 == 63:
            clear()
    elapsed = time.perf_counter() - start
    value = transport.value()
    expected = chunk * (rounds & 63)
    if case == "line-upper":
        value = value.lower()
    if framing != "raw" and value != expected:
        raise AssertionError(f"{case}: the replies differ from the requests")
    return elapsed / (rounds * per_chunk)


NO_EXTENSIONS = NO_EXTENSIONS_VARIABLE


def timings(cases: list[str], messages: int, batch: int, repeat: int) -> None:
    """Print the best-of-C{repeat} cost per message of every case."""
    implementation = "compiled" if ACCELERATED else "pure Python"
    print(
        f"in-process data path ({implementation} codecs): {batch} messages a "
        f"read, best of {repeat}"
    )
    print(f"  {'case':<14}{'ns/msg':>9}{'msgs/s (1 core)':>18}")
    for case in cases:
        best = min(drive(case, messages, batch) for _ in range(repeat))
        print(f"  {case:<14}{best * 1e9:>9,.0f}{1 / best:>18,.0f}")


def profile(case: str, messages: int, batch: int) -> None:
    """Print the functions that dominate C{case}, by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(drive, case, messages, batch)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(14)


def instructions(cases: list[str], messages: int, batch: int) -> None:
    """
    Print instructions per message, measured with callgrind, on the
    compiled codecs (when built) and on the pure-Python ones.
    """
    if not shutil.which("valgrind"):
        print("valgrind is not installed: no instruction counts")
        return
    paths = {"pure Python": {NO_EXTENSIONS: "1"}}
    if ACCELERATED:
        paths = {"compiled": {NO_EXTENSIONS: ""}, **paths}
    else:
        print("(the compiled codecs are not built: pure Python only)")
    print(f"instructions per message (callgrind; {batch} messages a read)")
    print(f"  {'case':<14}" + "".join(f"{path:>14}" for path in paths), end="")
    print(f"{'ratio':>8}" if len(paths) == 2 else "")
    for case in cases:
        drive(case, batch, batch)  # every module compiled before counting
        figures = []
        for environ in paths.values():
            counts = [
                _callgrind(case, n, batch, environ) for n in (messages, 2 * messages)
            ]
            figures.append((counts[1] - counts[0]) / messages)
        line = f"  {case:<14}" + "".join(f"{figure:>14,.0f}" for figure in figures)
        if len(figures) == 2:
            line += f"{figures[0] / figures[1]:>7.2f}x"
        print(line)


def _callgrind(case: str, messages: int, batch: int, environ: dict[str, str]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--run-only",
        case,
        "--messages",
        str(messages),
        "--batch",
        str(batch),
    ]
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        # The same hash seed for both runs: dict and set layouts, and so
        # the instructions spent starting up, do not differ between them.
        env=dict(os.environ, PYTHONHASHSEED="0", **environ),
    )
    match = re.search(r"Collected\s*:\s*(\d+)", output.stderr)
    if not match:
        raise RuntimeError(f"callgrind failed:\n{output.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    """Run what the command line asks for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"of: {', '.join(CASES)}")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--run-only", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.cases = arguments.cases or list(CASES)
    unknown = set(arguments.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    assert set(f for f, _ in CASES.values()) <= set(FRAMINGS)
    if arguments.run_only:
        drive(arguments.run_only, arguments.messages, arguments.batch)
    elif arguments.profile:
        profile(arguments.cases[0], arguments.messages, arguments.batch)
    elif arguments.instructions:
        instructions(arguments.cases, min(arguments.messages, 20_000), arguments.batch)
    else:
        timings(arguments.cases, arguments.messages, arguments.batch, arguments.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
