"""
Tests for the choice between the compiled and the pure-Python codecs in
L{echoplus.framing}: C{ECHOPLUS_NO_EXTENSIONS=1}, and a checkout whose
C{_codecs.py} was edited after its in-place build.

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
    C{echoplus.framing.ACCELERATED} says there.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")}
    env.update(environ, PYTHONPATH=str(checkout))
    result = subprocess.run(
        [sys.executable, "-c", "import echoplus.framing as f; print(f.ACCELERATED)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(checkout),
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


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
        In a checkout, C{_codecs.py} edited after the in-place build is run
        from source (an edit is never hidden by an old build).
        """
        require_built()
        checkout = _temporary_directory() / "checkout"
        shutil.copytree(REPO, checkout, ignore=_IGNORED)
        for path in (checkout / "echoplus").iterdir():
            when = 2_000_000 if path.name.startswith("_codecs_c.") else 1_000_000
            os.utime(path, (when, when))
        self.assertEqual(accelerated(checkout), "True")
        (checkout / "echoplus" / "_codecs.py").touch()  # edited since built
        self.assertEqual(accelerated(checkout), "False")
