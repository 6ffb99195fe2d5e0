"""
Tests for L{echoplus._extensions}: which modules run compiled, and the
switches that turn them off (C{ECHOPLUS_NO_EXTENSIONS=1}; a source edited
after its in-place build).

Each case runs a fresh interpreter, since the choice is made at import.
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

_REPORT = (
    "import echoplus.framing as f, echoplus.protocols, echoplus.dispatch, "
    "echoplus.transports, sys\n"
    "from echoplus._extensions import COMPILED_MODULES, compiled\n"
    "print(f.ACCELERATED, *[compiled(sys.modules[n]) for n in COMPILED_MODULES])\n"
)


def report(checkout: Path, **environ: str) -> list[str]:
    """
    Import echoplus from C{checkout} in a fresh interpreter: whether the
    codecs and each module of the per-read path are compiled.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")}
    env.update(environ, PYTHONPATH=str(checkout))
    result = subprocess.run(
        [sys.executable, "-c", _REPORT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(checkout),
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.split()


def require_built() -> None:
    """
    @raise SkipTest: this checkout has no in-place build (unless
        C{ECHOPLUS_REQUIRE_EXTENSIONS=1}: then that is a failure).
    """
    built = report(REPO)
    if built == ["True"] * 4:
        return
    if os.environ.get("ECHOPLUS_REQUIRE_EXTENSIONS", "") not in ("", "0"):
        raise AssertionError(f"the compiled modules are required: {built}")
    raise SkipTest(f"no compiled build in this checkout ({built})")


class SwitchTests(SynchronousTestCase):
    """
    The compiled modules, and the ways back to the Python sources.
    """

    def test_no_extensions_variable(self) -> None:
        """
        C{ECHOPLUS_NO_EXTENSIONS=1} imports every module from source, and
        C{ACCELERATED} says so; C{0} or empty does not.
        """
        self.assertEqual(report(REPO, ECHOPLUS_NO_EXTENSIONS="1"), ["False"] * 4)
        self.assertEqual(report(REPO, ECHOPLUS_NO_EXTENSIONS="0"), report(REPO))

    def test_built_in_place(self) -> None:
        """
        With an in-place build, the codecs and the whole per-read path run
        compiled.
        """
        require_built()
        self.assertEqual(report(REPO), ["True"] * 4)

    def test_stale_build_not_used(self) -> None:
        """
        In a checkout, a module whose source is newer than its build runs
        from source (an edit is never hidden by an old build); the others
        stay compiled.
        """
        require_built()
        checkout = _temporary_directory() / "checkout"
        shutil.copytree(REPO, checkout, ignore=_IGNORED)
        for path in (checkout / "echoplus").iterdir():
            when = 2_000_000 if path.name.endswith(".so") else 1_000_000
            os.utime(path, (when, when))
        (checkout / "echoplus" / "protocols.py").touch()  # edited since built
        self.assertEqual(report(checkout), ["True", "True", "False", "True"])
