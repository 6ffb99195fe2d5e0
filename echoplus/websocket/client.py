"""
The client side of the C{websocket} framing, sans-IO: the C{websockets}
library's C{ClientProtocol} behind the codec contract, for
C{echoplus send}, C{echoplus bench}, L{echoplus.testing.FrameHarness} and
the live test clients.

The client sends its handshake first (L{ClientCodec.opening}) and may
pipeline messages right behind it; L{ClientCodec.feed} checks the
server's response, then returns the messages.  A refused handshake is a
L{BadFrame} naming the HTTP status.  Pings are answered and a close frame
is echoed through L{ClientCodec.take_output}, for callers that keep the
connection open.

Nothing here imports Twisted.
"""

from __future__ import annotations

from typing import Sequence

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CONNECTING
from websockets.uri import parse_uri

from echoplus.errors import BadFrame, FramingError
from echoplus.websocket.server import is_text

__all__ = ["ClientCodec"]


class ClientCodec:
    """
    One WebSocket client connection's encoder and decoder.

    @ivar binary: send every message as binary (by default a message is
        text when it is valid UTF-8).
    @ivar kinds: for the messages of the last L{feed}, C{True} for text.
    @ivar close: the server's close frame, once received.
    @ivar response: the server's handshake response, once received.
    """

    def __init__(
        self,
        path: str = "/",
        host: str = "localhost",
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        compression: bool = False,
        max_frame: int | None = None,
    ) -> None:
        self.max_frame = max_frame or 0
        self.error: FramingError | None = None
        self.binary = False
        self.kinds: list[bool] = []
        self.close: Close | None = None
        self.response: Response | None = None
        self._parts: list[bytes] = []
        self._part_text = True
        self._output: list[bytes] = []
        self._ws = ClientProtocol(
            parse_uri(f"ws://{host}{path}"),
            origin=origin,  # type: ignore[arg-type]
            extensions=[ClientPerMessageDeflateFactory()] if compression else None,
            subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
            max_size=max_frame,
        )

    @property
    def buffered(self) -> int:
        """
        Bytes held for an incomplete response or message.
        """
        return len(self._ws.reader.buffer) + sum(len(part) for part in self._parts)

    def opening(self) -> bytes:
        """
        The handshake request, to send first.
        """
        ws = self._ws
        ws.send_request(ws.connect())
        return b"".join(ws.data_to_send())

    def encode(self, payload: bytes) -> bytes:
        """
        Frame one message (masked, as a client must).
        """
        return self.encode_batch([payload])

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        """
        Frame several messages into one C{bytes}.
        """
        extensions = self._ws.extensions
        out = []
        for payload in payloads:
            text = not self.binary and is_text(payload)
            frame = Frame(Opcode.TEXT if text else Opcode.BINARY, payload)
            out.append(frame.serialize(mask=True, extensions=extensions))
        return b"".join(out)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take received bytes; return the messages they complete.
        """
        self.kinds = []
        if self.error is not None:
            return []
        ws = self._ws
        try:
            ws.receive_data(data)
        except EOFError:
            return []
        messages: list[bytes] = []
        for event in ws.events_received():
            if isinstance(event, Response):
                self.response = event
                if event.status_code != 101 or ws.handshake_exc is not None:
                    self.error = BadFrame(
                        f"WebSocket handshake refused: HTTP {event.status_code} "
                        f"{event.reason_phrase}"
                    )
                    return []
                continue
            if not isinstance(event, Frame):
                continue
            self._frame(event, messages)
        if ws.state is CONNECTING and ws.handshake_exc is not None:
            self.error = BadFrame("not a WebSocket handshake response")
        elif ws.parser_exc is not None and self.close is None:
            self.error = BadFrame(f"malformed WebSocket frame: {ws.parser_exc}")
        self._output += ws.data_to_send()
        return messages

    def _frame(self, frame: Frame, messages: list[bytes]) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._parts = [bytes(frame.data)]
                self._part_text = opcode is Opcode.TEXT
                return
            messages.append(bytes(frame.data))
            self.kinds.append(opcode is Opcode.TEXT)
        elif opcode is Opcode.CONT:
            self._parts.append(bytes(frame.data))
            if frame.fin:
                messages.append(b"".join(self._parts))
                self.kinds.append(self._part_text)
                self._parts = []
        elif opcode is Opcode.CLOSE:
            self.close = self._ws.close_rcvd

    def take_output(self) -> bytes:
        """
        What the client owes the server since the last call: pongs, the
        echo of a close frame.
        """
        output = b"".join(self._output)
        self._output = []
        return output
