"""
The examples in examples/: two wire formats written by subclassing and a
chat-room processor, tested with FrameHarness and served by twistd.
"""

from __future__ import annotations

import inspect

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import examples.stx_etx
import examples.tlv
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.testing import FrameHarness
from examples.chat.rooms import ChatRooms
from tests.support import Twistd, receive_exactly, receive_lines, receive_until_closed

STX_ETX = "examples.stx_etx:StxEtxProtocol"
TLV = "examples.tlv:TlvProtocol"
CHAT = "examples.chat.rooms:ChatRooms"


def _code_lines(module: object) -> int:
    """
    The lines of a module that are neither blank, comments nor docstrings.
    """
    source = inspect.getsource(module)  # type: ignore[arg-type]
    lines, in_doc = 0, False
    for line in source.splitlines():
        text = line.strip()
        if text.startswith('"""'):
            in_doc = not (in_doc or (text.count('"""') == 2 and len(text) > 3))
            continue
        if in_doc or not text or text.startswith("#"):
            continue
        lines += 1
    return lines


class StxEtxTests(SynchronousTestCase):
    """
    examples/stx_etx.py: a DelimitedProtocol with decode/encode hooks.
    """

    def test_round_trip(self) -> None:
        """
        Frames are STX payload ETX both ways.
        """
        harness = FrameHarness(STX_ETX, "upper")
        harness.send(b"one", b"two")
        self.assertEqual(harness.replies(), [b"ONE", b"TWO"])
        self.assertEqual(harness.written, b"\x02ONE\x03\x02TWO\x03")

    def test_split_input(self) -> None:
        """
        A frame fed byte by byte is reassembled.
        """
        harness = FrameHarness(STX_ETX, "echo")
        for byte in b"\x02abc\x03":
            harness.feed(bytes([byte]))
        self.assertEqual(harness.replies(), [b"abc"])

    def test_missing_stx_is_a_bad_frame(self) -> None:
        """
        A frame without STX is ERROR bad-frame, then the connection closes.
        """
        harness = FrameHarness(STX_ETX, "echo")
        harness.feed(b"\x02ok\x03oops\x03")
        self.assertEqual(
            harness.replies(), [b"ok", b"ERROR bad-frame: malformed frame"]
        )
        self.assertTrue(harness.disconnected)

    def test_small(self) -> None:
        """
        The example stays within 30 lines of code.
        """
        self.assertLessEqual(_code_lines(examples.stx_etx), 30)


class TlvTests(SynchronousTestCase):
    """
    examples/tlv.py: a FramedProtocol with its own BufferedDecoder.
    """

    def test_round_trip(self) -> None:
        """
        The type byte and value reach the processor; replies are TLV.
        """
        harness = FrameHarness(TLV, "upper")
        harness.send(b"\x01hello", b"\x07")
        self.assertEqual(harness.replies(), [b"\x01HELLO", b"\x07"])
        self.assertEqual(harness.written, b"\x01\x00\x05HELLO\x07\x00\x00")

    def test_every_split(self) -> None:
        """
        Input split at every offset decodes to the same frames.
        """
        stream = b"\x01\x00\x03abc\x02\x00\x00\x03\x00\x01z"
        for cut in range(len(stream) + 1):
            harness = FrameHarness(TLV, "echo")
            harness.feed(stream[:cut])
            harness.feed(stream[cut:])
            self.assertEqual(harness.replies(), [b"\x01abc", b"\x02", b"\x03z"], cut)

    def test_too_long(self) -> None:
        """
        A length over max_frame fails at once with frame-too-long.
        """
        harness = FrameHarness(TLV, "echo", max_frame=10)
        harness.feed(b"\x01\xff\xff")
        self.assertEqual(
            harness.replies(),
            [b"ERROR frame-too-long: value of 65535 bytes is too long"],
        )
        self.assertTrue(harness.disconnected)

    def test_small(self) -> None:
        """
        The decoder, encoder and protocol stay within about 30 lines of code.
        """
        self.assertLessEqual(_code_lines(examples.tlv), 35)


