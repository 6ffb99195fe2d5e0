"""
The user guides say what the code does: claims in README.md and docs/
checked against the behaviour they describe.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO, TWISTD, Twistd, twistd_environment

LISTEN = ["--listen", "tcp:0:interface=127.0.0.1"]


def guides() -> list[Path]:
    """
    Every Markdown page a user reads.
    """
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pages += sorted((REPO / "examples").glob("**/*.md"))
    pages.append(REPO / "benchmarks" / "README.md")
    return [page for page in pages if page.exists()]


class NetcatTests(SynchronousTestCase):
    def test_one_spelling(self) -> None:
        """
        Every C{nc} example uses C{-N}, the flag the README explains (shut
        down the write side at the end of stdin); none uses another
        netcat's C{-q1}.
        """
        uses = []
        for page in guides():
            for flags in re.findall(r"\|\s*nc((?:\s+-\w+)*)\s", page.read_text()):
                uses.append((page.name, flags.split()))
        self.assertTrue(uses)
        for page, flags in uses:
            self.assertEqual(flags, ["-N"], page)


class PidFileTests(SynchronousTestCase):
    def test_second_server_in_the_same_directory(self) -> None:
        """
        As the README says: a second server started in the same directory
        stops with C{Another twistd server is running}, and the
        C{--pidfile=} it shows, before C{echoplus}, lets it start.
        """
        readme = " ".join((REPO / "README.md").read_text().split())
        self.assertIn("Another twistd server is running", readme)
        self.assertIn("twistd -n --pidfile= echoplus --listen", readme)
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        first = Twistd(LISTEN, cwd=directory, twistd_options=["--pidfile=twistd.pid"])
        self.addCleanup(first.stop)
        second = subprocess.run(
            [*TWISTD, "-n", "echoplus", *LISTEN],
            capture_output=True,
            text=True,
            timeout=30,
            env=twistd_environment(),
            cwd=directory,
        )
        self.assertEqual(second.returncode, 1)
        self.assertIn("Another twistd server is running", second.stdout + second.stderr)
        third = Twistd(LISTEN, cwd=directory)  # tests.support passes --pidfile=
        self.addCleanup(third.stop)
        self.assertNotEqual(third.port, first.port)


class SuiteCountTests(SynchronousTestCase):
    def test_pytest_only_tests_are_where_the_readme_says(self) -> None:
        """
        pytest and trial run the same TestCase tests; the README names the
        one file whose plain test functions only pytest collects, and no
        other test file has any.
        """
        with_functions = set()
        for path in sorted((REPO / "tests").glob("test_*.py")):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                functions = (ast.FunctionDef, ast.AsyncFunctionDef)
                if isinstance(node, functions) and node.name.startswith("test"):
                    with_functions.add(f"tests/{path.name}")
        self.assertEqual(with_functions, {"tests/test_pytest_plugin.py"})
        readme = " ".join((REPO / "README.md").read_text().split())
        self.assertIn("(`tests/test_pytest_plugin.py`): they are plain pytest", readme)
