"""
Tests for C{echoplus send} (L{echoplus.client}): the codecs without
sockets, then the real command against a real C{twistd -n echoplus}.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase

from echoplus.client import unescape
from echoplus.codec import ClientCodec
from echoplus.errors import ConfigError
from tests.support import REPO, Twistd, twistd_environment

LISTEN = "tcp:0:interface=127.0.0.1"


def run_send(
    arguments: Sequence[str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{python -m echoplus send ARGUMENTS} to completion.
    """
    return subprocess.run(
        [sys.executable, "-m", "echoplus", "send", *arguments],
        input=stdin,
        capture_output=True,
        timeout=30,
        env=twistd_environment(),
        cwd=str(REPO),
    )


class CodecTests(SynchronousTestCase):
    def test_round_trip_every_framing(self) -> None:
        """
        Every built-in framing frames messages that its own decoder splits
        back into the same messages, even fed byte by byte.
        """
        messages = [b"one", b"", b"three\x00\xff"]
        for framing in ["line", "netstring", "int8", "int16", "int32"]:
            codec = ClientCodec.for_framing(framing, b"\n", 1000)
            data = codec.encode([m for m in messages if framing != "line" or m])
            replies = []
            for index in range(len(data)):
                replies += codec.decode(data[index : index + 1])
            expected = [m for m in messages if framing != "line" or m]
            self.assertEqual(replies, expected, framing)

    def test_delimiter(self) -> None:
        """
        The line framing uses the given delimiter; escapes are resolved.
        """
        self.assertEqual(unescape("\\r\\n"), b"\r\n")
        codec = ClientCodec.for_framing("line", unescape("\\r\\n"), 1000)
        self.assertEqual(codec.encode([b"a", b"b"]), b"a\r\nb\r\n")

    def test_unknown_framing(self) -> None:
        """
        An unknown framing is a ConfigError naming it.
        """
        error = self.assertRaises(
            ConfigError, ClientCodec.for_framing, "nope", b"\n", 10
        )
        self.assertIn("nope", str(error))


class SendTests(SynchronousTestCase):
    def server(self, *arguments: str) -> Twistd:
        server = Twistd(list(arguments))
        self.addCleanup(server.stop)
        return server

    def test_arguments_and_stdin(self) -> None:
        """
        Messages from arguments, then from stdin lines, come back one reply
        per line in order, with status 0.
        """
        server = self.server("--listen", LISTEN, "--processor", "upper")
        endpoint = f"tcp:127.0.0.1:{server.port}"
        result = run_send([endpoint, "hello", "big world"])
        self.assertEqual((result.returncode, result.stdout), (0, b"HELLO\nBIG WORLD\n"))
        result = run_send([endpoint], stdin=b"a\nb\r\nc\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"A\nB\nC\n"))

    def test_unix_socket(self) -> None:
        """
        unix:PATH endpoints work.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [p.unlink() for p in Path(directory).iterdir()])
        path = f"{directory}/echo.sock"
        self.server("--listen", f"unix:{path}")
        result = run_send([f"unix:{path}", "over unix"])
        self.assertEqual((result.returncode, result.stdout), (0, b"over unix\n"))

    def test_tls(self) -> None:
        """
        tls:HOST:PORT works with trustRoots naming a directory of PEM CA
        certificates; an untrusted server certificate fails with the TLS
        reason.
        """
        from tests.test_tls import certificates

        certs = certificates()
        roots = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, roots, True)
        shutil.copy(certs / "ca.crt", roots / "ca.pem")
        server = self.server(
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={certs / 'server.key'}"
            f":certKey={certs / 'server.crt'}",
        )
        endpoint = f"tls:localhost:{server.port}"
        result = run_send([f"{endpoint}:trustRoots={roots}", "secret"])
        self.assertEqual((result.returncode, result.stdout), (0, b"secret\n"))
        result = run_send([endpoint, "secret"])
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertIn(b"certificate verify failed", result.stderr)

    def test_server_down(self) -> None:
        """
        A refused connection exits with status 1 and a one-line error.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        result = run_send([f"tcp:127.0.0.1:{port}", "x"])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^echoplus: error: cannot connect to tcp:")

    def test_hex_and_early_close(self) -> None:
        """
        --hex sends and prints binary payloads in hexadecimal; a server
        closing before every reply came exits with status 1 after printing
        the replies it did get.
        """
        server = self.server("--listen", LISTEN, "--max-frame", "4")
        result = run_send(["--hex", f"tcp:127.0.0.1:{server.port}", "00ff41", "0d"])
        self.assertEqual(
            (result.returncode, result.stdout), (0, b"00ff41\n0d\n"), result.stderr
        )
        result = run_send(
            [f"tcp:127.0.0.1:{server.port}", "ok", "far too long", "never"]
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout.splitlines()[0], b"ok")
        self.assertIn(b"ERROR frame-too-long", result.stdout)
        self.assertIn(b"closed the connection after 2 of 3", result.stderr)
