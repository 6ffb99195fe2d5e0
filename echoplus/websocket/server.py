"""
The server side of the C{websocket} framing, sans-IO: the C{websockets}
library's C{ServerProtocol} behind echoplus' decoder and encoder contract
(see L{echoplus.framing}).

One L{ServerCodec} per connection is both its decoder and its encoder.
L{ServerCodec.feed} takes received bytes and returns the complete
messages, text or binary, as C{bytes}; besides the messages, a read may
produce bytes to send that are not replies, which the protocol writes
around the replies of that read:

  - C{head}: the handshake response, pongs: written before the replies;
  - C{tail}: the echo of the client's close frame: written after them;
  - C{finished}: the library is done with the connection (a refused
    handshake, a client's close, garbage instead of a handshake); the
    protocol closes it once the bytes above are written.

A fault is not sent at once, even where the library would: the decoder
contract is to return the messages before the fault and store the error
(C{error}), so the replies owed are written before the close frame
(L{close_frame}) that reports it.

Nothing here imports Twisted.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Sequence

import attrs
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING
from websockets.server import ServerProtocol

from echoplus.errors import BadFrame, FrameTooLong, FramingError
from echoplus.websocket.closing import InvalidText
from echoplus.websocket.origins import origin_allowed

__all__ = ["HandshakePolicy", "Push", "ServerCodec", "is_text"]

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_NO_EXTENSIONS: list = []  # type: ignore[type-arg]


class Push(bytes):
    """
    A payload pushed with C{context.send} during a read, so that the
    encoder can tell it from the replies around it: a push goes out as text
    when it is valid UTF-8, a reply with the type of its request.
    """


def is_text(payload: bytes) -> bool:
    """
    Whether C{payload} can be sent as a text message (valid UTF-8).
    """
    if payload.isascii():
        return True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@attrs.frozen
class HandshakePolicy:
    """
    What a listener accepts in the opening handshake (the C{--ws-*}
    options).

    @ivar path: the one request path served; others get HTTP 404.
    @ivar origins: accepted C{Origin}s, lower case, C{*} for any; empty for
        the same-host default (L{origin_allowed}).
    @ivar subprotocols: subprotocols accepted, by preference.
    @ivar compression: whether permessage-deflate is offered.
    """

    path: str = "/"
    origins: tuple[str, ...] = ()
    subprotocols: tuple[str, ...] = ()
    compression: bool = False


def _choose(ours: Sequence[str], offered: Sequence[str]) -> str | None:
    """
    The first of our subprotocols the client offered, or L{None}.
    """
    for name in ours:
        if name in offered:
            return name
    return None


class ServerCodec:
    """
    One WebSocket server connection's decoder and encoder.

    @ivar error: the fault that ends the connection, once found.
    @ivar refused: the HTTP status of a refused handshake, else L{None}.
    @ivar closed_by_peer: the client's close frame, once received.
    @ivar reply_text: the type replies are sent with (the type of the
        requests being answered); set by the protocol.
    @ivar pongs: how many pongs were received.
    """

    def __init__(
        self,
        policy: HandshakePolicy,
        max_frame: int,
        logger: logging.Logger | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.error: FramingError | None = None
        self.refused: int | None = None
        self.closed_by_peer: Close | None = None
        self.finished = False
        self.head: list[bytes] = []
        self.tail: list[bytes] = []
        self.kinds: list[bool] = []
        self.reply_text = True
        self.pongs = 0
        self.close_sent = False
        self._accepted = False
        self._policy = policy
        self._parts: list[bytes] = []
        self._part_text = True
        ours = policy.subprotocols
        self._ws = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()]
            if policy.compression
            else None,
            select_subprotocol=lambda protocol, offered: _choose(ours, offered),
            max_size=max_frame,
            logger=logger,
        )

    # The decoder.

    @property
    def buffered(self) -> int:
        """
        Bytes held for an incomplete message, and at least 1 while the
        handshake is incomplete (so that C{--frame-timeout} bounds it).
        """
        ws = self._ws
        held = len(ws.reader.buffer)
        if ws.state is CONNECTING and self.refused is None:
            return max(held, 1)
        for part in self._parts:
            held += len(part)
        return held

    @property
    def open(self) -> bool:
        """
        Whether messages may be sent: the handshake succeeded and no close
        frame was sent.
        """
        return self._accepted and not self.close_sent

    @property
    def subprotocol(self) -> str | None:
        """
        The subprotocol agreed in the handshake, if any.
        """
        return self._ws.subprotocol

    def set_max_frame(self, max_frame: int) -> None:
        """
        Change the message size limit (a reload).
        """
        self.max_frame = max_frame
        self._ws.max_message_size = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take received bytes; return the messages they complete and set
        C{kinds} (C{True} for text), C{head}, C{tail} and C{finished}.
        """
        self.kinds = []
        self.head = []
        self.tail = []
        if self.error is not None or self.finished:
            return []
        ws = self._ws
        handshaking = ws.state is CONNECTING
        failed_before = ws.parser_exc is not None
        closed_before = ws.close_sent is not None
        ws.receive_data(data)
        writes = ws.data_to_send()
        events = ws.events_received()
        if writes and writes[-1] == b"":
            writes.pop()
            self.finished = True
        if ws.parser_exc is not None and not failed_before:
            # The library failed the connection: its close frame waits
            # until the messages before the fault are answered.
            if ws.close_sent is not None and not closed_before and writes:
                writes.pop()
            self.finished = False
            self.error = _translate(ws.parser_exc, self.max_frame)
        elif handshaking and self.finished and not events:
            self.error = BadFrame("not a WebSocket handshake")
        closed_before = self.closed_by_peer is not None
        messages = self._messages(events, writes)
        if self.closed_by_peer is not None and not closed_before:
            if ws.close_rcvd_then_sent and writes:
                writes.pop()  # the library's echo: ours goes after the replies
            self.tail = [self._echo(self.closed_by_peer)]
        self.head += writes
        return messages

    def _echo(self, close: Close) -> bytes:
        """
        The answer to the client's close frame: the same code and reason.
        """
        self.close_sent = True
        data = b"" if close.code == 1005 else close.serialize()  # 1005: none given
        return Frame(Opcode.CLOSE, data).serialize(mask=False)

    def _messages(self, events: list[object], writes: list[bytes]) -> list[bytes]:
        messages: list[bytes] = []
        kinds = self.kinds
        for event in events:
            if type(event) is Request:
                self.head = self._handshake(event)
                continue
            if self.refused is not None or not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY:
                text = opcode is _TEXT
                if not event.fin:
                    self._parts = [bytes(event.data)]
                    self._part_text = text
                    continue
                message = bytes(event.data)
            elif opcode is _CONT:
                self._parts.append(bytes(event.data))
                if not event.fin:
                    continue
                message = b"".join(self._parts)
                self._parts = []
                text = self._part_text
            elif opcode is Opcode.PONG:
                self.pongs += 1
                continue
            elif opcode is Opcode.CLOSE:
                self.closed_by_peer = self._ws.close_rcvd
                continue
            else:
                continue
            if text and not is_text(message):
                self.error = InvalidText("text message is not valid UTF-8")
                self.finished = False
                del writes[:]  # a pong or close echo after the fault
                break
            messages.append(message)
            kinds.append(text)
        return messages

    def _handshake(self, request: Request) -> list[bytes]:
        """
        Answer the opening handshake: 404 for another path, 403 for a
        refused origin, else whatever the library decides (101, or 426 for
        a plain HTTP request, 400, 405...).
        """
        ws = self._ws
        policy = self._policy
        response: Response
        try:
            origin = request.headers.get("Origin")
            host = request.headers.get("Host")
        except MultipleValuesError:
            response = ws.reject(HTTPStatus.BAD_REQUEST, "Bad Request\n")
        else:
            if request.path.partition("?")[0] != policy.path:
                response = ws.reject(HTTPStatus.NOT_FOUND, "Not Found\n")
            elif not origin_allowed(origin, host, policy.origins):
                response = ws.reject(
                    HTTPStatus.FORBIDDEN, "Forbidden: origin not allowed\n"
                )
            else:
                response = ws.accept(request)
                if response.status_code == HTTPStatus.UPGRADE_REQUIRED:
                    response = ws.reject(
                        HTTPStatus.UPGRADE_REQUIRED,
                        "Upgrade Required: this is a WebSocket endpoint\n",
                    )
                    response.headers["Upgrade"] = "websocket"
        ws.send_response(response)
        if response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            self._accepted = True
        else:
            self.refused = response.status_code
        writes = ws.data_to_send()
        if writes and writes[-1] == b"":
            writes.pop()
            self.finished = True
        return writes

    def receive_eof(self) -> None:
        """
        The client closed its side of the connection.
        """
        self.finished = True

    # The encoder.

    def encode(self, payload: bytes) -> bytes:
        """
        Frame one reply (or L{Push}).
        """
        return self.encode_batch([payload])

    def encode_batch(self, payloads: Sequence[bytes]) -> bytes:
        """
        Frame replies, with the type of the requests they answer (binary
        for a reply to a text request that is not valid UTF-8, which a text
        message cannot carry), and L{Push}es, as text when valid UTF-8.
        """
        extensions = self._ws.extensions or _NO_EXTENSIONS
        reply_text = self.reply_text
        out = []
        for payload in payloads:
            text = (reply_text or type(payload) is Push) and is_text(payload)
            frame = Frame(_TEXT if text else _BINARY, payload)
            out.append(frame.serialize(mask=False, extensions=extensions))
        return b"".join(out)

    def encode_push(self, payload: bytes) -> bytes:
        """
        Frame one push: text when valid UTF-8, binary otherwise.
        """
        opcode = _TEXT if is_text(payload) else _BINARY
        extensions = self._ws.extensions or _NO_EXTENSIONS
        return Frame(opcode, payload).serialize(mask=False, extensions=extensions)

    def ping_frame(self, data: bytes) -> bytes:
        """
        A ping frame carrying C{data}.
        """
        return Frame(Opcode.PING, data).serialize(mask=False)

    def close_frame(self, code: int, reason: str) -> bytes:
        """
        The close frame this server ends the connection with; after it,
        the codec is no longer L{open}.
        """
        self.close_sent = True
        data = Close(code, reason).serialize()
        return Frame(Opcode.CLOSE, data).serialize(mask=False)

    @property
    def shareable(self) -> bool:
        """
        Whether this connection's frames are the same bytes as any other's
        for the same payload (no per-connection compression state).
        """
        return not self._ws.extensions


def _translate(failure: Exception, max_frame: int) -> FramingError:
    """
    The echoplus error for a fault the library found in the frames.
    """
    if isinstance(failure, PayloadTooBig):
        return FrameTooLong(f"message exceeds the limit of {max_frame} bytes")
    if isinstance(failure, UnicodeDecodeError):
        return InvalidText("close reason is not valid UTF-8")
    return BadFrame("malformed WebSocket frame")
