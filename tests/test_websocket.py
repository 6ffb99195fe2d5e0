"""
Unit tests of the websocket framing: the real protocol, factory and
processors on in-memory transports (FrameHarness, StringTransport), timed
by a task.Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from websockets.frames import Opcode
from zope.interface import implementer

from echoplus.errors import BadFrame
from echoplus.interfaces import IProcessor
from echoplus.testing import FrameHarness
from echoplus.websocket.closing import MAX_REASON, close_reason
from tests.ws_support import (
    client_frame,
    close_of,
    frames_of,
    handshake,
    status_of,
    typed,
)


class Raw:
    """
    One connection to a harness listener fed raw bytes (no client codec).
    """

    def __init__(self, harness: FrameHarness, port: int = 50000) -> None:
        peer = IPv4Address("TCP", "127.0.0.1", port)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol = harness.factory.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)
        self.harness = harness

    def feed(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def written(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


@implementer(IProcessor)
class Binary:
    """
    Replies with bytes that are not UTF-8.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        return b"\xff" + message


@implementer(IProcessor)
class Pusher:
    """
    Pushes a text and a binary payload, and replies with the message.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        context.send(b"pushed")
        context.send(b"\xff\xfe")
        return message


class HandshakeTests(SynchronousTestCase):
    """
    The opening handshake: path, origin policy, plain HTTP, garbage.
    """

    def test_accepts_and_echoes(self) -> None:
        """
        A handshake on / gets 101, then messages are echoed.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"hello"))
        self.assertEqual(status_of(raw.written), 101)
        self.assertEqual(typed(frames_of(raw.written)), [("text", b"hello")])
        self.assertFalse(raw.closed)

    def test_wrong_path_is_404(self) -> None:
        """
        Another path gets HTTP 404 and the connection closes.
        """
        raw = Raw(FrameHarness("websocket", ws_path="/chat"))
        raw.feed(handshake("/other"))
        self.assertEqual(status_of(raw.written), 404)
        self.assertTrue(raw.closed)

    def test_path_with_query(self) -> None:
        """
        A query string does not change the path.
        """
        raw = Raw(FrameHarness("websocket", ws_path="/chat"))
        raw.feed(handshake("/chat?room=1"))
        self.assertEqual(status_of(raw.written), 101)

    def test_foreign_origin_is_403(self) -> None:
        """
        By default a browser page from another host gets HTTP 403.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(handshake(host="chat.example:5000", origin="https://evil.example"))
        self.assertEqual(status_of(raw.written), 403)
        self.assertTrue(raw.closed)

    def test_same_origin_accepted(self) -> None:
        """
        By default a page from the host the request was sent to is
        accepted, default ports aside.
        """
        for host, origin in [
            ("chat.example:5000", "http://chat.example:5000"),
            ("chat.example", "https://chat.example"),
            ("chat.example:443", "https://CHAT.example"),
        ]:
            raw = Raw(FrameHarness("websocket"))
            raw.feed(handshake(host=host, origin=origin))
            self.assertEqual(status_of(raw.written), 101, (host, origin))

    def test_no_origin_accepted(self) -> None:
        """
        A non-browser client, which sends no Origin, is accepted.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(handshake())
        self.assertEqual(status_of(raw.written), 101)

    def test_listed_origins(self) -> None:
        """
        With --ws-origins, exactly the listed origins are accepted; * is any.
        """
        harness = FrameHarness("websocket", ws_origins=["http://page.example:8000"])
        for origin, status in [
            ("http://page.example:8000", 101),
            ("http://localhost:5000", 403),
            ("null", 403),
        ]:
            raw = Raw(harness)
            raw.feed(handshake(host="localhost:5000", origin=origin))
            self.assertEqual(status_of(raw.written), status, origin)
        raw = Raw(FrameHarness("websocket", ws_origins="*"))
        raw.feed(handshake(origin="https://anything.example"))
        self.assertEqual(status_of(raw.written), 101)

    def test_plain_http_is_426(self) -> None:
        """
        A plain HTTP request gets 426 with one short line, then a close.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(status_of(raw.written), 426)
        body = raw.written.partition(b"\r\n\r\n")[2]
        self.assertEqual(body.count(b"\n"), 1)
        self.assertLess(len(body), 80)
        self.assertTrue(raw.closed)

    def test_garbage_closes_without_a_byte(self) -> None:
        """
        Bytes that are not HTTP close the connection, writing nothing.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        self.assertEqual(raw.written, b"")
        self.assertTrue(raw.closed)

    def test_subprotocol_echoed_only_if_offered(self) -> None:
        """
        The first of our subprotocols the client offered is echoed; a client
        that offers none is still accepted, without one.
        """
        harness = FrameHarness("websocket", ws_subprotocols="chat.v2,chat.v1")
        raw = Raw(harness)
        raw.feed(handshake(extra="Sec-WebSocket-Protocol: other, chat.v1"))
        self.assertIn(b"Sec-WebSocket-Protocol: chat.v1\r\n", raw.written)
        raw = Raw(harness)
        raw.feed(handshake())
        self.assertEqual(status_of(raw.written), 101)
        self.assertNotIn(b"Sec-WebSocket-Protocol", raw.written)

    def test_handshake_within_frame_timeout(self) -> None:
        """
        A handshake not completed within --frame-timeout closes the
        connection (no close frame: there is no WebSocket yet).
        """
        harness = FrameHarness("websocket", frame_timeout=2, idle_timeout=0)
        raw = Raw(harness)
        raw.feed(b"GET / HTTP/1.1\r\n")
        harness.clock.advance(1)
        self.assertFalse(raw.closed)
        harness.clock.advance(2)
        self.assertTrue(raw.closed)
        self.assertEqual(raw.written, b"")

    def test_silent_client_bounded_by_frame_timeout(self) -> None:
        """
        A client that connects and sends nothing is closed after
        --frame-timeout too.
        """
        harness = FrameHarness("websocket", frame_timeout=2, idle_timeout=0)
        raw = Raw(harness)
        harness.clock.advance(3)
        self.assertTrue(raw.closed)


