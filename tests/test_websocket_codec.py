"""
The websocket framing seen through the same tests as every framing, its
origin policy and option parsers, fuzzing, and what a plain launch imports.
"""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from websockets.frames import Opcode

from echoplus.parsers import switch, url_path, web_origins, word_list
from echoplus.testing import FrameHarness
from echoplus.websocket.origins import origin_allowed
from tests.support import twistd_environment
from tests.test_websocket import Raw
from tests.ws_support import client_frame, handshake

FRAMINGS = ("line", "websocket")


class SameProcessorsTests(SynchronousTestCase):
    """
    The same processors pass the same FrameHarness tests over line and
    websocket.
    """

    def each(self, processors: object, **limits: object) -> list[FrameHarness]:
        return [FrameHarness(framing, processors, **limits) for framing in FRAMINGS]

    def test_echo_and_transforms(self) -> None:
        """
        echo, upper, reverse, rot13 and a chain give the same replies.
        """
        for chain, sent, expected in [
            ("echo", [b"hello", b"two words"], [b"hello", b"two words"]),
            ("upper,reverse", [b"abc"], [b"CBA"]),
            ("rot13", [b"Hello"], [b"Uryyb"]),
            ("prefix(text=>> ),upper", [b"hi"], [b">> HI"]),
        ]:
            for harness in self.each(chain):
                harness.send(*sent)
                self.assertEqual(harness.replies(), expected, (chain, harness))

    def test_json_errors_in_band(self) -> None:
        """
        A bad-request error is an in-band message, and the connection goes on.
        """
        for harness in self.each("json"):
            harness.send(b"not json", b'{"b":1,"a":2}')
            replies = harness.replies()
            self.assertTrue(replies[0].startswith(b"ERROR bad-request: "))
            self.assertEqual(replies[1], b'{"a":2,"b":1}')
            self.assertFalse(harness.disconnected)

    def test_counter_per_connection(self) -> None:
        """
        Per-connection state works the same.
        """
        for harness in self.each("counter"):
            harness.send(b"a", b"b")
            first = harness.replies()
            self.assertEqual(len(first), 2)
            self.assertNotEqual(first[0], first[1])

    def test_async_order_and_timeout(self) -> None:
        """
        Async replies keep request order; a slow one is ERROR timeout.
        """
        for harness in self.each("delay(seconds=2)", processor_timeout=1):
            harness.send(b"one", b"two")
            harness.clock.advance(1.5)
            replies = harness.replies()
            self.assertEqual(len(replies), 2)
            self.assertTrue(all(r.startswith(b"ERROR timeout: ") for r in replies))
        for harness in self.each("delay(seconds=1)"):
            harness.send(b"one", b"two")
            harness.clock.advance(1)
            self.assertEqual(harness.replies(), [b"one", b"two"])

    def test_broadcast(self) -> None:
        """
        broadcast reaches every other connection, not the sender.
        """
        for harness in self.each("broadcast"):
            other = harness.client()
            other.replies()
            harness.send(b"hi all")
            self.assertEqual(harness.replies(), [])
            self.assertEqual(other.replies(), [b"hi all"])

    def test_pubsub(self) -> None:
        """
        pubsub: SUB, PUB with its count, MSG to subscribers, UNSUB.
        """
        for harness in self.each("pubsub"):
            other = harness.client()
            other.send(b"SUB lobby")
            self.assertEqual(other.replies(), [b"OK SUB lobby"])
            harness.send(b"PUB lobby hello")
            self.assertEqual(harness.replies(), [b"OK PUB 1"])
            self.assertEqual(other.replies(), [b"MSG lobby hello"])
            other.send(b"UNSUB lobby")
            self.assertEqual(other.replies(), [b"OK UNSUB lobby"])

    def test_oversize_closes(self) -> None:
        """
        A frame over max_frame closes the connection.
        """
        for harness in self.each("echo", max_frame=8):
            harness.send(b"ok", b"x" * 9)
            self.assertEqual(harness.replies()[0], b"ok")
            self.assertTrue(harness.disconnected)

    def test_allow_deny(self) -> None:
        """
        A client refused by --deny is closed without a byte.
        """
        for harness in self.each("echo", deny=["10.0.0.0/8"]):
            from twisted.internet.address import IPv4Address

            client = harness.client(IPv4Address("TCP", "10.1.2.3", 1234))
            self.assertTrue(client.disconnected)
            self.assertEqual(client.written, b"")


