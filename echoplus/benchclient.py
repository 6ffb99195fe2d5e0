"""
The client side of C{echoplus bench}: options, results, and the worker
that drives connections and checks every reply.

See L{echoplus.bench} for what a run does; this module holds the parts
that run in every load process.
"""

from __future__ import annotations

import math
import resource
import selectors
import socket
import time
from collections import deque
from typing import Any, Callable, Sequence

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
    "BOTTLENECK_CPU",
    "FRAMINGS",
    "BenchOptions",
    "BenchResult",
    "LoadWorker",
    "parse_client_endpoint",
    "percentiles",
]

#: Framings the load generator speaks, and their prefix sizes.
FRAMINGS = ("line", "netstring", "int8", "int16", "int32", "raw", "websocket")

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
    @ivar mismatches: connections closed because a reply differed from its
        request (C{expect="echo"} against a chain that does not echo).
    """

    messages: int
    payload_bytes: int
    seconds: float
    errors: int
    cpu: float
    processes: int
    latencies_us: dict[str, float]
    error_samples: tuple[str, ...] = ()
    mismatches: int = 0

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
            "mismatches": self.mismatches,
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
    if framing == "websocket":
        from websockets.frames import Frame, Opcode

        # One masked text frame, sent again and again (the mask need not
        # vary for a benchmark).
        return Frame(Opcode.TEXT, payload).serialize(mask=True), payload
    raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")


def _reply_frame(options: BenchOptions, frame: bytes, payload: bytes) -> bytes:
    """
    What the server sends back for an echoed C{frame}: the frame itself,
    except on a WebSocket, where the server's frames are not masked.
    """
    if options.framing != "websocket":
        return frame
    from websockets.frames import Frame, Opcode

    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def _open_websocket(sock: socket.socket, limit: int) -> Any:
    """
    Run the WebSocket handshake on a blocking socket; return the client
    codec, ready to decode replies.

    @raise OSError: the server refused the handshake or closed.
    """
    from echoplus.websocket.client import ClientCodec

    codec = ClientCodec(max_frame=limit)
    sock.sendall(codec.opening())
    while codec.response is None and codec.error is None:
        data = sock.recv(65536)
        if not data:
            raise OSError("the server closed during the WebSocket handshake")
        codec.feed(data)
    if codec.error is not None:
        raise OSError(codec.error.message)
    return codec


def _decoder(options: BenchOptions) -> Any:
    limit = max(options.size * 2, 1 << 20)
    if options.framing == "websocket":
        return None  # made by the handshake (_open_websocket)
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


class LoadWorker:
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
        self.reply_frame = _reply_frame(options, self.frame, self.payload)
        self.reply_blocks = [self.reply_frame * n for n in range(options.pipeline + 1)]
        self.family, self.address = parse_client_endpoint(options.endpoint)
        self.count = connections
        self.selector = selectors.DefaultSelector()
        self.counting = False
        self.messages = 0
        self.errors = 0
        self.mismatches = 0
        self.error_samples: list[str] = []
        self.samples: list[float] = []
        self.weights: list[int] = []

    def _error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    def connect(self) -> list[_Connection]:
        """
        Open this worker's connections (non-blocking, C{TCP_NODELAY}).

        @raise OSError: a connection could not be made.
        """
        connections = []
        for _ in range(self.count):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.connect(self.address)
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            decoder = _decoder(self.options) if self.options.expect == "any" else None
            if self.options.framing == "websocket":
                codec = _open_websocket(sock, max(self.options.size * 2, 1 << 20))
                decoder = codec if self.options.expect == "any" else None
            sock.setblocking(False)
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
        flen = len(self.reply_frame)
        count = len(held) // flen
        if count:
            end = count * flen
            if count > self.options.pipeline or held[:end] != self.reply_blocks[count]:
                self.mismatches += 1
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
        """
        Keep the pipeline full for the warm-up and the measured duration;
        return what was measured after the warm-up.

        @param progress: called about once a second (and once at the end)
            with the seconds measured so far, replies and errors.
        """
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
                usage_end.ru_utime
                - usage_start.ru_utime
                + usage_end.ru_stime
                - usage_start.ru_stime
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
            latencies_us=percentiles(self.samples, self.weights),
            error_samples=tuple(self.error_samples),
            mismatches=self.mismatches,
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


def percentiles(samples: Sequence[float], weights: Sequence[int]) -> dict[str, float]:
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
