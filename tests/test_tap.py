"""
Tests for L{echoplus.tap}: the options of C{twistd echoplus}, the service
it makes, and how it refuses bad values.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Sequence

from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from echoplus import tap
from echoplus.config import DEFAULT_ENDPOINT, OPTIONS
from echoplus.processors.chain import ProcessorEntry


def parse(arguments: Sequence[str]) -> tap.Options:
    """
    Parse a C{twistd echoplus} command line.
    """
    options = tap.Options()
    options.parseOptions(list(arguments))
    return options


class TapTestCase(SynchronousTestCase):
    """
    Runs C{makeService} with no C{ECHOPLUS_*} variables in the environment
    and captures what it writes to standard error.
    """

    def setUp(self) -> None:
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("ECHOPLUS_")
        }
        self.patch(os, "environ", environment)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        # makeService installs an excepthook for bind errors; undo it.
        self.patch(sys, "excepthook", sys.excepthook)
        # makeService binds: in memory, not real ports.
        self.reactor = MemoryReactorClock()

    def make(self, arguments: Sequence[str]) -> MultiService:
        """
        Build, but do not start, the service for C{arguments}.
        """
        service = tap.makeService(parse(arguments), reactor=self.reactor)
        assert isinstance(service, MultiService)
        return service

    def refused(self, arguments: Sequence[str]) -> str:
        """
        Assert that C{arguments} make C{makeService} exit with status 1 and
        one C{echoplus: error:} line, and return that line.
        """
        options = parse(arguments)
        error = self.assertRaises(
            SystemExit, tap.makeService, options, reactor=self.reactor
        )
        self.assertEqual(error.code, 1)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("echoplus: error: "), lines[0])
        self.assertNotIn("Traceback", self.stderr.getvalue())
        return lines[0]


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: what C{twistd echoplus --help} offers.
    """

    def test_listen_repeatable(self) -> None:
        """
        C{--listen} may be given several times and keeps every value in
        order.
        """
        options = parse(["--listen", "tcp:1", "--listen", "unix:/tmp/x"])
        self.assertEqual(options["listen"], ["tcp:1", "unix:/tmp/x"])

    def test_defaults_unset(self) -> None:
        """
        With no arguments, no option is set, so the environment and the
        config file can supply them.
        """
        options = parse([])
        self.assertEqual(options["listen"], [])
        self.assertIsNone(options["framing"])
        self.assertIsNone(options["processor"])

    def test_help_mentions_every_option(self) -> None:
        """
        The help text names every option of the contract and the
        C{ECHOPLUS_<NAME>} environment variables.
        """
        text = str(tap.Options())
        for spec in OPTIONS:
            self.assertIn(f"--{spec.option_name}=", text)
        for flag in (
            "--listen=",
            "--framing=",
            "--delimiter=",
            "--processor=",
            "--max-frame=",
        ):
            self.assertIn(flag, text)
        self.assertIn("ECHOPLUS_", " ".join(text.split()))
        self.assertIn(DEFAULT_ENDPOINT, " ".join(text.split()))

    def test_help_exits(self) -> None:
        """
        C{--help} prints the help to standard output and exits with status 0.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, parse, ["--help"])
        self.assertIn(error.code, (0, None))
        self.assertIn("--framing=", out.getvalue())

    def refused(self, arguments: Sequence[str]) -> str:
        """
        Parse C{arguments}, which must be refused; return the one line
        written to standard error.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        error = self.assertRaises(SystemExit, parse, arguments)
        self.assertEqual(error.code, 1)
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_unknown_option(self) -> None:
        """
        An option that does not exist is one error line with a "did you
        mean" (raised as a UsageError, twistd would print its whole usage
        first), and exit status 1.
        """
        self.assertEqual(
            self.refused(["--procesor", "upper"]),
            "echoplus: error: unknown option --procesor (did you mean '--processor'?)",
        )
        self.assertEqual(
            self.refused(["--listen", "tcp:0", "--no-such-option"]),
            "echoplus: error: unknown option --no-such-option",
        )

    def test_prefixes_refused(self) -> None:
        """
        An unambiguous prefix of an option is refused, not silently taken
        for it (getopt would set --max-frame from --max-fram).
        """
        for arguments in (["--max-fram", "4"], ["--max-fram=4"]):
            self.assertEqual(
                self.refused(arguments),
                "echoplus: error: unknown option --max-fram (did you mean "
                "--max-frame? options are spelled in full)",
            )
        self.assertEqual(parse(["--max-frame", "4"])["max-frame"], "4")

    def test_values_that_look_like_options(self) -> None:
        """
        The value of an option is not checked as an option, whether it is
        the next argument or after C{=}.
        """
        options = parse(["--delimiter", "--", "--processor=--x", "--framing", "line"])
        self.assertEqual(
            (options["delimiter"], options["processor"], options["framing"]),
            ("--", "--x", "line"),
        )

    def test_twistd_options_and_arguments(self) -> None:
        """
        One of twistd's own options after C{echoplus} says where it goes; an
        argument that is no option is refused.
        """
        for option in ("--pidfile=x", "-n"):
            line = self.refused([option])
            self.assertIn("that is twistd's own option; put it before 'echoplus'", line)
        self.assertIn("unexpected argument 'extra'", self.refused(["extra"]))

    def test_dropin(self) -> None:
        """
        The twistd plugin C{echoplus} is found and uses this module.
        """
        import twisted.plugins

        makers = {
            maker.tapname: maker for maker in getPlugins(IServiceMaker, twisted.plugins)
        }
        self.assertIn("echoplus", makers)
        self.assertEqual(makers["echoplus"].module, "echoplus.tap")


