"""
The websocket framing against a real C{twistd -n echoplus}, with the
C{websockets} library's own client: every stream endpoint (tcp, unix, ssl
= wss, haproxy), the handshake answers, close codes, keepalive, drain, and
the C{echoplus send} command.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect, unix_connect

from tests.support import REPO, Twistd, receive_until_closed, twistd_environment
from tests.test_tls import make_certificates
from tests.ws_support import client_frame, close_of, frames_of, handshake


def _open(uri: str, **options: Any) -> Any:
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", 10)
    return connect(uri, **options)


class _Listeners:
    """
    One twistd with a websocket listener on each kind of endpoint, started
    once per test process (trial has no setUpClass) and stopped at exit.
    """

    def __init__(self) -> None:
        self.certs = make_certificates()
        self.directory = tempfile.mkdtemp()
        keys = f"privateKey={self.certs}/server.key:certKey={self.certs}/server.crt"
        config = Path(self.directory, "ws.toml")
        config.write_text(
            f"""
framing = "websocket"
processors = ["upper"]
max_frame = 1000
ws_compression = true

[[listen]]
endpoint = "tcp:0:interface=127.0.0.1"

[[listen]]
endpoint = "unix:{self.directory}/ws.sock"

[[listen]]
endpoint = "ssl:0:interface=127.0.0.1:{keys}"

[[listen]]
endpoint = "haproxy:tcp:0:interface=127.0.0.1"

[[listen]]
endpoint = "tcp:0:interface=127.0.0.1:backlog=50"
ws_path = "/chat"
ws_ping_interval = 0.3
ws_ping_timeout = 0.3
"""
        )
        self.server = Twistd(["--config", str(config)], listeners=5)
        self.where: dict[str, str] = {}
        for line in self.server.output:
            found = re.search(r"listening on (\S+) at (\S+)", line)
            if found:
                endpoint, address = found.groups()
                kind = endpoint.split(":")[0]
                self.where[kind + (":chat" if "backlog" in endpoint else "")] = address
        atexit.register(self.stop)

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.certs, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


_LISTENERS: _Listeners | None = None


def _listeners() -> _Listeners:
    global _LISTENERS
    if _LISTENERS is None or _LISTENERS.server.process.poll() is not None:
        _LISTENERS = _Listeners()
    return _LISTENERS


class ListenersTests(SynchronousTestCase):
    """
    Websocket listeners on every kind of stream endpoint, in one twistd.
    """

    def setUp(self) -> None:
        shared = _listeners()
        self.server = shared.server
        self.where = shared.where
        self.directory = shared.directory
        self.certs = shared.certs

    def uri(self, kind: str, path: str = "/", scheme: str = "ws") -> str:
        return f"{scheme}://{self.where[kind]}{path}"

    def test_echo_text_and_binary(self) -> None:
        """
        Replies come back with their request's type, over tcp.
        """
        with _open(self.uri("tcp")) as ws:
            ws.send("hello")
            self.assertEqual(ws.recv(timeout=5), "HELLO")
            ws.send(b"bytes")
            self.assertEqual(ws.recv(timeout=5), b"BYTES")

    def test_unix(self) -> None:
        """
        A unix: listener speaks websocket.
        """
        path = os.path.join(self.directory, "ws.sock")
        with unix_connect(path, "ws://localhost/", proxy=None) as ws:
            ws.send("over unix")
            self.assertEqual(ws.recv(timeout=5), "OVER UNIX")

    def test_wss(self) -> None:
        """
        An ssl: listener gives wss://.
        """
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        with _open(self.uri("ssl", scheme="wss"), ssl=context) as ws:
            ws.send("secure")
            self.assertEqual(ws.recv(timeout=5), "SECURE")

    def test_haproxy(self) -> None:
        """
        A haproxy: listener takes the PROXY header, then the handshake.
        """
        host, port = self.where["haproxy"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 80\r\n")
        with _open(self.uri("haproxy"), sock=sock) as ws:
            ws.send("proxied")
            self.assertEqual(ws.recv(timeout=5), "PROXIED")

    def test_oversize_1009(self) -> None:
        """
        A message over --max-frame closes with 1009.
        """
        with _open(self.uri("tcp"), compression=None) as ws:
            ws.send("x" * 1001)
            with self.assertRaises(ConnectionClosed) as caught:
                ws.recv(timeout=5)
        self.assertEqual(caught.exception.rcvd.code, 1009)
        self.assertTrue(caught.exception.rcvd.reason.startswith("ERROR frame-too-long"))

    def test_compressed_oversize_1009(self) -> None:
        """
        With permessage-deflate, the limit holds after inflation: a small
        compressed frame that inflates past --max-frame closes with 1009.
        """
        with _open(self.uri("tcp")) as ws:
            self.assertIn(
                "permessage-deflate", ws.response.headers["Sec-WebSocket-Extensions"]
            )
            ws.send("a" * 900)
            self.assertEqual(ws.recv(timeout=5), "A" * 900)
            ws.send("a" * 100_000)
            with self.assertRaises(ConnectionClosed) as caught:
                ws.recv(timeout=5)
        self.assertEqual(caught.exception.rcvd.code, 1009)

    def test_foreign_origin_403(self) -> None:
        """
        A page from another origin gets HTTP 403.
        """
        with self.assertRaises(InvalidStatus) as caught:
            _open(self.uri("tcp"), origin="https://evil.example")
        self.assertEqual(caught.exception.response.status_code, 403)

    def test_same_origin_accepted(self) -> None:
        """
        A page from the host the socket was opened to is accepted.
        """
        with _open(self.uri("tcp"), origin=f"http://{self.where['tcp']}") as ws:
            ws.send("same")
            self.assertEqual(ws.recv(timeout=5), "SAME")

    def test_wrong_path_404(self) -> None:
        """
        Another path gets HTTP 404.
        """
        with self.assertRaises(InvalidStatus) as caught:
            _open(self.uri("tcp:chat", "/elsewhere"))
        self.assertEqual(caught.exception.response.status_code, 404)
        with _open(self.uri("tcp:chat", "/chat")) as ws:
            ws.send("room")
            self.assertEqual(ws.recv(timeout=5), "ROOM")

    def test_plain_http_426(self) -> None:
        """
        A plain HTTP request gets 426 with one short line, then a close.
        """
        host, port = self.where["tcp"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = receive_until_closed(sock)
        self.assertTrue(answer.startswith(b"HTTP/1.1 426 "), answer)
        self.assertEqual(answer.partition(b"\r\n\r\n")[2].count(b"\n"), 1)

    def test_peer_that_does_not_pong_is_closed(self) -> None:
        """
        A client that never answers pings is closed (1011) after the ping
        timeout; one that does (the websockets client) stays open.
        """
        host, port = self.where["tcp:chat"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(handshake("/chat"))
            written = receive_until_closed(sock)
        self.assertEqual(close_of(frames_of(written))[0], 1011)  # type: ignore[index]
        with _open(self.uri("tcp:chat", "/chat")) as ws:
            time.sleep(1.5)
            ws.send("alive")
            self.assertEqual(ws.recv(timeout=5), "ALIVE")

    def test_fuzzed_connections(self) -> None:
        """
        Garbage handshakes and garbage frames close their connections, log
        no traceback, and the server goes on serving.
        """
        host, port = self.where["tcp"].rsplit(":", 1)
        rng = random.Random(14)
        for index in range(40):
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            data = noise if index % 2 else handshake() + client_frame(1, b"x") + noise
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    receive_until_closed(sock)
                except OSError:
                    pass
        with _open(self.uri("tcp")) as ws:
            ws.send("still here")
            self.assertEqual(ws.recv(timeout=5), "STILL HERE")
        self.assertNotIn("Traceback", self.server.drain_output())

    def test_echoplus_send(self) -> None:
        """
        echoplus send --framing websocket speaks it.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "echoplus",
                "send",
                f"tcp:{self.where['tcp']}",
                "one",
                "two",
                "--framing",
                "websocket",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=twistd_environment(),
            cwd=REPO,
        )
        self.assertEqual((result.stdout, result.stderr), ("ONE\nTWO\n", ""))
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "echoplus",
                "send",
                f"tcp:{self.where['tcp:chat']}",
                "one",
                "--framing",
                "websocket",
                "--ws-path",
                "/nope",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=twistd_environment(),
            cwd=REPO,
        )
        self.assertEqual(refused.returncode, 1)
        self.assertIn("HTTP 404", refused.stderr)
        self.assertNotIn("Traceback", refused.stderr)


