"""
Packaging: a non-editable install of this checkout ships the twistd dropin
and C{py.typed}, twistd finds C{echoplus} from it, and a plugin cache made
after installing lets it run from a read-only location without warnings.

The project is built offline with the test interpreter's own setuptools and
wheel (C{pip install --no-build-isolation --no-index}); the test extra
installs both.  One install is made per run and copied by the tests that
change it.

The test interpreter may have echoplus installed itself (editable in
development, non-editable in CI, where its dropin then sits in Twisted's
own C{twisted/plugins/}).  So the subprocesses run with C{-S} and see the
interpreter's site-packages only through a tree of symbolic links that
leaves every echoplus file out: the install under test is the only
echoplus they can find.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from site import getsitepackages

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import support
from tests.support import REPO, Twistd

_IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".hypothesis",
    "_trial_temp*",
    "dropin.cache",
    "benchmarks",
)

# The README's command, word for word.
_REGENERATE = (
    "import echoplus.plugins; from twisted.plugin import IPlugin, getPlugins; "
    "list(getPlugins(IPlugin)); list(getPlugins(IPlugin, echoplus.plugins))"
)
_UNABLE = "Unable to write to plugin cache"


def _remove(path: Path) -> None:
    """
    Delete a tree, read-only parts included.
    """
    for root, directories, _ in os.walk(path):
        for name in directories:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _temporary_directory() -> Path:
    path = Path(tempfile.mkdtemp(prefix="echoplus-packaging-"))
    atexit.register(_remove, path)
    return path


@functools.cache
def installed() -> Path:
    """
    Install a copy of this checkout, not editable, into a fresh target
    directory; return that directory.

    @raise SkipTest: the interpreter cannot build the project offline.
    """
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
    except ImportError as error:
        raise SkipTest(f"building offline needs the test extra ({error})")
    work = _temporary_directory()
    source = work / "source"
    shutil.copytree(REPO, source, ignore=_IGNORED)
    target = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # What is tested here is the files and the dropin: skip compiling
        # the codecs (tests/test_build.py and .ci/run build those).
        env=_without_build_switches({"ECHOPLUS_NO_EXTENSIONS": "1"}),
    )
    if result.returncode != 0:
        raise AssertionError(f"pip install failed:\n{result.stdout}{result.stderr}")
    return target


def _without_build_switches(extra: dict[str, str]) -> dict[str, str]:
    """
    This process's environment less every C{ECHOPLUS_*} variable, plus
    C{extra}.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOPLUS_")}
    return {**env, **extra}


def _without_echoplus(name: str) -> bool:
    return "echoplus" not in name.lower()


@functools.cache
def dependencies() -> Path:
    """
    A site directory of symbolic links to everything the test interpreter
    has installed except echoplus: its own distribution, its editable
    finder, and its dropin and plugin cache in C{twisted/plugins/}.
    """
    farm = _temporary_directory() / "dependencies"
    farm.mkdir()
    for directory in map(Path, getsitepackages()):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            link = farm / entry.name
            if link.exists() or not _without_echoplus(entry.name):
                continue
            if entry.name == "twisted" and (entry / "plugins").is_dir():
                _link_twisted(entry, link)
            else:
                link.symlink_to(entry)
    return farm


def _link_twisted(twisted: Path, link: Path) -> None:
    """
    Link Twisted's files, but only Twisted's own plugins and no plugin
    cache.
    """
    link.mkdir()
    for entry in twisted.iterdir():
        if entry.name != "plugins":
            (link / entry.name).symlink_to(entry)
    plugins = link / "plugins"
    plugins.mkdir()
    for entry in (twisted / "plugins").iterdir():
        keep = entry.name not in ("dropin.cache", "__pycache__")
        if keep and _without_echoplus(entry.name):
            (plugins / entry.name).symlink_to(entry)


def python_command(code: str) -> list[str]:
    """
    The test interpreter, without its own site-packages, running C{code}
    with the dependencies of L{dependencies} importable.
    """
    prelude = f"import site; site.addsitedir({str(dependencies())!r}); "
    return [sys.executable, "-S", "-c", prelude + code]


