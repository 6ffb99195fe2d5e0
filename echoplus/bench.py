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

import math
import multiprocessing
import resource
import selectors
import socket
import time
from collections import deque
from typing import Any, Callable, Sequence, TextIO

import attrs

from echoplus.framing import (
    IntPrefixDecoder,
    IntPrefixEncoder,
    LineDecoder,
    LineEncoder,
    NetstringDecoder,
    NetstringEncoder,
)

__all__ = [
    "BenchOptions",
    "BenchResult",
    "format_summary",
    "parse_client_endpoint",
    "run_bench",
]

#: Framings the load generator speaks, and their prefix sizes.
FRAMINGS = ("line", "netstring", "int8", "int16", "int32", "raw")

#: A load generator using more than this share of its core is the bottleneck.
BOTTLENECK_CPU = 0.9


@attrs.frozen
class BenchOptions:
    """
    What to run: see C{echoplus bench --help}.

    @ivar endpoint: C{tcp:HOST:PORT} or C{unix:PATH} (keyword forms
        C{tcp:host=H:port=P} and C{unix:path=P} too).
    @ivar size: payload bytes per message (for C{line}, without the
        delimiter).
    @ivar expect: C{"echo"} (every reply must equal its request) or
        C{"any"} (replies are counted, C{ERROR} replies are errors).
    """

    endpoint: str
    framing: str = "line"
    connections: int = 50
    pipeline: int = 16
    size: int = 64
    duration: float = 5.0
    warmup: float = 1.0
    expect: str = "echo"
    processes: int = 1
    delimiter: bytes = b"\n"


@attrs.frozen
class BenchResult:
    """
    What one run measured (over the measuring window, after the warm-up).

    @ivar cpu: the load generator's CPU time over the window, in cores
        (1.0 = one core busy the whole time; summed over processes).
    @ivar latencies_us: latency percentiles in microseconds, from a
        request's send to its full reply, by percentile (50, 90, 99, 99.9).
    """

    messages: int
    payload_bytes: int
    seconds: float
    errors: int
    cpu: float
    processes: int
    latencies_us: dict[str, float]
    error_samples: tuple[str, ...] = ()

    @property
    def messages_per_second(self) -> float:
        """Replies received per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Payload megabytes (10**6) echoed per second."""
        return self.payload_bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def bottleneck(self) -> bool:
        """Whether the load generator itself was (close to) saturated."""
        return self.cpu / self.processes >= BOTTLENECK_CPU

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values."""
        return {
            "msgs_per_s": round(self.messages_per_second, 1),
            "MBps": round(self.megabytes_per_second, 3),
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "latency_us": {k: round(v, 1) for k, v in self.latencies_us.items()},
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "bench_cpu": round(self.cpu, 3),
            "processes": self.processes,
            "bench_is_bottleneck": self.bottleneck,
        }


def parse_client_endpoint(text: str) -> tuple[int, Any]:
    """
    Parse a client endpoint string into a socket family and address.

    @raise ValueError: not a C{tcp:} or C{unix:} endpoint this tool speaks.
    """
    kind, _, rest = text.partition(":")
    # As in Twisted's endpoint strings, "\\:" is a colon inside a value.
    parts = [p.replace("\0", ":") for p in rest.replace("\\:", "\0").split(":")]
    parts = [p for p in parts if p]
    keywords = dict(p.split("=", 1) for p in parts if "=" in p)
    positional = [p for p in parts if "=" not in p]
    if kind == "tcp":
        host = keywords.get("host") or (positional.pop(0) if positional else "")
        port = keywords.get("port") or (positional.pop(0) if positional else "")
        if not host or not port.isdigit():
            raise ValueError(f"expected tcp:HOST:PORT, not {text!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(port))
    if kind == "unix":
        path = keywords.get("path") or (positional[0] if positional else "")
        if not path:
            raise ValueError(f"expected unix:PATH, not {text!r}")
        return socket.AF_UNIX, path
    raise ValueError(f"unsupported endpoint {text!r}: use tcp:HOST:PORT or unix:PATH")


def _frame_and_payload(options: BenchOptions) -> tuple[bytes, bytes]:
    payload = bytes(0x61 + i % 26 for i in range(options.size))
    framing = options.framing
    if framing == "line":
        return LineEncoder(options.delimiter).encode(payload), payload
    if framing == "netstring":
        return NetstringEncoder().encode(payload), payload
    if framing.startswith("int"):
        return IntPrefixEncoder(int(framing[3:]) // 8).encode(payload), payload
    if framing == "raw":
        return payload, payload
    raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")


def _decoder(options: BenchOptions) -> Any:
    limit = max(options.size * 2, 1 << 20)
    if options.framing == "line":
        return LineDecoder(options.delimiter, limit)
    if options.framing == "netstring":
        return NetstringDecoder(limit)
    return IntPrefixDecoder(int(options.framing[3:]) // 8, limit)


class _Connection:
    """One client connection's state."""

    __slots__ = ("sock", "out", "held", "inflight", "decoder", "open")

    def __init__(self, sock: socket.socket, decoder: Any) -> None:
        self.sock = sock
        self.out = bytearray()
        self.held = bytearray()
        self.inflight: deque[list[float]] = deque()  # [sent_at, count]
        self.decoder = decoder
        self.open = True