class ProcessTests(SynchronousTestCase):
    """
    SIGTERM, SIGHUP and --workers on a websocket listener.
    """

    def test_workers(self) -> None:
        """
        The workers of --workers 2 serve the websocket listener.
        """
        server = Twistd(
            ["--listen", "tcp:0:interface=127.0.0.1", "--framing", "websocket"]
            + ["--processor", "upper", "--workers", "2"]
        )
        self.addCleanup(server.stop)
        server.wait_for(r"echoplus listening on systemd:", count=2, timeout=60)
        for _ in range(4):
            with _open(f"ws://127.0.0.1:{server.port}/") as ws:
                ws.send("pooled")
                self.assertEqual(ws.recv(timeout=5), "POOLED")

    def test_reload_changes_the_path(self) -> None:
        """
        SIGHUP applies a new ws_path to new connections; an open one goes on.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        config = Path(directory, "ws.toml")
        base = 'framing = "websocket"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        config.write_text(base + 'ws_path = "/a"\n')
        server = Twistd(["--config", str(config)])
        self.addCleanup(server.stop)
        uri = f"ws://127.0.0.1:{server.port}"
        with _open(uri + "/a") as old:
            config.write_text(base + 'ws_path = "/b"\n')
            server.signal(signal.SIGHUP)
            server.wait_for("Reloaded", timeout=20)
            with _open(uri + "/b") as new:
                new.send("new")
                self.assertEqual(new.recv(timeout=5), "new")
            with self.assertRaises(InvalidStatus):
                _open(uri + "/a")
            old.send("old")
            self.assertEqual(old.recv(timeout=5), "old")

    def test_sigterm_1001_after_owed_replies(self) -> None:
        """
        On SIGTERM the replies owed are delivered, then a 1001 close frame.
        """
        server = Twistd(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--framing",
                "websocket",
                "--processor",
                "delay(seconds=1)",
            ]
        )
        try:
            with _open(f"ws://127.0.0.1:{server.port}/") as ws:
                ws.send("owed")
                time.sleep(0.2)
                server.signal(signal.SIGTERM)
                self.assertEqual(ws.recv(timeout=5), "owed")
                with self.assertRaises(ConnectionClosed) as caught:
                    ws.recv(timeout=5)
            self.assertEqual(caught.exception.rcvd.code, 1001)
            self.assertEqual(server.process.wait(timeout=15), 0)
        finally:
            server.stop()