class MakeServiceTests(TapTestCase):
    """
    L{tap.makeService} on good options.
    """

    def test_default(self) -> None:
        """
        With no options, one listener serves line-framed echo on
        C{tcp:5000:interface=127.0.0.1}.
        """
        self.assertEqual(DEFAULT_ENDPOINT, "tcp:5000:interface=127.0.0.1")
        service = self.make([])
        [child] = list(service)
        self.assertEqual(child.name, DEFAULT_ENDPOINT)
        [factory] = service.factories.values()  # type: ignore[attr-defined]
        self.assertEqual(factory.settings.endpoint, DEFAULT_ENDPOINT)
        self.assertEqual(factory.settings.framing, "line")
        self.assertEqual(factory.settings.delimiter, b"\n")
        self.assertEqual(factory.settings.processors, (ProcessorEntry("echo"),))
        self.assertEqual(factory.settings.max_frame, 65536)
        self.assertFalse(service.running)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_one_listener_per_listen(self) -> None:
        """
        Each C{--listen} gets its own listening service, in order, none
        started.
        """
        endpoints = [
            "tcp:0:interface=127.0.0.1",
            "tcp:0:interface=\\:\\:1",
            "unix:/tmp/echoplus-test.sock",
        ]
        arguments = [word for e in endpoints for word in ("--listen", e)]
        service = self.make(arguments)
        self.assertTrue(IService.providedBy(service))
        children = list(service)
        self.assertEqual([child.name for child in children], endpoints)
        self.assertFalse(any(child.running for child in children))

    def test_options_reach_the_listeners(self) -> None:
        """
        C{--framing}, C{--delimiter}, C{--processor} and C{--max-frame} set
        every listener.
        """
        service = self.make(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--listen",
                "tcp:1:interface=127.0.0.1",
                "--framing",
                "line",
                "--delimiter",
                "\\r\\n",
                "--processor",
                "prefix(text=>> ),upper",
                "--max-frame",
                "100",
            ]
        )
        factories = list(service.factories.values())  # type: ignore[attr-defined]
        self.assertEqual(len(factories), 2)
        for factory in factories:
            self.assertEqual(factory.settings.delimiter, b"\r\n")
            self.assertEqual(factory.settings.max_frame, 100)
            self.assertEqual(
                factory.settings.processors,
                (ProcessorEntry("prefix", {"text": ">> "}), ProcessorEntry("upper")),
            )

    def test_environment(self) -> None:
        """
        C{ECHOPLUS_<NAME>} variables set options; the command line wins.
        """
        os.environ["ECHOPLUS_MAX_FRAME"] = "123"
        os.environ["ECHOPLUS_FRAMING"] = "int8"
        service = self.make(["--framing", "netstring"])
        [factory] = service.factories.values()  # type: ignore[attr-defined]
        self.assertEqual(factory.settings.max_frame, 123)
        self.assertEqual(factory.settings.framing, "netstring")


class BadValueTests(TapTestCase):
    """
    Each bad value exits with status 1 and one line naming it.
    """

    def test_unknown_framing(self) -> None:
        """
        An unknown framing is named, with the known ones.
        """
        line = self.refused(["--framing", "morse"])
        self.assertIn("'morse'", line)
        self.assertIn("framing", line)

    def test_unloadable_framing(self) -> None:
        """
        A C{module:Class} framing that cannot be loaded is named.
        """
        line = self.refused(["--framing", "no_such_module:Thing"])
        self.assertIn("no_such_module:Thing", line)

    def test_unknown_processor(self) -> None:
        """
        An unknown processor in a chain is named.
        """
        line = self.refused(["--processor", "upper,nosuchthing"])
        self.assertIn("'nosuchthing'", line)

    def test_malformed_chain(self) -> None:
        """
        A chain with an unclosed parenthesis is refused.
        """
        line = self.refused(["--processor", "prefix(text=x"])
        self.assertIn("prefix", line)

    def test_unknown_processor_option(self) -> None:
        """
        An option a processor does not take is named.
        """
        line = self.refused(["--processor", "upper(shout=yes)"])
        self.assertIn("shout", line)

    def test_malformed_endpoint(self) -> None:
        """
        A malformed endpoint string is quoted.
        """
        for endpoint in ("tcp:notaport", "nosuchtype:1234", ""):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            line = self.refused(["--listen", endpoint])
            self.assertIn("listen", line)
            if endpoint:
                self.assertIn(repr(endpoint), line)

    def test_bad_numbers(self) -> None:
        """
        Numbers that are not numbers or out of range are refused, naming the
        option and the value.
        """
        cases = [
            ("--max-frame", "-1"),
            ("--max-frame", "lots"),
            ("--max-frame", "0"),
            ("--idle-timeout", "soon"),
            ("--max-inflight", "0"),
        ]
        for flag, value in cases:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            line = self.refused([flag, value])
            self.assertIn(flag.lstrip("-").replace("-", "_"), line)
            self.assertIn(value, line)

    def test_empty_delimiter(self) -> None:
        """
        An empty delimiter is refused.
        """
        line = self.refused(["--delimiter", ""])
        self.assertIn("delimiter", line)

    def test_bad_environment_variable(self) -> None:
        """
        A bad value from the environment names its variable.
        """
        os.environ["ECHOPLUS_MAX_FRAME"] = "huge"
        line = self.refused([])
        self.assertIn("ECHOPLUS_MAX_FRAME", line)
        self.assertIn("huge", line)
