"""
The echoplus benchmark runner: echoplus against Twisted and asyncio peers,
side by side, in one run.

    python benchmarks/run.py                 # quick: line echo vs LineReceiver
    python benchmarks/run.py --full          # every scenario, table and chart
    python benchmarks/run.py --scenarios line,latency --rounds 5

Every server runs pinned to core 0 (C{taskset -c 0}) and the load to core 1.
Each server is primed with a throw-away run, then the servers of a scenario
take turns, round after round (interleaved, so slow drift of a noisy
machine hits all of them alike), and the table shows medians.  Each
target is the median of its per-round ratios (the two servers measured in
the same round), printed with their range.  The load for line, int32,
netstring and raw comes from C{loadgen.c} beside this file (C, epoll; a
copy of C{../shared/tools/loadgen} extended with netstring, built with
C{gcc -O2} into a temporary directory), or from C{--loadgen PATH}; without
gcc, with C{--python-load}, and for websocket it comes from C{echoplus
bench}.  The load generator's CPU use is shown: near 100% the figure
measures it, not the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from scenarios import SCENARIOS, TARGETS, Results, Scenario, ServerSpec

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
LOADGEN_SOURCE = HERE / "loadgen.c"
PYTHON = sys.executable
_LISTENING = re.compile(r"echoplus listening on \S+ at \S+:(\d+)")
_PEER_LISTENING = re.compile(r"listening on (\d+)")
#: Seconds both load generators run before they start counting.
WARMUP = 1.0


def median(values: Sequence[float]) -> float:
    """The median of C{values} (0 for none)."""
    return statistics.median(values) if values else 0.0


def target_verdict(
    name: str, ratios: Sequence[float], bound: float, at_most: bool = False
) -> str:
    """
    One line saying whether a target holds: C{met} or C{MISSED} with the
    median of the per-round ratios, and their range.
    """
    value = median(ratios)
    spread = f"rounds {min(ratios):.2f}-{max(ratios):.2f}"
    if not bound:
        return f"  info   {name}: {value:.2f}x ({spread})"
    ok = value <= bound if at_most else value >= bound
    sign = "<=" if at_most else ">="
    word = "met   " if ok else "MISSED"
    return f"  {word} {name}: {value:.2f}x (target {sign} {bound:.2f}x; {spread})"


def _pinned(core: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *command]
    return command


class Server:
    """One running server process, pinned to core 0."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        environment = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        environment = {
            k: v for k, v in environment.items() if not k.startswith("ECHOPLUS_")
        }
        environment.update(spec.environment)
        if spec.peer:
            command = [PYTHON, str(HERE / "peers.py"), spec.peer, "0"]
            pattern = _PEER_LISTENING
        else:
            launcher = (
                [PYTHON, str(HERE / "twistd_uvloop.py")]
                if spec.reactor == "uvloop"
                else [PYTHON, "-c", "from twisted.scripts.twistd import run; run()"]
            )
            reactor = (
                ["--reactor", spec.reactor]
                if spec.reactor not in ("", "uvloop")
                else []
            )
            command = [
                *launcher,
                "-n",
                "--pidfile=",
                *reactor,
                "echoplus",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                *spec.arguments,
            ]
            pattern = _LISTENING
        self.process = subprocess.Popen(
            _pinned(0, command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env=environment,
        )
        self.port = self._wait_for_port(pattern)
        # Keep reading its output: a server blocked on a full pipe (asyncio
        # logs every reset connection) would measure as zero.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def _wait_for_port(self, pattern: re.Pattern[str]) -> int:
        assert self.process.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = pattern.search(line)
            if match:
                return int(match.group(1))
        self.stop()
        raise RuntimeError(f"{self.spec.label} did not start:\n{''.join(seen)}")

    def rss_kib(self) -> int:
        """The server's resident memory now, in KiB."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def cpu_seconds(self) -> float:
        """The CPU time (user + system) the server has used so far."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def build_loadgen(explicit: str | None) -> str | None:
    """
    The C load generator's path: given, or built from C{loadgen.c} (not a
    C{loadgen} on PATH, which may be the shared one, without netstring);
    L{None} without gcc.
    """
    if explicit:
        return explicit
    if not LOADGEN_SOURCE.exists() or not shutil.which("gcc"):
        return None
    target = Path(tempfile.mkdtemp(prefix="echoplus-bench-")) / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(target), str(LOADGEN_SOURCE)], check=True)
    return str(target)


