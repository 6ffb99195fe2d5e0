"""
Tests for L{echoplus.errors}: each error's wire kind, whether it closes the
connection, and the error payload.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echoplus import errors
from echoplus.errors import (
    BadFrame,
    ConfigError,
    EchoPlusError,
    FrameTooLong,
    FramingError,
    Overloaded,
    ProcessorFailed,
    ProcessorTimeout,
    RequestError,
    error_payload,
)


class KindTests(SynchronousTestCase):
    """
    Every error carries the kind and fatality of the contract.
    """

    def test_kinds_and_fatality(self) -> None:
        """
        Each error type maps to its contract kind; C{frame-too-long},
        C{bad-frame} and C{overloaded} close the connection, the others do
        not.
        """
        expected = {
            FrameTooLong: ("frame-too-long", True),
            BadFrame: ("bad-frame", True),
            FramingError: ("bad-frame", True),
            RequestError: ("bad-request", False),
            ProcessorFailed: ("processor-failed", False),
            ProcessorTimeout: ("timeout", False),
            Overloaded: ("overloaded", True),
        }
        for error_type, (kind, fatal) in expected.items():
            error = error_type("why")
            self.assertEqual((error.kind, error.fatal), (kind, fatal), error_type)
            self.assertIsInstance(error, EchoPlusError)

    def test_framing_errors_are_value_errors(self) -> None:
        """
        Framing errors are L{ValueError}s, so decoding hooks may raise
        either; the other errors are not.
        """
        for error_type in (FramingError, BadFrame, FrameTooLong):
            self.assertTrue(issubclass(error_type, ValueError), error_type)
            self.assertTrue(issubclass(error_type, FramingError), error_type)
        self.assertFalse(issubclass(RequestError, ValueError))

    def test_config_error_is_not_a_wire_error(self) -> None:
        """
        A L{ConfigError} is for operators and has no wire kind.
        """
        self.assertFalse(issubclass(ConfigError, EchoPlusError))

    def test_config_error_is_a_value_error(self) -> None:
        """
        A L{ConfigError} is a bad value, as L{ValueError}s from the same
        validation are: callers catch one type.
        """
        self.assertTrue(issubclass(ConfigError, ValueError))

    def test_exported(self) -> None:
        """
        C{__all__} names every public error and helper, and they exist.
        """
        for name in errors.__all__:
            self.assertTrue(hasattr(errors, name), name)
        self.assertIn("RequestError", errors.__all__)


class PayloadTests(SynchronousTestCase):
    """
    The C{ERROR <kind>: <message>} payload.
    """

    def test_payload(self) -> None:
        """
        An error's payload is its kind and its message.
        """
        self.assertEqual(
            RequestError("no such user").payload(), b"ERROR bad-request: no such user"
        )
        self.assertEqual(
            ProcessorFailed("upper").payload(), b"ERROR processor-failed: upper"
        )

    def test_message_defaults_to_kind(self) -> None:
        """
        An error raised without a message reports its kind.
        """
        self.assertEqual(BadFrame().message, "bad-frame")
        self.assertEqual(BadFrame().payload(), b"ERROR bad-frame: bad-frame")

    def test_one_line(self) -> None:
        """
        Line breaks and runs of white space in a message are flattened, so
        the payload stays one line in line framing.
        """
        self.assertEqual(
            error_payload("bad-request", "two\nlines\r\n  and\ttabs "),
            b"ERROR bad-request: two lines and tabs",
        )

    def test_non_ascii(self) -> None:
        """
        Messages are UTF-8 encoded.
        """
        self.assertEqual(
            RequestError("caf\u00e9").payload(), "ERROR bad-request: caf\u00e9".encode()
        )

    def test_lone_surrogate(self) -> None:
        """
        A message that cannot be encoded still produces a payload.
        """
        self.assertEqual(
            error_payload("bad-request", "a\udc80b"), b"ERROR bad-request: a?b"
        )