def environment(site: Path) -> dict[str, str]:
    """
    An environment that finds echoplus only in C{site}.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ECHOPLUS_") and key != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(site)
    return env


def run(site: Path, code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{code} with C{arguments} against the install in C{site}, from a
    directory outside the checkout.
    """
    return subprocess.run(
        [*python_command(code), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(site),
        cwd=str(site.parent),
    )


_TWISTD = "from twisted.scripts.twistd import run; run()"


def copy_of_install() -> Path:
    """
    A private copy of the install as pip left it (without the plugin cache
    that other tests' runs may have written), for a test that changes it.
    """
    site = _temporary_directory() / "site"
    shutil.copytree(installed(), site, ignore=shutil.ignore_patterns("dropin.cache"))
    return site


def make_read_only(path: Path) -> None:
    """
    Remove every write permission under C{path}.
    """
    for root, directories, files in os.walk(path):
        for name in [*directories, *files]:
            full = os.path.join(root, name)
            mode = os.stat(full).st_mode
            os.chmod(full, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(path, os.stat(path).st_mode & ~stat.S_IWUSR)


def serve_briefly(case: SynchronousTestCase, site: Path) -> str:
    """
    Start the installed C{twistd -n echoplus} on a free loopback port, stop
    it, and return everything it logged.
    """
    case.patch(support, "TWISTD", python_command(_TWISTD))
    server = Twistd(
        ["--listen", "tcp:0:interface=127.0.0.1"],
        env=environment(site),
        cwd=str(site.parent),
    )
    server.stop()
    return server.drain_output()


class InstallTests(SynchronousTestCase):
    """
    What a non-editable install contains, and that twistd finds it.
    """

    def test_files(self) -> None:
        """
        The install has the dropin, C{py.typed} and the console script, and
        no C{__init__.py} of its own in C{twisted/} that would shadow
        Twisted.
        """
        site = installed()
        self.assertTrue((site / "twisted" / "plugins" / "echoplus_plugin.py").is_file())
        self.assertTrue((site / "echoplus" / "py.typed").is_file())
        self.assertTrue((site / "bin" / "echoplus").is_file())
        self.assertFalse((site / "twisted" / "__init__.py").exists())
        self.assertFalse((site / "twisted" / "plugins" / "__init__.py").exists())
        [record] = site.glob("echoplus-*.dist-info/RECORD")
        self.assertNotIn("dropin.cache", record.read_text())
        self.assertIn("twisted/plugins/echoplus_plugin.py,", record.read_text())

    def test_imports_from_install(self) -> None:
        """
        With only the install on the path, echoplus and its dropin load from
        it, not from the checkout.
        """
        result = run(
            installed(),
            "import echoplus, twisted.plugins.echoplus_plugin as p; "
            "print(echoplus.__file__); print(p.__file__)",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for line in result.stdout.splitlines():
            self.assertTrue(line.startswith(str(installed())), line)

    def test_twistd_lists_echoplus(self) -> None:
        """
        C{twistd --help} lists the C{echoplus} command from the install.
        """
        result = run(installed(), _TWISTD, "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"(?m)^\s+echoplus\s+Framed socket server")

    def test_console_script(self) -> None:
        """
        The installed C{echoplus} console script answers C{--help}.
        """
        site = installed()
        script = site / "bin" / "echoplus"
        result = run(
            site,
            "import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')",
            str(script),
            "--help",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("echoplus", result.stdout)


class PluginCacheTests(SynchronousTestCase):
    """
    Twisted's C{dropin.cache} on an installed, read-only location.
    """

    def test_unwritable_cache_warns(self) -> None:
        """
        Without a usable cache, twistd must write one, and where it cannot
        it logs "Unable to write to plugin cache": this is what a read-only
        install without the documented step looks like.  (A directory in
        the cache's place makes the write fail even for root.)
        """
        site = copy_of_install()
        (site / "twisted" / "plugins" / "dropin.cache").mkdir()
        self.assertIn(_UNABLE, serve_briefly(self, site))

    def test_regenerated_cache_read_only(self) -> None:
        """
        After the cache is regenerated as the README says, a read-only
        install starts without the warning, and twistd does not even try to
        rewrite the cache (so no permission, root or not, matters).
        """
        site = copy_of_install()
        result = run(site, _REGENERATE)
        self.assertEqual(result.returncode, 0, result.stderr)
        cache = site / "twisted" / "plugins" / "dropin.cache"
        self.assertTrue(cache.is_file())
        before = (cache.stat().st_mtime_ns, cache.read_bytes())
        make_read_only(site)
        output = serve_briefly(self, site)
        self.assertNotIn(_UNABLE, output)
        self.assertEqual((cache.stat().st_mtime_ns, cache.read_bytes()), before)

    def test_readme_documents_regeneration(self) -> None:
        """
        The README gives the very cache-regeneration command tested here.
        """
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        self.assertIn(f'python -c "{_REGENERATE}"', readme)
