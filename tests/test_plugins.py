"""
Tests for plugin discovery: L{IProcessorFactory} providers in any
C{echoplus/plugins/} directory on C{sys.path}, the C{echoplus processors}
listing, and the example distribution in C{examples/echoplus-rot47}.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import echoplus.plugins
from echoplus.cli import main
from echoplus.context import ConnectionContext
from echoplus.errors import ConfigError
from echoplus.processors import ProcessorChain, all_factories, find_factory, parse_chain
from tests.support import REPO, twistd_environment

ROT47_SOURCE = REPO / "examples" / "echoplus-rot47" / "src"
CONTEXT = ConnectionContext(1, None, "test", Clock(), push=lambda _: None)
_unique = itertools.count()

GOOD_PLUGIN = """
from echoplus.processors import ProcessorFactory, Transform

{name} = ProcessorFactory(
    name="{name}",
    description="double every byte",
    make=lambda: Transform(lambda m: bytes(b for c in m for b in (c, c))),
)
"""

BROKEN_PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from echoplus.interfaces import IProcessorFactory


@implementer(IPlugin, IProcessorFactory)
class Incomplete:
    name = "{name}"
    # no description

    def __call__(self, **options):
        raise AssertionError("never called")


{name} = Incomplete()
"""

MINIMAL_PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from echoplus.interfaces import IProcessorFactory
from echoplus.processors import Transform


@implementer(IPlugin, IProcessorFactory)
class Minimal:
    name = "{name}"
    description = "only what the contract requires"

    def __call__(self, **options):
        return Transform(bytes.swapcase)


{name} = Minimal()
"""

SHADOWING_PLUGIN = """
from echoplus.processors import ProcessorFactory, Transform

