"""
Tests for L{echoplus.config} and L{echoplus.configfile}: the TOML file, the
environment and the command line, their precedence, and validation.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Mapping

from twisted.trial.unittest import SynchronousTestCase

from echoplus.check import run_check
from echoplus.cli import build_parser
from echoplus.config import (
    DEFAULT_ENDPOINT,
    OPTIONS,
    Resolved,
    build_settings,
    environment_values,
    environment_warnings,
    resolve,
)
from echoplus.errors import ConfigError
from echoplus.processors.chain import ProcessorEntry

TCP = "tcp:0:interface=127.0.0.1"


class ConfigFileCase(SynchronousTestCase):
    """
    Writes config files into a temporary directory.
    """

    def write(self, text: str, name: str = "echoplus.toml") -> str:
        """
        Write C{text} to a new file and return its path.
        """
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return path

    def resolve(
        self,
        text: str | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Resolved:
        """
        Resolve a file with C{text}, the environment and command-line
        C{options} (flag names with dashes as underscores).
        """
        command_line = {key.replace("_", "-"): value for key, value in options.items()}
        if text is not None:
            command_line["config"] = self.path = self.write(text)
        return resolve(command_line, environ or {})

    def errors(self, text: str | None = None, **kwargs: Any) -> list[str]:
        """
        The error lines that resolving gives.
        """
        with self.assertRaises(ConfigError) as raised:
            self.resolve(text, **kwargs)
        return str(raised.exception).splitlines()


class FileTests(ConfigFileCase):
    def test_top_level_keys_apply_to_every_listener(self) -> None:
        """
        Top-level keys set the defaults of every [[listen]] table.
        """
        settings = self.resolve(
            'max_frame = 100\nframing = "int16"\n'
            f'[[listen]]\nendpoint = "{TCP}"\n'
            '[[listen]]\nendpoint = "unix:/tmp/a.sock"\n'
        ).settings
        self.assertEqual([s.max_frame for s in settings.listeners], [100, 100])
        self.assertEqual([s.framing for s in settings.listeners], ["int16"] * 2)

    def test_listen_table_overrides_top_level(self) -> None:
        """
        A key in a [[listen]] table overrides the top level for that
        listener only.
        """
        settings = self.resolve(
            'processors = ["upper"]\n'
            f'[[listen]]\nendpoint = "{TCP}"\n'
            '[[listen]]\nendpoint = "unix:/tmp/a.sock"\nframing = "int32"\n'
            'processors = [{name = "prefix", text = ">>"}, "reverse"]\n'
        ).settings
        first, second = settings.listeners
        self.assertEqual(
            (first.framing, first.processors), ("line", (ProcessorEntry("upper"),))
        )
        self.assertEqual(second.framing, "int32")
        self.assertEqual(
            second.processors,
            (ProcessorEntry("prefix", {"text": ">>"}), ProcessorEntry("reverse")),
        )

    def test_processor_chain_forms(self) -> None:
        """
        A chain can be the command-line syntax as a string, a list, or an
        array of [[processors]] tables.
        """
        as_string = self.resolve('processors = "prefix(text=>),upper"\n')
        as_tables = self.resolve(
            '[[processors]]\nname = "prefix"\ntext = ">"\n'
            '[[processors]]\nname = "upper"\n'
        )
        expected = (ProcessorEntry("prefix", {"text": ">"}), ProcessorEntry("upper"))
        self.assertEqual(as_string.settings.listeners[0].processors, expected)
        self.assertEqual(as_tables.settings.listeners[0].processors, expected)

    def test_listen_as_endpoint_strings(self) -> None:
        """
        C{listen} may also be a list of endpoint strings.
        """
        settings = self.resolve(f'listen = ["{TCP}", "unix:/tmp/b.sock"]\n').settings
        self.assertEqual(
            [s.endpoint for s in settings.listeners], [TCP, "unix:/tmp/b.sock"]
        )

    def test_no_listeners_means_default_endpoint(self) -> None:
        """
        A file without listeners serves the default endpoint.
        """
        settings = self.resolve("max_frame = 10\n").settings
        self.assertEqual([s.endpoint for s in settings.listeners], [DEFAULT_ENDPOINT])

    def test_service_keys(self) -> None:
        """
        Process-wide keys are read from the top level, and the file's path
        is kept in the settings.
        """
        settings = self.resolve("drain_timeout = 2.5\nworkers = 2\n").settings
        self.assertEqual((settings.drain_timeout, settings.workers), (2.5, 2))
        self.assertEqual(settings.config, self.path)

    def test_sources_name_file_line_and_table(self) -> None:
        """
        Each value's source is the file and line, plus the [[listen]] number
        for table values; unset values are "default".
        """
        resolved = self.resolve(
            f'max_frame = 100\n\n[[listen]]\nendpoint = "{TCP}"\nframing = "int8"\n'
        )
        sources = resolved.listener_sources[0]
        self.assertEqual(sources["max_frame"], f"{self.path}:1")
        self.assertEqual(sources["framing"], f"{self.path}:5, [[listen]] #1")
        self.assertEqual(sources["endpoint"], f"{self.path}:4, [[listen]] #1")
        self.assertEqual(sources["idle_timeout"], "default")
        self.assertEqual(resolved.service_sources["config"], "--config")


# For each per-listener key: a file value (TOML), an environment value and
# a command-line value, and what each parses to.
SAMPLES: dict[str, tuple[tuple[Any, Any], tuple[str, Any], tuple[Any, Any]]] = {
    "framing": (("int8", "int8"), ("int16", "int16"), ("int32", "int32")),
    "delimiter": (("\\r\\n", b"\r\n"), ("|", b"|"), ("\\t", b"\t")),
    "processors": (
        (["upper"], (ProcessorEntry("upper"),)),
        ("lower,reverse", (ProcessorEntry("lower"), ProcessorEntry("reverse"))),
        ("rot13", (ProcessorEntry("rot13"),)),
    ),
    "max_frame": ((100, 100), ("200", 200), ("300", 300)),
    "idle_timeout": ((1, 1.0), ("2", 2.0), ("3.5", 3.5)),
    "frame_timeout": ((1.5, 1.5), ("2", 2.0), ("0", 0.0)),
    "max_connections": ((5, 5), ("6", 6), ("0", 0)),
    "max_per_peer": ((1, 1), ("2", 2), ("3", 3)),
    "max_write_buffer": ((1000, 1000), ("2000", 2000), ("3000", 3000)),
    "max_inflight": ((1, 1), ("2", 2), ("3", 3)),
    "processor_timeout": ((1, 1.0), ("2", 2.0), ("3", 3.0)),
    "allow": (
        (["10.0.0.0/8"], ("10.0.0.0/8",)),
        ("10.0.0.0/8,::1/128", ("10.0.0.0/8", "::1/128")),
        (["192.168.0.0/16"], ("192.168.0.0/16",)),
    ),
    "deny": (
        (["10.1.0.0/16"], ("10.1.0.0/16",)),
        ("10.2.0.0/16", ("10.2.0.0/16",)),
        (["10.3.0.0/16"], ("10.3.0.0/16",)),
    ),
    "rate_limit": ((1, 1.0), ("2", 2.0), ("3", 3.0)),
    "rate_burst": ((1, 1), ("2", 2), ("3", 3)),
}

SERVICE_SAMPLES: dict[str, tuple[tuple[Any, Any], tuple[str, Any], tuple[Any, Any]]] = {
    "drain_timeout": ((1, 1.0), ("2", 2.0), ("3", 3.0)),
    "workers": ((2, 2), ("3", 3), ("4", 4)),
    "log_format": (("json", "json"), ("text", "text"), ("json", "json")),
    "metrics": (
        ("tcp:9100", "tcp:9100"),
        ("tcp:9101", "tcp:9101"),
        ("tcp:9102", "tcp:9102"),
    ),
}


def toml_value(value: Any) -> str:
    """
    A Python value as TOML.
    """
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


#: The options of the design's contract and the foundation's table.
CONTRACT_KEYS = {
    "listen",
    "framing",
    "delimiter",
    "processors",
    "config",
    "max_frame",
    "idle_timeout",
    "frame_timeout",
    "max_connections",
    "max_per_peer",
    "drain_timeout",
    "metrics",
    "workers",
    "allow",
    "deny",
    "max_write_buffer",
    "max_inflight",
    "processor_timeout",
    "rate_limit",
    "rate_burst",
    "log_format",
}


class PrecedenceTests(ConfigFileCase):
    """
    Command line > environment > [[listen]] table > file top level >
    default, for every key.
    """

    def check(
        self,
        key: str,
        samples: tuple[tuple[Any, Any], tuple[str, Any], tuple[Any, Any]],
        read: Any,
    ) -> None:
        spec = next(spec for spec in OPTIONS if spec.key == key)
        (file_raw, file_value), (env_raw, env_value), (cli_raw, cli_value) = samples
        text = f"{key} = {toml_value(file_raw)}\n"
        env = {spec.environment_variable: env_raw}
        cli = {spec.option_name.replace("-", "_"): cli_raw}
        default = read(self.resolve(None))
        self.assertNotIn(default, (file_value, env_value, cli_value), key)
        self.assertEqual(read(self.resolve(text)), file_value, key)
        self.assertEqual(read(self.resolve(text, environ=env)), env_value, key)
        self.assertEqual(read(self.resolve(text, environ=env, **cli)), cli_value, key)
        self.assertEqual(read(self.resolve(None, **cli)), cli_value, key)

    def test_every_listener_key(self) -> None:
        """
        Each per-listener key takes its value from the highest source that
        sets it.
        """
        for key, samples in SAMPLES.items():
            self.check(
                key, samples, lambda r, k=key: getattr(r.settings.listeners[0], k)
            )

    def test_every_service_key(self) -> None:
        """
        Each process-wide key takes its value from the highest source that
        sets it.
        """
        for key, samples in SERVICE_SAMPLES.items():
            if key == "log_format":
                continue  # its default is one of its two values
            self.check(key, samples, lambda r, k=key: getattr(r.settings, k))

    def test_samples_cover_every_contract_option(self) -> None:
        """
        The precedence tests cover every option of the design's contract
        (options other issues add are covered by their own tests).
        """
        covered = {*SAMPLES, *SERVICE_SAMPLES, "listen", "config"}
        keys = {spec.key for spec in OPTIONS}
        self.assertEqual(CONTRACT_KEYS - keys, set())
        self.assertEqual(CONTRACT_KEYS - covered, set())

    def test_environment_beats_listen_table(self) -> None:
        """
        An environment value overrides a [[listen]] table's value too.
        """
        text = f'[[listen]]\nendpoint = "{TCP}"\nmax_frame = 10\n'
        resolved = self.resolve(text, environ={"ECHOPLUS_MAX_FRAME": "20"})
        self.assertEqual(resolved.settings.listeners[0].max_frame, 20)
        self.assertEqual(
            resolved.listener_sources[0]["max_frame"], "ECHOPLUS_MAX_FRAME"
        )

    def test_command_line_listen_replaces_file_listeners(self) -> None:
        """
        --listen replaces the file's listeners (and their overrides); the
        file's top-level keys still apply.
        """
        text = (
            'framing = "int8"\n'
            '[[listen]]\nendpoint = "unix:/tmp/c.sock"\nframing = "int32"\n'
        )
        settings = self.resolve(text, listen=[TCP]).settings
        self.assertEqual(
            [(s.endpoint, s.framing) for s in settings.listeners], [(TCP, "int8")]
        )

    def test_environment_listen_replaces_file_listeners(self) -> None:
        """
        ECHOPLUS_LISTEN takes whitespace-separated endpoints and replaces the
        file's listeners; --listen beats it.
        """
        text = '[[listen]]\nendpoint = "unix:/tmp/c.sock"\n'
        environ = {"ECHOPLUS_LISTEN": f"{TCP}  unix:/tmp/d.sock"}
        settings = self.resolve(text, environ=environ).settings
        self.assertEqual(
            [s.endpoint for s in settings.listeners], [TCP, "unix:/tmp/d.sock"]
        )
        settings = self.resolve(text, environ=environ, listen=["unix:/tmp/e"]).settings
        self.assertEqual([s.endpoint for s in settings.listeners], ["unix:/tmp/e"])

    def test_environment_names_the_file(self) -> None:
        """
        ECHOPLUS_CONFIG names the file when --config does not.
        """
        path = self.write("max_frame = 77\n")
        resolved = resolve({}, {"ECHOPLUS_CONFIG": path})
        self.assertEqual(resolved.settings.listeners[0].max_frame, 77)
        self.assertEqual(resolved.service_sources["config"], "ECHOPLUS_CONFIG")


class EnvironmentTests(SynchronousTestCase):
    def test_lists_take_commas(self) -> None:
        """
        List-valued variables take comma-separated values.
        """
        settings = build_settings(
            [
                environment_values(
                    {
                        "ECHOPLUS_PROCESSORS": "upper,reverse",
                        "ECHOPLUS_ALLOW": "10.0.0.0/8,::1/128",
                        "ECHOPLUS_DENY": "10.9.0.0/16, 10.8.0.0/16",
                    }
                )
            ]
        )
        listener = settings.listeners[0]
        self.assertEqual(
            listener.processors, (ProcessorEntry("upper"), ProcessorEntry("reverse"))
        )
        self.assertEqual(listener.allow, ("10.0.0.0/8", "::1/128"))
        self.assertEqual(listener.deny, ("10.9.0.0/16", "10.8.0.0/16"))

    def test_empty_variable_is_unset(self) -> None:
        """
        An empty variable counts as not set.
        """
        self.assertEqual(environment_values({"ECHOPLUS_MAX_FRAME": ""}), {})

    def test_unknown_variable_warns(self) -> None:
        """
        An ECHOPLUS_ variable that names no option gives a warning with a
        suggestion; other variables are ignored.
        """
        warnings = environment_warnings({"ECHOPLUS_MAX_FRAM": "1", "HOME": "/"})
        self.assertEqual(
            warnings,
            [
                "unknown environment variable ECHOPLUS_MAX_FRAM ignored "
                "(did you mean ECHOPLUS_MAX_FRAME?)"
            ],
        )

    def test_extension_switches_do_not_warn(self) -> None:
        """
        The compiled codecs' switches are ECHOPLUS_ variables but not
        options: they give no warning.
        """
        environ = {"ECHOPLUS_NO_EXTENSIONS": "1", "ECHOPLUS_REQUIRE_EXTENSIONS": "1"}
        self.assertEqual(environment_warnings(environ), [])

    def test_every_option_has_a_variable(self) -> None:
        """
        Every option has its ECHOPLUS_<KEY> variable.
        """
        for spec in OPTIONS:
            self.assertEqual(spec.environment_variable, "ECHOPLUS_" + spec.key.upper())
            self.assertIn(
                spec.key, environment_values({spec.environment_variable: "x"})
            )


class ValidationTests(ConfigFileCase):
    """
    Every fault is reported, one line each, naming the key and where it
    came from.
    """

    def test_unknown_key_suggests(self) -> None:
        """
        A misspelt top-level key is named with its line and a suggestion.
        """
        self.assertEqual(
            self.errors("\nmax_frmae = 3\n"),
            [
                f"max_frmae (from {self.path}:2): unknown key "
                "(did you mean 'max_frame'?)"
            ],
        )

    def test_unknown_listen_key_suggests(self) -> None:
        """
        A misspelt key in a [[listen]] table names the table's number.
        """
        errors = self.errors(
            f'[[listen]]\nendpoint = "{TCP}"\n[[listen]]\nendpoint = "unix:/x"\n'
            'framng = "line"\n'
        )
        self.assertEqual(
            errors,
            [
                f"framng (from {self.path}:5, [[listen]] #2): unknown key "
                "(did you mean 'framing'?)"
            ],
        )

    def test_unknown_key_without_suggestion(self) -> None:
        """
        A key like no other gets no suggestion.
        """
        self.assertEqual(
            self.errors("zzz = 1\n"), [f"zzz (from {self.path}:1): unknown key"]
        )

    def test_service_key_in_listen_table(self) -> None:
        """
        A process-wide key inside [[listen]] is refused.
        """
        errors = self.errors(f'[[listen]]\nendpoint = "{TCP}"\nworkers = 2\n')
        self.assertEqual(len(errors), 1)
        self.assertIn("workers (from", errors[0])
        self.assertIn("applies to the whole service", errors[0])

    def test_listen_table_needs_endpoint(self) -> None:
        """
        A [[listen]] table without an endpoint is refused.
        """
        errors = self.errors("[[listen]]\nframing = 'line'\n")
        self.assertEqual(
            errors,
            [
                f"endpoint (from {self.path}:1, [[listen]] #1): every [[listen]] "
                "table needs an endpoint"
            ],
        )

    def test_wrong_types(self) -> None:
        """
        Values of the wrong type are refused, naming key and value.
        """
        errors = self.errors('max_frame = "lots"\nframing = 5\nidle_timeout = true\n')
        self.assertEqual(
            errors,
            [
                f"max_frame (from {self.path}:1): must be a TOML number, not the "
                "string 'lots'",
                f"framing (from {self.path}:2): must be a non-empty string, not 5",
                f"idle_timeout (from {self.path}:3): must be a number of seconds, "
                "not True",
            ],
        )

    def test_quoted_number(self) -> None:
        """
        A number written as a TOML string is a wrong type in a file (but
        the environment and command line give numbers as strings).
        """
        self.assertEqual(
            self.errors('max_frame = "100"\n'),
            [
                f"max_frame (from {self.path}:1): must be a TOML number, not the "
                "string '100'"
            ],
        )
        resolved = self.resolve(environ={"ECHOPLUS_MAX_FRAME": "100"}, max_inflight="3")
        self.assertEqual(resolved.settings.listeners[0].max_frame, 100)
        self.assertEqual(resolved.settings.listeners[0].max_inflight, 3)

    def test_out_of_range(self) -> None:
        """
        Negative sizes and out-of-range counts are refused with the range.
        """
        errors = self.errors("max_frame = -1\nworkers = 0\nframe_timeout = -2\n")
        self.assertEqual(
            errors,
            [
                f"max_frame (from {self.path}:1): must be from 1 to 2147483647, not -1",
                f"workers (from {self.path}:2): must be from 1 to 256, not 0",
                f"frame_timeout (from {self.path}:3): must be a finite number of "
                "seconds >= 0, not -2",
            ],
        )

    def test_bad_endpoint(self) -> None:
        """
        A malformed endpoint string is refused by Twisted's own parser.
        """
        errors = self.errors('[[listen]]\nendpoint = "tcp:notaport"\n')
        self.assertEqual(len(errors), 1)
        self.assertTrue(
            errors[0].startswith(
                f"endpoint (from {self.path}:2, [[listen]] #1): bad endpoint "
                "'tcp:notaport'"
            ),
            errors[0],
        )

    def test_unknown_framing(self) -> None:
        """
        An unknown framing lists the known ones.
        """
        errors = self.errors('framing = "int64"\n')
        self.assertEqual(len(errors), 1)
        self.assertIn(
            f"framing (from {self.path}:1): unknown framing 'int64'", errors[0]
        )
        self.assertIn("int32", errors[0])

    def test_unknown_processor(self) -> None:
        """
        An unknown processor lists the known ones.
        """
        errors = self.errors('processors = ["upper", "uper"]\n')
        self.assertEqual(len(errors), 1)
        self.assertIn(
            f"processors (from {self.path}:1): unknown processor 'uper'", errors[0]
        )

    def test_bad_processor_option(self) -> None:
        """
        An option the processor does not take is refused, naming it.
        """
        errors = self.errors('processors = [{name = "prefix", txt = ">"}]\n')
        self.assertEqual(len(errors), 1)
        self.assertIn(f"processors (from {self.path}:1)", errors[0])
        self.assertIn("'txt'", errors[0])

    def test_network_with_host_bits(self) -> None:
        """
        C{--allow 10.0.0.1/8} is refused with the reason and both readings,
        not silently widened to 10.0.0.0/8.
        """
        self.assertEqual(
            self.errors(allow=["10.0.0.1/8"]),
            [
                "allow (from --allow): '10.0.0.1/8' has host bits set: the "
                "network is 10.0.0.0/8, the single host 10.0.0.1/32"
            ],
        )
        self.assertIn("has host bits set", self.errors('deny = ["fe80::1/64"]\n')[0])

    def test_chain_with_trailing_comma(self) -> None:
        """
        C{--processor 'upper,'} is refused, saying a name must follow.
        """
        self.assertEqual(
            self.errors(processor="upper,"),
            [
                "processors (from --processor): the chain 'upper,' ends with "
                "',': a processor name must follow"
            ],
        )

    def test_toml_syntax_error(self) -> None:
        """
        A TOML syntax error names the file and the line.
        """
        errors = self.errors("max_frame = 10\nframing = \n")
        self.assertEqual(len(errors), 1)
        self.assertTrue(errors[0].startswith(f"{self.path}: TOML syntax error: "))
        self.assertIn("line 2", errors[0])

    def test_missing_file(self) -> None:
        """
        A file that cannot be read is named with the reason.
        """
        errors = self.errors(config="/nonexistent/echoplus.toml")
        self.assertEqual(
            errors,
            [
                "config (from --config): cannot read '/nonexistent/echoplus.toml': "
                "No such file or directory"
            ],
        )

    def test_config_inside_config(self) -> None:
        """
        A config file cannot name another one.
        """
        self.assertEqual(
            self.errors('config = "other.toml"\n'),
            [
                f"config (from {self.path}:1): a config file cannot name another "
                "config file"
            ],
        )

    def test_duplicate_endpoints(self) -> None:
        """
        Two listeners on the same endpoint string are refused.
        """
        errors = self.errors(f'listen = ["{TCP}", "{TCP}"]\n')
        self.assertEqual(
            errors, [f"endpoint (from {self.path}:1): {TCP!r} is listed twice"]
        )

    def test_several_errors_together(self) -> None:
        """
        Every fault is reported at once, sorted by file line (structural
        faults and bad values alike), then the environment's and the
        command line's by key.
        """
        errors = self.errors(
            'framing = "nope"\nmax_frmae = 1\nidle_timeout = -1\n'
            '[[listen]]\nendpoint = "tcp:x"\nworkers = 2\nmax_frame = -5\n',
            environ={"ECHOPLUS_MAX_INFLIGHT": "0"},
            drain_timeout="-1",
        )
        self.assertEqual(
            [error.partition("): ")[0] for error in errors],
            [
                f"framing (from {self.path}:1",
                f"max_frmae (from {self.path}:2",
                f"idle_timeout (from {self.path}:3",
                f"endpoint (from {self.path}:5, [[listen]] #1",
                f"workers (from {self.path}:6, [[listen]] #1",
                f"max_frame (from {self.path}:7, [[listen]] #1",
                "drain_timeout (from --drain-timeout",
                "max_inflight (from ECHOPLUS_MAX_INFLIGHT",
            ],
        )

    def test_overridden_bad_value_still_reported(self) -> None:
        """
        A bad top-level value is reported even where every listener
        overrides it.
        """
        errors = self.errors(
            f'max_frame = -1\n[[listen]]\nendpoint = "{TCP}"\nmax_frame = 5\n'
        )
        self.assertEqual(len(errors), 1)
        self.assertIn(f"max_frame (from {self.path}:1)", errors[0])

    def test_errors_name_environment_and_flags(self) -> None:
        """
        Bad values from the environment and the command line name their
        variable and flag.
        """
        errors = self.errors(environ={"ECHOPLUS_MAX_FRAME": "big"}, idle_timeout="soon")
        self.assertEqual(
            errors,
            [
                "idle_timeout (from --idle-timeout): must be a number of seconds, "
                "not 'soon'",
                "max_frame (from ECHOPLUS_MAX_FRAME): must be a whole number, "
                "not 'big'",
            ],
        )

    def test_bad_value_reported_once(self) -> None:
        """
        A bad environment value shared by several listeners is one error.
        """
        errors = self.errors(
            f'listen = ["{TCP}", "unix:/tmp/f.sock"]\n',
            environ={"ECHOPLUS_MAX_FRAME": "0"},
        )
        self.assertEqual(len(errors), 1)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "echoplus.example.toml")


class CheckTests(ConfigFileCase):
    """
    C{echoplus check FILE}.
    """

    def check(
        self, text: str, environ: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        import io

        from echoplus.check import run_check

        self.path = self.write(text)
        out, err = io.StringIO(), io.StringIO()
        status = run_check(self.path, environ or {}, out, err)
        return status, out.getvalue(), err.getvalue()

    def test_valid_prints_values_and_sources(self) -> None:
        """
        A valid file exits 0 and prints every listener's values with their
        sources.
        """
        status, out, err = self.check(
            'processors = ["upper"]\n'
            f'[[listen]]\nendpoint = "{TCP}"\n'
            '[[listen]]\nendpoint = "unix:/tmp/g.sock"\nframing = "int32"\n',
            {"ECHOPLUS_MAX_FRAME": "99"},
        )
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{self.path}: valid")
        self.assertIn(f"listener 1: {TCP}", lines)
        self.assertIn("listener 2: unix:/tmp/g.sock", lines)
        rows = [line.split() for line in lines]
        self.assertIn(["processors", "upper", f"{self.path}:1"], rows)
        self.assertIn(["framing", "int32", f"{self.path}:6,", "[[listen]]", "#2"], rows)
        self.assertIn(["max_frame", "99", "ECHOPLUS_MAX_FRAME"], rows)
        self.assertIn(["idle_timeout", "300", "default"], rows)

    def test_invalid_exits_1(self) -> None:
        """
        An invalid file exits 1 with one error line per fault and prints no
        configuration.
        """
        status, out, err = self.check("max_frmae = 1\nframing = 'x'\n")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err.splitlines()[:2],
            [
                f"echoplus: error: max_frmae (from {self.path}:1): unknown key "
                "(did you mean 'max_frame'?)",
                f"echoplus: error: framing (from {self.path}:2): unknown framing "
                "'x' (known framings: line, netstring, int8, int16, int32, raw, "
                "websocket, or module:Class)",
            ],
        )

    def test_file_named_as_the_argument(self) -> None:
        """
        The file given to C{check} comes from its CONFIG argument, not from
        a C{--config} flag the user never typed, in the listing and in
        errors.
        """
        _, out, _ = self.check("max_frame = 9\n")
        rows = [line.split() for line in out.splitlines()]
        self.assertIn(["config", self.path, "CONFIG", "argument"], rows)
        missing = self.path + ".missing"
        err = io.StringIO()
        status = run_check(missing, {}, io.StringIO(), err)
        self.assertEqual(status, 1)
        self.assertEqual(
            err.getvalue().splitlines()[0],
            f"echoplus: error: config (from CONFIG argument): cannot read "
            f"{missing!r}: No such file or directory",
        )

    def test_no_file_checks_the_environment(self) -> None:
        """
        Without a file, C{check} validates the environment over the
        defaults, as twistd would run with it; C{ECHOPLUS_CONFIG} still
        names a file.
        """
        self.assertIsNone(build_parser().parse_args(["check"]).config)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(run_check(None, {"ECHOPLUS_MAX_FRAME": "9"}, out, err), 0)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "environment and defaults: valid")
        self.assertIn(
            ["max_frame", "9", "ECHOPLUS_MAX_FRAME"], [r.split() for r in lines]
        )
        err = io.StringIO()
        self.assertEqual(run_check(None, {"ECHOPLUS_WORKERS": "0"}, out, err), 1)
        self.assertIn("workers (from ECHOPLUS_WORKERS)", err.getvalue())
        path = self.write("framing = 'int8'\n")
        out = io.StringIO()
        self.assertEqual(run_check(None, {"ECHOPLUS_CONFIG": path}, out, err), 0)
        self.assertEqual(out.getvalue().splitlines()[0], f"{path}: valid")
        self.assertIn(
            ["framing", "int8", f"{path}:1"],
            [r.split() for r in out.getvalue().splitlines()],
        )

    def test_environment_is_honoured(self) -> None:
        """
        A bad environment value fails the check as it would fail twistd.
        """
        status, _, err = self.check("", {"ECHOPLUS_WORKERS": "0"})
        self.assertEqual(status, 1)
        self.assertIn("workers (from ECHOPLUS_WORKERS)", err)

    def test_example_file_checks(self) -> None:
        """
        C{echoplus check echoplus.example.toml} exits 0.
        """
        import subprocess
        import sys

        from tests.support import twistd_environment

        result = subprocess.run(
            [sys.executable, "-m", "echoplus", "check", EXAMPLE],
            capture_output=True,
            text=True,
            timeout=60,
            env=twistd_environment(),
            cwd=REPO,
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertIn("listener 2: unix:/tmp/echoplus.sock", result.stdout)

    def test_example_documents_every_key(self) -> None:
        """
        The example file sets or mentions every option key.
        """
        with open(EXAMPLE, encoding="utf-8") as stream:
            text = stream.read()
        missing = [spec.key for spec in OPTIONS if spec.key not in text]
        self.assertEqual(missing, [])

    def test_docs_name_every_option(self) -> None:
        """
        docs/configuration.md names every option's key, flag and variable.
        """
        with open(
            os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8"
        ) as f:
            text = f.read()
        missing = [
            name
            for spec in OPTIONS
            for name in (
                f"`{spec.key}`",
                f"--{spec.option_name}",
                spec.environment_variable,
            )
            if name not in text
        ]
        self.assertEqual(missing, [])


class PrecedencePropertyTests(SynchronousTestCase):
    """
    Precedence holds for any combination of sources.
    """

    def test_highest_source_wins(self) -> None:
        """
        For any mix of top-level file, [[listen]] table, environment and
        command-line values, each listener gets the highest one and names
        its source.
        """
        from hypothesis import given, settings
        from hypothesis import strategies as st

        from echoplus.config import _combine, command_line_values
        from echoplus.configfile import parse_config_text

        maybe = st.none() | st.integers(1, 10**6)

        @settings(max_examples=60, deadline=None)
        @given(maybe, st.lists(maybe, min_size=1, max_size=3), maybe, maybe)
        def check(
            top: int | None, tables: list[int | None], env: int | None, cli: int | None
        ) -> None:
            text = "" if top is None else f"max_frame = {top}\n"
            for index, value in enumerate(tables):
                text += f'[[listen]]\nendpoint = "unix:/tmp/p{index}"\n'
                if value is not None:
                    text += f"max_frame = {value}\n"
            file = parse_config_text(text, "p.toml")
            upper = {}
            if env is not None:
                upper.update(environment_values({"ECHOPLUS_MAX_FRAME": str(env)}))
            if cli is not None:
                upper.update(command_line_values({"max-frame": str(cli)}))
            resolved = _combine(file, upper, [])
            for index, table in enumerate(tables):
                candidates = [
                    (cli, "--max-frame"),
                    (env, "ECHOPLUS_MAX_FRAME"),
                    (table, f", [[listen]] #{index + 1}"),
                    (top, "p.toml:1"),
                    (65536, "default"),
                ]
                value, source = next(c for c in candidates if c[0] is not None)
                self.assertEqual(resolved.settings.listeners[index].max_frame, value)
                self.assertTrue(
                    resolved.listener_sources[index]["max_frame"].endswith(source)
                )

        check()
