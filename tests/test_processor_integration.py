"""
Processors through a real C{twistd -n echoplus}: pipelined asynchronous
replies in order, failure isolation, a plugin from a separate distribution,
and launch errors.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.sample_processors import SECRET
from tests.support import REPO, Twistd, receive_lines, run_twistd

LISTEN = ["--listen", "tcp:0:interface=127.0.0.1"]
ROT47_SOURCE = REPO / "examples" / "echoplus-rot47" / "src"


class ProcessorIntegrationTests(SynchronousTestCase):
    """
    Processors served by twistd over loopback sockets.
    """

    def start(self, *arguments: str, env: dict[str, str] | None = None) -> Twistd:
        server = Twistd([*LISTEN, *arguments], env=env)
        self.addCleanup(server.stop)
        return server

    def test_pipelined_random_delays_in_order(self) -> None:
        """
        200 pipelined requests to a processor answering after random delays
        of up to 50 ms come back complete and in request order.
        """
        server = self.start(
            "--processor", "tests.sample_processors:RandomDelay(most=0.05),upper"
        )
        requests = [b"request-%03d" % i for i in range(200)]
        with server.connect() as sock:
            sock.sendall(b"".join(request + b"\n" for request in requests))
            replies = receive_lines(sock, 200)
        self.assertEqual(replies, [request.upper() for request in requests])

    def test_raising_processor_costs_one_request(self) -> None:
        """
        A processor that raises answers that request with
        C{ERROR processor-failed: <name>}, never its exception text; the
        requests around it and other connections are served, and the log
        has the traceback with the connection id.
        """
        name = "tests.sample_processors:Boom"
        server = self.start("--processor", name)
        with server.connect() as sock:
            sock.sendall(b"before\nboom now\nafter\n")
            replies = receive_lines(sock, 3)
            sock.sendall(b"still here\n")
            replies += receive_lines(sock, 1)
        self.assertEqual(
            replies,
            [
                b"before",
                f"ERROR processor-failed: {name}".encode(),
                b"after",
                b"still here",
            ],
        )
        with server.connect() as sock:
            sock.sendall(b"other connection\n")
            self.assertEqual(receive_lines(sock, 1), [b"other connection"])
        server.wait_for(SECRET, timeout=5)
        self.assertIsNone(server.process.poll())
        server.stop()
        log = server.drain_output()
        failures = re.findall(r"Processor \S+ failed on connection (\d+)", log)
        self.assertEqual(len(failures), 1, log)
        self.assertEqual(log.count("RuntimeError: " + SECRET), 1, log)

    def test_plugin_distribution_served(self) -> None:
        """
        The C{rot47} processor of C{examples/echoplus-rot47}, found through
        C{PYTHONPATH} alone, is served by C{--processor rot47}.
        """
        path = os.pathsep.join([str(REPO), str(ROT47_SOURCE)])
        server = self.start("--processor", "rot47", env={"PYTHONPATH": path})
        with server.connect() as sock:
            sock.sendall(b"Hello, World!\n")
            self.assertEqual(receive_lines(sock, 1), [b"w6==@[ (@C=5P"])

    def test_unknown_processor_launch_error(self) -> None:
        """
        An unknown processor name fails the launch with a message naming it
        and listing the known processors.
        """
        result = run_twistd([*LISTEN, "--processor", "upper,nosuch"])
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("'nosuch'", output)
        self.assertIn("known processors:", output)
        self.assertIn("upper", output)
        self.assertNotIn("Traceback", output)

    def test_options_from_config_table(self) -> None:
        """
        Processor options given as a config-file table reach the factory,
        and an unknown one fails the launch naming it.
        """
        directory = Path(tempfile.mkdtemp(prefix="echoplus-config-"))
        self.addCleanup(shutil.rmtree, directory, True)
        good = directory / "good.toml"
        good.write_text('processors = [{ name = "prefix", text = "(>>, " }, "upper"]\n')
        server = self.start("--config", str(good))
        with server.connect() as sock:
            sock.sendall(b"hi\n")
            self.assertEqual(receive_lines(sock, 1), [b"(>>, HI"])
        bad = directory / "bad.toml"
        bad.write_text('processors = [{ name = "prefix", txt = ">>" }]\n')
        result = run_twistd([*LISTEN, "--config", str(bad)])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("'txt'", result.stdout + result.stderr)