class MessageTests(SynchronousTestCase):
    """
    Messages, their types, fragments, pushes.
    """

    def test_text_and_binary_replies(self) -> None:
        """
        A reply goes out with the type of its request.
        """
        raw = Raw(FrameHarness("websocket", "upper"))
        raw.feed(
            handshake()
            + client_frame(Opcode.TEXT, b"abc")
            + client_frame(Opcode.BINARY, b"def")
            + client_frame(Opcode.TEXT, b"ghi")
        )
        self.assertEqual(
            typed(frames_of(raw.written)),
            [("text", b"ABC"), ("binary", b"DEF"), ("text", b"GHI")],
        )

    def test_reply_to_text_that_is_not_utf8_goes_binary(self) -> None:
        """
        A text message cannot carry invalid UTF-8: such a reply is binary.
        """
        raw = Raw(FrameHarness("websocket", [Binary()]))
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"abc"))
        self.assertEqual(typed(frames_of(raw.written)), [("binary", b"\xffabc")])

    def test_async_replies_typed_and_in_order(self) -> None:
        """
        With replies pending to a text request, a binary request waits, and
        every reply has its request's type, in request order.
        """
        harness = FrameHarness("websocket", "delay(seconds=1)")
        raw = Raw(harness)
        raw.feed(
            handshake()
            + client_frame(Opcode.TEXT, b"t1")
            + client_frame(Opcode.BINARY, b"b1")
            + client_frame(Opcode.BINARY, b"b2")
        )
        raw.feed(client_frame(Opcode.TEXT, b"t2"))
        for _ in range(4):
            harness.clock.advance(1)
        self.assertEqual(
            typed(frames_of(raw.written)),
            [("text", b"t1"), ("binary", b"b1"), ("binary", b"b2"), ("text", b"t2")],
        )

    def test_fragments_reassembled(self) -> None:
        """
        A fragmented message is one message.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(
            handshake()
            + client_frame(Opcode.TEXT, b"hel", fin=False)
            + client_frame(Opcode.PING, b"p")
            + client_frame(Opcode.CONT, b"lo ", fin=False)
        )
        raw.feed(client_frame(Opcode.CONT, b"world"))
        frames = frames_of(raw.written)
        self.assertEqual(typed(frames), [("text", b"hello world")])
        self.assertIn(Opcode.PONG, [frame.opcode for frame in frames])

    def test_byte_by_byte(self) -> None:
        """
        The handshake and frames may arrive one byte at a time.
        """
        raw = Raw(FrameHarness("websocket"))
        data = handshake() + client_frame(Opcode.BINARY, b"\x00\x01" * 100)
        for index in range(len(data)):
            raw.feed(data[index : index + 1])
        self.assertEqual(typed(frames_of(raw.written)), [("binary", b"\x00\x01" * 100)])

    def test_pushes_typed_by_content(self) -> None:
        """
        A push is text when it is valid UTF-8, binary otherwise.
        """
        raw = Raw(FrameHarness("websocket", [Pusher()]))
        raw.feed(handshake() + client_frame(Opcode.BINARY, b"msg"))
        self.assertEqual(
            typed(frames_of(raw.written)),
            [("text", b"pushed"), ("binary", b"\xff\xfe"), ("binary", b"msg")],
        )

    def test_push_before_handshake_dropped(self) -> None:
        """
        Nothing is pushed to a connection before its handshake completes.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.protocol.context.send(b"early")
        self.assertEqual(raw.written, b"")

    def test_pubsub_between_clients(self) -> None:
        """
        pubsub works between websocket clients (shared fan-out encoding).
        """
        harness = FrameHarness("websocket", "pubsub")
        other = harness.client()
        other.send(b"SUB room")
        self.assertEqual(other.replies(), [b"OK SUB room"])
        harness.send(b"PUB room hi")
        self.assertEqual(harness.replies(), [b"OK PUB 1"])
        self.assertEqual(other.replies(), [b"MSG room hi"])