fake_upper = ProcessorFactory(
    name="upper", description="not the real upper", make=lambda: Transform(bytes)
)
"""


class PluginTestCase(SynchronousTestCase):
    """
    Helpers to add plugin directories to C{sys.path} for one test.
    """

    def add_path(self, directory: Path) -> None:
        """
        Append C{directory} to C{sys.path} for this test only, as an
        installed distribution would be.
        """
        self.patch(sys, "path", [*sys.path, str(directory)])
        self.patch(echoplus.plugins, "__path__", list(echoplus.plugins.__path__))

    def make_plugin(self, template: str) -> tuple[str, Path]:
        """
        Write a plugin module into a new temporary C{echoplus/plugins/}
        directory (with no C{__init__.py}) on C{sys.path}; return the
        plugin's name and the directory.
        """
        name = f"plugin_test_{os.getpid()}_{next(_unique)}"
        root = Path(tempfile.mkdtemp(prefix="echoplus-plugin-"))
        self.addCleanup(shutil.rmtree, root, True)
        directory = root / "echoplus" / "plugins"
        directory.mkdir(parents=True)
        (directory / f"{name}.py").write_text(
            textwrap.dedent(template.format(name=name))
        )
        self.add_path(root)
        self.addCleanup(sys.modules.pop, f"echoplus.plugins.{name}", None)
        return name, root


class DiscoveryTests(PluginTestCase):
    """
    Plugins in C{echoplus/plugins/} directories anywhere on C{sys.path}.
    """

    def test_plugin_found_and_served(self) -> None:
        """
        A module-level L{ProcessorFactory} in a temporary C{echoplus/plugins/}
        directory is found by name and its processor works in a chain.
        """
        name, _ = self.make_plugin(GOOD_PLUGIN)
        self.assertEqual(find_factory(name).name, name)
        self.assertIn(name, all_factories())
        [(link, processor)] = ProcessorChain(parse_chain(name)).for_connection()
        self.assertEqual(link, name)
        self.assertEqual(processor.process(b"ab", CONTEXT), b"aabb")

    def test_unknown_lists_plugins(self) -> None:
        """
        The error for an unknown processor lists plugins with the built-ins.
        """
        name, _ = self.make_plugin(GOOD_PLUGIN)
        with self.assertRaises(ConfigError) as raised:
            find_factory("nosuch")
        self.assertIn(name, str(raised.exception))

    def test_invalid_plugin_named(self) -> None:
        """
        A plugin that fails C{verifyObject} is a L{ConfigError} naming it.
        """
        name, _ = self.make_plugin(BROKEN_PLUGIN)
        with self.assertRaises(ConfigError) as raised:
            find_factory(name)
        message = str(raised.exception)
        self.assertIn(repr(name), message)
        self.assertIn("IProcessorFactory", message)

    def test_minimal_plugin(self) -> None:
        """
        A plugin with only C{name}, C{description} and C{__call__} is valid:
        listed without options and shared per listener.
        """
        name, _ = self.make_plugin(MINIMAL_PLUGIN)
        chain = ProcessorChain(parse_chain(name))
        [(_, first)] = chain.for_connection()
        [(_, second)] = chain.for_connection()
        self.assertIs(first, second)
        self.assertEqual(first.process(b"aB", CONTEXT), b"Ab")
        self.assertIn(name, all_factories())

    def test_plugin_cannot_shadow_builtin(self) -> None:
        """
        A plugin named like a built-in does not replace the built-in.
        """
        self.make_plugin(SHADOWING_PLUGIN)
        self.assertEqual(
            find_factory("upper").description, "ASCII upper-case the message"
        )
        self.assertEqual(
            all_factories()["upper"].description, "ASCII upper-case the message"
        )


class ListingTests(PluginTestCase):
    """
    The C{echoplus processors} command.
    """

    def run_cli(self, *arguments: str) -> tuple[int, str]:
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        status = main(["processors", *arguments])
        return status, output.getvalue()

    def test_lists_builtins_with_options(self) -> None:
        """
        Every built-in is listed with its description; options are listed
        under their processor and per-connection ones are marked.
        """
        status, output = self.run_cli()
        self.assertEqual(status, 0)
        lines = output.splitlines()
        names = [line.split()[0] for line in lines if not line.startswith(" ")]
        for name in ("echo", "upper", "lower", "reverse", "prefix", "delay", "counter"):
            self.assertIn(name, names)
        self.assertIn("prepend text", output)
        self.assertIn("text: the text to prepend", output)
        self.assertIn("seconds:", output)
        [counter] = [line for line in lines if line.startswith("counter ")]
        self.assertIn("[one per connection]", counter)

    def test_lists_plugin(self) -> None:
        """
        A plugin on C{sys.path} is listed and marked as a plugin.
        """
        name, _ = self.make_plugin(GOOD_PLUGIN)
        _, output = self.run_cli()
        [line] = [line for line in output.splitlines() if line.startswith(name)]
        self.assertIn("double every byte", line)
        self.assertIn("[plugin]", line)

    def test_invalid_plugin_fails_listing(self) -> None:
        """
        An invalid plugin makes the command fail with a message naming it.
        """
        name, _ = self.make_plugin(BROKEN_PLUGIN)
        errors = io.StringIO()
        self.patch(sys, "stderr", errors)
        status, _ = self.run_cli()
        self.assertEqual(status, 1)
        self.assertIn(name, errors.getvalue())
        self.assertIn("echoplus: error:", errors.getvalue())


class Rot47ExampleTests(PluginTestCase):
    """
    The separate distribution in C{examples/echoplus-rot47}.
    """

    def test_layout(self) -> None:
        """
        The example is its own distribution and adds no C{__init__.py} to
        the shared C{echoplus} and C{echoplus/plugins} directories.
        """
        example = ROT47_SOURCE.parent
        self.assertTrue((example / "pyproject.toml").is_file())
        self.assertIn("name = echoplus-rot47", (example / "setup.cfg").read_text())
        self.assertTrue((ROT47_SOURCE / "echoplus/plugins/echoplus_rot47.py").is_file())
        self.assertFalse((ROT47_SOURCE / "echoplus/__init__.py").exists())
        self.assertFalse((ROT47_SOURCE / "echoplus/plugins/__init__.py").exists())

    def test_found_on_sys_path(self) -> None:
        """
        With the example's source directory on C{sys.path}, C{rot47} is a
        plugin whose processor rotates printable ASCII by 47 places.
        """
        self.add_path(ROT47_SOURCE)
        self.addCleanup(sys.modules.pop, "echoplus.plugins.echoplus_rot47", None)
        self.assertIn("rot47", all_factories())
        [(_, processor)] = ProcessorChain(parse_chain("rot47")).for_connection()
        self.assertEqual(processor.process(b"Hello, World!", CONTEXT), b"w6==@[ (@C=5P")
        self.assertEqual(processor.process(b"w6==@[ (@C=5P", CONTEXT), b"Hello, World!")

    def test_listed_by_command(self) -> None:
        """
        C{echoplus processors}, run as a command with the example on
        C{PYTHONPATH}, lists C{rot47} as a plugin.
        """
        environment = twistd_environment()
        environment["PYTHONPATH"] = os.pathsep.join(
            [environment["PYTHONPATH"], str(ROT47_SOURCE)]
        )
        result = subprocess.run(
            [sys.executable, "-m", "echoplus", "processors"],
            capture_output=True,
            text=True,
            timeout=30,
            env=environment,
            cwd=str(REPO),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [line] = [
            line for line in result.stdout.splitlines() if line.startswith("rot47")
        ]
        self.assertIn("[plugin]", line)
        self.assertIn("ROT47", line)