def run_load(
    loadgen: str | None, scenario: Scenario, port: int, seconds: float
) -> dict[str, float]:
    """Drive one server once; return msgs_per_s, MBps, p50_us, p99_us, lg_cpu."""
    if loadgen and scenario.mode in ("line", "int32", "netstring", "raw"):
        command = [
            loadgen,
            str(port),
            str(scenario.connections),
            str(scenario.pipeline),
            str(scenario.size),
            str(seconds),
            scenario.mode,
        ]
        output = subprocess.run(
            _pinned(1, command), capture_output=True, text=True, timeout=seconds + 30
        )
        fields = dict(re.findall(r"(\w+)=([\d.]+)", output.stdout))
        if "msgs_per_s" not in fields:
            raise RuntimeError(f"loadgen failed: {output.stdout}{output.stderr}")
        result = {key: float(value) for key, value in fields.items()}
        result["errors"] = result.get("errors", 0.0)
        return result
    size = scenario.size - 1 if scenario.mode == "line" else scenario.size
    command = [
        PYTHON,
        "-m",
        "echoplus",
        "bench",
        f"tcp:127.0.0.1:{port}",
        "--framing",
        scenario.mode,
        "--connections",
        str(scenario.connections),
        "--pipeline",
        str(scenario.pipeline),
        "--size",
        str(size),
        "--duration",
        str(seconds),
        "--json",
    ]
    output = subprocess.run(
        _pinned(1, command),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        report = json.loads(output.stdout)
    except ValueError:
        raise RuntimeError(f"echoplus bench failed: {output.stdout}{output.stderr}")
    return {
        "msgs_per_s": report["msgs_per_s"],
        "MBps": report["MBps"],
        "p50_us": report["latency_us"]["p50"],
        "p99_us": report["latency_us"]["p99"],
        "lg_cpu": report["bench_cpu"],
        "errors": float(report["errors"]),
    }


def run_scenario(
    scenario: Scenario, loadgen: str | None, rounds: int, seconds: float
) -> dict[str, dict[str, float]]:
    """
    Start the scenario's servers, prime each, run interleaved rounds;
    return each server's medians.
    """
    print(f"\n== {scenario.name}: {scenario.describe()}", flush=True)
    servers = []
    try:
        for spec in scenario.servers:
            servers.append(Server(spec))
        for server in servers:
            run_load(loadgen, scenario, server.port, 1)  # prime, thrown away
        samples: dict[str, list[dict[str, float]]] = {s.spec.label: [] for s in servers}
        rss: dict[str, int] = {}
        for round_number in range(rounds):
            order = (
                servers[round_number % len(servers) :]
                + servers[: round_number % len(servers)]
            )
            for server in order:
                cpu_before = server.cpu_seconds()
                result = run_load(loadgen, scenario, server.port, seconds)
                # Server CPU per message: a figure noise moves much less
                # than throughput.  Both load generators warm up for 1 s
                # at about the measured rate before they count.
                served = result["msgs_per_s"] * (seconds + WARMUP)
                result["cpu_us"] = (
                    (server.cpu_seconds() - cpu_before) / served * 1e6
                    if served
                    else 0.0
                )
                samples[server.spec.label].append(result)
                rss[server.spec.label] = max(
                    rss.get(server.spec.label, 0), server.rss_kib()
                )
                print(
                    f"  round {round_number + 1} {server.spec.label:<26}"
                    f"{result['msgs_per_s']:>12,.0f} msgs/s  "
                    f"lg_cpu {result['lg_cpu']:.2f}",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    table: dict[str, dict[str, Any]] = {}
    for label, results in samples.items():
        row: dict[str, Any] = {
            key: median([r[key] for r in results]) for key in results[0]
        }
        row["rss_kib"] = rss.get(label, 0)
        row["rounds"] = results
        table[label] = row
    return table


def print_table(scenario: Scenario, rows: dict[str, dict[str, float]]) -> None:
    """
    The scenario's table, with echoplus's ratio to every peer: by
    throughput (the targets) and by server CPU per message (less noisy).
    """
    ours = rows[scenario.servers[0].label]
    print(
        f"\n{scenario.name}  ({scenario.describe()})\n"
        f"  {'server':<28}{'msgs/s':>11}{'MB/s':>9}{'p50 us':>9}{'p99 us':>9}"
        f"{'RSS MiB':>8}{'lg_cpu':>7}{'cpu us/msg':>11}{'ours x':>8}{'by cpu':>8}"
    )
    for label, row in rows.items():
        ratio = cpu_ratio = ""
        if row is not ours:
            if row["msgs_per_s"]:
                ratio = f"{ours['msgs_per_s'] / row['msgs_per_s']:.2f}x"
            if ours.get("cpu_us"):
                cpu_ratio = f"{row.get('cpu_us', 0) / ours['cpu_us']:.2f}x"
        print(
            f"  {label:<28}{row['msgs_per_s']:>11,.0f}{row['MBps']:>9,.1f}"
            f"{row['p50_us']:>9,.0f}{row['p99_us']:>9,.0f}"
            f"{row['rss_kib'] / 1024:>8.1f}{row['lg_cpu']:>7.2f}"
            f"{row.get('cpu_us', 0):>11.2f}{ratio:>8}{cpu_ratio:>8}"
        )
        if row.get("errors"):
            print(f"    ! {label}: {row['errors']:.0f} errors")
        if row["lg_cpu"] >= 0.9:
            print(f"    ! the load generator was saturated for {label}")


def check_targets(results: Results) -> list[str]:
    """A verdict line for every target whose scenario ran."""
    lines = []
    for target in TARGETS:
        ratios = target.ratios(results)
        if not ratios:
            continue
        lines.append(target_verdict(target.name, ratios, target.bound, target.at_most))
    return lines


def _codecs_built() -> str:
    """
    Which codecs the echoplus servers of this checkout use by default.
    """
    result = subprocess.run(
        [PYTHON, "-c", "import echoplus.framing as f; print(f.IMPLEMENTATION)"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")},
    )
    implementation = result.stdout.strip() or "unknown"
    if implementation != "compiled":
        implementation += (
            " (NOT compiled: build them with `python setup.py build_ext --inplace`)"
        )
    return implementation


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 0 (the verdicts are printed, not an exit status)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every scenario")
    parser.add_argument("--scenarios", help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds a run")
    parser.add_argument(
        "--loadgen", help="path of the C load generator (built from loadgen.c)"
    )
    parser.add_argument("--python-load", action="store_true", help="use echoplus bench")
    parser.add_argument("--chart", help="write the chart here (PNG or SVG)")
    parser.add_argument("--json", help="write the medians here")
    arguments = parser.parse_args(argv)
    if arguments.scenarios:
        names = arguments.scenarios.split(",")
    elif arguments.full:
        names = list(SCENARIOS)
    else:
        names = ["quick"]
    loadgen = None if arguments.python_load else build_loadgen(arguments.loadgen)
    print(
        f"echoplus codecs: {_codecs_built()} "
        "(the rows marked 'pure Python' force them off)"
    )
    print(
        f"load generator: {loadgen or 'echoplus bench (Python)'}; "
        f"{arguments.rounds} interleaved rounds of {arguments.duration:g} s; "
        f"{os.cpu_count()} cores (server on core 0, load on core 1)"
    )
    results: Results = {}
    for name in names:
        scenario = SCENARIOS[name]
        results[name] = run_scenario(
            scenario, loadgen, arguments.rounds, arguments.duration
        )
    for name in names:
        print_table(SCENARIOS[name], results[name])
    print("\ntargets (issues 6 and 15):")
    for line in check_targets(results):
        print(line)
    print(
        "  (memory per idle connection: benchmarks/memory.py; --workers scaling "
        "needs more than 2 cores and is not measured here)"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=1))
    if arguments.chart:
        from chart import draw

        draw(results, arguments.chart)
        print(f"chart written to {arguments.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
