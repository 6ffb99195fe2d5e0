"""
Helpers for integration tests: run the real C{twistd -n echoplus} and talk
to it over real sockets.

Listeners are started on port 0 and the real address is read from the log
line C{echoplus listening on <endpoint> at <host:port>}, so no free-port
race exists.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_LISTENING = re.compile(r"echoplus listening on (\S+) at (\S+)")


def twistd_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """
    The environment for a child twistd: this checkout first on the path, no
    ECHOPLUS_* variables inherited from the test runner but the switch to the
    pure-Python codecs (so a pure-Python test run is pure in its children).
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ECHOPLUS_") or key == "ECHOPLUS_NO_EXTENSIONS"
    }
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), environment.get("PYTHONPATH", "")])
    )
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(extra or {})
    return environment


class Twistd:
    """
    One C{twistd -n echoplus ...} process.

    @ivar addresses: C{(host, port)} pairs or UNIX paths of the listeners, in
        the order they started.
    @ivar output: every line the process printed so far.
    """

    def __init__(
        self,
        arguments: Sequence[str],
        listeners: int = 1,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        twistd_options: Sequence[str] = (),
        timeout: float = 20.0,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        """
        @param preexec_fn: run in the child before twistd starts (e.g. to
            lower its resource limits).
        """
        self.output: list[str] = []
        self.addresses: list[object] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", *twistd_options, "echoplus", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=twistd_environment(env),
            cwd=cwd or str(REPO),
            text=True,
            preexec_fn=preexec_fn,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if listeners:
            self.wait_for(_LISTENING, count=listeners, timeout=timeout)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(
        self, pattern: str | re.Pattern[str], count: int = 1, timeout: float = 20.0
    ) -> list[re.Match[str]]:
        """
        Read output until C{pattern} matched C{count} new lines; return the
        matches.  Raise C{AssertionError} with the output so far on a
        timeout or an exit.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        matches: list[re.Match[str]] = []
        deadline = time.monotonic() + timeout
        while len(matches) < count:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {regex.pattern!r}; output:\n"
                        + "".join(self.output)
                    ) from None
            if line is None:
                raise AssertionError(
                    f"twistd exited ({self.process.wait()}) before {regex.pattern!r}; "
                    "output:\n" + "".join(self.output)
                )
            if not line:
                continue
            self.output.append(line)
            match = regex.search(line)
            if match:
                matches.append(match)
                if regex is _LISTENING:
                    self.addresses.append(_parse_address(match.group(2)))
        return matches

    @property
    def port(self) -> int:
        """
        The TCP port of the first listener.
        """
        host_port = self.addresses[0]
        assert isinstance(host_port, tuple), host_port
        return host_port[1]

    def connect(self, index: int = 0, timeout: float = 10.0) -> socket.socket:
        """
        A blocking socket connected to listener C{index}.
        """
        address = self.addresses[index]
        if isinstance(address, tuple):
            sock = socket.create_connection(address, timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(address))
        return sock

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """
        SIGTERM the process and wait for it; return its exit status.
        """
        return stop_process(self.process, timeout)

    def drain_output(self) -> str:
        """
        Everything printed so far, including lines not yet waited for.
        """
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
        return "".join(self.output)


def _parse_address(text: str) -> object:
    host, separator, port = text.rpartition(":")
    if separator and port.isdigit():
        return (host, int(port))
    return text


def run_twistd(
    arguments: Sequence[str], timeout: float = 20.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run twistd to completion (for launches that must fail).
    """
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "echoplus", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=twistd_environment(env),
        cwd=str(REPO),
    )


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """
    SIGTERM a child process and wait for it (SIGKILL after C{timeout}
    seconds); return its exit status.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """
    Read exactly C{size} bytes (fewer only if the peer closes).
    """
    chunks = []
    while size > 0:
        chunk = sock.recv(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def receive_until_closed(sock: socket.socket) -> bytes:
    """
    Read until the peer closes.
    """
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def receive_lines(
    sock: socket.socket, count: int, delimiter: bytes = b"\n"
) -> list[bytes]:
    """
    Read C{count} delimited lines.
    """
    data = b""
    while data.count(delimiter) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(delimiter)[:count]