class ClosingTests(SynchronousTestCase):
    """
    Close frames: codes and reasons.
    """

    def test_oversize_message_1009(self) -> None:
        """
        A message over --max-frame closes with 1009, after the replies owed
        for the messages before it.
        """
        raw = Raw(FrameHarness("websocket", max_frame=10))
        raw.feed(
            handshake()
            + client_frame(Opcode.TEXT, b"ok")
            + client_frame(Opcode.TEXT, b"x" * 11)
        )
        frames = frames_of(raw.written)
        self.assertEqual(typed(frames), [("text", b"ok")])
        code, reason = close_of(frames)  # type: ignore[misc]
        self.assertEqual(code, 1009)
        self.assertTrue(reason.startswith("ERROR frame-too-long: "), reason)
        self.assertTrue(raw.closed)

    def test_oversize_fragmented_message_1009(self) -> None:
        """
        The limit holds across fragments.
        """
        raw = Raw(FrameHarness("websocket", max_frame=10))
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"x" * 6, fin=False))
        raw.feed(client_frame(Opcode.CONT, b"x" * 6))
        self.assertEqual(close_of(frames_of(raw.written))[0], 1009)  # type: ignore[index]

    def test_invalid_utf8_1007(self) -> None:
        """
        A text message that is not UTF-8 closes with 1007.
        """
        raw = Raw(FrameHarness("websocket"))
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"\xff"))
        code, reason = close_of(frames_of(raw.written))  # type: ignore[misc]
        self.assertEqual(code, 1007)
        self.assertTrue(reason.startswith("ERROR bad-frame: "))

    def test_protocol_error_1002(self) -> None:
        """
        An unmasked client frame is a protocol error: 1002.
        """
        from websockets.frames import Frame

        raw = Raw(FrameHarness("websocket"))
        raw.feed(handshake() + Frame(Opcode.TEXT, b"x").serialize(mask=False))
        self.assertEqual(close_of(frames_of(raw.written))[0], 1002)  # type: ignore[index]

    def test_idle_timeout_1000(self) -> None:
        """
        The idle timeout closes with 1000 and the timeout as reason.
        """
        harness = FrameHarness("websocket", idle_timeout=5, ws_ping_interval=0)
        raw = Raw(harness)
        raw.feed(handshake())
        harness.clock.advance(10)
        self.assertEqual(
            close_of(frames_of(raw.written)), (1000, "ERROR timeout: idle for 5 s")
        )

    def test_overloaded_1013(self) -> None:
        """
        A subscriber that does not read its pushes is closed with 1013 once
        its unsent output passes --max-write-buffer (slow browsers are
        bounded as on TCP).
        """
        harness = FrameHarness("websocket", "pubsub", max_write_buffer=100_000)
        silent = harness.client()
        silent.send(b"SUB feed")
        silent.stop_reading()
        for _ in range(300):
            harness.send(b"PUB feed " + b"x" * 1000)
        self.assertTrue(silent.disconnected)
        self.assertLess(silent.unread, 300 * 1000)
        silent.resume_reading()
        code, reason = close_of(frames_of(silent.written))  # type: ignore[misc]
        self.assertEqual(code, 1013)
        self.assertTrue(reason.startswith("ERROR overloaded: "))

    def test_client_close_echoed(self) -> None:
        """
        A client's close frame is answered with the same code, after the
        replies to what came before it.
        """
        from websockets.frames import Close

        raw = Raw(FrameHarness("websocket"))
        raw.feed(
            handshake()
            + client_frame(Opcode.TEXT, b"last")
            + client_frame(Opcode.CLOSE, Close(1000, "bye").serialize())
        )
        frames = frames_of(raw.written)
        self.assertEqual(typed(frames), [("text", b"last")])
        self.assertEqual(close_of(frames), (1000, "bye"))
        self.assertTrue(raw.closed)

    def test_drain_1001_after_owed_replies(self) -> None:
        """
        On drain the replies owed are written, then a 1001 close frame.
        """
        harness = FrameHarness("websocket", "delay(seconds=1)")
        raw = Raw(harness)
        raw.feed(handshake() + client_frame(Opcode.TEXT, b"owed"))
        raw.protocol.drain()
        self.assertIsNone(close_of(frames_of(raw.written)))
        harness.clock.advance(1)
        frames = frames_of(raw.written)
        self.assertEqual(typed(frames), [("text", b"owed")])
        self.assertEqual(close_of(frames), (1001, "server shutting down"))

    def test_close_reason_at_most_123_bytes(self) -> None:
        """
        A long error text is cut to 123 bytes of UTF-8, whole characters.
        """
        reason = close_reason(BadFrame("é" * 200))
        self.assertLessEqual(len(reason.encode()), MAX_REASON)
        self.assertTrue(reason.startswith("ERROR bad-frame: éé"))
        reason.encode("utf-8")


