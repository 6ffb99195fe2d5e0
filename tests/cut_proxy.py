"""
A TCP proxy for tests whose link can be cut and restored: put it between a
node and Redis (or any server) to simulate a broken network path.

    proxy = CutProxy.start_for(self, "127.0.0.1", redis.port)
    ... point the node at 127.0.0.1:proxy.port ...
    proxy.cut()        # every proxied connection drops; new ones are dropped
    proxy.restore()    # new connections go through again
    proxy.cut(refuse=True)  # ... and new ones are refused (nothing listens)
    proxy.stall()      # connections stay open but no byte moves either way

One background thread runs a C{selectors} loop; the public methods are safe
to call from any thread and return once the loop has done the work.
"""

from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading
import time
from typing import Any

__all__ = ["CutProxy", "free_port"]

_CONTROL_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port that was free a moment ago (bind port 0, read it, close).
    Another process may take it before it is used: callers retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listen(port: int) -> socket.socket:
    """
    A non-blocking listening socket on C{127.0.0.1:port}.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def _drop(sock: socket.socket, reset: bool) -> None:
    """
    Close C{sock}; with C{reset} the peer gets a RST instead of a FIN.
    """
    if reset:
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
    sock.close()


class _Side:
    """
    One socket of a proxied pair and the bytes waiting to be written to it.
    """

    __slots__ = ("sock", "peer", "out", "events", "frozen")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.peer: _Side = self
        self.out = bytearray()
        self.events = 0
        self.frozen = False


class CutProxy:
    """
    Forwards every connection accepted on C{127.0.0.1:port} to
    C{(host, target_port)}.

    @ivar port: the port it listens on (fixed for its lifetime).
    @ivar accepted: connections forwarded so far.
    @ivar dropped: connections closed at accept time while cut (or because
        the target refused them).
    """

    def __init__(
        self, host: str, target_port: int, buffer_limit: int = 1 << 20
    ) -> None:
        """
        @param buffer_limit: bytes buffered towards one side before the proxy
            stops reading from the other (backpressure).
        """
        self._target = (host, target_port)
        self._limit = buffer_limit
        self._listener: socket.socket | None = _listen(0)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self.dropped = 0
        self._cut = False
        self._stalled = False
        self._closed = False
        self._failure: Exception | None = None
        self._sides: dict[socket.socket, _Side] = {}
        self._controls: queue.Queue[tuple[str, dict[str, bool], threading.Event]]
        self._controls = queue.Queue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._loop, name=f"CutProxy:{self.port}", daemon=True
        )
        self._thread.start()

    @classmethod
    def start_for(cls, testcase: Any, host: str, target_port: int) -> CutProxy:
        """
        A proxy whose L{close} is registered with C{testcase.addCleanup}.
        """
        proxy = cls(host, target_port)
        testcase.addCleanup(proxy.close)
        return proxy

    @property
    def connections(self) -> int:
        """
        How many proxied connections are open now.
        """
        return len(self._sides) // 2

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self, reset: bool = True, refuse: bool = False) -> None:
        """
        Close every proxied connection at once, on both sides, and drop new
        ones as they arrive until L{restore}.

        @param reset: the peers get a RST, as from a broken path (the
            default); otherwise a FIN.
        @param refuse: stop listening, so new connections are refused
            (C{ECONNREFUSED}) instead of accepted and dropped at once.
        """
        self._control("cut", reset=reset, refuse=refuse)

    def stall(self) -> None:
        """
        Stop moving bytes in both directions, closing nothing: a silent
        path that only timeouts and heartbeats notice.  New connections are
        accepted and stalled too.  L{restore} lets the bytes flow again.
        """
        self._control("stall")

    def restore(self, thaw: bool = True) -> None:
        """
        End a L{cut} or L{stall}: forward new connections (listening again
        on the same port after C{cut(refuse=True)}) and move bytes again.

        @param thaw: with C{False}, the connections stalled so far stay
            stalled for good (a path that lost their state, as a NAT or a
            firewall does): only new connections go through.
        """
        self._control("restore", thaw=thaw)

    def close(self) -> None:
        """
        Close every connection and the listener and end the thread.
        Idempotent.
        """
        if self._thread.is_alive():
            self._control("close")
            self._thread.join(_CONTROL_TIMEOUT)

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> bool:
        """
        Wait until at least C{count} connections are open through the proxy.
        """
        deadline = time.monotonic() + timeout
        while self.connections < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _control(self, name: str, **flags: bool) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the proxy is closed")
        done = threading.Event()
        self._controls.put((name, flags, done))
        self._wake_writer.send(b"x")
        if not done.wait(_CONTROL_TIMEOUT):
            raise RuntimeError(f"the proxy did not {name} in time")
        failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError(f"the proxy could not {name}: {failure}")

    def _loop(self) -> None:
        try:
            while not self._closed:
                for key, events in self._selector.select():
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._run_controls()
                    elif isinstance(key.data, _Side) and key.fileobj in self._sides:
                        self._service(key.data, events)
        finally:
            self._shutdown()

    def _run_controls(self) -> None:
        self._wake_reader.recv(4096)
        while True:
            try:
                name, flags, done = self._controls.get_nowait()
            except queue.Empty:
                return
            try:
                if name == "cut":
                    self._cut = True
                    self._drop_all(reset=flags["reset"])
                    if flags["refuse"]:
                        self._stop_listening()
                elif name == "stall":
                    self._stalled = True
                    for side in self._sides.values():
                        side.frozen = True
                        self._interest(side)
                elif name == "restore":
                    for side in self._sides.values():
                        side.frozen = side.frozen and not flags["thaw"]
                    try:
                        self._restore()
                    except OSError as failure:
                        self._failure = failure
                else:
                    self._closed = True
            finally:
                done.set()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _restore(self) -> None:
        self._cut = self._stalled = False
        for side in self._sides.values():
            self._interest(side)
        deadline = time.monotonic() + 5
        while self._listener is None:
            try:
                self._listener = _listen(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if self._cut:
                self.dropped += 1
                _drop(client, reset=True)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                self.dropped += 1
                _drop(client, reset=True)
                continue
            self.accepted += 1
            first, second = _Side(client), _Side(upstream)
            first.frozen = second.frozen = self._stalled
            first.peer, second.peer = second, first
            for side in (first, second):
                side.sock.setblocking(False)
                side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sides[side.sock] = side
                self._interest(side)

    def _service(self, side: _Side, events: int) -> None:
        """
        Move bytes for one ready socket; close the pair on EOF or error.
        """
        try:
            if events & selectors.EVENT_WRITE and side.out:
                sent = side.sock.send(side.out)
                del side.out[:sent]
            if events & selectors.EVENT_READ:
                data = side.sock.recv(65536)
                if not data:
                    self._drop_pair(side, reset=False)
                    return
                side.peer.out += data
                sent = side.peer.sock.send(side.peer.out)
                del side.peer.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop_pair(side, reset=True)
            return
        self._interest(side)
        self._interest(side.peer)

    def _interest(self, side: _Side) -> None:
        """
        Read from a side while its peer's queue is short; write while its
        own queue is not empty (neither: not registered at all until the
        peer's queue drains).
        """
        events = selectors.EVENT_WRITE if side.out else 0
        if len(side.peer.out) < self._limit:
            events |= selectors.EVENT_READ
        if side.frozen:
            events = 0
        if events == side.events:
            return
        if not side.events:
            self._selector.register(side.sock, events, side)
        elif not events:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, events, side)
        side.events = events

    def _drop_pair(self, side: _Side, reset: bool) -> None:
        for each in (side, side.peer):
            if self._sides.pop(each.sock, None) is not None:
                if each.events:
                    self._selector.unregister(each.sock)
                _drop(each.sock, reset)

    def _drop_all(self, reset: bool) -> None:
        for side in list(self._sides.values()):
            self._drop_pair(side, reset)

    def _shutdown(self) -> None:
        self._drop_all(reset=False)
        self._stop_listening()
        for sock in (self._wake_reader, self._wake_writer):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._selector.close()
