"""
The C{websocket} framing's Twisted protocol: a L{FramedProtocol} whose
codec is L{echoplus.websocket.server.ServerCodec}.

Everything else is the base class's: ordered dispatch, limits, metrics,
flow control, pushes, drain and reload.  What this class adds:

  - the bytes of a read that are not replies (handshake response, pongs,
    the echo of a client's close) are written around that read's replies;
  - replies go out with the type of their request.  Replies leave in
    request order, so while replies are owed to one type, messages of the
    other type wait (reading pauses) until they are answered: a client that
    mixes types while replies are pending gets them in order and typed;
  - fatal errors, drain and the idle timeout end the connection with a
    close frame (L{echoplus.websocket.closing});
  - keepalive pings ride the listener's timeout sweep: a peer that does
    not answer within C{--ws-ping-timeout} is closed, and its pongs count
    as activity for C{--idle-timeout}.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.logger import Logger

from echoplus.errors import EchoPlusError
from echoplus.framing import Decoder, Encoder
from echoplus.protocols import FramedProtocol
from echoplus.websocket.client import ClientCodec
from echoplus.websocket.closing import (
    GOING_AWAY,
    NORMAL,
    PingTimeout,
    close_code,
    close_reason,
)
from echoplus.websocket.server import HandshakePolicy, Push, ServerCodec

__all__ = ["WebSocketProtocol"]

#: The key under which a fan-out shares one encoded push among the
#: connections that frame alike (see L{FramedProtocol.send_shared}).
_PUSH_KEY = ("websocket", "push")

#: The payload of our keepalive pings.
_PING = b"echoplus"

_log = Logger()


class _TwistedLogHandler(logging.Handler):
    """
    Passes what the C{websockets} library logs (warnings and errors only)
    to Twisted's log, tracebacks included: the log gets the full story,
    the wire never does.
    """

    def emit(self, record: logging.LogRecord) -> None:
        _log.warn("websockets: {text}", text=self.format(record))


def _library_logger() -> logging.Logger:
    logger = logging.getLogger("echoplus.websocket.library")
    if not logger.handlers:
        logger.addHandler(_TwistedLogHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


_LIBRARY_LOGGER = _library_logger()


class WebSocketProtocol(FramedProtocol):
    """
    The C{websocket} framing: one WebSocket message, text or binary, is one
    message for the processors.
    """

    _codec: ServerCodec

    def make_decoder(self, max_frame: int) -> Decoder:
        settings = self.factory.settings
        policy = HandshakePolicy(
            settings.ws_path,
            settings.ws_origins,
            settings.ws_subprotocols,
            settings.ws_compression,
        )
        self._codec = ServerCodec(policy, max_frame, _LIBRARY_LOGGER)
        return self._codec

    def make_encoder(self) -> Encoder:
        return self._codec

    def make_client_codec(self, max_frame: int) -> ClientCodec:
        """
        The client side of this framing, for test and command-line clients
        (see L{echoplus.codec.ClientCodec}).
        """
        settings = self.factory.settings
        return ClientCodec(
            path=settings.ws_path,
            subprotocols=settings.ws_subprotocols,
            compression=settings.ws_compression,
            max_frame=max_frame,
        )

    # Connection life.

    def connectionMade(self) -> None:
        self._held: list[tuple[bytes, bool]] = []
        self._held_error: EchoPlusError | None = None
        self._close_code = NORMAL
        self._close_reason = ""
        self._ping_sent_at: float | None = None
        self._pongs_at_ping = 0
        self._last_ping = self.factory.clock.seconds()
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._generation != self.factory.generation:
            self._reconfigure()
        codec = self._codec
        messages = codec.feed(data)
        self._bytes_in += len(data)
        self._active = True  # pongs included: a live peer is never idle
        if codec.head:
            self._write_control(b"".join(codec.head))
        if messages:
            self._dispatch_typed(messages, codec.kinds)
        if codec.closed_by_peer is not None:
            self._closed_by_peer(codec.tail)
        elif codec.error is not None:
            if self._held:
                self._held_error = codec.error
            else:
                self.fail(codec.error)
        elif codec.finished:
            if codec.refused is not None:
                self._log.info(
                    "Connection {connection_id}: WebSocket handshake refused "
                    "with HTTP {status}",
                    connection_id=self.context.id,
                    status=codec.refused,
                )
            self._input_done = True
            self._close()

    def _closed_by_peer(self, tail: list[bytes]) -> None:
        """
        The client sent a close frame: the replies of this read are
        written; echo its close and close the connection.
        """
        if tail and not self._closing:
            self._write_control(b"".join(tail))
        self._held = []
        self._input_done = True
        self._dispatcher.close()
        self._close()

    def readConnectionLost(self) -> None:
        """
        The client shut down its side without a close frame: answer what
        it sent, then close.
        """
        self._input_done = True
        if self._closing:
            self.transport.loseConnection()
            return
        self._codec.receive_eof()
        if not self._dispatcher.pending and not self._held:
            self._close()

    # Replies typed as their requests.

    def _dispatch_typed(self, messages: list[bytes], kinds: list[bool]) -> None:
        """
        Dispatch messages in runs of one type, holding back a run of the
        other type while replies to the current one are pending.
        """
        if self._held:
            self._held += zip(messages, kinds, strict=True)
            return
        codec = self._codec
        count = len(messages)
        if kinds.count(kinds[0]) == count:  # one type: the usual case
            if kinds[0] is codec.reply_text or not self._dispatcher.pending:
                codec.reply_text = kinds[0]
                self._dispatch_frames(messages)
                return
        start = 0
        while start < count:
            kind = kinds[start]
            end = start + 1
            while end < count and kinds[end] is kind:
                end += 1
            if kind is not codec.reply_text and self._dispatcher.pending:
                self._held = list(zip(messages[start:], kinds[start:], strict=True))
                self._pause("typing")
                return
            codec.reply_text = kind
            self._dispatch_frames(messages[start:end])
            if self._closing or self._fatal is not None:
                return
            start = end

    def _settled(self) -> None:
        if self._held and not self._dispatcher.pending and not self._closing:
            held, self._held = self._held, []
            self._dispatch_typed([m for m, _ in held], [k for _, k in held])
            if not self._held:
                self._resume("typing")
                error, self._held_error = self._held_error, None
                if error is not None:
                    self.fail(error)
        super()._settled()

    # Writing.

    def _write_control(self, data: bytes) -> None:
        """
        Write bytes that are not messages (handshake, ping, pong, close):
        through the write-buffer accounting, but not as activity for the
        idle timeout.
        """
        sending = self._sending
        self._write_encoded(0, data)
        self._sending = sending

    def send(self, payload: bytes) -> None:
        """
        Push one message: text when C{payload} is valid UTF-8, else
        binary.  Dropped before the handshake completes and after a close.
        """
        if self._closing or not self._codec.open:
            return
        if self._batch is not None:
            self._batch.append(Push(payload))
        else:
            self._write_encoded(1, self._codec.encode_push(payload))

    def send_shared(self, payload: bytes, encodings: dict[Any, bytes]) -> bool:
        if self._closing or not self._codec.open:
            return False
        codec = self._codec
        if self._batch is not None or not codec.shareable:
            self.send(payload)
            return True
        data = encodings.get(_PUSH_KEY)
        if data is None:
            data = encodings[_PUSH_KEY] = codec.encode_push(payload)
        self._write_encoded(1, data)
        return True

    def encoding_key(self) -> Any:
        return None

    # Closing.

    def _write_fatal(self, error: EchoPlusError) -> None:
        """
        A fatal error is a close frame: its code from the error kind, its
        reason the error text.  Before the handshake completed there is no
        WebSocket to close: the connection just closes.
        """
        codec = self._codec
        if codec.open:
            frame = codec.close_frame(close_code(error), close_reason(error))
            self._write_control(frame)

    def _close(self) -> None:
        if self._closing:
            return
        codec = self._codec
        if codec.open:
            self._write_control(codec.close_frame(self._close_code, self._close_reason))
        super()._close()

    def drain(self) -> None:
        """
        Graceful shutdown: the replies owed are written, then a close frame
        with code 1001 (going away).
        """
        self._close_code = GOING_AWAY
        self._close_reason = "server shutting down"
        super().drain()

    # Keepalive.

    def _check_timeouts(self, now: float) -> None:
        super()._check_timeouts(now)
        codec = self._codec
        if self._closing or self._fatal is not None or not codec.open:
            return
        settings = self.settings
        if self._ping_sent_at is not None:
            timeout = settings.ws_ping_timeout
            if codec.pongs != self._pongs_at_ping:
                self._ping_sent_at = None
            elif timeout and now - self._ping_sent_at >= timeout:
                self.fail(PingTimeout(f"no pong within {timeout:g} s"))
                return
        interval = settings.ws_ping_interval
        if (
            interval
            and self._ping_sent_at is None
            and now - self._last_ping >= interval
        ):
            self._ping_sent_at = self._last_ping = now
            self._pongs_at_ping = codec.pongs
            self._write_control(codec.ping_frame(_PING))