class KeepaliveTests(SynchronousTestCase):
    """
    Pings, pongs and the idle timeout.
    """

    def test_peer_that_does_not_pong_is_closed(self) -> None:
        """
        A ping unanswered for --ws-ping-timeout closes the connection.
        """
        harness = FrameHarness(
            "websocket", ws_ping_interval=10, ws_ping_timeout=5, idle_timeout=0
        )
        raw = Raw(harness)
        raw.feed(handshake())
        harness.clock.advance(11)
        self.assertIn(Opcode.PING, [f.opcode for f in frames_of(raw.written)])
        self.assertFalse(raw.closed)
        harness.clock.advance(6)
        self.assertTrue(raw.closed)
        self.assertEqual(close_of(frames_of(raw.written))[0], 1011)  # type: ignore[index]

    def test_pongs_keep_a_quiet_peer_open(self) -> None:
        """
        A peer that only answers pings is neither closed for the ping
        timeout nor for the idle timeout.
        """
        harness = FrameHarness(
            "websocket", ws_ping_interval=10, ws_ping_timeout=5, idle_timeout=30
        )
        raw = Raw(harness)
        raw.feed(handshake())
        for _ in range(20):
            harness.clock.advance(5)
            pings = [f for f in frames_of(raw.written) if f.opcode is Opcode.PING]
            raw.transport.clear()
            raw.transport.io.write(b"HTTP/1.1 101 x\r\n\r\n")
            for ping in pings:
                raw.feed(client_frame(Opcode.PONG, bytes(ping.data)))
        self.assertFalse(raw.closed)

    def test_dead_peer_closed_by_idle_timeout(self) -> None:
        """
        With pings off, a silent peer is closed by the idle timeout.
        """
        harness = FrameHarness("websocket", ws_ping_interval=0, idle_timeout=30)
        raw = Raw(harness)
        raw.feed(handshake())
        harness.clock.advance(40)
        self.assertTrue(raw.closed)
