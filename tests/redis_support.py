"""
Helpers for tests and benchmarks that need a real Redis: a throw-away
C{redis-server} on a free loopback port, a tiny blocking RESP client to look
at it, and (in L{tests.cut_proxy}, re-exported here) a TCP proxy whose
connections can be cut and restored.

    require_redis()                      # SkipTest when redis-server is absent
    redis = RedisServer.start_for(self)  # stopped and removed on cleanup
    redis.command("SET", "k", "v")       # -> "OK"
    redis.kill(); redis.restart()        # same port, empty data

The server runs with no persistence (C{--save ""}, C{--appendonly no}) in a
temporary directory that also holds its log (L{RedisServer.log}).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Sequence

from twisted.trial.unittest import SkipTest

from tests.cut_proxy import CutProxy, free_port

__all__ = [
    "CutProxy",
    "RedisError",
    "RedisServer",
    "RespConnection",
    "free_port",
    "redis_server_path",
    "require_redis",
    "skip_reason",
]

Reply = Any
_INSTALL_HINT = "redis-server not installed: apt-get install redis-server"
_BIND_FAILED = re.compile(r"bind|Address already in use|listening socket", re.I)


def redis_server_path() -> str | None:
    """
    The C{redis-server} binary: on C{PATH}, else Debian's C{/usr/bin}; C{None}
    when neither exists.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    return (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def skip_reason() -> str | None:
    """
    Why Redis tests cannot run here (the binary is missing), or C{None}.
    """
    return None if redis_server_path() else _INSTALL_HINT


def require_redis() -> None:
    """
    Raise L{SkipTest} when C{redis-server} is not installed.
    """
    reason = skip_reason()
    if reason:
        raise SkipTest(reason)


def _die_with_parent() -> None:
    """
    In the child: get SIGTERM when the process that started it dies, so a
    test run killed by a timeout leaves no Redis behind (Linux only; a
    no-op elsewhere).  The signal comes when the I{thread} that started it
    ends: start servers from a thread that outlives them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class RedisError(Exception):
    """
    An error reply (C{-ERR ...}) from Redis; the message is the reply's text.
    """


class RespConnection:
    """
    One blocking RESP2 connection: L{call} sends a command and reads its
    reply; L{send} and L{read_reply} split the two (for SUBSCRIBE, whose
    messages keep arriving).
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 5.0,
        password: str | None = None,
    ) -> None:
        """
        Connect to C{(host, port)}, or to the UNIX socket C{host} when it is
        a path (starts with C{/}); AUTH with C{password} when given.
        """
        if host.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(host)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        if password is not None:
            try:
                self.call("AUTH", password)
            except BaseException:
                self.sock.close()
                raise

    def send(self, *args: object) -> None:
        """
        Send one command: an array of bulk strings (str, bytes, int, float).
        """
        self.sock.sendall(encode_command(*args))

    def call(self, *args: object) -> Reply:
        """
        Send one command and return its reply; raise L{RedisError} on an
        error reply.
        """
        self.send(*args)
        return self.read_reply()

    def read_reply(self) -> Reply:
        """
        Read one reply: C{str} (simple string), C{int}, C{bytes} or C{None}
        (bulk), C{list} (array; an error inside it is a L{RedisError}
        instance); a top-level error reply is raised as L{RedisError}.
        """
        reply = self._parse()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def _parse(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._parse() for _ in range(count)]
        raise RedisError(f"unexpected reply line {line!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self._buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        """
        Close the socket.
        """
        self.sock.close()


def encode_command(*args: object) -> bytes:
    """
    A command as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, (str, int, float)):
            data = str(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisServer:
    """
    A C{redis-server} child on C{127.0.0.1}, with no persistence.

    @ivar port: the TCP port; kept across L{restart}.
    @ivar directory: the temporary working directory (holds C{redis.log}).
    @ivar process: the running C{subprocess.Popen}, or C{None}.
    """

    def __init__(
        self,
        port: int | None = None,
        arguments: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        timeout: float = 10.0,
        start: bool = True,
        password: str | None = None,
        unix_socket: bool = False,
    ) -> None:
        """
        @param port: a fixed port; by default a free one is found (and
            another tried when Redis cannot bind it).
        @param arguments: more C{redis-server} options (C{["--maxclients",
            "100"]}).
        @param wrapper: a command prefix such as C{["taskset", "-c", "0"]}.
        @param timeout: how long to wait for the server to answer PING.
        @param start: start it now.
        @param password: require this password (C{--requirepass}); L{url}
            carries it and L{command} sends AUTH first.
        @param unix_socket: also listen on C{<directory>/redis.sock}
            (L{unix_path}, L{unix_url}).
        """
        binary = redis_server_path()
        if binary is None:
            raise SkipTest(_INSTALL_HINT)
        self._binary = binary
        self._arguments = list(arguments)
        self._wrapper = list(wrapper)
        self._timeout = timeout
        self._fixed_port = port is not None
        self.password = password
        self._unix_socket = unix_socket
        self.port = port or 0
        self.directory = tempfile.mkdtemp(prefix="echoplus-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @classmethod
    def start_for(cls, testcase: Any, **kwargs: Any) -> RedisServer:
        """
        Skip C{testcase} when Redis is absent; otherwise start a server and
        register its L{close} with C{testcase.addCleanup}.
        """
        require_redis()
        server = cls(**kwargs)
        testcase.addCleanup(server.close)
        return server

    @property
    def url(self) -> str:
        """
        C{redis://127.0.0.1:PORT}, or C{redis://:PASSWORD@127.0.0.1:PORT}.
        """
        secret = f":{self.password}@" if self.password is not None else ""
        return f"redis://{secret}127.0.0.1:{self.port}"

    @property
    def unix_path(self) -> str:
        """
        The UNIX socket's path (it exists only with C{unix_socket=True}).
        """
        return os.path.join(self.directory, "redis.sock")

    @property
    def unix_url(self) -> str:
        """
        C{unix:///path/redis.sock}, the broker URL for the UNIX socket.
        """
        return f"unix://{self.unix_path}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "redis.log")

    def log(self) -> str:
        """
        The server's log so far (every start appends to it).
        """
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """
        Start the server and wait until it answers PING.  A free port is
        picked (up to five tries) unless one was given or L{restart} keeps
        the previous one; a fixed port is retried for a few seconds.
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        fixed = self._fixed_port or self.port != 0
        attempts = 25 if fixed else 5
        failure = ""
        for _ in range(attempts):
            if not fixed:
                self.port = free_port()
            failure = self._start_once()
            if not failure:
                return
            if not _BIND_FAILED.search(failure):
                break
            if fixed:
                time.sleep(0.2)
        raise RuntimeError(f"redis-server did not start on port {self.port}: {failure}")

    def _start_once(self) -> str:
        """
        One launch; return C{""} once it answers, else why it failed.
        """
        command = [
            *self._wrapper,
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--logfile", self.log_path,
            *self._options(),
            *self._arguments,
        ]  # fmt: skip
        log_size = len(self.log())
        with open(self.log_path, "ab") as log:  # early errors go to stderr
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return self.log()[log_size:].strip() or "exited"
            if self._answers_ping() and self._is_ours():
                return ""
            time.sleep(0.02)
        self.kill()
        return f"no PONG within {self._timeout:g} s; log:\n{self.log()[log_size:]}"

    def _options(self) -> list[str]:
        options = []
        if self.password is not None:
            options += ["--requirepass", self.password]
        if self._unix_socket:
            options += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        return options

    def _answers_ping(self) -> bool:
        """
        Whether something on the port answers an inline C{PING} with
        C{+PONG} (or C{-NOAUTH}: up, with a password).
        """
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = b""
                while b"\r\n" not in reply:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    reply += chunk
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _is_ours(self) -> bool:
        """
        Whether the Redis answering on the port is our child (another test's
        server may have won the port).
        """
        try:
            info = self.command("INFO", "server", timeout=1)
        except (OSError, RedisError):
            return False
        match = re.search(rb"process_id:(\d+)", info)
        return (
            bool(match)
            and self.process is not None
            and (int(match.group(1)) == self.process.pid)
        )

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM the server and wait for it; SIGKILL it after C{timeout}.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()

    def kill(self) -> None:
        """
        SIGKILL the server (a crash) and reap it.
        """
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()

    def restart(self) -> None:
        """
        Start again on the same port after L{stop} or L{kill} (stopping it
        first when it still runs).  The data is gone: nothing persists.
        """
        self.stop()
        self.start()

    def close(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        """
        Whether the child process is alive.
        """
        return self.process is not None and self.process.poll() is None

    def connect(self, timeout: float = 5.0) -> RespConnection:
        """
        A new L{RespConnection} to this server, authenticated when it has a
        password (close it when done).
        """
        return RespConnection("127.0.0.1", self.port, timeout, self.password)

    def command(self, *args: object, timeout: float = 5.0) -> Reply:
        """
        Run one command on a fresh connection and return its reply (see
        L{RespConnection.read_reply}); raise L{RedisError} on an error reply.
        """
        connection = self.connect(timeout)
        try:
            return connection.call(*args)
        finally:
            connection.close()

    def version(self) -> str:
        """
        The Redis version (C{"7.0.15"}): the running server's, else the
        binary's.
        """
        if self.running:
            info = self.command("INFO", "server")
            match = re.search(rb"redis_version:(\S+)", info)
            if match:
                return match.group(1).decode()
        output = subprocess.run(
            [self._binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        match = re.search(r"v=(\S+)", output)
        return match.group(1) if match else output.strip()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
