"""
What the benchmark runner measures: the scenarios (a load shape and the
servers that take it) and the targets of issues 6 and 15 (where both set
one, issue 15's bound).

The first server of every scenario is the echoplus figure the others are
compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

#: Scenario name -> server label -> medians, plus C{"rounds"}: the figures
#: of every round, in order.
Results = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class ServerSpec:
    """
    One server: a peer from C{peers.py}, or echoplus with arguments.

    @ivar reactor: for echoplus: C{""} (twistd's default, epoll on Linux),
        a C{twistd --reactor} name, or C{"uvloop"} (the asyncio reactor on
        uvloop, via C{twistd_uvloop.py}).
    """

    label: str
    peer: str = ""
    arguments: tuple[str, ...] = ()
    reactor: str = ""
    #: Extra environment variables for the server (C{ECHOPLUS_NO_EXTENSIONS}).
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """
    A load shape and its servers.

    @ivar mode: the load's wire format: C{line}, C{int32}, C{raw} or
        C{netstring} (driven by the C load generator, C{loadgen.c}), or
        C{websocket} (driven by C{echoplus bench}).
    @ivar size: bytes per message; for C{line} including the newline, for
        C{int32} and C{netstring} the payload without its length prefix
        (and, for netstring, the comma).
    """

    name: str
    mode: str
    size: int
    connections: int
    pipeline: int
    servers: tuple[ServerSpec, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One line describing the load."""
        return (
            f"{self.mode}, {self.size}-byte messages, {self.connections} connections "
            f"x {self.pipeline} in flight"
        )


def _echoplus(label: str, framing: str, *extra: str, reactor: str = "") -> ServerSpec:
    return ServerSpec(label, arguments=("--framing", framing, *extra), reactor=reactor)


def _pure(label: str, framing: str) -> ServerSpec:
    """
    echoplus on its pure-Python codecs (C{ECHOPLUS_NO_EXTENSIONS=1}), beside
    the compiled ones of the scenario's first row.
    """
    return ServerSpec(
        f"{label} (pure Python)",
        arguments=("--framing", framing),
        environment=(("ECHOPLUS_NO_EXTENSIONS", "1"),),
    )


_LINE = _echoplus("echoplus line", "line")
_BARE = ServerSpec("twisted bare Protocol", peer="twisted-bare")

SCENARIOS: dict[str, Scenario] = {
    "quick": Scenario(
        "quick",
        "line",
        64,
        50,
        16,
        (_LINE, ServerSpec("twisted LineReceiver", peer="twisted-line")),
    ),
    "line": Scenario(
        "line",
        "line",
        64,
        50,
        16,
        (
            _LINE,
            _pure("echoplus line", "line"),
            ServerSpec("twisted LineReceiver", peer="twisted-line"),
            _BARE,
            ServerSpec("twisted bare + direct send", peer="twisted-bare-direct"),
            ServerSpec("twisted batched + direct send", peer="twisted-batched-direct"),
            ServerSpec("asyncio bare Protocol", peer="asyncio-bare"),
            ServerSpec("asyncio batched Protocol", peer="asyncio-batched"),
            ServerSpec("asyncio batched (uvloop)", peer="asyncio-batched-uvloop"),
            ServerSpec("asyncio streams", peer="asyncio-streams"),
            ServerSpec("asyncio streams (uvloop)", peer="asyncio-streams-uvloop"),
        ),
    ),
    "int32": Scenario(
        "int32",
        "int32",
        64,
        50,
        16,
        (
            _echoplus("echoplus int32", "int32"),
            _pure("echoplus int32", "int32"),
            ServerSpec("twisted Int32StringReceiver", peer="twisted-int32"),
            _BARE,
            ServerSpec("asyncio batched int32", peer="asyncio-batched-int32"),
        ),
    ),
    "netstring": Scenario(
        "netstring",
        "netstring",
        64,
        50,
        16,
        (
            _echoplus("echoplus netstring", "netstring"),
            _pure("echoplus netstring", "netstring"),
            ServerSpec("twisted NetstringReceiver", peer="twisted-netstring"),
        ),
    ),
    "latency": Scenario("latency", "line", 64, 1, 1, (_LINE, _BARE)),
    "bulk": Scenario(
        "bulk",
        "raw",
        65536,
        4,
        2,
        (
            _echoplus("echoplus raw", "raw"),
            _BARE,
            ServerSpec("twisted bare + direct send", peer="twisted-bare-direct"),
        ),
    ),
    "chain": Scenario(
        "chain",
        "line",
        64,
        50,
        16,
        (
            _echoplus("echoplus 3 processors", "line", "--processor", "echo,echo,echo"),
            _echoplus("echoplus 1 processor", "line", "--processor", "echo"),
        ),
    ),
    "reactor": Scenario(
        "reactor",
        "line",
        64,
        50,
        16,
        (
            _echoplus("echoplus epoll reactor", "line"),
            _echoplus("echoplus asyncio+uvloop", "line", reactor="uvloop"),
            _echoplus("echoplus asyncio (stdlib)", "line", reactor="asyncio"),
        ),
    ),
    # Browsers' wire format: echo of 64-byte text messages over WebSocket,
    # against the websockets library's own server and Autobahn's Twisted one.
    "websocket": Scenario(
        "websocket",
        "websocket",
        64,
        50,
        16,
        (
            _echoplus("echoplus websocket", "websocket"),
            ServerSpec("websockets (asyncio)", peer="websockets-asyncio"),
            ServerSpec("autobahn (twisted)", peer="autobahn-twisted"),
        ),
    ),
    # What --metrics costs: the same line echo with Prometheus counting on.
    "metrics": Scenario(
        "metrics",
        "line",
        64,
        50,
        16,
        (
            _LINE,
            _echoplus(
                "echoplus line --metrics",
                "line",
                "--metrics",
                "tcp:0:interface=127.0.0.1",
            ),
        ),
    ),
}


@dataclass(frozen=True)
class Target:
    """
    One target: a ratio computed from the results, and its bound.

    C{ratios} returns the ratio of every round (the two servers measured
    in the same round, seconds apart), or L{None} when the scenario did not
    run: the verdict is their median, and their range shows how much this
    machine moved them.
    """

    name: str
    ratios: Callable[[Results], list[float] | None]
    bound: float
    at_most: bool = False


def _ratio(scenario: str, ours: str, peer: str, key: str = "msgs_per_s") -> Callable:
    """
    The per-round ratios of C{ours} to C{peer} by C{key}.
    """

    def ratios(results: Results) -> list[float] | None:
        rows = results.get(scenario)
        if not rows or ours not in rows or peer not in rows:
            return None
        pairs = zip(rows[ours]["rounds"], rows[peer]["rounds"], strict=True)
        return [mine[key] / theirs[key] for mine, theirs in pairs if theirs[key]]

    return ratios


TARGETS: tuple[Target, ...] = (
    Target(
        "quick: line vs LineReceiver",
        _ratio("quick", "echoplus line", "twisted LineReceiver"),
        2.0,
    ),
    Target(
        "line vs LineReceiver",
        _ratio("line", "echoplus line", "twisted LineReceiver"),
        2.0,
    ),
    Target(
        "line vs bare Twisted Protocol",
        _ratio("line", "echoplus line", "twisted bare Protocol"),
        1.2,
    ),
    Target(
        "line vs asyncio batched (stdlib)",
        _ratio("line", "echoplus line", "asyncio batched Protocol"),
        1.0,
    ),
    Target(
        "line vs asyncio batched (uvloop), reported",
        _ratio("line", "echoplus line", "asyncio batched (uvloop)"),
        0.0,
    ),
    # The floors: each event loop echoing bytes with no framing at all, and
    # the same hand-written line echo on each.
    Target(
        "line vs hand-batched Twisted (direct send), reported",
        _ratio("line", "echoplus line", "twisted batched + direct send"),
        0.0,
    ),
    Target(
        "hand-batched Twisted (direct send) vs asyncio batched, reported",
        _ratio("line", "twisted batched + direct send", "asyncio batched Protocol"),
        0.0,
    ),
    Target(
        "Twisted's floor (bare + direct send) vs asyncio's (bare), reported",
        _ratio("line", "twisted bare + direct send", "asyncio bare Protocol"),
        0.0,
    ),
    Target(
        "int32 vs Int32StringReceiver",
        _ratio("int32", "echoplus int32", "twisted Int32StringReceiver"),
        2.0,
    ),
    Target(
        "int32 vs bare Twisted Protocol",
        _ratio("int32", "echoplus int32", "twisted bare Protocol"),
        1.2,
    ),
    Target(
        "int32 vs asyncio batched int32",
        _ratio("int32", "echoplus int32", "asyncio batched int32"),
        0.9,
    ),
    Target(
        "netstring vs NetstringReceiver",
        _ratio("netstring", "echoplus netstring", "twisted NetstringReceiver"),
        4.0,
    ),
    Target(
        "latency p50 vs bare (lower is better)",
        _ratio("latency", "echoplus line", "twisted bare Protocol", "p50_us"),
        1.0,
        True,
    ),
    Target(
        "latency p99 vs bare (lower is better)",
        _ratio("latency", "echoplus line", "twisted bare Protocol", "p99_us"),
        1.0,
        True,
    ),
    # The compiled codecs against the pure-Python ones, same run.
    Target(
        "line compiled vs pure Python, reported",
        _ratio("line", "echoplus line", "echoplus line (pure Python)"),
        0.0,
    ),
    Target(
        "int32 compiled vs pure Python, reported",
        _ratio("int32", "echoplus int32", "echoplus int32 (pure Python)"),
        0.0,
    ),
    Target(
        "netstring compiled vs pure Python, reported",
        _ratio("netstring", "echoplus netstring", "echoplus netstring (pure Python)"),
        0.0,
    ),
    Target(
        "bulk raw 64 KiB MB/s vs bare",
        _ratio("bulk", "echoplus raw", "twisted bare Protocol", "MBps"),
        0.95,
    ),
    # Per-message time of 3 processors over 1: the inverse of throughput.
    Target(
        "3-processor chain time per message vs 1",
        _ratio("chain", "echoplus 1 processor", "echoplus 3 processors"),
        1.15,
        True,
    ),
    Target(
        "asyncio+uvloop reactor vs epoll, reported",
        _ratio("reactor", "echoplus asyncio+uvloop", "echoplus epoll reactor"),
        0.0,
    ),
    Target(
        "line with --metrics vs without",
        _ratio("metrics", "echoplus line --metrics", "echoplus line"),
        0.9,
    ),
    Target(
        "websocket vs websockets (asyncio)",
        _ratio("websocket", "echoplus websocket", "websockets (asyncio)"),
        1.2,
    ),
    Target(
        "websocket vs autobahn (twisted)",
        _ratio("websocket", "echoplus websocket", "autobahn (twisted)"),
        1.2,
    ),
)
