"""
Per-connection policies: the write-buffer cap, the idle and frame
timeouts, the rate limit, and the per-listener connection limits.

Nothing here costs a timer per message.  A connection records what
happened with a few attribute stores (one per read, one per write); one
coarse sweep per listener (L{ListenerPolicies}) compares those marks with
the clock every C{min(idle_timeout, frame_timeout) / 4} seconds (within
L{SWEEP_MIN_INTERVAL}..L{SWEEP_MAX_INTERVAL}), so a timeout fires after at
least its configured time and at most about half of it later.

Write-buffer accounting, without transport internals: the protocol is the
transport's streaming producer.  The transport calls C{pauseProducing}
when its buffer passes its high-water mark (C{bufferSize}, 64 KiB for
Twisted's sockets) and C{resumeProducing} once it is empty again.  While
paused, reading from that client stops, and every byte written to it is
added to an estimate of its unsent output that starts at the high-water
mark plus the write that crossed it.  The estimate is an upper bound (the
transport may have sent some meanwhile); once it passes
C{max_write_buffer} the connection gets C{ERROR overloaded} and is closed,
and nothing else is written to it.  A connection that is not paused pays
one attribute check per write.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from echoplus.access import AccessPolicy, peer_ip
from echoplus.errors import ConnectionTimeout, Overloaded
from echoplus.logs import format_address

if TYPE_CHECKING:
    from echoplus.config import ListenerSettings

__all__ = [
    "DEFAULT_HIGH_WATER",
    "SWEEP_MAX_INTERVAL",
    "SWEEP_MIN_INTERVAL",
    "ConnectionPolicies",
    "ListenerPolicies",
    "RateLimiter",
    "sweep_interval",
]

#: The high-water mark assumed for a transport that does not say
#: (Twisted's C{FileDescriptor.bufferSize}).
DEFAULT_HIGH_WATER = 65536

#: Bounds of the per-listener sweep interval, in seconds.
SWEEP_MIN_INTERVAL = 0.05
SWEEP_MAX_INTERVAL = 5.0


def sweep_interval(settings: ListenerSettings) -> float:
    """
    How often a listener's timeout sweep runs: a quarter of its shortest
    timeout, bounded; 0 when no timeout is set.
    """
    candidates = [settings.idle_timeout, settings.frame_timeout]
    if settings.framing == "websocket":  # the keepalive pings ride the sweep
        candidates += [settings.ws_ping_interval, settings.ws_ping_timeout]
    timeouts = [t for t in candidates if t > 0]
    if not timeouts:
        return 0.0
    return min(max(min(timeouts) / 4, SWEEP_MIN_INTERVAL), SWEEP_MAX_INTERVAL)


@attrs.define
class RateLimiter:
    """
    A token bucket: C{rate} frames per second, up to C{burst} at once.

    Frames already received are never refused: taking more tokens than the
    bucket holds leaves it in debt, and L{take} says how long the
    connection must stop reading for the debt to be paid back.

    @ivar rate: tokens added per second.
    @ivar burst: the bucket's size.
    @ivar tokens: tokens available now (negative: debt).
    @ivar stamp: when C{tokens} was last brought up to date.
    """

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def for_settings(cls, rate: float, burst: int, now: float) -> RateLimiter:
        """
        A full bucket for C{--rate-limit rate --rate-burst burst}; a burst
        of 0 means the rate itself (at least 1).
        """
        size = float(burst) if burst > 0 else float(max(1, math.ceil(rate)))
        return cls(rate, size, size, now)

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now

    def take(self, count: int, now: float) -> float:
        """
        Take C{count} tokens; return the seconds to wait before reading
        again (0 when the bucket is not in debt).
        """
        self._refill(now)
        self.tokens -= count
        return self.wait(now)

    def wait(self, now: float) -> float:
        """
        The seconds until the bucket is out of debt (0 if it is not).
        """
        self._refill(now)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class ConnectionPolicies:
    """
    The per-connection half of the policies, mixed into
    L{echoplus.protocols.FramedProtocol}, which calls
    L{_init_policies} in C{connectionMade}, L{_stop_policies} in
    C{connectionLost}, L{_within_budget} from its one write path while the
    transport has paused it, L{_write_paused_by_transport} and
    L{_write_drained} from C{pauseProducing}/C{resumeProducing}, and
    L{_take_tokens} after each batch when a rate limit is set.

    The marks the sweep reads: C{_active} (something was read, or the
    output drained, since the last sweep), C{_sending} (the size of the
    last write since the last sweep; 0 for none) and C{_progressed} (a
    frame completed since the last sweep).
    """

    _log = Logger()

    # This connection's policy state is in FramedProtocol.__slots__ (and
    # the read path's fields), so that the compiled ReadPath is the one base
    # with a C layout: _active, _discarding, _frame_since, _idle_since,
    # _overload_call, _progressed, _rate, _rate_call, _refused, _sending,
    # _unsent, _write_paused.
    __slots__ = ()

    # Provided by FramedProtocol.
    factory: Any
    settings: Any
    transport: Any
    context: Any
    _closing: bool
    _fatal: Any
    _paused: list[str]
    _decoder: Any
    _dispatcher: Any
    _pause: Callable[[str], None]
    _resume: Callable[[str], None]
    _close: Callable[[], None]
    _count_error: Callable[[str], None]
    _write_payloads: Callable[[Sequence[bytes]], None]
    _write_fatal: Callable[[Any], None]
    fail: Callable[[Any], None]

    # _refused is set for a client refused by --allow/--deny; then no other
    # state was set up.

    def _init_policies(self) -> None:
        """
        Set up this connection's policy state from its settings.
        """
        clock = self.factory.clock
        now = clock.seconds()
        settings = self.settings
        self._write_paused = False
        self._discarding = False
        self._unsent = 0
        self._sending = 0
        self._active = False
        self._progressed = False
        self._idle_since = now
        self._frame_since = now
        self._overload_call: IDelayedCall | None = None
        self._rate_call: IDelayedCall | None = None
        self._rate: RateLimiter | None = None
        if settings.rate_limit > 0:
            self._rate = RateLimiter.for_settings(
                settings.rate_limit, settings.rate_burst, now
            )

    def _stop_policies(self) -> None:
        """
        Cancel this connection's policy timers (the connection is gone).
        """
        for call in (self._overload_call, self._rate_call):
            if call is not None and call.active():
                call.cancel()
        self._overload_call = self._rate_call = None

    # The write-buffer cap.

    def _write_paused_by_transport(self) -> None:
        """
        The transport's buffer passed its high-water mark: start counting
        what is written to this connection.
        """
        if self._write_paused:
            return
        self._write_paused = True
        high_water = getattr(self.transport, "bufferSize", DEFAULT_HIGH_WATER)
        if not isinstance(high_water, int):
            high_water = DEFAULT_HIGH_WATER
        self._unsent = high_water + self._sending
        if self._unsent > self.settings.max_write_buffer and not self._discarding:
            # Called from inside transport.write(): close from a fresh stack.
            self._overload_call = self.factory.clock.callLater(0, self._overloaded)

    def _write_drained(self) -> None:
        """
        The transport's buffer is empty again: nothing is unsent.
        """
        self._active = True
        if self._discarding:
            return
        self._write_paused = False
        self._unsent = 0

    def _within_budget(self, size: int) -> bool:
        """
        Count C{size} more unsent bytes; return whether they may be written.

        Past C{max_write_buffer} the connection is closed as overloaded and
        this, and every later call, returns C{False}.
        """
        if self._discarding:
            return False
        self._unsent += size
        if self._unsent <= self.settings.max_write_buffer:
            return True
        self._overloaded()
        return False

    def _overloaded(self) -> None:
        """
        Unsent output passed C{max_write_buffer}: send C{ERROR overloaded}
        after what is queued, write nothing else, and close (aborting after
        the close grace if the client still does not read).
        """
        self._overload_call = None
        if self._discarding:
            return
        if self._closing:
            self._discarding = True
            return
        limit = self.settings.max_write_buffer
        error = Overloaded(f"more than {limit} bytes of replies not read")
        self._log_closing_error(error)
        self._count_error(error.kind)
        # The error frame itself passes the accounting; nothing after it.
        self._write_paused = False
        self._write_fatal(error)
        self._write_paused = self._discarding = True
        self._dispatcher.close()
        self._close()

    # The rate limit.

    def _take_tokens(self, count: int) -> None:
        """
        Charge C{count} frames to the rate limit; stop reading until the
        bucket is out of debt.
        """
        assert self._rate is not None
        delay = self._rate.take(count, self.factory.clock.seconds())
        if delay > 0 and self._rate_call is None:
            self._pause("rate")
            self._rate_call = self.factory.clock.callLater(delay, self._rate_ready)

    def _set_rate(self, rate: float, burst: int) -> None:
        """
        Apply a reloaded C{--rate-limit}/C{--rate-burst} at once: a full
        bucket at the new rate, or none; a rate pause ends.
        """
        clock = self.factory.clock
        self._rate = (
            RateLimiter.for_settings(rate, burst, clock.seconds()) if rate > 0 else None
        )
        if self._rate_call is not None and self._rate_call.active():
            self._rate_call.cancel()
        self._rate_call = None
        self._resume("rate")

    def _rate_ready(self) -> None:
        self._rate_call = None
        assert self._rate is not None
        delay = self._rate.wait(self.factory.clock.seconds())
        if delay > 0:
            self._rate_call = self.factory.clock.callLater(delay, self._rate_ready)
        else:
            self._resume("rate")

    # The timeouts, checked by the listener's sweep.

    def _check_timeouts(self, now: float) -> None:
        """
        Close this connection if it was idle longer than C{idle_timeout},
        or its started frame has been incomplete longer than
        C{frame_timeout}.  Called by the sweep only.

        Time this server spends not reading (paused for the in-flight limit
        or the rate limit) counts as neither idle nor frame time; a client
        that leaves its replies unread for C{idle_timeout} is closed as
        C{overloaded}.
        """
        if self._closing or self._fatal is not None:
            return
        paused = self._paused
        if self._active or self._sending or "rate" in paused or "inflight" in paused:
            self._active = False
            self._sending = 0
            self._idle_since = now
        buffered = self._decoder.buffered
        if self._progressed or not buffered or paused:
            self._progressed = False
            self._frame_since = now
        settings = self.settings
        frame_timeout = settings.frame_timeout
        if frame_timeout and buffered and now - self._frame_since >= frame_timeout:
            self.fail(
                ConnectionTimeout(f"frame not completed within {frame_timeout:g} s")
            )
            return
        idle_timeout = settings.idle_timeout
        if (
            idle_timeout
            and now - self._idle_since >= idle_timeout
            and not self._dispatcher.pending
        ):
            if self._write_paused:
                self.fail(Overloaded(f"replies not read for {idle_timeout:g} s"))
            else:
                self.fail(ConnectionTimeout(f"idle for {idle_timeout:g} s"))


class ListenerPolicies:
    """
    The per-listener half: access control, connection limits, and the
    timeout sweep over the listener's open connections.

    @ivar access: the listener's L{AccessPolicy}.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, connections: Mapping[int, Any]) -> None:
        """
        @param clock: what the sweep runs on.
        @param connections: the listener's open connections (the
            factory's dict, read, never written).
        """
        self._clock = clock
        self._connections = connections
        self._per_peer: dict[str, int] = {}
        self._sweep: LoopingCall | None = None
        self._interval = 0.0
        self.access = AccessPolicy()
        self.settings: ListenerSettings | None = None

    def configure(self, settings: ListenerSettings) -> None:
        """
        Take new settings: new connections are checked against them at
        once, the sweep's interval follows the new timeouts, and open
        connections get a changed rate limit at once.
        """
        previous = self.settings
        if (
            previous is None
            or settings.allow != previous.allow
            or settings.deny != previous.deny
        ):
            self.access = AccessPolicy(settings.allow, settings.deny)
        self.settings = settings
        if previous is not None and (previous.rate_limit, previous.rate_burst) != (
            settings.rate_limit,
            settings.rate_burst,
        ):
            for protocol in list(self._connections.values()):
                protocol._set_rate(settings.rate_limit, settings.rate_burst)
        interval = sweep_interval(settings)
        if interval != self._interval:
            self._interval = interval
            self._stop_sweep()
            if self._connections:
                self._start_sweep()

    def refuses(self, peer: object) -> bool:
        """
        Whether C{--allow}/C{--deny} refuse a client at C{peer}; a refusal
        is logged.
        """
        if self.access.permits(peer):
            return False
        self._log.info(
            "Connection from {peer} refused by --allow/--deny",
            peer=format_address(peer),
        )
        return True

    def admission(self, peer: object) -> Overloaded | None:
        """
        The error that refuses one more connection from C{peer}, or
        C{None} when C{--max-connections} and C{--max-per-peer} allow it.
        """
        settings = self.settings
        assert settings is not None
        if 0 < settings.max_connections <= len(self._connections):
            return Overloaded("too many connections")
        if settings.max_per_peer > 0:
            key = _peer_key(peer)
            if key is not None and self._per_peer.get(key, 0) >= settings.max_per_peer:
                return Overloaded("too many connections from your address")
        return None

    def opened(self, peer: object) -> None:
        """
        Count a connection the listener accepted (after it was added to
        the connections).
        """
        key = _peer_key(peer)
        if key is not None:
            self._per_peer[key] = self._per_peer.get(key, 0) + 1
        if self._sweep is None and self._interval > 0:
            self._start_sweep()

    def closed(self, peer: object) -> None:
        """
        Forget an accepted connection (after it left the connections).
        """
        key = _peer_key(peer)
        if key is not None:
            count = self._per_peer.get(key, 0) - 1
            if count > 0:
                self._per_peer[key] = count
            else:
                self._per_peer.pop(key, None)
        if not self._connections:
            self._stop_sweep()

    def peers(self) -> dict[str, int]:
        """
        Open connections per client address (a copy).
        """
        return dict(self._per_peer)

    def sweep(self) -> None:
        """
        Check every open connection's timeouts once.
        """
        now = self._clock.seconds()
        for protocol in list(self._connections.values()):
            protocol._check_timeouts(now)

    def _start_sweep(self) -> None:
        sweep = LoopingCall(self.sweep)
        sweep.clock = self._clock
        sweep.start(self._interval, now=False)
        self._sweep = sweep

    def _stop_sweep(self) -> None:
        sweep, self._sweep = self._sweep, None
        if sweep is not None and sweep.running:
            sweep.stop()


def _peer_key(peer: object) -> str | None:
    """
    What C{--max-per-peer} counts by: the client's IP address; C{None} for
    peers without one (UNIX sockets), which are not limited per peer.
    """
    address = peer_ip(peer)
    return None if address is None else str(address)