class FuzzTests(SynchronousTestCase):
    """
    Whatever the bytes, the server neither raises nor writes a traceback.
    """

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=5))
    def test_fuzzed_handshakes(self, data: bytes, cuts: list[int]) -> None:
        """
        Random bytes, and handshakes with random bytes spliced in, in random
        pieces: no exception; the output is HTTP or nothing.
        """
        good = handshake()
        for attempt in (data, good[: len(data) % len(good)] + data):
            raw = Raw(FrameHarness("websocket"))
            position = 0
            for cut in [*cuts, len(attempt)]:
                raw.feed(attempt[position : position + cut])
                position += cut
            written = raw.written
            self.assertTrue(written == b"" or written.startswith(b"HTTP/1.1 "))
            self.assertNotIn(b"Traceback", written)

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=400), st.integers(1, 64))
    def test_fuzzed_frames(self, data: bytes, piece: int) -> None:
        """
        Random bytes after a good handshake (and after a good frame): no
        exception, no traceback text on the wire.
        """
        raw = Raw(FrameHarness("websocket", max_frame=100))
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"first"))
        for start in range(0, len(data), piece):
            if raw.closed:
                break
            raw.feed(data[start : start + piece])
        self.assertNotIn(b"Traceback", raw.written)
        self.assertIn(b"first", raw.written)


class OriginTests(SynchronousTestCase):
    """
    The origin policy, alone.
    """

    def test_same_host_default(self) -> None:
        """
        Without a list: no Origin is accepted; an Origin must name the Host.
        """
        self.assertTrue(origin_allowed(None, "a.example", ()))
        self.assertTrue(origin_allowed("http://a.example", "a.example", ()))
        self.assertTrue(origin_allowed("http://a.example", "a.example:80", ()))
        self.assertTrue(origin_allowed("https://[::1]:8443", "[::1]:8443", ()))
        self.assertFalse(origin_allowed("http://a.example:8000", "a.example", ()))
        self.assertFalse(origin_allowed("http://b.example", "a.example", ()))
        self.assertFalse(origin_allowed("null", "a.example", ()))
        self.assertFalse(origin_allowed("http://a.example", None, ()))

    def test_list(self) -> None:
        """
        With a list: exactly those (case-insensitive), or * for any.
        """
        allowed = ("http://a.example:8000",)
        self.assertTrue(origin_allowed("HTTP://A.example:8000", "x", allowed))
        self.assertFalse(origin_allowed("http://a.example", "a.example", allowed))
        self.assertFalse(origin_allowed(None, "a.example", allowed))
        self.assertTrue(origin_allowed("null", "x", ("*",)))


class ParserTests(SynchronousTestCase):
    """
    The ws_* option parsers.
    """

    def test_values(self) -> None:
        """
        Good values parse; bad ones are ValueErrors naming the value.
        """
        self.assertEqual(url_path("/chat"), "/chat")
        self.assertEqual(word_list("a.v1, b"), ("a.v1", "b"))
        self.assertEqual(
            web_origins(["http://A.example:80", "*"]), ("http://a.example:80", "*")
        )
        self.assertEqual(
            web_origins("https://localhost:8443, http://[::1]:8000"),
            ("https://localhost:8443", "http://[::1]:8000"),
        )
        self.assertIs(switch("on"), True)
        self.assertIs(switch(False), False)
        for parse, bad in [
            (url_path, "chat"),
            (url_path, "/a b"),
            (word_list, "a b;c"),
            (web_origins, "a.example"),
            (web_origins, "http://a.example/path"),
            (switch, "maybe"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parse(bad)
            self.assertIn(repr(bad.split()[-1])[1:-1], str(caught.exception))


class ExampleConfigTests(SynchronousTestCase):
    """
    The web chat's config file is valid.
    """

    def test_chat_toml_checks(self) -> None:
        """
        echoplus check accepts examples/web-chat/chat.toml and shows its
        origins.
        """
        import io

        from echoplus.check import run_check
        from tests.support import REPO

        out, err = io.StringIO(), io.StringIO()
        path = str(REPO / "examples" / "web-chat" / "chat.toml")
        self.assertEqual(run_check(path, {}, out, err), 0, err.getvalue())
        self.assertIn("http://localhost:8000", out.getvalue())


class ImportTests(SynchronousTestCase):
    """
    websockets is imported only when a websocket listener is configured.
    """

    def test_plain_launch_imports_no_websockets(self) -> None:
        """
        Building the default service imports neither websockets nor
        echoplus.websocket's modules; configuring --framing websocket does.
        """
        code = (
            "import sys, os\n"
            "from echoplus.tap import Options, settings_from\n"
            "from echoplus.factory import EchoPlusFactory\n"
            "from echoplus.protocols import find_framing\n"
            "options = Options(); options.parseOptions(sys.argv[1:])\n"
            "settings = settings_from(options, {})\n"
            "find_framing(settings.listeners[0].framing)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'websockets'"
            " or m.startswith('echoplus.websocket.'))[:1])\n"
        )
        run = [sys.executable, "-c", code]
        env = twistd_environment()
        plain = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual((plain.stdout, plain.stderr), ("[]\n", ""))
        ws = subprocess.run(
            [*run, "--framing", "websocket"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        self.assertNotEqual(ws.stdout, "[]\n", ws.stderr)
