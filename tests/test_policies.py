"""
Tests for L{echoplus.policies}: the write-buffer cap and backpressure,
lingering close, idle and frame timeouts, the rate limit and the
connection limits, driven through the real protocol and factory on
L{StringTransport} and a L{task.Clock}.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoplus.config import ListenerSettings
from echoplus.factory import EchoPlusFactory
from echoplus.policies import (
    DEFAULT_HIGH_WATER,
    SWEEP_MAX_INTERVAL,
    SWEEP_MIN_INTERVAL,
    RateLimiter,
    sweep_interval,
)
from echoplus.processors.chain import parse_chain
from echoplus.protocols import CLOSE_GRACE, FramedProtocol


class Transport(StringTransport):
    """
    A L{StringTransport} that behaves like Twisted's socket transports
    where the policies care: it pauses its streaming producer when more
    than C{bufferSize} bytes are held unsent (C{held}), resumes it when the
    client reads them all, and supports half-close.
    """

    bufferSize = DEFAULT_HIGH_WATER

    def __init__(self, peer: Any = None, reads: bool = True) -> None:
        super().__init__(peerAddress=peer or IPv4Address("TCP", "192.0.2.1", 4000))
        self.reads = reads
        self.held = 0
        self.write_closed = False
        self.transport_paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.reads:
            return
        self.held += len(data)
        if (
            self.held > self.bufferSize
            and not self.transport_paused
            and self.producer is not None
        ):
            self.transport_paused = True
            self.producer.pauseProducing()

    def client_reads(self) -> None:
        """
        The client reads everything held: the producer is resumed.
        """
        self.held = 0
        self.reads = True
        if self.transport_paused:
            self.transport_paused = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Listener:
    """
    One factory on a L{Clock}, and helpers to connect clients to it.
    """

    def __init__(self, processors: str = "echo", **settings: Any) -> None:
        entries = parse_chain(processors)
        self.clock = Clock()
        self.factory = EchoPlusFactory(
            ListenerSettings(endpoint="test", processors=entries, **settings),
            self.clock,
        )

    def connect(
        self, host: str = "192.0.2.1", reads: bool = True, peer: Any = None
    ) -> tuple[FramedProtocol, Transport]:
        protocol = self.factory.buildProtocol(None)
        assert protocol is not None
        address = peer
        if address is None:
            family = IPv6Address if ":" in host else IPv4Address
            address = family("TCP", host, 4000)
        transport = Transport(address, reads=reads)
        protocol.makeConnection(transport)
        return protocol, transport


def lines(transport: StringTransport) -> list[bytes]:
    """
    The line frames written to C{transport}.
    """
    return transport.value().split(b"\n")[:-1]


def lose(protocol: FramedProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


class BackpressureTests(SynchronousTestCase):
    """
    Reading pauses while the transport's buffer is full.
    """

    def test_transport_pause_stops_reading(self) -> None:
        """
        pauseProducing() from the transport pauses reading from the client;
        resumeProducing() resumes it.
        """
        protocol, transport = Listener().connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_client_not_reading_pauses_reading(self) -> None:
        """
        Replies piling up unread past the transport's high-water mark pause
        reading; reading resumes when the client drains them.
        """
        protocol, transport = Listener().connect(reads=False)
        protocol.dataReceived(b"x" * 1000 + b"\n")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived((b"y" * 1000 + b"\n") * 70)
        self.assertEqual(transport.producerState, "paused")
        transport.client_reads()
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(transport.disconnecting)

    def test_inflight_and_write_pauses_combine(self) -> None:
        """
        Reading resumes only when neither the in-flight limit nor the full
        write buffer holds it.
        """
        listener = Listener("delay", max_inflight=1)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"a\n")
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        listener.clock.advance(1)
        self.assertEqual(lines(transport), [b"a"])
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")


class WriteBufferCapTests(SynchronousTestCase):
    """
    --max-write-buffer caps unsent output from any source.
    """

    def test_pushes_below_the_cap_are_written(self) -> None:
        """
        While paused, pushes are written as long as the estimate of unsent
        output stays within max_write_buffer.
        """
        protocol, transport = Listener(max_write_buffer=100_000).connect()
        protocol.pauseProducing()
        for _ in range(3):
            protocol.context.send(b"p" * 10_000)
        self.assertEqual([len(line) for line in lines(transport)], [10_000] * 3)
        self.assertFalse(transport.disconnecting)

    def test_past_the_cap_overloaded_then_nothing(self) -> None:
        """
        The write that takes the estimate past max_write_buffer is dropped,
        ERROR overloaded is written instead, the connection closes, and
        nothing more is written to it.
        """
        listener = Listener(max_write_buffer=100_000)
        protocol, transport = listener.connect()
        protocol.pauseProducing()
        for _ in range(4):
            protocol.context.send(b"p" * 10_000)
        written = lines(transport)
        self.assertEqual([len(line) for line in written[:3]], [10_000] * 3)
        self.assertEqual(
            written[3:],
            [b"ERROR overloaded: more than 100000 bytes of replies not read"],
        )
        self.assertTrue(transport.disconnecting or transport.write_closed)
        self.assertIsNone(transport.producer)
        before = transport.value()
        protocol.context.send(b"more")
        protocol.dataReceived(b"request\n")
        self.assertEqual(transport.value(), before)
        listener.clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)

    def test_drain_resets_the_estimate(self) -> None:
        """
        Once the transport has drained (resumeProducing), counting starts
        again from nothing.
        """
        protocol, transport = Listener(max_write_buffer=150_000).connect()
        for _ in range(3):
            protocol.pauseProducing()
            protocol.context.send(b"p" * 30_000)
            protocol.resumeProducing()
        self.assertEqual([len(line) for line in lines(transport)], [30_000] * 3)
        self.assertFalse(transport.disconnecting)

    def test_the_write_that_fills_the_buffer_counts(self) -> None:
        """
        A single write that fills the transport's buffer past the cap (a
        huge reply) closes the connection as overloaded, from a fresh call
        stack.
        """
        listener = Listener(max_write_buffer=100_000)
        protocol, transport = listener.connect(reads=False)
        protocol.context.send(b"h" * 90_000)
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.write_closed)
        listener.clock.advance(0)
        self.assertTrue(lines(transport)[-1].startswith(b"ERROR overloaded: "))
        self.assertTrue(transport.write_closed)

    def test_unpaused_writes_are_not_limited(self) -> None:
        """
        Output the client keeps reading is never counted: megabytes pass a
        small cap.
        """
        protocol, transport = Listener(max_write_buffer=70_000).connect()
        chunk = (b"z" * 99 + b"\n") * 600
        for _ in range(40):
            protocol.dataReceived(chunk)
        self.assertEqual(len(transport.value()), 40 * len(chunk))
        self.assertFalse(transport.disconnecting)

    def test_async_replies_count_too(self) -> None:
        """
        Replies completing while the transport is paused count against the
        cap like pushes.
        """
        listener = Listener("delay", max_write_buffer=70_000)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"d" * 6_000 + b"\n")
        protocol.pauseProducing()
        listener.clock.advance(1)
        self.assertEqual(
            lines(transport),
            [b"ERROR overloaded: more than 70000 bytes of replies not read"],
        )


class LingeringCloseTests(SynchronousTestCase):
    """
    Closing after an error never hangs and lets the client read the error.
    """

    def test_error_half_closes_and_discards_input(self) -> None:
        """
        After a fatal error frame the server half-closes, keeps reading (to
        discard), and writes nothing more.
        """
        protocol, transport = Listener(max_frame=10).connect()
        protocol.pauseProducing()  # even with a full transport buffer
        protocol.dataReceived(b"0123456789AB")
        self.assertEqual(
            lines(transport),
            [b"ERROR frame-too-long: line exceeds the limit of 10 bytes"],
        )
        self.assertTrue(transport.write_closed)
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"ignored\n")
        self.assertEqual(len(lines(transport)), 1)

    def test_abort_after_grace(self) -> None:
        """
        A client that never closes its side is aborted after CLOSE_GRACE.
        """
        listener = Listener(max_frame=10)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"x" * 20)
        listener.clock.advance(CLOSE_GRACE - 0.1)
        self.assertFalse(transport.disconnected)
        listener.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_client_close_ends_linger(self) -> None:
        """
        When the client closes its side, the connection closes at once and
        the abort timer is cancelled.
        """
        listener = Listener(max_frame=10)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"x" * 20)
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        lose(protocol)
        self.assertEqual(listener.clock.getDelayedCalls(), [])


class TimeoutTests(SynchronousTestCase):
    """
    --idle-timeout and --frame-timeout, checked by one sweep per listener.
    """

    def test_sweep_interval(self) -> None:
        """
        The sweep runs every quarter of the shortest timeout, within its
        bounds, and not at all without timeouts.
        """

        def interval(idle: float, frame: float) -> float:
            return sweep_interval(
                ListenerSettings(idle_timeout=idle, frame_timeout=frame)
            )

        self.assertEqual(interval(300, 30), SWEEP_MAX_INTERVAL)
        self.assertEqual(interval(8, 0), 2.0)
        self.assertEqual(interval(0, 2), 0.5)
        self.assertEqual(interval(0.01, 0), SWEEP_MIN_INTERVAL)
        self.assertEqual(interval(0, 0), 0.0)

    def test_idle_connection_closed(self) -> None:
        """
        A connection that receives nothing for idle_timeout gets ERROR
        timeout and closes; not before.
        """
        listener = Listener(idle_timeout=10, frame_timeout=0)
        protocol, transport = listener.connect()
        listener.clock.pump([2.5] * 3)
        self.assertEqual(transport.value(), b"")
        listener.clock.pump([2.5] * 3)
        self.assertEqual(lines(transport), [b"ERROR timeout: idle for 10 s"])
        self.assertTrue(transport.write_closed)

    def test_activity_postpones_idle(self) -> None:
        """
        Each read restarts the idle time.
        """
        listener = Listener(idle_timeout=10, frame_timeout=0)
        protocol, transport = listener.connect()
        for _ in range(6):
            listener.clock.pump([2.5] * 3)
            protocol.dataReceived(b"ping\n")
        self.assertEqual(lines(transport), [b"ping"] * 6)
        listener.clock.pump([2.5] * 6)
        self.assertEqual(lines(transport)[-1], b"ERROR timeout: idle for 10 s")

    def test_writes_count_as_activity(self) -> None:
        """
        A connection receiving pushes (a subscriber) is not idle.
        """
        listener = Listener(idle_timeout=10, frame_timeout=0)
        protocol, transport = listener.connect()
        for _ in range(20):
            listener.clock.advance(2.5)
            protocol.context.send(b"news")
        self.assertEqual(lines(transport), [b"news"] * 20)

    def test_pending_request_is_not_idle(self) -> None:
        """
        A connection waiting for a slow reply is not idle.
        """
        listener = Listener("delay(seconds=30)", idle_timeout=10, frame_timeout=0)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"slow\n")
        listener.clock.pump([2.5] * 12)
        self.assertEqual(lines(transport), [b"slow"])
        self.assertFalse(transport.write_closed)

    def test_stalled_reader_overloaded(self) -> None:
        """
        A client that leaves its replies unread (the transport stays
        paused) for idle_timeout is closed as overloaded.
        """
        listener = Listener(idle_timeout=10, frame_timeout=0)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"x\n")
        protocol.pauseProducing()
        listener.clock.pump([2.5] * 6)
        self.assertEqual(
            lines(transport)[-1], b"ERROR overloaded: replies not read for 10 s"
        )

    def test_slowloris_frame_timeout(self) -> None:
        """
        A frame dribbled one byte at a time is cut off by frame_timeout
        although bytes keep arriving.
        """
        listener = Listener(idle_timeout=300, frame_timeout=2)
        protocol, transport = listener.connect()
        for _ in range(12):
            protocol.dataReceived(b"x")
            listener.clock.advance(0.25)
        self.assertEqual(
            lines(transport), [b"ERROR timeout: frame not completed within 2 s"]
        )
        self.assertTrue(transport.write_closed)

    def test_completing_frames_are_not_cut_off(self) -> None:
        """
        A slow client whose frames do complete is not cut off by the frame
        timeout, even with a partial frame always pending.
        """
        listener = Listener(idle_timeout=0, frame_timeout=2)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"a")
        for _ in range(20):
            listener.clock.advance(1)
            protocol.dataReceived(b"\na")
        self.assertEqual(lines(transport), [b"a"] * 20)

    def test_partial_frame_while_paused_not_timed(self) -> None:
        """
        While the server is not reading (here: paused by the rate limit),
        an incomplete frame is not the client's fault.
        """
        listener = Listener(frame_timeout=1, rate_limit=1, rate_burst=1)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"a\nb\nc\nd\npartial")
        listener.clock.pump([0.25] * 10)
        self.assertFalse(transport.write_closed)
        self.assertEqual(lines(transport), [b"a", b"b", b"c", b"d"])

    def test_no_sweep_without_connections_or_timeouts(self) -> None:
        """
        The sweep timer exists only while a listener with timeouts has
        connections.
        """
        listener = Listener(idle_timeout=10)
        self.assertEqual(listener.clock.getDelayedCalls(), [])
        protocol, _ = listener.connect()
        self.assertEqual(len(listener.clock.getDelayedCalls()), 1)
        lose(protocol)
        self.assertEqual(listener.clock.getDelayedCalls(), [])
        untimed = Listener(idle_timeout=0, frame_timeout=0)
        untimed.connect()
        self.assertEqual(untimed.clock.getDelayedCalls(), [])

    def test_reload_changes_the_sweep(self) -> None:
        """
        configure() with new timeouts reschedules the running sweep.
        """
        listener = Listener(idle_timeout=100, frame_timeout=0)
        protocol, transport = listener.connect()
        [call] = listener.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 5.0)
        listener.factory.configure(
            ListenerSettings(endpoint="test", idle_timeout=2, frame_timeout=0)
        )
        [call] = listener.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 0.5)
        protocol.dataReceived(b"x\n")
        listener.clock.pump([0.5] * 8)
        self.assertEqual(lines(transport)[-1], b"ERROR timeout: idle for 2 s")


class RateLimitTests(SynchronousTestCase):
    """
    --rate-limit delays excess frames by pausing reads; nothing is dropped.
    """

    def test_token_bucket(self) -> None:
        """
        The bucket allows a burst, then owes time in proportion to the
        excess, and refills at the rate.
        """
        bucket = RateLimiter.for_settings(10, 5, now=0)
        self.assertEqual(bucket.take(5, 0), 0)
        self.assertAlmostEqual(bucket.take(3, 0), 0.3)
        self.assertAlmostEqual(bucket.wait(0.2), 0.1)
        self.assertAlmostEqual(bucket.wait(0.3), 0)
        self.assertEqual(bucket.wait(100), 0)
        self.assertEqual(bucket.tokens, 5)

    def test_default_burst_is_the_rate(self) -> None:
        """
        A burst of 0 means one second's worth of frames, at least one.
        """
        self.assertEqual(RateLimiter.for_settings(20, 0, 0).burst, 20)
        self.assertEqual(RateLimiter.for_settings(0.5, 0, 0).burst, 1)

    def test_excess_pauses_then_resumes(self) -> None:
        """
        Frames beyond the burst are answered, then reading pauses until the
        debt is paid back at the rate.
        """
        listener = Listener(rate_limit=10, rate_burst=5)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"m\n" * 20)
        self.assertEqual(len(lines(transport)), 20)
        self.assertEqual(transport.producerState, "paused")
        listener.clock.advance(1.4)
        self.assertEqual(transport.producerState, "paused")
        listener.clock.advance(0.2)
        self.assertEqual(transport.producerState, "producing")

    def test_within_rate_never_pauses(self) -> None:
        """
        A client within its rate is never paused.
        """
        listener = Listener(rate_limit=10, rate_burst=2)
        protocol, transport = listener.connect()
        for _ in range(50):
            protocol.dataReceived(b"m\n")
            self.assertEqual(transport.producerState, "producing")
            listener.clock.advance(0.1)
        self.assertEqual(len(lines(transport)), 50)

    def test_reads_while_paused_extend_the_pause(self) -> None:
        """
        Data that still arrives while paused (a TLS record already
        decrypted) adds to the debt and reschedules the resume.
        """
        listener = Listener(rate_limit=10, rate_burst=1)
        protocol, transport = listener.connect()
        protocol.dataReceived(b"m\n" * 11)
        protocol.dataReceived(b"m\n" * 10)
        listener.clock.advance(1.5)
        self.assertEqual(transport.producerState, "paused")
        listener.clock.advance(0.6)
        self.assertEqual(transport.producerState, "producing")

    def test_reload_applies_to_open_connections(self) -> None:
        """
        A reload that sets a rate limit limits open connections at once;
        one that removes it ends their rate pause.
        """
        listener = Listener()
        protocol, transport = listener.connect()
        factory = listener.factory
        factory.configure(evolve(factory.settings, rate_limit=10, rate_burst=5))
        protocol.dataReceived(b"m\n" * 20)
        self.assertEqual(transport.producerState, "paused")
        factory.configure(evolve(factory.settings, rate_limit=0))
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(listener.clock.getDelayedCalls()), 1)  # the sweep
        protocol.dataReceived(b"m\n" * 100)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(lines(transport)), 120)

    def test_connection_lost_cancels_the_timer(self) -> None:
        """
        A rate-limited connection that closes leaves no timer behind.
        """
        listener = Listener(rate_limit=1, idle_timeout=0, frame_timeout=0)
        protocol, _ = listener.connect()
        protocol.dataReceived(b"m\n" * 10)
        self.assertEqual(len(listener.clock.getDelayedCalls()), 1)
        lose(protocol)
        self.assertEqual(listener.clock.getDelayedCalls(), [])


class ConnectionLimitTests(SynchronousTestCase):
    """
    --max-connections and --max-per-peer refuse with ERROR overloaded.
    """

    def test_max_connections(self) -> None:
        """
        Past max_connections a client gets ERROR overloaded and is closed;
        a slot freed by a closed connection is reused.
        """
        listener = Listener(max_connections=2)
        first, _ = listener.connect("192.0.2.1")
        listener.connect("192.0.2.2")
        refused, transport = listener.connect("192.0.2.3")
        self.assertEqual(lines(transport), [b"ERROR overloaded: too many connections"])
        self.assertTrue(transport.write_closed)
        self.assertEqual(len(listener.factory.connections), 2)
        refused.dataReceived(b"ignored\n")
        self.assertEqual(len(lines(transport)), 1)
        lose(refused)
        self.assertEqual(len(listener.factory.connections), 2)
        lose(first)
        again, transport = listener.connect("192.0.2.3")
        again.dataReceived(b"hi\n")
        self.assertEqual(lines(transport), [b"hi"])

    def test_max_per_peer(self) -> None:
        """
        max_per_peer counts connections by client host: another host is
        still accepted, and a closed connection frees its slot.
        """
        listener = Listener(max_per_peer=1)
        first, _ = listener.connect("192.0.2.1")
        _, refused = listener.connect("192.0.2.1")
        self.assertEqual(
            lines(refused),
            [b"ERROR overloaded: too many connections from your address"],
        )
        _, other = listener.connect("2001:db8::1")
        self.assertEqual(other.value(), b"")
        self.assertFalse(other.write_closed)
        self.assertEqual(
            listener.factory.policies.peers(), {"192.0.2.1": 1, "2001:db8::1": 1}
        )
        lose(first)
        _, again = listener.connect("192.0.2.1")
        self.assertFalse(again.write_closed)

    def test_ipv4_mapped_counts_as_ipv4(self) -> None:
        """
        A dual-stack socket's IPv4-mapped address is the same peer as the
        plain IPv4 address.
        """
        listener = Listener(max_per_peer=1)
        listener.connect("192.0.2.7")
        _, refused = listener.connect("::ffff:192.0.2.7")
        self.assertTrue(refused.write_closed)

    def test_unix_peers_not_limited_per_peer(self) -> None:
        """
        UNIX-socket peers have no address to count by: max_per_peer does
        not apply to them.
        """
        listener = Listener(max_per_peer=1)
        for _ in range(3):
            _, transport = listener.connect(peer=UNIXAddress(None))
            self.assertFalse(transport.write_closed)
        self.assertEqual(len(listener.factory.connections), 3)

    def test_refused_connection_hears_no_observer(self) -> None:
        """
        A connection refused for a limit is not counted, logged as opened
        or shown to the chain's observers.
        """
        listener = Listener("broadcast", max_connections=1)
        sender, _ = listener.connect("192.0.2.1")
        _, refused = listener.connect("192.0.2.2")
        sender.dataReceived(b"to everyone\n")
        self.assertEqual(lines(refused), [b"ERROR overloaded: too many connections"])
