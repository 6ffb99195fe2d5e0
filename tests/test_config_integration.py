"""
Configuration through the real C{twistd -n echoplus} and C{echoplus check}:
a two-listener file, precedence of environment and flags over it, broken
files, and a live reload with SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    REPO,
    Twistd,
    receive_exactly,
    receive_lines,
    run_twistd,
    twistd_environment,
)

TCP = "tcp:0:interface=127.0.0.1"


def temporary_directory(case: SynchronousTestCase) -> str:
    """
    A short-pathed temporary directory (UNIX socket paths are short),
    removed after the test.
    """
    directory = tempfile.mkdtemp(prefix="ep", dir="/tmp")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    return path


def check(path: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{echoplus check path}.
    """
    return subprocess.run(
        [sys.executable, "-m", "echoplus", "check", path],
        capture_output=True,
        text=True,
        timeout=30,
        env=twistd_environment(),
        cwd=str(REPO),
    )


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class FileLaunchTests(SynchronousTestCase):
    def test_two_listeners(self) -> None:
        """
        A file with a line-framed TCP listener and an int32 UNIX listener,
        each with its own chain, serves both.
        """
        directory = temporary_directory(self)
        sock_path = os.path.join(directory, "e.sock")
        path = write(
            os.path.join(directory, "echoplus.toml"),
            'processors = ["upper"]\n'
            f'[[listen]]\nendpoint = "{TCP}"\n'
            f'[[listen]]\nendpoint = "unix:{sock_path}"\nframing = "int32"\n'
            'processors = [{name = "prefix", text = ">>"}, "reverse"]\n',
        )
        server = Twistd(["--config", path], listeners=2)
        self.addCleanup(server.stop)
        with server.connect(0) as sock:
            sock.sendall(b"hello\n")
            self.assertEqual(receive_lines(sock, 1), [b"HELLO"])
        with server.connect(1) as sock:
            sock.sendall(int32(b"abc"))
            self.assertEqual(receive_exactly(sock, 9), int32(b"cba>>"))

    def test_environment_and_flag_precedence(self) -> None:
        """
        ECHOPLUS_PROCESSORS overrides the file, and --processor overrides
        both.
        """
        directory = temporary_directory(self)
        path = write(
            os.path.join(directory, "echoplus.toml"),
            f'processors = ["upper"]\nlisten = ["{TCP}"]\n',
        )
        environment = {"ECHOPLUS_PROCESSORS": "reverse"}
        with ThreadPoolExecutor(2) as pool:
            from_env, from_flag = pool.map(
                lambda extra: Twistd(["--config", path, *extra], env=environment),
                [[], ["--processor", "rot13"]],
            )
        self.addCleanup(from_env.stop)
        self.addCleanup(from_flag.stop)
        for server, expected in ((from_env, b"cba"), (from_flag, b"nop")):
            with server.connect() as sock:
                sock.sendall(b"abc\n")
                self.assertEqual(receive_lines(sock, 1), [expected])


class BrokenFileTests(SynchronousTestCase):
    #: A broken file and the fault its error must name.
    BROKEN = {
        "misspelt key": ("max_frmae = 10\n", "max_frmae (from {path}:1): unknown key"),
        "bad endpoint": (
            '[[listen]]\nendpoint = "tcp:notaport"\n',
            "endpoint (from {path}:2, [[listen]] #1): bad endpoint 'tcp:notaport'",
        ),
        "negative size": (
            "max_frame = -1\n",
            "max_frame (from {path}:1): must be from 1 to 2147483647, not -1",
        ),
        "unknown framing": (
            'framing = "int64"\n',
            "framing (from {path}:1): unknown framing 'int64'",
        ),
        "bad broker URL": (
            'broker = "redis://h:99999"\n',
            "broker (from {path}:1): broker 'redis://h:99999': "
            "the port is not a number from 1 to 65535",
        ),
        "syntax error": ("max_frame = 10\nframing = \n", "{path}: TOML syntax error"),
    }

    def setUp(self) -> None:
        self.directory = temporary_directory(self)

    def test_check_names_each_fault(self) -> None:
        """
        For each broken file, C{echoplus check} exits 1 naming the fault.
        """
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from echoplus.cli import main

        self.patch(os, "environ", twistd_environment())
        for name, (text, fault) in self.BROKEN.items():
            path = write(os.path.join(self.directory, "broken.toml"), text)
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                status = main(["check", path])
            self.assertEqual((status, out.getvalue()), (1, ""), name)
            self.assertIn(f"echoplus: error: {fault.format(path=path)}", err.getvalue())

    def test_twistd_names_each_fault(self) -> None:
        """
        twistd exits non-zero without a traceback, naming every fault: the
        four value faults of one file together, and a syntax error.
        """
        values = write(
            os.path.join(self.directory, "values.toml"),
            "".join(
                text
                for name, (text, _) in self.BROKEN.items()
                if name != "syntax error"
            ),
        )
        syntax = write(
            os.path.join(self.directory, "syntax.toml"), self.BROKEN["syntax error"][0]
        )
        with ThreadPoolExecutor(2) as pool:
            results = dict(
                zip(
                    (values, syntax),
                    pool.map(
                        lambda path: run_twistd(["--config", path]), (values, syntax)
                    ),
                    strict=True,
                )
            )
        faults = {
            values: [
                "max_frmae (from {path}:1): unknown key",
                "endpoint (from {path}:3, [[listen]] #1): bad endpoint 'tcp:notaport'",
                "max_frame (from {path}:4, [[listen]] #1): must be from 1 to",
                "framing (from {path}:5, [[listen]] #1): unknown framing 'int64'",
            ],
            syntax: [self.BROKEN["syntax error"][1]],
        }
        for path, expected in faults.items():
            result = results[path]
            self.assertNotEqual(result.returncode, 0)
            self.assertNotIn("Traceback", result.stderr + result.stdout)
            for fault in expected:
                self.assertIn(
                    f"echoplus: error: {fault.format(path=path)}", result.stderr
                )


class SighupTests(SynchronousTestCase):
    def test_reload_on_sighup(self) -> None:
        """
        kill -HUP swaps the chain on an open connection without dropping
        it, starts a listener added to the file, and a broken file changes
        nothing.
        """
        directory = temporary_directory(self)
        sock_path = os.path.join(directory, "new.sock")
        path = os.path.join(directory, "echoplus.toml")
        write(path, f'processors = ["upper"]\nlisten = ["{TCP}"]\n')
        server = Twistd(["--config", path])
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"abc\nhal")
            self.assertEqual(receive_lines(sock, 1), [b"ABC"])
            write(
                path,
                'processors = ["reverse"]\n'
                f'[[listen]]\nendpoint = "{TCP}"\n'
                f'[[listen]]\nendpoint = "unix:{sock_path}"\n',
            )
            server.signal(signal.SIGHUP)
            server.wait_for(r"Reloaded .*processors upper -> reverse.*started unix:")
            sock.sendall(b"f\nxyz\n")
            self.assertEqual(receive_lines(sock, 2), [b"flah", b"zyx"])
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as new:
                new.settimeout(10)
                new.connect(sock_path)
                new.sendall(b"new\n")
                self.assertEqual(receive_lines(new, 1), [b"wen"])

            write(path, 'processors = ["upper"]\nmax_frame = -1\n')
            server.signal(signal.SIGHUP)
            server.wait_for(r"refused.*max_frame .*not -1")
            sock.sendall(b"still\n")
            self.assertEqual(receive_lines(sock, 1), [b"llits"])
        self.assertIsNone(server.process.poll())
