"""
HAProxy in front of two C{twistd -n echoplus} instances on C{haproxy:}
endpoints, configured like C{deploy/haproxy.cfg}: replies come back through
it, traffic reaches both instances, and processors see the real client
address.  Skipped (with the reason) where no C{haproxy} binary is found.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.interfaces import IProcessor
from echoplus.logs import format_address
from tests.support import REPO, Twistd, receive_lines

HAPROXY = shutil.which("haproxy") or next(
    (
        path
        for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
        if os.access(path, os.X_OK)
    ),
    None,
)


@implementer(IProcessor)
class WhoAmI:
    """
    A test-only processor: replies C{<pid> <peer> <message>}, so a test can
    tell which instance answered and which client address it saw.
    """

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        return f"{os.getpid()} {format_address(context.peer)} ".encode() + message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CONFIG = """\
global
    maxconn 256

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend echoplus
    bind 127.0.0.1:{port}
    default_backend echoplus

backend echoplus
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server send-proxy-v2 check inter 500ms fall 2 rise 1
{servers}
"""


class HAProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        if HAPROXY is None:
            raise SkipTest(
                "haproxy is not installed (Debian: apt-get install haproxy; "
                ".ci/run installs it when run as root)"
            )

    def start_instance(self) -> tuple[int, int]:
        """
        Start one echoplus instance behind a PROXY-protocol endpoint; return
        its service and metrics ports.
        """
        server = Twistd(
            [
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--processor",
                "tests.test_haproxy:WhoAmI",
                "--metrics",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        self.addCleanup(server.stop)
        metrics = server.wait_for(r"echoplus metrics on \S+ at \S+:(\d+)")[0]
        return server.port, int(metrics.group(1))

    def start_haproxy(self, backends: list[tuple[int, int]]) -> int:
        port = free_port()
        servers = "\n".join(
            f"    server e{index} 127.0.0.1:{service} port {metrics}"
            for index, (service, metrics) in enumerate(backends)
        )
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory, True)
        config = directory / "haproxy.cfg"
        config.write_text(CONFIG.format(port=port, servers=servers))
        process = subprocess.Popen(
            [str(HAPROXY), "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(REPO),
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stderr is not None
            process.stderr.close()

        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.fail(f"haproxy exited: {process.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        self.fail("haproxy did not start listening")

    def test_deploy_config_valid(self) -> None:
        """
        deploy/haproxy.cfg passes HAProxy's own check and sends PROXY v2
        to servers checked on /healthz.
        """
        config = REPO / "deploy" / "haproxy.cfg"
        result = subprocess.run(
            [str(HAPROXY), "-c", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        text = config.read_text()
        self.assertIn("send-proxy-v2", text)
        self.assertIn("option httpchk GET /healthz", text)

    def test_through_haproxy(self) -> None:
        """
        Replies come back through HAProxy, connections reach both instances,
        and each processor sees the client's own address and port.
        """
        backends = [self.start_instance(), self.start_instance()]
        port = self.start_haproxy(backends)
        pids = set()
        for index in range(6):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"hello %d\n" % index)
                [reply] = receive_lines(sock, 1)
                pid, peer, message = reply.split(b" ", 2)
                self.assertEqual(message, b"hello %d" % index)
                client = f"127.0.0.1:{sock.getsockname()[1]}"
                self.assertEqual(peer.decode(), client)
                pids.add(pid)
        self.assertEqual(len(pids), 2, pids)
