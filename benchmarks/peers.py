"""
The peer servers echoplus is measured against, each the way a user would
write it by hand.

    python benchmarks/peers.py KIND PORT

prints C{listening on PORT} once it accepts connections, then serves until
killed.  KIND is one of L{PEERS}:

  - C{twisted-line}, C{twisted-int32}, C{twisted-netstring}: Twisted's stock
    C{LineReceiver} (C{delimiter = b"\\n"}), C{Int32StringReceiver} and
    C{NetstringReceiver}, echoing each message with C{sendLine} /
    C{sendString};
  - C{twisted-bare}: a bare C{Protocol} whose C{dataReceived} writes the
    bytes back (Twisted's floor: no framing at all); C{twisted-bare-direct}
    is the same through echoplus's direct send (what that alone buys);
    C{twisted-batched-direct} is the hand-batched line echo below, line for
    line, on Twisted with the direct send (the best hand-written line echo
    on this reactor);
  - C{asyncio-streams}: C{readline()} / C{write()} / C{drain()};
  - C{asyncio-batched}: an C{asyncio.Protocol} that splits the lines of each
    chunk by hand and writes all replies of a chunk at once (the best
    hand-tuned asyncio line echo);
  - C{asyncio-bare}: an C{asyncio.Protocol} writing every chunk back as it
    came (asyncio's floor, as C{twisted-bare-direct} is Twisted's);
  - C{asyncio-batched-int32}: the same for int32 frames, parsed by hand with
    offsets (C{struct.unpack_from}), one write of all replies per chunk;
  - the same two with C{-uvloop} appended, on uvloop's event loop;
  - C{websockets-asyncio}: the C{websockets} library's own asyncio server
    (C{async for message in connection: await connection.send(message)});
  - C{autobahn-twisted}: Autobahn|Python's Twisted WebSocket server
    (C{onMessage} calls C{sendMessage}).

The two WebSocket peers run without compression, as echoplus does by
default.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any, Callable


def _twisted(kind: str, port: int) -> None:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.basic import (
        Int32StringReceiver,
        LineReceiver,
        NetstringReceiver,
    )

    class LineEcho(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 65536

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(line)

    class Int32Echo(Int32StringReceiver):
        MAX_LENGTH = 65536

        def stringReceived(self, string: bytes) -> None:
            self.sendString(string)

    class NetstringEcho(NetstringReceiver):
        MAX_LENGTH = 65536

        def stringReceived(self, string: bytes) -> None:
            self.sendString(string)

    class BareEcho(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    class BareDirectEcho(Protocol):
        """The bare echo with echoplus's direct send: what that alone buys."""

        def connectionMade(self) -> None:
            from echoplus.transports import choose_writer

            self.write = choose_writer(self.transport, None)

        def dataReceived(self, data: bytes) -> None:
            self.write(data)

    class BatchedDirectEcho(BareDirectEcho):
        """
        asyncio's hand-batched line echo, line for line, on Twisted with
        echoplus's direct send: the best hand-written line echo on this
        reactor.
        """

        held = b""

        def dataReceived(self, data: bytes) -> None:
            if self.held:
                data = self.held + data
            lines = data.split(b"\n")
            self.held = lines.pop()
            if lines:
                lines.append(b"")
                self.write(b"\n".join(lines))

    protocols: dict[str, Any] = {
        "twisted-line": LineEcho,
        "twisted-int32": Int32Echo,
        "twisted-netstring": NetstringEcho,
        "twisted-bare": BareEcho,
        "twisted-bare-direct": BareDirectEcho,
        "twisted-batched-direct": BatchedDirectEcho,
    }
    factory = Factory.forProtocol(protocols[kind])
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print(f"listening on {listening.getHost().port}", flush=True)
    reactor.run()


