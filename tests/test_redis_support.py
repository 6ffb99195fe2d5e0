"""
Tests for the test helpers in L{tests.redis_support} and L{tests.cut_proxy}:
a real throw-away C{redis-server}, the tiny RESP client, and the TCP proxy
whose link can be cut and restored.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import redis_support
from tests.cut_proxy import CutProxy, free_port
from tests.redis_support import RedisError, RedisServer, RespConnection

REPO = Path(__file__).resolve().parent.parent


class _EchoServer:
    """
    A blocking echo server on a free loopback port, one thread per
    connection, for testing the proxy without Redis.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        with connection:
            while True:
                try:
                    data = connection.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                connection.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def _round_trip(port: int, payload: bytes = b"hello") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return _receive(sock, len(payload))


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _dropped(port: int) -> bool:
    """
    Whether a new connection to C{port} is closed or reset before a byte
    comes back (the reset may come while connecting).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"x")
            return sock.recv(10) == b""
    except ConnectionError:
        return True


def _alive(pid: int) -> bool:
    """
    Whether process C{pid} runs (a zombie, dead but not reaped, does not).
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class SkipTests(SynchronousTestCase):
    def test_skip_reason_when_absent(self) -> None:
        """
        Without a redis-server binary, skip_reason says how to install it and
        require_redis raises SkipTest with that reason.
        """
        with mock.patch.object(redis_support, "redis_server_path", lambda: None):
            reason = redis_support.skip_reason()
            self.assertEqual(
                reason, "redis-server not installed: apt-get install redis-server"
            )
            exception = self.assertRaises(SkipTest, redis_support.require_redis)
            self.assertEqual(str(exception), reason)

    def test_no_skip_when_present(self) -> None:
        """
        With the binary found, skip_reason is None.
        """
        with mock.patch.object(redis_support, "redis_server_path", lambda: "/x"):
            self.assertIsNone(redis_support.skip_reason())
            redis_support.require_redis()

    def test_encode_command(self) -> None:
        """
        Commands go out as RESP arrays of bulk strings, numbers as text.
        """
        self.assertEqual(
            redis_support.encode_command("SET", b"k", 12),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n",
        )


class RedisServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.redis = RedisServer.start_for(self)

    def test_starts_and_answers_ping(self) -> None:
        """
        The server runs on the loopback port in its URL and answers PING.
        """
        self.assertEqual(self.redis.url, f"redis://127.0.0.1:{self.redis.port}")
        self.assertTrue(self.redis.running)
        self.assertEqual(self.redis.command("PING"), "PONG")

    def test_no_persistence(self) -> None:
        """
        RDB snapshots and the append-only file are off.
        """
        self.assertEqual(self.redis.command("CONFIG", "GET", "save"), [b"save", b""])
        self.assertEqual(
            self.redis.command("CONFIG", "GET", "appendonly"),
            [b"appendonly", b"no"],
        )

    def test_commands(self) -> None:
        """
        command() returns simple strings, bulk strings, nil, integers and
        arrays, and raises RedisError on an error reply.
        """
        self.assertEqual(self.redis.command("SET", "key", "value"), "OK")
        self.assertEqual(self.redis.command("GET", "key"), b"value")
        self.assertIsNone(self.redis.command("GET", "missing"))
        self.assertEqual(self.redis.command("INCR", "counter"), 1)
        self.assertEqual(self.redis.command("INCR", "counter"), 2)
        self.assertEqual(self.redis.command("PUBLISH", "topic", "x"), 0)
        self.redis.command("RPUSH", "list", "a", "b")
        self.assertEqual(self.redis.command("LRANGE", "list", 0, -1), [b"a", b"b"])
        error = self.assertRaises(RedisError, self.redis.command, "INCR", "key")
        self.assertIn("not an integer", str(error))

    def test_publish_reaches_subscriber(self) -> None:
        """
        A RespConnection can SUBSCRIBE and read the messages PUBLISH counts.
        """
        subscriber = self.redis.connect()
        self.addCleanup(subscriber.close)
        self.assertEqual(
            subscriber.call("SUBSCRIBE", "news"), [b"subscribe", b"news", 1]
        )
        self.assertEqual(self.redis.command("PUBLISH", "news", "hi"), 1)
        self.assertEqual(subscriber.read_reply(), [b"message", b"news", b"hi"])

    def test_version(self) -> None:
        """
        version() reports a dotted version, running or not.
        """
        running = self.redis.version()
        self.assertRegex(running, r"^\d+\.\d+\.\d+")
        self.redis.stop()
        self.assertEqual(self.redis.version(), running)

    def test_stop(self) -> None:
        """
        After stop() the process is gone and the port refuses connections.
        """
        process = self.redis.process
        assert process is not None
        self.redis.stop()
        self.assertFalse(self.redis.running)
        self.assertEqual(process.returncode, 0)
        self.assertRaises(OSError, self.redis.command, "PING")

    def test_kill_then_restart_same_port(self) -> None:
        """
        After kill() the server is down; restart() brings it back on the same
        port, working and empty.
        """
        port = self.redis.port
        self.redis.command("SET", "key", "value")
        self.redis.kill()
        self.assertFalse(self.redis.running)
        self.assertRaises(OSError, self.redis.command, "PING")
        self.redis.restart()
        self.assertEqual(self.redis.port, port)
        self.assertEqual(self.redis.command("PING"), "PONG")
        self.assertIsNone(self.redis.command("GET", "key"))

    def test_restart_running_server(self) -> None:
        """
        restart() of a running server stops it first and keeps the port.
        """
        port = self.redis.port
        first = self.redis.process
        self.redis.restart()
        self.assertEqual(self.redis.port, port)
        self.assertIsNot(self.redis.process, first)
        self.assertEqual(self.redis.command("INCR", "n"), 1)

    def test_port_taken_by_another_redis(self) -> None:
        """
        A server whose fixed port is held by another Redis fails with the
        reason instead of taking the other server for its own.
        """
        other = RedisServer(port=self.redis.port, start=False, timeout=2)
        self.addCleanup(other.close)
        with mock.patch("tests.redis_support.time.sleep"):
            error = self.assertRaises(RuntimeError, other.start)
        self.assertIn(f"port {self.redis.port}", str(error))
        self.assertIn("Address already in use", str(error))
        self.assertFalse(other.running)
        self.assertEqual(self.redis.command("PING"), "PONG")

    def test_dies_with_parent(self) -> None:
        """
        A Redis started by a process that is killed stops too.
        """
        script = (
            "import sys, time\n"
            "from tests.redis_support import RedisServer\n"
            "redis = RedisServer()\n"
            "print(redis.process.pid, flush=True)\n"
            "time.sleep(60)\n"
        )
        parent = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            cwd=str(REPO),
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        self.addCleanup(parent.wait)
        self.addCleanup(parent.kill)
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        self.assertTrue(ready, "the parent did not start redis-server in 30 s")
        pid = int(parent.stdout.readline())
        parent.kill()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(_alive(pid))

    def test_close_removes_directory(self) -> None:
        """
        close() stops the server and removes its temporary directory.
        """
        directory = self.redis.directory
        self.assertIn("Ready to accept connections", self.redis.log())
        self.redis.close()
        self.assertFalse(self.redis.running)
        self.assertFalse(os.path.exists(directory))


class RedisServerOptionsTests(SynchronousTestCase):
    def test_password(self) -> None:
        """
        With a password, the URL carries it, command() authenticates, and a
        connection without AUTH is refused.
        """
        redis = RedisServer.start_for(self, password="s3cret")
        self.assertEqual(redis.url, f"redis://:s3cret@127.0.0.1:{redis.port}")
        self.assertEqual(redis.command("SET", "k", "v"), "OK")
        anonymous = RespConnection("127.0.0.1", redis.port)
        self.addCleanup(anonymous.close)
        error = self.assertRaises(RedisError, anonymous.call, "GET", "k")
        self.assertIn("NOAUTH", str(error))

    def test_unix_socket(self) -> None:
        """
        With unix_socket, the server also answers on the socket of unix_url.
        """
        redis = RedisServer.start_for(self, unix_socket=True)
        self.assertEqual(redis.unix_url, "unix://" + redis.unix_path)
        connection = RespConnection(redis.unix_path, 0)
        self.addCleanup(connection.close)
        self.assertEqual(connection.call("PING"), "PONG")


class CutProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.echo = _EchoServer()
        self.addCleanup(self.echo.close)
        self.proxy = CutProxy.start_for(self, "127.0.0.1", self.echo.port)

    def test_forwards(self) -> None:
        """
        Bytes go through the proxy both ways, also in bulk.
        """
        self.assertEqual(_round_trip(self.proxy.port), b"hello")
        payload = bytes(range(256)) * 8192
        self.assertEqual(_round_trip(self.proxy.port, payload), payload)
        self.assertEqual(self.proxy.accepted, 2)

    def test_cut_breaks_established_connection(self) -> None:
        """
        cut() closes an established proxied connection at once on both
        sides.
        """
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"ping")
        self.assertEqual(_receive(sock, 4), b"ping")
        self.assertEqual(self.proxy.connections, 1)
        self.proxy.cut()
        self.assertEqual(self.proxy.connections, 0)
        try:
            self.assertEqual(sock.recv(10), b"")
        except ConnectionResetError:
            pass
        upstream = self.echo.connections[0]
        deadline = time.monotonic() + 5
        while upstream.fileno() != -1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(upstream.fileno(), -1)

    def test_cut_refuses_new_connections(self) -> None:
        """
        While cut, a new connection is closed without reaching the target.
        """
        self.proxy.cut()
        self.assertTrue(_dropped(self.proxy.port))
        self.assertEqual(self.proxy.accepted, 0)
        self.assertEqual(self.proxy.dropped, 1)
        self.assertEqual(self.echo.connections, [])

    def test_stall(self) -> None:
        """
        stall() keeps a connection open but moves no byte, on it nor on a
        new one; restore() moves what waited.
        """
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"ping")
        self.assertEqual(_receive(sock, 4), b"ping")
        self.proxy.stall()
        late = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.addCleanup(late.close)
        sock.sendall(b"held")
        late.sendall(b"late")
        for each in (sock, late):
            each.settimeout(0.3)
            self.assertRaises(TimeoutError, each.recv, 10)
        self.assertEqual(self.proxy.connections, 2)
        self.proxy.restore()
        sock.settimeout(5)
        late.settimeout(5)
        self.assertEqual(_receive(sock, 4), b"held")
        self.assertEqual(_receive(late, 4), b"late")

    def test_restore_without_thaw(self) -> None:
        """
        restore(thaw=False) leaves the stalled connections stalled for good;
        new ones go through.
        """
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.addCleanup(sock.close)
        self.proxy.stall()
        sock.sendall(b"held")
        self.proxy.restore(thaw=False)
        sock.settimeout(0.3)
        self.assertRaises(TimeoutError, sock.recv, 10)
        self.assertEqual(_round_trip(self.proxy.port), b"hello")

    def test_restore(self) -> None:
        """
        After restore(), new connections go through again on the same port.
        """
        port = self.proxy.port
        self.proxy.cut()
        self.proxy.restore()
        self.assertEqual(self.proxy.port, port)
        self.assertEqual(_round_trip(port), b"hello")

    def test_cut_refuse(self) -> None:
        """
        cut(refuse=True) stops listening, so new connections are refused;
        restore() listens again on the same port.
        """
        port = self.proxy.port
        self.proxy.cut(refuse=True)
        self.assertRaises(
            ConnectionRefusedError, socket.create_connection, ("127.0.0.1", port), 5
        )
        self.proxy.restore()
        self.assertEqual(self.proxy.port, port)
        self.assertEqual(_round_trip(port), b"hello")

    def test_target_down(self) -> None:
        """
        A connection the target refuses is dropped, and the proxy goes on.
        """
        proxy = CutProxy.start_for(self, "127.0.0.1", free_port())
        self.assertTrue(_dropped(proxy.port))
        self.assertEqual(proxy.dropped, 1)
        self.assertEqual(_round_trip(self.proxy.port), b"hello")

    def test_close_ends_thread(self) -> None:
        """
        close() ends the thread, stops listening and is idempotent.
        """
        self.proxy.close()
        self.assertFalse(self.proxy._thread.is_alive())
        self.assertRaises(
            OSError, socket.create_connection, ("127.0.0.1", self.proxy.port), 1
        )
        self.proxy.close()

    def test_wait_for_connections(self) -> None:
        """
        wait_for_connections() returns True once enough connections are
        open, False on a timeout.
        """
        self.assertFalse(self.proxy.wait_for_connections(1, timeout=0.05))
        sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        self.addCleanup(sock.close)
        self.assertTrue(self.proxy.wait_for_connections(1))


class RedisThroughProxyTests(SynchronousTestCase):
    def test_cut_and_restore_redis_link(self) -> None:
        """
        A Redis connection through the proxy works, breaks on cut(), cannot
        reconnect while cut, and reconnects after restore().
        """
        redis = RedisServer.start_for(self)
        proxy = CutProxy.start_for(self, "127.0.0.1", redis.port)
        connection = RespConnection("127.0.0.1", proxy.port)
        self.addCleanup(connection.close)
        self.assertEqual(connection.call("SET", "k", "v"), "OK")
        proxy.cut()
        self.assertRaises(OSError, connection.call, "GET", "k")

        def reconnect() -> None:
            retry = RespConnection("127.0.0.1", proxy.port)
            try:
                retry.call("GET", "k")
            finally:
                retry.close()

        self.assertRaises(OSError, reconnect)
        proxy.restore()
        again = RespConnection("127.0.0.1", proxy.port)
        self.addCleanup(again.close)
        self.assertEqual(again.call("GET", "k"), b"v")