class _Worker:
    """
    Drives some connections for a while and measures them.
    """

    def __init__(self, options: BenchOptions, connections: int) -> None:
        if options.expect not in ("echo", "any"):
            raise ValueError(f"expect must be 'echo' or 'any', not {options.expect!r}")
        if options.framing == "raw" and options.expect != "echo":
            raise ValueError("raw framing can only be checked as an echo")
        self.options = options
        self.frame, self.payload = _frame_and_payload(options)
        self.blocks = [self.frame * n for n in range(options.pipeline + 1)]
        self.family, self.address = parse_client_endpoint(options.endpoint)
        self.count = connections
        self.selector = selectors.DefaultSelector()
        self.counting = False
        self.messages = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.samples: list[float] = []
        self.weights: list[int] = []

    def _error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    def connect(self) -> list[_Connection]:
        connections = []
        for _ in range(self.count):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.connect(self.address)
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            decoder = _decoder(self.options) if self.options.expect == "any" else None
            connection = _Connection(sock, decoder)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            connections.append(connection)
        return connections

    def _request(self, connection: _Connection, count: int, now: float) -> None:
        connection.out += self.blocks[count]
        connection.inflight.append([now, count])
        self._flush(connection)

    def _flush(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.out)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._close(connection, f"send failed: {error.strerror}")
            return
        del connection.out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.out else 0)
        self.selector.modify(connection.sock, events, connection)

    def _close(self, connection: _Connection, why: str) -> None:
        if connection.open:
            connection.open = False
            self._error(why)
            self.selector.unregister(connection.sock)
            connection.sock.close()

    def _replies(self, connection: _Connection, data: bytes) -> int:
        """Check the replies in C{data}; return how many completed."""
        if connection.decoder is not None:
            replies = connection.decoder.feed(data)
            failed = sum(1 for reply in replies if reply.startswith(b"ERROR "))
            if failed:
                self._error(replies[0][:80].decode("ascii", "replace"))
                self.errors += failed - 1
            return len(replies)
        held = connection.held
        held += data
        flen = len(self.frame)
        count = len(held) // flen
        if count:
            end = count * flen
            if count > self.options.pipeline or held[:end] != self.blocks[count]:
                self._close(connection, "a reply differs from its request")
                return 0
            del held[:end]
        return count

    def _completed(self, connection: _Connection, count: int, now: float) -> None:
        inflight = connection.inflight
        left = count
        while left:
            batch = inflight[0]
            taken = min(batch[1], left)
            if self.counting:
                self.samples.append(now - batch[0])
                self.weights.append(taken)
            batch[1] -= taken
            left -= taken
            if not batch[1]:
                inflight.popleft()
        if self.counting:
            self.messages += count
        self._request(connection, count, now)

    def run(
        self, progress: Callable[[float, int, int], None] | None = None
    ) -> BenchResult:
        options = self.options
        connections = self.connect()
        now = time.perf_counter()
        for connection in connections:
            self._request(connection, options.pipeline, now)
        start = now + options.warmup
        end = start + options.duration
        next_tick = start + 1.0
        usage_start = None
        select = self.selector.select
        while True:
            now = time.perf_counter()
            if not self.counting and now >= start:
                self.counting = True
                usage_start = resource.getrusage(resource.RUSAGE_SELF)
            if now >= end:
                break
            if progress is not None and now >= next_tick:
                progress(now - start, self.messages, self.errors)
                next_tick += 1.0
            for key, events in select(0.05):
                connection = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(connection)
                    if not connection.open:
                        continue
                if events & selectors.EVENT_READ:
                    self._read(connection)
            if not any(c.open for c in connections):
                break
        usage_end = resource.getrusage(resource.RUSAGE_SELF)
        seconds = max(time.perf_counter(), start) - start
        if progress is not None:
            progress(seconds, self.messages, self.errors)
        cpu = 0.0
        if usage_start is not None and seconds > 0:
            cpu = (
                usage_end.ru_utime - usage_start.ru_utime
                + usage_end.ru_stime - usage_start.ru_stime
            ) / seconds
        for connection in connections:
            if connection.open:
                connection.sock.close()
        self.selector.close()
        return BenchResult(
            messages=self.messages,
            payload_bytes=self.messages * len(self.payload),
            seconds=seconds,
            errors=self.errors,
            cpu=cpu,
            processes=1,
            latencies_us=_percentiles(self.samples, self.weights),
            error_samples=tuple(self.error_samples),
        )

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as error:
            self._close(connection, f"receive failed: {error.strerror}")
            return
        if not data:
            self._close(connection, "the server closed a connection")
            return
        count = self._replies(connection, data)
        if count and connection.open:
            self._completed(connection, count, time.perf_counter())


