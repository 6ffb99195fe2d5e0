"""
Tests for the choice between the compiled and the pure-Python builds
(L{echoplus._extensions}): the codecs of L{echoplus.framing} and the read
path that L{echoplus.framed.FramedProtocol} inherits are compiled together
or not at all; C{ECHOPLUS_NO_EXTENSIONS=1}, and a checkout with a source
edited after its in-place build, choose the Python ones.

Each case imports echoplus in a fresh interpreter, since the choice is
made at import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO
from tests.test_packaging import _IGNORED, _temporary_directory


def accelerated(checkout: Path, **environ: str) -> str:
    """
    Import echoplus from C{checkout} in a fresh interpreter; return what
    C{echoplus.framing.ACCELERATED} says there, having checked that the
    protocol's read path is of the same build.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")}
    env.update(environ, PYTHONPATH=str(checkout))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import echoplus.framing as f, echoplus.framed as p; "
            "print(f.ACCELERATED, p.ReadPath.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(checkout),
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    flag, read_path = result.stdout.split()
    expected = "echoplus._readpath_c" if flag == "True" else "echoplus._readpath"
    if read_path != expected:
        raise AssertionError(f"codecs accelerated: {flag}, but read path {read_path}")
    return flag


def require_built() -> None:
    """
    @raise SkipTest: this checkout has no in-place build (unless
        C{ECHOPLUS_REQUIRE_EXTENSIONS=1}: then that is a failure).
    """
    if accelerated(REPO) == "True":
        return
    if os.environ.get("ECHOPLUS_REQUIRE_EXTENSIONS", "") not in ("", "0"):
        raise AssertionError("the compiled codecs are required but not built")
    raise SkipTest("no compiled codecs in this checkout")


class SwitchTests(SynchronousTestCase):
    """
    The compiled codecs, and the ways back to the Python ones.
    """

    def test_no_extensions_variable(self) -> None:
        """
        C{ECHOPLUS_NO_EXTENSIONS=1} selects the pure-Python codecs; C{0}
        does not change the default.
        """
        self.assertEqual(accelerated(REPO, ECHOPLUS_NO_EXTENSIONS="1"), "False")
        self.assertEqual(
            accelerated(REPO, ECHOPLUS_NO_EXTENSIONS="0"), accelerated(REPO)
        )

    def test_stale_build_not_used(self) -> None:
        """
        In a checkout, a compiled source (C{_codecs.py}, C{_readpath.py})
        edited after the in-place build is run from source, and so is the
        other one: an edit is never hidden by an old build.
        """
        require_built()
        checkout = _temporary_directory() / "checkout"
        shutil.copytree(REPO, checkout, ignore=_IGNORED)
        package = checkout / "echoplus"
        for edited in ("_codecs.py", "_readpath.py"):
            for path in package.iterdir():
                built = path.name.startswith(("_codecs_c.", "_readpath_c."))
                when = 2_000_000 if built else 1_000_000
                os.utime(path, (when, when))
            self.assertEqual(accelerated(checkout), "True")
            (package / edited).touch()  # edited since built
            self.assertEqual(accelerated(checkout), "False", edited)
