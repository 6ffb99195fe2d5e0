"""
Helpers for the websocket tests: raw handshakes, and reading what a
server wrote with the websockets library's own client parser.
"""

from __future__ import annotations

import base64
import os

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri


def handshake(
    path: str = "/",
    host: str = "localhost:5000",
    origin: str | None = None,
    extra: str = "",
) -> bytes:
    """
    A client's opening handshake request, as raw bytes.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """
    One masked frame, as a client sends it.
    """
    return Frame(opcode, data, fin).serialize(mask=True)


def status_of(written: bytes) -> int:
    """
    The HTTP status of the server's handshake response.
    """
    return int(written.split(b" ", 2)[1])


def frames_of(written: bytes) -> list[Frame]:
    """
    The frames a server wrote after its 101 response.
    """
    head, _, rest = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    ws = ClientProtocol(parse_uri("ws://localhost/"), state=OPEN, max_size=None)
    ws.receive_data(rest)
    return [event for event in ws.events_received() if isinstance(event, Frame)]


def typed(frames: list[Frame]) -> list[tuple[str, bytes]]:
    """
    Data frames as C{("text" | "binary", payload)} pairs.
    """
    names = {Opcode.TEXT: "text", Opcode.BINARY: "binary"}
    return [
        (names[frame.opcode], bytes(frame.data))
        for frame in frames
        if frame.opcode in names
    ]


def close_of(frames: list[Frame]) -> tuple[int, str] | None:
    """
    The code and reason of the close frame among C{frames}, if any.
    """
    from websockets.frames import Close

    for frame in frames:
        if frame.opcode is Opcode.CLOSE:
            close = Close.parse(frame.data)
            return close.code, close.reason
    return None