class ChatRoomsTests(SynchronousTestCase):
    """
    examples/chat: rooms, tested with several harness clients.
    """

    def setUp(self) -> None:
        self.harness = FrameHarness("line", [CHAT])
        self.alice = self.harness.clients[0]
        self.bob = self.harness.client()
        self.carol = self.harness.client()
        self.alice.send(b"NICK alice", b"JOIN lobby")
        self.bob.send(b"NICK bob", b"JOIN lobby")
        self.carol.send(b"NICK carol", b"JOIN kitchen")
        self.rooms: ChatRooms = self.harness.protocol.processors[0][1]

    def test_interfaces(self) -> None:
        """
        ChatRooms provides IProcessor and IConnectionObserver.
        """
        verifyObject(IProcessor, self.rooms)
        verifyObject(IConnectionObserver, self.rooms)

    def test_join_announced(self) -> None:
        """
        Joining answers OK JOIN and tells those already in the room.
        """
        self.assertEqual(
            self.alice.replies(), [b"OK NICK alice", b"OK JOIN lobby", b"* bob joined"]
        )
        self.assertEqual(self.bob.replies(), [b"OK NICK bob", b"OK JOIN lobby"])

    def test_everyone_in_the_room_hears(self) -> None:
        """
        SAY reaches everyone in the speaker's room, the speaker included,
        and no one elsewhere.
        """
        for client in self.harness.clients:
            client.replies()
        self.bob.send(b"SAY hello there")
        self.assertEqual(self.alice.replies(), [b"lobby bob: hello there"])
        self.assertEqual(self.bob.replies(), [b"lobby bob: hello there"])
        self.assertEqual(self.carol.replies(), [])

    def test_leave(self) -> None:
        """
        LEAVE answers OK LEAVE, tells the others, and stops deliveries.
        """
        for client in self.harness.clients:
            client.replies()
        self.bob.send(b"LEAVE")
        self.assertEqual(self.bob.replies(), [b"OK LEAVE lobby"])
        self.assertEqual(self.alice.replies(), [b"* bob left"])
        self.alice.send(b"SAY anyone?")
        self.assertEqual(self.bob.replies(), [])
        self.bob.send(b"SAY hello?", b"LEAVE")
        self.assertEqual(
            self.bob.replies(),
            [
                b"ERROR bad-request: JOIN a room first",
                b"ERROR bad-request: you are not in a room",
            ],
        )

    def test_switching_rooms(self) -> None:
        """
        Joining another room leaves the first one.
        """
        for client in self.harness.clients:
            client.replies()
        self.alice.send(b"JOIN kitchen")
        self.assertEqual(self.bob.replies(), [b"* alice left"])
        self.assertEqual(self.carol.replies(), [b"* alice joined"])
        self.assertEqual(
            set(self.rooms.rooms[b"kitchen"]), {self.alice.context, self.carol.context}
        )

    def test_disconnect_cleans_up(self) -> None:
        """
        A closed connection leaves its room (the others hear it) and no
        table keeps it.
        """
        for client in self.harness.clients:
            client.replies()
        self.bob.close()
        self.carol.close()
        self.assertEqual(self.alice.replies(), [b"* bob left"])
        self.assertEqual(list(self.rooms.rooms), [b"lobby"])
        self.assertEqual(list(self.rooms.where), [self.alice.context])
        self.assertEqual(list(self.rooms.names), [self.alice.context])

    def test_bad_commands(self) -> None:
        """
        Unknown or malformed commands are bad requests; the connection
        goes on.
        """
        self.alice.replies()
        self.alice.send(b"DANCE", b"JOIN", b"JOIN two rooms", b"NICK")
        replies = self.alice.replies()
        self.assertEqual(len(replies), 4)
        self.assertTrue(all(r.startswith(b"ERROR bad-request: ") for r in replies))


class ServedExamplesTests(SynchronousTestCase):
    """
    The examples served by a real twistd, found through PYTHONPATH.
    """

    def test_stx_etx_served(self) -> None:
        """
        twistd serves --framing examples.stx_etx:StxEtxProtocol.
        """
        server = Twistd(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--framing",
                STX_ETX,
                "--processor",
                "upper",
            ]
        )
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"\x02hello\x03\x02world\x03")
            self.assertEqual(receive_exactly(sock, 14), b"\x02HELLO\x03\x02WORLD\x03")

    def test_tlv_served(self) -> None:
        """
        twistd serves --framing examples.tlv:TlvProtocol, including its
        error frame.
        """
        server = Twistd(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--framing",
                TLV,
                "--max-frame",
                "100",
            ]
        )
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"\x01\x00\x02hi\x01\x10\x00")
            received = receive_until_closed(sock)
        self.assertTrue(received.startswith(b"\x01\x00\x02hiE\x00"), received)
        self.assertIn(b"RROR frame-too-long", received)

    def test_chat_served(self) -> None:
        """
        twistd serves the chat rooms by dotted path; two clients talk.
        """
        server = Twistd(["--listen", "tcp:0:interface=127.0.0.1", "--processor", CHAT])
        self.addCleanup(server.stop)
        with server.connect() as alice, server.connect() as bob:
            alice.sendall(b"NICK alice\nJOIN lobby\n")
            self.assertEqual(
                receive_lines(alice, 2), [b"OK NICK alice", b"OK JOIN lobby"]
            )
            bob.sendall(b"NICK bob\nJOIN lobby\nSAY hi\n")
            self.assertEqual(
                receive_lines(alice, 2), [b"* bob joined", b"lobby bob: hi"]
            )
            self.assertEqual(
                receive_lines(bob, 3),
                [b"OK NICK bob", b"OK JOIN lobby", b"lobby bob: hi"],
            )
