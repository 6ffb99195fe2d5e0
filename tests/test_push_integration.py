"""
Server push through a real C{twistd -n echoplus} over real sockets:
broadcast, pubsub in two framings, and a slow consumer cut off while the
others go on with bounded server memory.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd, receive_exactly, receive_lines

LOOPBACK = "tcp:0:interface=127.0.0.1"


def _int32(*payloads: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in payloads)


def _read_int32(sock: socket.socket, count: int) -> list[bytes]:
    frames = []
    for _ in range(count):
        (length,) = struct.unpack(">I", receive_exactly(sock, 4))
        frames.append(receive_exactly(sock, length))
    return frames


def _rss_kib(pid: int) -> int:
    """
    The resident set size of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class BroadcastIntegrationTests(SynchronousTestCase):
    """
    --processor broadcast through twistd.
    """

    def test_three_clients_hear_each_other(self) -> None:
        """
        Each of three clients hears the other two, and not itself.
        """
        server = Twistd(["--listen", LOOPBACK, "--processor", "broadcast"])
        self.addCleanup(server.stop)
        clients = [server.connect() for _ in range(3)]
        for sock in clients:
            self.addCleanup(sock.close)
        server.wait_for(r"Connection \d+ from .* opened", count=3)
        for index, sock in enumerate(clients):
            sock.sendall(b"from %d\n" % index)
            for other, receiver in enumerate(clients):
                if other != index:
                    self.assertEqual(receive_lines(receiver, 1), [b"from %d" % index])
        # Nobody heard itself: the next line each reads is a new message.
        clients[0].sendall(b"last\n")
        self.assertEqual(receive_lines(clients[1], 1), [b"last"])
        self.assertEqual(receive_lines(clients[2], 1), [b"last"])


class PubSubIntegrationTests(SynchronousTestCase):
    """
    --processor pubsub through twistd, in the line and int32 framings.
    """

    def test_line(self) -> None:
        """
        Exactly the subscribers get MSG; the publisher learns how many.
        """
        server = Twistd(["--listen", LOOPBACK, "--processor", "pubsub"])
        self.addCleanup(server.stop)
        alice, bob, carol = (server.connect() for _ in range(3))
        for sock in (alice, bob, carol):
            self.addCleanup(sock.close)
        alice.sendall(b"SUB news\n")
        bob.sendall(b"SUB news\n")
        carol.sendall(b"SUB sport\n")
        self.assertEqual(receive_lines(alice, 1), [b"OK SUB news"])
        self.assertEqual(receive_lines(bob, 1), [b"OK SUB news"])
        self.assertEqual(receive_lines(carol, 1), [b"OK SUB sport"])
        carol.sendall(b"PUB news hello\n")
        self.assertEqual(receive_lines(carol, 1), [b"OK PUB 2"])
        self.assertEqual(receive_lines(alice, 1), [b"MSG news hello"])
        self.assertEqual(receive_lines(bob, 1), [b"MSG news hello"])
        bob.sendall(b"UNSUB news\nPUB news again\nBAD\n")
        self.assertEqual(
            receive_lines(bob, 3),
            [
                b"OK UNSUB news",
                b"OK PUB 1",
                b"ERROR bad-request: unknown command; use SUB <topic>, "
                b"UNSUB <topic> or PUB <topic> <payload>",
            ],
        )
        self.assertEqual(receive_lines(alice, 1), [b"MSG news again"])

    def test_int32(self) -> None:
        """
        The same exchange in the int32 framing, payloads with newlines
        included.
        """
        server = Twistd(
            ["--listen", LOOPBACK, "--processor", "pubsub", "--framing", "int32"]
        )
        self.addCleanup(server.stop)
        subscriber, publisher = server.connect(), server.connect()
        self.addCleanup(subscriber.close)
        self.addCleanup(publisher.close)
        subscriber.sendall(_int32(b"SUB t"))
        self.assertEqual(_read_int32(subscriber, 1), [b"OK SUB t"])
        publisher.sendall(_int32(b"PUB t two\nlines", b"PUB u nobody"))
        self.assertEqual(_read_int32(publisher, 2), [b"OK PUB 1", b"OK PUB 0"])
        self.assertEqual(_read_int32(subscriber, 1), [b"MSG t two\nlines"])


class SlowConsumerIntegrationTests(SynchronousTestCase):
    """
    One publisher floods a topic with one reading and one never-reading
    subscriber (the measurement docs/shared-state.md reports).
    """

    MESSAGES = 40_000
    SIZE = 1000

    def test_never_reading_subscriber_is_cut_off(self) -> None:
        """
        The never-reading subscriber is closed as overloaded; the reader
        gets every message, the publisher every answer, and the server's
        memory stays bounded well below the flood's size.
        """
        server = Twistd(
            [
                "--listen",
                LOOPBACK,
                "--processor",
                "pubsub",
                "--max-write-buffer",
                "1048576",
            ]
        )
        self.addCleanup(server.stop)
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.settimeout(10)
        silent.connect(server.addresses[0])  # type: ignore[arg-type]
        reader, publisher = server.connect(), server.connect()
        for sock in (silent, reader, publisher):
            self.addCleanup(sock.close)
        for sock in (silent, reader):
            sock.sendall(b"SUB flood\n")
            self.assertEqual(receive_lines(sock, 1), [b"OK SUB flood"])
        pid = server.process.pid
        baseline = peak = _rss_kib(pid)
        received: list[int] = []
        reading = threading.Thread(target=self._read_all, args=(reader, received))
        reading.start()
        samples: list[int] = []
        sampling = threading.Thread(target=_sample_rss, args=(pid, samples, reading))
        sampling.start()
        line = b"PUB flood " + b"x" * self.SIZE + b"\n"
        answers: list[bytes] = []
        started = time.monotonic()
        for _ in range(self.MESSAGES // 1000):
            publisher.sendall(line * 1000)
            answers += receive_lines(publisher, 1000)
            peak = max(peak, _rss_kib(pid))
        reading.join(30)
        sampling.join(5)
        peak = max([peak, *samples])
        elapsed = time.monotonic() - started
        port = silent.getsockname()[1]
        (cut_off,) = server.wait_for(r"Connection \d+ from \S+: overloaded", timeout=10)
        self.assertIn(f":{port}:", cut_off.group(0))
        self.assertEqual(received, [self.MESSAGES])
        self.assertEqual(len(answers), self.MESSAGES)
        self.assertTrue(all(a.startswith(b"OK PUB ") for a in answers))
        growth_mib = (peak - baseline) / 1024
        flood_mib = self.MESSAGES * self.SIZE / 2**20
        print(
            f"\nslow consumer: {flood_mib:.0f} MiB published in {elapsed:.1f}s; "
            f"server RSS {baseline / 1024:.1f} MiB before, peak "
            f"{peak / 1024:.1f} MiB (+{growth_mib:.1f} MiB)"
        )
        self.assertLess(growth_mib, flood_mib / 3)

    def _read_all(self, sock: socket.socket, received: list[int]) -> None:
        """
        Read MSG lines until all arrived; record how many.
        """
        count, rest = 0, b""
        try:
            while count < self.MESSAGES:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                rest += chunk
                lines = rest.split(b"\n")
                rest = lines.pop()
                count += len(lines)
        finally:
            received.append(count)


def _sample_rss(pid: int, samples: list[int], until: threading.Thread) -> None:
    """
    Sample process C{pid}'s RSS every 20 ms while C{until} runs (bounded).
    """
    for _ in range(3000):
        if not until.is_alive():
            return
        samples.append(_rss_kib(pid))
        time.sleep(0.02)