class _BatchedLineEcho(asyncio.Protocol):
    """Split each chunk into lines by hand; all replies of a chunk in one write."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.held = b""

    def data_received(self, data: bytes) -> None:
        if self.held:
            data = self.held + data
        lines = data.split(b"\n")
        self.held = lines.pop()
        if lines:
            lines.append(b"")
            self.transport.write(b"\n".join(lines))


class _BareEcho(asyncio.Protocol):
    """Write every chunk back as it came: asyncio's floor, no framing."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _BatchedInt32Echo(asyncio.Protocol):
    """
    Int32-prefixed frames parsed by hand with offsets; all replies of a
    chunk in one write.
    """

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.held = b""

    def data_received(self, data: bytes) -> None:
        if self.held:
            data = self.held + data
        replies = []
        offset = 0
        end = len(data)
        while offset + 4 <= end:
            (length,) = _INT32.unpack_from(data, offset)
            stop = offset + 4 + length
            if stop > end:
                break
            replies.append(_INT32.pack(length))
            replies.append(data[offset + 4 : stop])
            offset = stop
        self.held = data[offset:]
        if replies:
            self.transport.write(b"".join(replies))


_INT32 = struct.Struct(">I")


async def _streams_echo(reader: asyncio.StreamReader, writer: Any) -> None:
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(line)
        await writer.drain()
    writer.close()


async def _asyncio_main(kind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if kind.startswith("asyncio-streams"):
        server = await asyncio.start_server(
            _streams_echo, "127.0.0.1", port, backlog=1024, limit=65537
        )
    else:
        protocol = (
            _BatchedInt32Echo
            if "int32" in kind
            else _BareEcho
            if kind.startswith("asyncio-bare")
            else _BatchedLineEcho
        )
        server = await loop.create_server(protocol, "127.0.0.1", port, backlog=1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def _asyncio(kind: str, port: int) -> None:
    if kind.endswith("-uvloop"):
        import uvloop

        uvloop.run(_asyncio_main(kind, port))
    else:
        asyncio.run(_asyncio_main(kind, port))


async def _websockets_main(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(connection: Any) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(
        echo, "127.0.0.1", port, compression=None, max_size=65536, backlog=1024
    ) as server:
        listening = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on {listening}", flush=True)
        await server.serve_forever()


def _websockets(kind: str, port: int) -> None:
    asyncio.run(_websockets_main(port))


def _autobahn(kind: str, port: int) -> None:
    from twisted.internet import epollreactor

    epollreactor.install()
    from autobahn.twisted.websocket import (
        WebSocketServerFactory,
        WebSocketServerProtocol,
    )
    from twisted.internet import reactor

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, is_binary: bool) -> None:
            self.sendMessage(payload, is_binary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    factory.setProtocolOptions(maxMessagePayloadSize=65536)
    listening = reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print(f"listening on {listening.getHost().port}", flush=True)
    reactor.run()


#: Every peer server by name, and the wire format its load speaks.
PEERS: dict[str, str] = {
    "twisted-line": "line",
    "twisted-int32": "int32",
    "twisted-netstring": "netstring",
    "twisted-bare": "raw",
    "twisted-bare-direct": "raw",
    "twisted-batched-direct": "line",
    "asyncio-streams": "line",
    "asyncio-streams-uvloop": "line",
    "asyncio-batched": "line",
    "asyncio-batched-uvloop": "line",
    "websockets-asyncio": "websocket",
    "autobahn-twisted": "websocket",
    "asyncio-batched-int32": "int32",
    "asyncio-bare": "raw",
}


def main(argv: list[str]) -> int:
    """Run the peer server named by C{argv[0]} on port C{argv[1]}."""
    if len(argv) != 2 or argv[0] not in PEERS:
        print(f"usage: peers.py {{{'|'.join(PEERS)}}} PORT", file=sys.stderr)
        return 2
    kind, port = argv[0], int(argv[1])
    run: Callable[[str, int], None] = (
        _twisted
        if kind.startswith("twisted")
        else _websockets
        if kind == "websockets-asyncio"
        else _autobahn
        if kind == "autobahn-twisted"
        else _asyncio
    )
    try:
        run(kind, port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
