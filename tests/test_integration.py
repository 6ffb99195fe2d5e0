"""
Integration tests: the real C{twistd -n echoplus} over real loopback sockets.

Every server listens on port 0 and its address is read from its log (see
L{tests.support}).  These are few and coarse on purpose; the behaviour in
detail is tested in memory in C{test_protocols}.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from echoplus.framing import (
    IMPLEMENTATION,
    IntPrefixDecoder,
    IntPrefixEncoder,
    LineDecoder,
    NetstringDecoder,
    NetstringEncoder,
)
from tests.support import (
    Twistd,
    receive_exactly,
    receive_lines,
    receive_until_closed,
    run_twistd,
)

LOOPBACK = "tcp:0:interface=127.0.0.1"


def start(*arguments: str) -> Twistd:
    """
    Start C{twistd -n echoplus} on a free loopback port with C{arguments}.
    """
    return Twistd(["--listen", LOOPBACK, *arguments])


def stop_all(servers: list[Twistd]) -> None:
    """
    Stop several servers at once: signal them all, then wait for each.
    """
    for server in servers:
        if server.process.poll() is None:
            server.signal(signal.SIGTERM)
    for server in servers:
        server.stop()


def receive_frames(
    sock: socket.socket,
    decoder: LineDecoder | NetstringDecoder | IntPrefixDecoder,
    count: int,
) -> list[bytes]:
    """
    Read until C{decoder} has C{count} frames.
    """
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        frames.extend(decoder.feed(chunk))
        assert decoder.error is None, decoder.error
    return frames


# framing -> (encode a list of payloads, make a decoder)
FRAMED: dict[str, tuple[Callable[[list[bytes]], bytes], Callable[[], object]]] = {
    "line": (lambda ps: b"".join(p + b"\n" for p in ps), LineDecoder),
    "netstring": (NetstringEncoder().encode_batch, NetstringDecoder),
    "int8": (IntPrefixEncoder(1).encode_batch, lambda: IntPrefixDecoder(1)),
    "int16": (IntPrefixEncoder(2).encode_batch, lambda: IntPrefixDecoder(2)),
    "int32": (IntPrefixEncoder(4).encode_batch, lambda: IntPrefixDecoder(4)),
}


class FramingTests(SynchronousTestCase):
    """
    Each framing served by a real twistd.
    """

    def test_every_framing(self) -> None:
        """
        Every built-in framing answers upper-cased replies, in order, in
        its own framing, over a real socket.
        """
        names = [*FRAMED, "raw"]
        with ThreadPoolExecutor(len(names)) as pool:
            servers = dict(
                zip(
                    names,
                    pool.map(
                        lambda n: start("--framing", n, "--processor", "upper"), names
                    ),
                    strict=True,
                )
            )
        self.addCleanup(stop_all, list(servers.values()))
        requests = [b"hello", b"", b"world " * 20]
        for name, (encode, make_decoder) in FRAMED.items():
            with servers[name].connect() as sock:
                data = encode(requests)
                # Split a frame across two sends.
                sock.sendall(data[:3])
                sock.sendall(data[3:])
                self.assertEqual(
                    receive_frames(sock, make_decoder(), 3),  # type: ignore[arg-type]
                    [r.upper() for r in requests],
                    name,
                )
        with servers["raw"].connect() as sock:
            sock.sendall(b"raw bytes\x00\n")
            self.assertEqual(receive_exactly(sock, 11), b"RAW BYTES\x00\n")

    def test_int32_chain(self) -> None:
        """
        C{--framing int32 --processor upper,reverse} answers length-prefixed
        frames, upper-cased and reversed.
        """
        server = start("--framing", "int32", "--processor", "upper,reverse")
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(
                struct.pack(">I", 5) + b"hello" + struct.pack(">I", 3) + b"abc"
            )
            self.assertEqual(
                receive_exactly(sock, 16),
                struct.pack(">I", 5) + b"OLLEH" + struct.pack(">I", 3) + b"CBA",
            )

    def test_subclass_framing(self) -> None:
        """
        C{--framing module:Class} serves a user's L{DelimitedProtocol}
        subclass with its hooks.
        """
        server = start(
            "--framing", "tests.test_protocols:StxProtocol", "--processor", "upper"
        )
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"\x02hi\x03\x02there\x03")
            self.assertEqual(receive_exactly(sock, 11), b"\x02HI\x03\x02THERE\x03")
            sock.sendall(b"no stx\x03")
            self.assertEqual(
                receive_until_closed(sock), b"\x02ERROR bad-frame: malformed frame\x03"
            )

    def test_default_launch(self) -> None:
        """
        With only C{--listen}, the server echoes lines; a line over the
        default 65536-byte limit gets C{ERROR frame-too-long} and the
        connection closes.
        """
        server = start()
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"hello\nworld\n")
            self.assertEqual(receive_lines(sock, 2), [b"hello", b"world"])
            sock.sendall(b"x" * 70000 + b"\nnever answered\n")
            self.assertEqual(
                receive_until_closed(sock),
                b"ERROR frame-too-long: line exceeds the limit of 65536 bytes\n",
            )


    def test_log_names_the_codecs(self) -> None:
        """
        The listening line says which codecs serve: the same as this test
        run's (compiled, or pure Python under C{ECHOPLUS_NO_EXTENSIONS=1},
        which the server inherits).
        """
        server = start()
        server.stop()
        self.assertRegex(
            server.drain_output(),
            rf"echoplus listening on \S+ at \S+ "
            rf"\(line, echo; {IMPLEMENTATION} codecs\)",
        )


class HalfCloseTests(SynchronousTestCase):
    """
    A client that shuts down its write side gets every reply it is owed.
    """

    def test_line_half_close(self) -> None:
        """
        After C{a\\nb\\n} and a write shutdown, both (delayed) replies arrive
        before the server closes.
        """
        server = start("--processor", "delay(seconds=0.2),upper")
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"a\nb\n")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(receive_until_closed(sock), b"A\nB\n")

    def test_raw_bulk_upload(self) -> None:
        """
        A bulk upload on C{raw} followed by a write shutdown is answered in
        full before the server closes.
        """
        server = start("--framing", "raw", "--processor", "upper")
        self.addCleanup(server.stop)
        payload = bytes(range(97, 123)) * 40000  # about 1 MB
        with server.connect() as sock:

            def upload() -> None:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)

            # Upload from a thread: the server pauses reading while its
            # replies are not read, so reading and writing must overlap.
            sender = threading.Thread(target=upload, daemon=True)
            sender.start()
            received = receive_until_closed(sock)
            sender.join(10)
        self.assertEqual(len(received), len(payload))
        self.assertEqual(received, payload.upper())


class BadLaunchTests(SynchronousTestCase):
    """
    A bad launch exits non-zero with one clear line and no traceback.
    """

    def assert_refused(self, arguments: list[str], *named: str) -> str:
        """
        Launching with C{arguments} fails with one C{echoplus: error:} line
        that contains every string in C{named}; return that line.
        """
        result = run_twistd(arguments)
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "echoplus: error:" in line]
        self.assertEqual(len(lines), 1, output)
        for text in named:
            self.assertIn(text, lines[0])
        return lines[0]

    def test_misspelled_option(self) -> None:
        """
        A misspelled option is the whole output: one line with a "did you
        mean", not twistd's usage text.
        """
        result = run_twistd(["--procesor", "upper"])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            (result.stdout + result.stderr).splitlines(),
            [
                "echoplus: error: unknown option --procesor "
                "(did you mean '--processor'?)"
            ],
        )

    def test_unknown_framing(self) -> None:
        """
        An unknown framing is named.
        """
        self.assert_refused(["--framing", "morse"], "'morse'")

    def test_unknown_processor(self) -> None:
        """
        An unknown processor is named.
        """
        self.assert_refused(["--processor", "upper,nosuch"], "'nosuch'")

    def test_malformed_endpoint(self) -> None:
        """
        A malformed endpoint string is quoted.
        """
        self.assert_refused(["--listen", "tcp:notaport"], "'tcp:notaport'")

    def test_port_in_use(self) -> None:
        """
        A port already taken is named with the reason.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            line = self.assert_refused(["--listen", endpoint], endpoint)
        self.assertIn("in use", line)
