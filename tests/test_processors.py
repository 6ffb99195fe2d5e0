"""
Tests for L{echoplus.processors}: the built-ins, loading by name and dotted
path, options, chains and their lifetime rules.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echoplus.config import OPTIONS, ListenerSettings
from echoplus.context import ConnectionContext
from echoplus.errors import ConfigError
from echoplus.interfaces import IProcessor, IProcessorFactory
from echoplus.processors import (
    ProcessorChain,
    ProcessorEntry,
    all_factories,
    find_factory,
    parse_chain,
)
from echoplus.processors.builtin import BUILTINS

[_PROCESSORS_OPTION] = [spec for spec in OPTIONS if spec.key == "processors"]
parse_processors = _PROCESSORS_OPTION.parse
CONTEXT = ConnectionContext(1, None, "test", Clock(), push=lambda _: None)


def run(chain: ProcessorChain, message: bytes) -> Any:
    """
    Run a message through a chain's processors, synchronous ones only.
    """
    for _, processor in chain.for_connection():
        message = processor.process(message, CONTEXT)
    return message


class BuiltinTests(SynchronousTestCase):
    """
    The built-in processors.
    """

    def test_verify_every_builtin(self) -> None:
        """
        Every built-in factory provides L{IProcessorFactory} and makes an
        L{IProcessor} provider.
        """
        names = {factory.name for factory in BUILTINS}
        self.assertTrue({"echo", "upper", "prefix", "delay", "counter"} <= names, names)
        for factory in BUILTINS:
            self.assertTrue(verifyObject(IProcessorFactory, factory))
            self.assertTrue(verifyObject(IProcessor, factory()))

    def test_simple_transforms(self) -> None:
        """
        The stateless built-ins transform one message as described.
        """
        cases = {
            "echo": b"aBc",
            "upper": b"ABC",
            "lower": b"abc",
            "reverse": b"cBa",
            "rot13": b"nOp",
        }
        for name, expected in cases.items():
            chain = ProcessorChain((ProcessorEntry(name),))
            self.assertEqual(run(chain, b"aBc"), expected, name)

    def test_prefix_text(self) -> None:
        """
        C{prefix} prepends its C{text} option, from the command line or a
        config table.
        """
        self.assertEqual(
            run(ProcessorChain(parse_chain("prefix(text=>> )")), b"x"), b">> x"
        )
        chain = ProcessorChain((ProcessorEntry("prefix", {"text": "[é]"}),))
        self.assertEqual(run(chain, b"x"), "[é]x".encode())

    def test_prefix_refuses_non_text(self) -> None:
        """
        A non-string C{text} (a TOML integer) is a launch error naming the
        processor.
        """
        with self.assertRaises(ConfigError) as raised:
            ProcessorChain((ProcessorEntry("prefix", {"text": 5}),))
        self.assertIn("'prefix'", str(raised.exception))

    def test_delay_bad_seconds(self) -> None:
        """
        C{delay} refuses a non-numeric or negative C{seconds}.
        """
        for value in ("soon", "-1"):
            with self.assertRaises(ConfigError) as raised:
                ProcessorChain(parse_chain(f"delay(seconds={value})"))
            self.assertIn("seconds", str(raised.exception))


class FindFactoryTests(SynchronousTestCase):
    """
    Resolving processor names and dotted paths.
    """

    def test_builtin_by_name(self) -> None:
        """
        A built-in name resolves to its factory.
        """
        self.assertEqual(find_factory("upper").name, "upper")

    def test_unknown_name_lists_known(self) -> None:
        """
        An unknown name is a L{ConfigError} naming it and listing the known
        processors.
        """
        with self.assertRaises(ConfigError) as raised:
            find_factory("nosuch")
        message = str(raised.exception)
        self.assertIn("'nosuch'", message)
        for name in ("echo", "upper", "prefix", "delay", "counter"):
            self.assertIn(name, message)

    def test_dotted_class(self) -> None:
        """
        A dotted path to a class implementing L{IProcessor} makes a factory
        whose options are the constructor's parameters.
        """
        factory = find_factory("tests.sample_processors:Tag")
        self.assertTrue(verifyObject(IProcessorFactory, factory))
        self.assertEqual(set(factory.options), {"tag"})
        self.assertEqual(factory(tag="v").process(b"m", CONTEXT), b"m:v")

    def test_dotted_factory_callable(self) -> None:
        """
        A dotted path to a function returning an L{IProcessor} is a factory.
        """
        chain = ProcessorChain(
            parse_chain("tests.sample_processors:make_shouter(volume=3)")
        )
        self.assertEqual(run(chain, b"m"), b"m:!!!")

    def test_dotted_callable_with_any_options(self) -> None:
        """
        A callable taking C{**options} gets every option given, unchecked.
        """
        chain = ProcessorChain(
            parse_chain("tests.sample_processors:make_labelled(b=2,a=1)")
        )
        self.assertEqual(run(chain, b"m"), b"m:a=1,b=2")

    def test_dotted_processor_provider(self) -> None:
        """
        A dotted path to an L{IProcessor} provider serves that very object.
        """
        from tests.sample_processors import shared_tagger

        chain = ProcessorChain(parse_chain("tests.sample_processors:shared_tagger"))
        [(_, processor)] = chain.for_connection()
        self.assertIs(processor, shared_tagger)

    def test_dotted_factory_provider(self) -> None:
        """
        A dotted path to an L{IProcessorFactory} provider uses it as is.
        """
        from tests.sample_processors import twice

        self.assertIs(find_factory("tests.sample_processors:twice"), twice)

    def test_dotted_invalid_factory(self) -> None:
        """
        A dotted path to an L{IProcessorFactory} provider that fails
        C{verifyObject} is a L{ConfigError} naming the path.
        """
        path = "tests.sample_processors:incomplete_factory"
        with self.assertRaises(ConfigError) as raised:
            find_factory(path)
        self.assertEqual(
            str(raised.exception),
            f"processor {path!r} is not a valid IProcessorFactory: "
            "_IncompleteFactory has no attribute description",
        )

    def test_not_a_processor_is_one_line(self) -> None:
        """
        A dotted path to a class whose objects are no L{IProcessor} is one
        line naming the path and what is missing, without object reprs.
        """
        path = "tests.sample_processors:NotAProcessor"
        with self.assertRaises(ConfigError) as raised:
            ProcessorChain((ProcessorEntry(path),))
        self.assertEqual(
            str(raised.exception),
            f"processor {path!r} is not an IProcessor: NotAProcessor has no "
            "method process(message, context) and is not declared with "
            "@implementer(IProcessor)",
        )

    def test_dotted_errors(self) -> None:
        """
        Missing modules or attributes, and objects that make no
        L{IProcessor}, are L{ConfigError}s naming the path.
        """
        for path in (
            "tests.no_such_module:Thing",
            "tests.sample_processors:Missing",
            "tests.sample_processors:SECRET",
            "tests.sample_processors:NotAProcessor",
        ):
            with self.assertRaises(ConfigError) as raised:
                ProcessorChain((ProcessorEntry(path),))
            self.assertIn(path, str(raised.exception))


class OptionTests(SynchronousTestCase):
    """
    Processor options from the command line and config tables.
    """

    def test_parse_chain_syntax(self) -> None:
        """
        Options go in parentheses after a name; values keep their spaces.
        """
        self.assertEqual(
            parse_chain("prefix(text=>> ), delay(seconds=0.5),upper"),
            (
                ProcessorEntry("prefix", {"text": ">> "}),
                ProcessorEntry("delay", {"seconds": "0.5"}),
                ProcessorEntry("upper"),
            ),
        )

    def test_parse_chain_errors(self) -> None:
        """
        Malformed chains are L{ConfigError}s saying what is wrong.
        """
        for text, fragment in (
            ("", "empty"),
            ("upper,,lower", "empty processor name"),
            ("prefix(text=x", "unclosed"),
            ("prefix(text)", "not key=value"),
            ("prefix(text=x)upper", "expected ','"),
            ("upper,", "ends with ','"),
            ("prefix(text=x), ", "ends with ','"),
        ):
            with self.assertRaises(ConfigError) as raised:
                parse_chain(text)
            self.assertIn(fragment, str(raised.exception), text)

    def test_unknown_option_named(self) -> None:
        """
        An unknown option is an error naming it and the processor's real
        options, whether it came from the command line or a table.
        """
        for entries in (
            parse_chain("prefix(txt=a)"),
            (ProcessorEntry("prefix", {"txt": "a"}),),
        ):
            with self.assertRaises(ConfigError) as raised:
                ProcessorChain(entries)
            message = str(raised.exception)
            self.assertIn("'txt'", message)
            self.assertIn("text", message)

    def test_options_through_settings(self) -> None:
        """
        The C{processors} option parses a config file's list of tables and a
        command-line chain to the same entries with options.
        """
        from_file = parse_processors([{"name": "prefix", "text": ">>"}, "upper"])
        self.assertEqual(
            from_file,
            (ProcessorEntry("prefix", {"text": ">>"}), ProcessorEntry("upper")),
        )
        self.assertEqual(parse_processors("prefix(text=>>),upper"), from_file)

    def test_settings_refuse_bad_option(self) -> None:
        """
        The C{processors} option refuses an unknown processor option,
        naming it.
        """
        with self.assertRaises(ValueError) as raised:
            parse_processors([{"name": "delay", "secs": 1}])
        self.assertIn("'secs'", str(raised.exception))


class LifetimeTests(SynchronousTestCase):
    """
    One processor instance per listener, unless the factory asks for one
    per connection.
    """

    def test_shared_by_default(self) -> None:
        """
        Every connection of a listener gets the same instances.
        """
        chain = ProcessorChain(parse_chain("upper,tests.sample_processors:Tag"))
        first, second = chain.for_connection(), chain.for_connection()
        self.assertEqual([id(p) for _, p in first], [id(p) for _, p in second])
        self.assertEqual(len(chain.shared_processors()), 2)

    def test_counter_per_connection(self) -> None:
        """
        C{counter} gets a fresh instance per connection, so each connection
        counts its own messages, while shared links stay shared.
        """
        chain = ProcessorChain(parse_chain("upper,counter"))
        first, second = chain.for_connection(), chain.for_connection()
        self.assertIs(first[0][1], second[0][1])
        self.assertIsNot(first[1][1], second[1][1])
        counter_a, counter_b = first[1][1], second[1][1]
        replies = [
            counter_a.process(b"x", CONTEXT),
            counter_a.process(b"x", CONTEXT),
            counter_b.process(b"x", CONTEXT),
        ]
        self.assertEqual(replies, [b"1", b"2", b"1"])
        self.assertEqual(chain.shared_processors(), (first[0][1],))

    def test_counter_through_protocol(self) -> None:
        """
        Two connections of one listener count separately.
        """
        from twisted.internet.testing import StringTransport

        from echoplus.factory import EchoPlusFactory

        factory = EchoPlusFactory(
            ListenerSettings(endpoint="test", processors=parse_chain("counter")),
            Clock(),
        )
        transports = []
        for _ in range(2):
            protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
            transport = StringTransport()
            protocol.makeConnection(transport)
            transports.append((protocol, transport))
        (one, one_out), (two, two_out) = transports
        one.dataReceived(b"a\nb\n")
        two.dataReceived(b"c\n")
        one.dataReceived(b"d\n")
        self.assertEqual(one_out.value(), b"1\n2\n3\n")
        self.assertEqual(two_out.value(), b"1\n")


class AllFactoriesTests(SynchronousTestCase):
    """
    The listing behind C{echoplus processors}.
    """

    def test_lists_builtins_sorted(self) -> None:
        """
        Every built-in is listed, by name, in sorted order.
        """
        factories = all_factories()
        self.assertTrue({f.name for f in BUILTINS} <= set(factories))
        self.assertEqual(list(factories), sorted(factories))
