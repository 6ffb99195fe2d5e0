"""
C{echoplus bench}: a closed-loop load generator for any echoplus server.

Each connection keeps C{pipeline} requests in flight: every reply that
comes back is checked and immediately replaced by a new request.  By
default the server is expected to echo (the C{echo} processor, or any chain
that gives a request back unchanged, such as C{lower} on the lowercase
payload used here); every reply is compared byte for byte with the request.
With C{expect="any"} the replies are only counted, one per request, and an
C{ERROR ...} reply counts as an error.

This is a client-side tool run from a terminal, so it uses the standard
library's C{selectors} (epoll) and non-blocking sockets directly, not a
Twisted reactor: per reply it does as little Python as it can (a whole
read's replies are checked with one comparison), which keeps the load
generator from being the bottleneck for as long as possible.  It reports
its own CPU use and warns when it was the bottleneck; C{processes} spreads
the connections over several processes.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable, TextIO

import attrs

from echoplus.benchclient import (
    BOTTLENECK_CPU,
    FRAMINGS,
    BenchOptions,
    BenchResult,
    LoadWorker,
    parse_client_endpoint,
    percentiles,
)

__all__ = [
    "BOTTLENECK_CPU",
    "BenchOptions",
    "BenchResult",
    "add_bench_command",
    "expect_hint",
    "format_summary",
    "parse_client_endpoint",
    "progress_printer",
    "run_bench",
]


def _run_child(options: BenchOptions, connections: int, results: Any) -> None:
    worker = LoadWorker(options, connections)
    result = worker.run()
    results.put((result, worker.samples, worker.weights))


def run_bench(
    options: BenchOptions,
    progress: Callable[[float, int, int], None] | None = None,
) -> BenchResult:
    """
    Run the load and return what it measured.

    With C{options.processes} above 1 the connections are shared out over
    that many processes (forked); progress comes from the first one only.

    @raise OSError: a connection could not be made.
    @raise ValueError: bad options.
    """
    if options.connections < 1 or options.pipeline < 1 or options.size < 1:
        raise ValueError("connections, pipeline and size must be at least 1")
    processes = max(1, min(options.processes, options.connections))
    shares = [options.connections // processes] * processes
    for index in range(options.connections % processes):
        shares[index] += 1
    main_worker = LoadWorker(options, shares[0])
    if processes == 1:
        return main_worker.run(progress)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [
        context.Process(target=_run_child, args=(options, share, results), daemon=True)
        for share in shares[1:]
    ]
    for child in children:
        child.start()
    first = main_worker.run(
        None if progress is None else lambda t, m, e: progress(t, m * processes, e)
    )
    gathered = [results.get(timeout=options.warmup + options.duration + 30)]
    gathered += [results.get(timeout=30) for _ in children[1:]]
    for child in children:
        child.join(timeout=5)
    samples = list(main_worker.samples)
    weights = list(main_worker.weights)
    total = first
    errors = list(first.error_samples)
    messages, errors_count, cpu = first.messages, first.errors, first.cpu
    mismatches = first.mismatches
    for result, child_samples, child_weights in gathered:
        messages += result.messages
        errors_count += result.errors
        mismatches += result.mismatches
        cpu += result.cpu
        errors += result.error_samples
        samples += child_samples
        weights += child_weights
    return attrs.evolve(
        total,
        messages=messages,
        payload_bytes=messages * options.size,
        errors=errors_count,
        cpu=cpu,
        processes=processes,
        latencies_us=percentiles(samples, weights),
        error_samples=tuple(errors[:5]),
        mismatches=mismatches,
    )


def format_summary(options: BenchOptions, result: BenchResult) -> str:
    """
    The human-readable table printed at the end of a run.
    """
    lat = result.latencies_us
    lines = [
        f"echoplus bench: {options.endpoint}  framing={options.framing}  "
        f"{options.connections} connections x {options.pipeline} pipelined  "
        f"{options.size}-byte payloads  {result.seconds:.1f} s",
        f"  {'msgs/s':<14}{result.messages_per_second:,.0f}",
        f"  {'MB/s':<14}{result.megabytes_per_second:,.2f}",
        f"  {'latency':<14}p50 {lat['p50']:,.0f} us   p90 {lat['p90']:,.0f} us   "
        f"p99 {lat['p99']:,.0f} us   p99.9 {lat['p99.9']:,.0f} us",
        f"  {'errors':<14}{result.errors}",
        f"  {'bench CPU':<14}{result.cpu:.0%} of a core"
        + (f" over {result.processes} processes" if result.processes > 1 else ""),
    ]
    lines += [f"    {sample}" for sample in result.error_samples]
    hint = expect_hint(options, result)
    if hint:
        lines.append(f"  {hint}")
    if result.bottleneck:
        lines.append(
            "  warning: echoplus bench itself was (nearly) saturated: the figure "
            "measures the load generator as much as the server; add --processes "
            "on a machine with spare cores, or use fewer connections"
        )
    return "\n".join(lines)


def expect_hint(options: BenchOptions, result: BenchResult) -> str | None:
    """
    What to do when replies did not match their requests: the server's
    chain is probably not an echo, and C{--expect any} measures it anyway.
    """
    if options.expect != "echo" or not result.mismatches:
        return None
    return (
        "hint: replies differ from their requests: if the server's chain does "
        "not echo (upper, json, prefix, ...), measure it with --expect any, "
        "which counts replies instead of comparing them"
    )


def progress_printer(stream: TextIO) -> Callable[[float, int, int], None]:
    """
    A progress callback printing one line a second to C{stream}.
    """
    last = [0.0, 0]

    def show(elapsed: float, messages: int, errors: int) -> None:
        rate = (messages - last[1]) / max(elapsed - last[0], 1e-9)
        last[0], last[1] = elapsed, messages
        stream.write(
            f"  {elapsed:5.1f} s  {rate:12,.0f} msgs/s  {messages:12,} total  "
            f"{errors} errors\n"
        )
        stream.flush()

    return show


def add_bench_command(commands: Any) -> None:
    """
    Register C{echoplus bench} on the C{echoplus} command's subparsers.
    """
    parser = commands.add_parser(
        "bench",
        help="measure an echoplus server: throughput, latency, errors",
        description=(
            "Closed-loop load on ENDPOINT: every connection keeps PIPELINE "
            "requests in flight.  Expects an echo chain (replies equal to "
            "requests; the payload is lowercase letters, so lower/echo chains "
            "qualify) unless --expect any."
        ),
    )
    parser.add_argument(
        "endpoint", metavar="ENDPOINT", help="tcp:HOST:PORT or unix:PATH"
    )
    parser.add_argument(
        "--framing",
        default="line",
        choices=FRAMINGS,
        help="the server's framing [default: line]",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        metavar="N",
        help="connections open at once, all kept busy [default: 50]",
    )
    parser.add_argument(
        "--pipeline",
        type=int,
        default=16,
        metavar="N",
        help="requests in flight per connection: each reply is replaced by "
        "a new request at once [default: 16]",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=64,
        metavar="BYTES",
        help="payload bytes [default: 64]",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to measure, after the warm-up [default: 5]",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="load before measuring starts, not counted (connections, caches "
        "and the server settle) [default: 1]",
    )
    parser.add_argument(
        "--expect",
        choices=("echo", "any"),
        default="echo",
        help="echo: each reply must equal its request; any: count replies, "
        "for chains that do not echo [default: echo]",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="load-generating processes sharing the connections, for when "
        "one process saturates a core [default: 1]",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.set_defaults(run=_main)


def _main(arguments: Any) -> int:
    import json
    import sys

    options = BenchOptions(
        endpoint=arguments.endpoint,
        framing=arguments.framing,
        connections=arguments.connections,
        pipeline=arguments.pipeline,
        size=arguments.size,
        duration=arguments.duration,
        warmup=arguments.warmup,
        expect=arguments.expect,
        processes=arguments.processes,
    )
    try:
        result = run_bench(options, progress_printer(sys.stderr))
    except (OSError, ValueError) as error:
        print(f"echoplus: error: bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("echoplus: bench: interrupted", file=sys.stderr)
        return 130
    if arguments.json:
        print(json.dumps(result.as_dict(), sort_keys=True))
        hint = expect_hint(options, result)
        if hint:
            print(f"echoplus: bench: {hint}", file=sys.stderr)
    else:
        print(format_summary(options, result))
    return 1 if result.errors else 0
