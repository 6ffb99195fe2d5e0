"""
Tests for C{echoplus send} (L{echoplus.client}): the codecs without
sockets, then the real command against a real C{twistd -n echoplus}.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, Sequence

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from echoplus.client import unescape
from echoplus.clientendpoint import client_from_string
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


class CommandLineTests(SynchronousTestCase):
    """
    How C{echoplus send} reads its command line.
    """

    def parse(self, *arguments: str) -> Any:
        from echoplus.cli import build_parser

        return build_parser().parse_args(["send", *arguments])

    def test_options_anywhere(self) -> None:
        """
        Options may come before, between or after ENDPOINT and the messages,
        as the usage line shows them.
        """
        parsed = self.parse("tcp:127.0.0.1:5000", "--framing", "int32", "abc", "xyz")
        self.assertEqual(
            (parsed.endpoint, parsed.framing, parsed.message),
            ("tcp:127.0.0.1:5000", "int32", ["abc", "xyz"]),
        )
        parsed = self.parse("tcp:h:1", "--replies", "0", "hello", "--hex")
        self.assertEqual(
            (parsed.replies, parsed.message, parsed.hex), (0, ["hello"], True)
        )
        parsed = self.parse("--timeout", "2", "tcp:h:1", "a", "--", "--framing")
        self.assertEqual((parsed.timeout, parsed.message), (2.0, ["a", "--framing"]))

    def test_message_is_optional(self) -> None:
        """
        Without messages, standard input is read: MESSAGE is not reported as
        required, ENDPOINT is.
        """
        self.assertEqual(self.parse("tcp:h:1").message, [])
        stderr = io.StringIO()
        with redirect_stderr(stderr), self.assertRaises(SystemExit):
            self.parse()
        error = stderr.getvalue().splitlines()[-1]
        self.assertIn("ENDPOINT", error)
        self.assertNotIn("MESSAGE", error)


class ClientEndpointTests(SynchronousTestCase):
    """
    L{client_from_string}: bad endpoint strings in the user's words.
    """

    def error(self, description: str) -> str:
        error = self.assertRaises(
            ValueError, client_from_string, MemoryReactor(), description
        )
        return str(error)

    def test_missing_parts(self) -> None:
        """
        A documented type without a part it needs names the part and the
        form, not a Python signature.
        """
        self.assertEqual(
            self.error("tcp:127.0.0.1"),
            "bad endpoint 'tcp:127.0.0.1': no PORT; use tcp:HOST:PORT",
        )
        self.assertIn("no HOST and no PORT; use tls:HOST:PORT", self.error("tls:"))
        self.assertIn("no PATH; use unix:PATH", self.error("unix:"))
        self.assertIn("PORT must be a number, not 'http'", self.error("tcp:h:http"))

    def test_unknown_keys_and_types(self) -> None:
        """
        An unknown key gets a "did you mean"; an unknown type lists the
        documented forms.
        """
        self.assertIn(
            "tcp: takes no key 'timout' (did you mean 'timeout'?)",
            self.error("tcp:h:1:timout=3"),
        )
        message = self.error("127.0.0.1:5000")
        self.assertIn("'127.0.0.1'", message)
        self.assertIn("use tcp:HOST:PORT, tls:HOST:PORT", message)
        self.assertNotIn("\n", message)

    def test_trust_roots_holding_a_key(self) -> None:
        """
        A trustRoots (or caCertsDir) directory with a .pem file that is no
        certificate, such as the server's key, is one error naming the file;
        certificates and non-.pem files are fine.
        """
        from tests.test_tls import certificates

        certs = certificates()
        roots = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, roots, True)
        shutil.copy(certs / "ca.crt", roots / "ca.pem")
        shutil.copy(certs / "server.key", roots / "server.key")
        client_from_string(MemoryReactor(), f"tls:localhost:1:trustRoots={roots}")
        shutil.copy(certs / "server.key", roots / "server-key.pem")
        for description in (
            f"tls:localhost:1:trustRoots={roots}",
            f"ssl:localhost:1:caCertsDir={roots}",
        ):
            message = self.error(description)
            self.assertIn(
                f"{roots / 'server-key.pem'} is not a PEM certificate", message
            )
            self.assertEqual(len(message.splitlines()), 1)
        self.assertIn("no such directory", self.error(f"tls:h:1:trustRoots={roots}/no"))

    def test_twisted_builds_the_rest(self) -> None:
        """
        Valid strings, keywords included, build Twisted's endpoints.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint

        reactor = MemoryReactor()
        tcp = client_from_string(reactor, "tcp:host=example.com:port=80:timeout=3")
        self.assertIsInstance(tcp, TCP4ClientEndpoint)
        self.assertIsInstance(
            client_from_string(reactor, "unix:/tmp/s"), UNIXClientEndpoint
        )


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
