"""
C{echoplus send}: a small client that pipelines messages to a server and
prints one reply per line.

It speaks every framing the server does by reusing the server's own
sans-IO codecs (L{echoplus.framing}) through the framing registry
(L{echoplus.protocols.FRAMINGS}, or a C{module:Class} protocol), and
connects with any Twisted client endpoint string (C{tcp:HOST:PORT},
C{unix:PATH}, C{tls:HOST:PORT}, ...).

All messages are written at once (pipelined); the client then waits for
one reply per message (C{--replies N} to expect another count, e.g. 0 for
C{broadcast}) and closes.  The server going away before the replies are
in, a refused connection, a malformed reply stream or the timeout ends the
command with status 1 and one C{echoplus: error: ...} line.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any, Callable, Sequence

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

try:
    from OpenSSL.SSL import Error as SSLError
except ImportError:  # pragma: no cover - twisted[tls] installs pyOpenSSL
    SSLError = ConnectionError  # type: ignore[misc, assignment]

from echoplus.clientendpoint import client_from_string
from echoplus.codec import ClientCodec
from echoplus.errors import ConfigError

__all__ = ["SendFailed", "add_send_command", "send"]


class SendFailed(Exception):
    """
    The exchange failed; the message says why, for the user.
    """


def _decode_replies(codec: ClientCodec, data: bytes) -> list[bytes]:
    """
    The replies C{data} completes.

    @raise SendFailed: the reply stream is malformed.
    """
    try:
        replies = codec.decode(data)
    except ValueError as error:
        raise SendFailed(f"malformed reply: {error}") from None
    if codec.decoder.error is not None:
        raise SendFailed(f"malformed reply: {codec.decoder.error.message}")
    return replies


class _Exchange(Protocol):
    """
    Writes every request at once, collects C{expected} replies, closes.
    """

    def __init__(
        self,
        codec: ClientCodec,
        data: bytes,
        expected: int,
        on_reply: Callable[[bytes], None],
    ) -> None:
        self._codec = codec
        self._data = data
        self._expected = expected
        self._on_reply = on_reply
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        data = self._codec.opening() + self._data  # a handshake first, if any
        if data:
            self.transport.write(data)
        self._check_done()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        try:
            replies = _decode_replies(self._codec, data)
        except SendFailed as error:
            self._finish(Failure(error))
            return
        for reply in replies[: self._expected - self.received]:
            self._on_reply(reply)
            self.received += 1
        self._check_done()

    def _check_done(self) -> None:
        if self.received >= self._expected and not self.done.called:
            self._finish(self.received)

    def _finish(self, result: int | Failure) -> None:
        self.transport.loseConnection()
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            why = _why(reason)
            self.done.errback(
                SendFailed(
                    f"the server closed the connection after {self.received} of "
                    f"{self._expected} replies{why}"
                )
            )


def _why(reason: Failure) -> str:
    """
    What a lost connection's reason adds for the user: nothing for a clean
    close, the TLS error for a failed handshake, else the error's text.
    """
    if reason.check(ConnectionDone):
        return ""
    value = reason.value
    if reason.check(SSLError):
        details = [item[2] for item in getattr(value, "args", [[]])[0] if len(item) > 2]
        return f" (TLS: {', '.join(details) or 'handshake failed'})"
    return f" ({str(value).rstrip('.') or type(value).__name__})"


async def send(
    reactor: Any,
    endpoint: str,
    messages: Sequence[bytes],
    codec: ClientCodec,
    on_reply: Callable[[bytes], None],
    expected: int | None = None,
    timeout: float = 10.0,
) -> int:
    """
    Connect to C{endpoint}, send C{messages} pipelined, pass each reply to
    C{on_reply}; return how many replies came.

    @param expected: replies to wait for; one per message by default.
    @param timeout: seconds for connecting, and then for the replies.
    @raise SendFailed: the exchange failed; the message says why.
    """
    try:
        client = client_from_string(reactor, endpoint)
    except ValueError as error:
        raise SendFailed(str(error)) from None
    try:
        data = codec.encode(messages)
    except ValueError as error:
        raise SendFailed(f"cannot frame the messages: {error}") from None
    exchange = _Exchange(
        codec, data, len(messages) if expected is None else expected, on_reply
    )
    connecting = connectProtocol(client, exchange)
    connecting.addTimeout(timeout, reactor)
    try:
        await connecting
    except TimeoutError:
        raise SendFailed(f"cannot connect to {endpoint}: timed out") from None
    except ConnectError as error:
        reason = str(error).rstrip(".") or type(error).__name__
        raise SendFailed(f"cannot connect to {endpoint}: {reason}") from None
    exchange.done.addTimeout(timeout, reactor)
    try:
        return await exchange.done
    except TimeoutError:
        exchange.transport.abortConnection()
        raise SendFailed(
            f"timed out after {timeout:g}s with {exchange.received} of "
            f"{exchange._expected} replies"
        ) from None


def unescape(text: str) -> bytes:
    """
    A delimiter given on the command line, with backslash escapes
    (C{\\r\\n}, C{\\0}, C{\\xHH}) resolved.
    """
    try:
        return (
            text.encode("latin-1", "backslashreplace")
            .decode("unicode_escape")
            .encode("latin-1")
        )
    except (UnicodeError, ValueError):
        raise ValueError(f"bad delimiter {text!r}") from None


def _read_messages(arguments: argparse.Namespace, stdin: IO[bytes]) -> list[bytes]:
    if arguments.message:
        texts = [text.encode("utf-8", "surrogateescape") for text in arguments.message]
    else:
        data = stdin.read()
        texts = data.split(b"\n")
        if texts and texts[-1] == b"":
            texts.pop()
        texts = [text[:-1] if text.endswith(b"\r") else text for text in texts]
    if arguments.hex:
        try:
            return [bytes.fromhex(text.decode("ascii")) for text in texts]
        except ValueError:
            raise SendFailed("--hex messages must be hexadecimal") from None
    return texts


def run_send(arguments: argparse.Namespace) -> int:
    """
    The C{echoplus send} command: read the messages (arguments, or stdin
    lines), run the exchange under C{task.react}, print the replies.
    """
    from twisted.internet import task

    out = sys.stdout.buffer
    try:
        codec = ClientCodec.for_framing(
            arguments.framing,
            unescape(arguments.delimiter),
            arguments.max_frame,
            ws_path=arguments.ws_path,
        )
        messages = _read_messages(arguments, sys.stdin.buffer)
    except (ConfigError, ValueError, SendFailed) as error:
        return _error(str(error))

    def on_reply(reply: bytes) -> None:
        out.write((reply.hex().encode() if arguments.hex else reply) + b"\n")
        out.flush()

    async def main(reactor: Any) -> None:
        try:
            await send(
                reactor,
                arguments.endpoint,
                messages,
                codec,
                on_reply,
                arguments.replies,
                arguments.timeout,
            )
        except SendFailed as error:
            raise SystemExit(_error(str(error))) from None

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def _error(message: str) -> int:
    sys.stdout.flush()
    print(f"echoplus: error: {message}", file=sys.stderr)
    return 1


def add_send_command(commands: Any) -> None:
    """
    Add the C{send} subcommand to the C{echoplus} command's subparsers.
    """
    parser = commands.add_parser(
        "send",
        help="send messages to a server and print its replies",
        description=(
            "Send each MESSAGE (or each line of standard input) to ENDPOINT, "
            "pipelined, and print one reply per line."
        ),
    )
    parser.add_argument(
        "endpoint",
        metavar="ENDPOINT",
        help="a Twisted client endpoint: tcp:HOST:PORT, unix:PATH, tls:HOST:PORT",
    )
    parser.add_argument(
        "message",
        metavar="MESSAGE",
        nargs="*",
        default=[],  # without a default argparse calls a "*" positional required
        help="a message to send [default: each line of standard input]",
    )
    parser.add_argument(
        "--framing",
        default="line",
        help="the server's framing, websocket included [default: line]",
    )
    parser.add_argument(
        "--delimiter", default="\\n", help="line delimiter, escapes allowed"
    )
    parser.add_argument(
        "--ws-path",
        default="/",
        metavar="PATH",
        help="the request path of a websocket listener [default: /]",
    )
    parser.add_argument(
        "--hex",
        action="store_true",
        help="messages are given, and replies printed, in hexadecimal",
    )
    parser.add_argument(
        "--replies",
        type=int,
        default=None,
        metavar="N",
        help="replies to wait for [default: one per message]",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="for connecting, then for the replies [default: 10]",
    )
    parser.add_argument(
        "--max-frame", type=int, default=16 * 1024 * 1024, help=argparse.SUPPRESS
    )
    parser.set_defaults(run=run_send)