def _percentiles(samples: Sequence[float], weights: Sequence[int]) -> dict[str, float]:
    """Weighted latency percentiles, in microseconds."""
    result = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0}
    total = sum(weights)
    if not total:
        return result
    order = sorted(range(len(samples)), key=samples.__getitem__)
    targets = [(name, math.ceil(total * float(name[1:]) / 100)) for name in result]
    seen = 0
    index = 0
    for position in order:
        seen += weights[position]
        while index < len(targets) and seen >= targets[index][1]:
            result[targets[index][0]] = samples[position] * 1e6
            index += 1
    return result


def _run_child(options: BenchOptions, connections: int, results: Any) -> None:
    worker = _Worker(options, connections)
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
    main_worker = _Worker(options, shares[0])
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
    for result, child_samples, child_weights in gathered:
        messages += result.messages
        errors_count += result.errors
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
        latencies_us=_percentiles(samples, weights),
        error_samples=tuple(errors[:5]),
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
    if result.bottleneck:
        lines.append(
            "  warning: echoplus bench itself was (nearly) saturated: the figure "
            "measures the load generator as much as the server; add --processes "
            "on a machine with spare cores, or use fewer connections"
        )
    return "\n".join(lines)


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
    parser.add_argument("endpoint", help="tcp:HOST:PORT or unix:PATH")
    parser.add_argument("--framing", default="line", choices=FRAMINGS)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--expect",
        choices=("echo", "any"),
        default="echo",
        help="echo: each reply must equal its request; any: count replies",
    )
    parser.add_argument("--processes", type=int, default=1)
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
    if arguments.json:
        print(json.dumps(result.as_dict(), sort_keys=True))
    else:
        print(format_summary(options, result))
    return 1 if result.errors else 0
