"""
Attacks against a real C{twistd -n echoplus} over loopback sockets: each
must leave the server serving other clients with bounded memory.

Every test starts its own server on a free port with small limits and
timeouts, so that each attack resolves within a few seconds.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd, receive_lines, receive_until_closed

LOOPBACK = "tcp:0:interface=127.0.0.1"


def start(*arguments: str) -> Twistd:
    """
    Start C{twistd -n echoplus} on a free loopback port with C{arguments}.
    """
    return Twistd(["--listen", LOOPBACK, *arguments])


def rss_kib(server: Twistd) -> int:
    """
    The server process's resident set size, in KiB.
    """
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def small_receive_buffer(sock: socket.socket) -> None:
    """
    Keep the kernel from buffering much for a client that does not read
    (loopback autotuning would otherwise absorb tens of MB).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def connect_small(server: Twistd) -> socket.socket:
    """
    A client socket with a small receive buffer, set before connecting.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    small_receive_buffer(sock)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def assert_serves(test: SynchronousTestCase, server: Twistd) -> None:
    """
    A fresh client gets its echo at once.
    """
    with server.connect(timeout=5) as sock:
        sock.sendall(b"still here\n")
        test.assertEqual(receive_lines(sock, 1), [b"still here"])


def flood_without_reading(sock: socket.socket, limit: int, seconds: float) -> int:
    """
    Send echo requests without reading until the server stops taking them
    (0.5 s without progress), C{limit} bytes, or C{seconds}; return the
    bytes sent.
    """
    chunk = (b"x" * 1023 + b"\n") * 64
    sock.setblocking(False)
    sent, stalled_since = 0, None
    deadline = time.monotonic() + seconds
    while sent < limit and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
            stalled_since = None
        except BlockingIOError:
            now = time.monotonic()
            stalled_since = stalled_since or now
            if now - stalled_since > 0.5:
                break
            time.sleep(0.01)
    sock.setblocking(True)
    sock.settimeout(10)
    return sent


class FrameLimitTests(SynchronousTestCase):
    """
    Over-long frames are refused early, whatever the framing.
    """

    def test_endless_line(self) -> None:
        """
        A line that never ends (20 MB) gets ERROR frame-too-long and the
        connection closes, the server's memory stays bounded, and another
        client is served.
        """
        server = start("--max-frame", "1024")
        self.addCleanup(server.stop)
        assert_serves(self, server)
        before = rss_kib(server)
        with server.connect() as attacker:
            try:
                for _ in range(20):
                    attacker.sendall(b"y" * 1_000_000)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server has closed its side and discarded the rest
            assert_serves(self, server)
            self.assertLess(rss_kib(server) - before, 8 * 1024)
            self.assertEqual(
                receive_until_closed(attacker),
                b"ERROR frame-too-long: line exceeds the limit of 1024 bytes\n",
            )

    def test_huge_length_prefix(self) -> None:
        """
        A 4 GiB int32 length prefix is refused as soon as it arrives.
        """
        server = start("--framing", "int32")
        self.addCleanup(server.stop)
        with server.connect(timeout=3) as attacker:
            started = time.monotonic()
            attacker.sendall(b"\xff\xff\xff\xff")
            reply = receive_until_closed(attacker)
            self.assertLess(time.monotonic() - started, 2)
        message = (
            b"ERROR frame-too-long: "
            b"frame of 4294967295 bytes exceeds the limit of 65536"
        )
        self.assertEqual(reply, struct.pack(">I", len(message)) + message)


class SlowReaderTests(SynchronousTestCase):
    """
    Clients that do not read what they are sent cannot grow the server.
    """

    def test_never_reading_flood(self) -> None:
        """
        A client sending echo requests without reading stalls (the server
        stops reading from it), the server's memory stays bounded, another
        client is served meanwhile, and the stalled client is cut off with
        ERROR overloaded.
        """
        server = start("--idle-timeout", "1")
        self.addCleanup(server.stop)
        assert_serves(self, server)
        before = rss_kib(server)
        flooder = connect_small(server)
        self.addCleanup(flooder.close)
        sent = flood_without_reading(flooder, 200_000_000, 4)
        self.assertLess(sent, 100_000_000)  # backpressure stopped it
        assert_serves(self, server)
        self.assertLess(rss_kib(server) - before, 16 * 1024)
        time.sleep(1.8)  # the stall outlasts --idle-timeout
        received = receive_until_closed(flooder)
        self.assertTrue(
            received.endswith(b"\nERROR overloaded: replies not read for 1 s\n"),
            received[-200:],
        )
        assert_serves(self, server)

    def test_broadcast_to_non_reader(self) -> None:
        """
        Pushes to a client that does not read are capped by
        --max-write-buffer: it gets ERROR overloaded and is closed, while
        the sender and a reading client carry on.
        """
        server = start("--processor", "broadcast", "--max-write-buffer", "262144")
        self.addCleanup(server.stop)
        victim = connect_small(server)
        self.addCleanup(victim.close)
        reader = server.connect()
        self.addCleanup(reader.close)
        sender = server.connect()
        self.addCleanup(sender.close)
        time.sleep(0.2)  # all three are open before the first broadcast
        before = rss_kib(server)
        count, line = 12_000, b"m" * 1023 + b"\n"
        counted: list[int] = []

        def read_all() -> None:
            total = 0
            while total < count * len(line):
                chunk = reader.recv(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
            counted.append(total)

        thread = threading.Thread(target=read_all, daemon=True)
        thread.start()
        sender.sendall(line * count)
        thread.join(20)
        self.assertEqual(counted, [count * len(line)])
        self.assertLess(rss_kib(server) - before, 16 * 1024)
        received = receive_until_closed(victim)
        self.assertLess(len(received), count * len(line))
        self.assertTrue(
            received.endswith(
                b"\nERROR overloaded: more than 262144 bytes of replies not read\n"
            ),
            received[-200:],
        )
        sender.sendall(b"after\n")
        self.assertEqual(receive_lines(reader, 1), [b"after"])


class ConnectionLimitTests(SynchronousTestCase):
    """
    Connection floods are refused with ERROR overloaded.
    """

    def test_flood_past_max_connections(self) -> None:
        """
        Past --max-connections every new client gets ERROR overloaded and
        is closed; once a client leaves, a new one is served.
        """
        server = start("--max-connections", "5")
        self.addCleanup(server.stop)
        accepted = [server.connect() for _ in range(5)]
        for sock in accepted:
            self.addCleanup(sock.close)
            sock.sendall(b"in\n")
            self.assertEqual(receive_lines(sock, 1), [b"in"])
        for _ in range(20):
            with server.connect() as refused:
                self.assertEqual(
                    receive_until_closed(refused),
                    b"ERROR overloaded: too many connections\n",
                )
        accepted[0].close()
        deadline = time.monotonic() + 5
        while True:
            with server.connect() as sock:
                sock.sendall(b"again\n")
                reply = receive_lines(sock, 1)
            if reply == [b"again"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(reply, [b"again"])

    def test_max_per_peer(self) -> None:
        """
        --max-per-peer refuses one host's extra connections.
        """
        server = start("--max-per-peer", "2")
        self.addCleanup(server.stop)
        first, second = server.connect(), server.connect()
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        second.sendall(b"ok\n")
        self.assertEqual(receive_lines(second, 1), [b"ok"])
        with server.connect() as third:
            self.assertEqual(
                receive_until_closed(third),
                b"ERROR overloaded: too many connections from your address\n",
            )


class TimeoutTests(SynchronousTestCase):
    """
    Slow senders and idle clients are cut off.
    """

    def test_slow_sender(self) -> None:
        """
        A client dribbling one byte at a time is cut off by --frame-timeout
        with ERROR timeout, although bytes keep arriving; another client is
        served meanwhile.
        """
        server = start("--frame-timeout", "0.5", "--idle-timeout", "0")
        self.addCleanup(server.stop)
        with server.connect() as slow:
            started = time.monotonic()
            slow.setblocking(False)
            received = b""
            while time.monotonic() - started < 4 and not received.endswith(b"\n"):
                try:
                    slow.send(b"z")
                except OSError:
                    pass
                time.sleep(0.05)
                try:
                    received += slow.recv(100)
                except BlockingIOError:
                    pass
            elapsed = time.monotonic() - started
            assert_serves(self, server)
        self.assertEqual(received, b"ERROR timeout: frame not completed within 0.5 s\n")
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 2.0)

    def test_idle_client(self) -> None:
        """
        A client that sends nothing is closed after --idle-timeout.
        """
        server = start("--idle-timeout", "0.5")
        self.addCleanup(server.stop)
        with server.connect(timeout=3) as idle:
            started = time.monotonic()
            self.assertEqual(
                receive_until_closed(idle), b"ERROR timeout: idle for 0.5 s\n"
            )
            self.assertLess(time.monotonic() - started, 2.0)


class AccessTests(SynchronousTestCase):
    """
    --allow/--deny refuse clients without a byte.
    """

    def test_denied_client_closed_without_a_byte(self) -> None:
        """
        A denied client is closed with nothing written, and the refusal is
        logged.
        """
        server = start("--deny", "127.0.0.0/8")
        self.addCleanup(server.stop)
        with server.connect(timeout=3) as sock:
            try:
                data = receive_until_closed(sock)
            except ConnectionResetError:
                data = b""
        self.assertEqual(data, b"")
        server.wait_for(r"Connection from 127\.0\.0\.1:\d+ refused by --allow/--deny")


class ProxiedClientTests(SynchronousTestCase):
    """
    Behind C{haproxy:}, the limits and access control see the client in
    the PROXY header, not the proxy.
    """

    def test_real_client_address_counts(self) -> None:
        """
        --deny and --max-per-peer apply to the PROXY header's source
        address: a denied source is closed without a byte, one source's
        second connection is refused, another source is served.
        """
        server = Twistd(
            [
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--deny",
                "203.0.113.0/24",
                "--max-per-peer",
                "1",
            ]
        )
        self.addCleanup(server.stop)

        def proxied(source: str) -> socket.socket:
            sock = server.connect(timeout=5)
            self.addCleanup(sock.close)
            sock.sendall(b"PROXY TCP4 %s 127.0.0.1 5555 6000\r\n" % source.encode())
            return sock

        denied = proxied("203.0.113.7")
        denied.sendall(b"hello\n")
        try:
            self.assertEqual(receive_until_closed(denied), b"")
        except ConnectionResetError:
            pass  # aborted: nothing was written either way
        first = proxied("198.51.100.1")
        first.sendall(b"one\n")
        self.assertEqual(receive_lines(first, 1), [b"one"])
        second = proxied("198.51.100.1")
        self.assertEqual(
            receive_until_closed(second),
            b"ERROR overloaded: too many connections from your address\n",
        )
        other = proxied("198.51.100.2")
        other.sendall(b"two\n")
        self.assertEqual(receive_lines(other, 1), [b"two"])


class FairnessTests(SynchronousTestCase):
    """
    One client pipelining a flood does not starve the others.
    """

    def test_flood_does_not_starve_others(self) -> None:
        """
        While one client pipelines tiny requests as fast as it can (and
        reads its replies), another client's round trips stay fast.
        """
        server = start()
        self.addCleanup(server.stop)
        flooder = server.connect()
        self.addCleanup(flooder.close)
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                try:
                    if not flooder.recv(1 << 20):
                        return
                except OSError:
                    return

        def flood() -> None:
            chunk = b"a\n" * 32768
            while not stop.is_set():
                try:
                    flooder.sendall(chunk)
                except OSError:
                    return

        threads = [threading.Thread(target=f, daemon=True) for f in (drain, flood)]
        for thread in threads:
            thread.start()
        self.addCleanup(stop.set)
        time.sleep(0.3)
        worst = 0.0
        with server.connect(timeout=5) as other:
            for index in range(20):
                started = time.monotonic()
                other.sendall(b"ping %d\n" % index)
                self.assertEqual(receive_lines(other, 1), [b"ping %d" % index])
                worst = max(worst, time.monotonic() - started)
        stop.set()
        self.assertLess(worst, 0.5)
