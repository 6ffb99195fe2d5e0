"""
Building the optional compiled codecs: an install where no C compiler is on
the C{PATH} succeeds as pure Python and says so, unless
C{ECHOPLUS_REQUIRE_EXTENSIONS=1}, which makes it fail.

SLOW-ISH (about 5 to 15 s each): every test installs a copy of this checkout
into a fresh virtualenv, offline (C{--no-build-isolation --no-index}): the
build uses the test interpreter's own setuptools, wheel and Cython (the test
extra), which the new virtualenv sees through a C{.pth} file pointing at
the tree of L{tests.test_packaging.dependencies} (everything installed here
but echoplus).  That the compiled build works is what C{.ci/run} proves:
it builds with C{ECHOPLUS_REQUIRE_EXTENSIONS=1} and runs the suite on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO
from tests.test_packaging import _IGNORED, _temporary_directory, dependencies

#: The line setup.py prints when it installs pure Python.
FALLBACK = "echoplus: building without the compiled codecs (pure Python)"


def fresh_virtualenv() -> Path:
    """
    A new virtualenv (no pip of its own) that sees the test interpreter's
    packages, echoplus left out; return its interpreter.
    """
    try:
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as error:
        raise SkipTest(f"building offline needs the test extra ({error})")
    home = _temporary_directory() / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(home)],
        check=True,
        timeout=60,
    )
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "echoplus-test-dependencies.pth").write_text(
        f"import site; site.addsitedir({str(dependencies())!r})\n"
    )
    return python


def no_compiler_environment(**extra: str) -> dict[str, str]:
    """
    This environment with a C{PATH} that holds no C compiler, no compiler
    variables and no C{ECHOPLUS_*} variables, plus C{extra}.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ECHOPLUS_")
        and key not in ("CC", "CXX", "LDSHARED", "PYTHONPATH")
    }
    empty = _temporary_directory() / "bin"
    empty.mkdir()
    env["PATH"] = str(empty)
    return {**env, **extra}


def install(python: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """
    Install a copy of this checkout with C{python}'s pip (the test
    interpreter's, through the C{.pth}), offline, in C{env}.
    """
    source = _temporary_directory() / "source"
    shutil.copytree(REPO, source, ignore=_IGNORED)
    for built in source.glob("echoplus/*" + sysconfig.get_config_var("EXT_SUFFIX")):
        built.unlink()  # an in-place build of the checkout is not the install's
    return subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(source.parent),
    )


class NoCompilerTests(SynchronousTestCase):
    """
    No C compiler at hand (slow-ish: a real offline install each).
    """

    def test_installs_pure_python(self) -> None:
        """
        The install succeeds, prints the one line saying the codecs are
        pure Python, and the installed echoplus reports C{ACCELERATED} as
        C{False}, in C{--version} too.
        """
        python = fresh_virtualenv()
        result = install(python, no_compiler_environment())
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertEqual(output.count(FALLBACK), 1, output)
        check = subprocess.run(
            [
                str(python),
                "-c",
                "import echoplus.framing as f, echoplus.cli as c, sys; "
                "print(f.ACCELERATED, f.__file__); "
                "c.main(['--version'])",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=no_compiler_environment(),
            cwd=str(python.parent),
        )
        self.assertEqual(check.returncode, 0, check.stderr)
        accelerated, where = check.stdout.splitlines()[0].split()
        self.assertEqual(accelerated, "False")
        self.assertTrue(where.startswith(str(python.parent.parent)), where)
        self.assertIn("(pure Python codecs)", check.stdout)

    def test_required_extensions_fail(self) -> None:
        """
        With C{ECHOPLUS_REQUIRE_EXTENSIONS=1} the same install fails, and
        says why.
        """
        python = fresh_virtualenv()
        result = install(
            python, no_compiler_environment(ECHOPLUS_REQUIRE_EXTENSIONS="1")
        )
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn(
            "ECHOPLUS_REQUIRE_EXTENSIONS is set, but the compile failed", output
        )


class SourceDistributionTests(SynchronousTestCase):
    """
    The sdist carries what a build on another machine compiles.
    """

    def test_sources_and_types(self) -> None:
        """
        Both compiled sources and their C{.pxd} files are in the sdist; the
        generated C and any built module are not.
        """
        try:
            import setuptools  # noqa: F401
        except ImportError as error:
            raise SkipTest(f"building an sdist needs setuptools ({error})")
        source = _temporary_directory() / "source"
        shutil.copytree(REPO, source, ignore=_IGNORED)
        target = _temporary_directory() / "dist"
        result = subprocess.run(
            [sys.executable, "setup.py", "-q", "sdist", "-d", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(source),
            env={k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        (archive,) = target.glob("echoplus-*.tar.gz")
        import tarfile

        with tarfile.open(archive) as sdist:
            names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        for needed in (
            "echoplus/_codecs.py",
            "echoplus/_codecs_c.pxd",
            "echoplus/_readpath.py",
            "echoplus/_readpath_c.pxd",
            "setup.py",
        ):
            self.assertIn(needed, names)
        self.assertFalse(
            [name for name in names if name.endswith((".c", ".so"))], names
        )
