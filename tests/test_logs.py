"""
Tests for L{echoplus.logs}: the connection events and JSON lines.
"""

from __future__ import annotations

import io
import json
import os

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoplus.config import ListenerSettings
from echoplus.factory import EchoPlusFactory
from echoplus.logs import JSONLinesObserver, event_as_json, format_address
from tests.support import Twistd, receive_lines


class FormatAddressTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        """
        IPv4, IPv6 and UNIX addresses format as host:port, [host]:port, path.
        """
        self.assertEqual(
            format_address(IPv4Address("TCP", "10.0.0.1", 5)), "10.0.0.1:5"
        )
        self.assertEqual(format_address(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(format_address(UNIXAddress(b"/run/e.sock")), "/run/e.sock")


class JSONLinesTests(SynchronousTestCase):
    def test_one_object_per_line(self) -> None:
        """
        Each event becomes one line parsing as a JSON object with the
        standard keys and the event's own fields.
        """
        output = io.StringIO()
        log = Logger(namespace="test", observer=JSONLinesObserver(output))
        log.info("hello {who}", who="world", size=3)
        log.warn("second\nline", peer=IPv4Address("TCP", "1.2.3.4", 5))
        lines = output.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first, second = (json.loads(line) for line in lines)
        self.assertEqual(first["message"], "hello world")
        self.assertEqual(first["level"], "info")
        self.assertEqual(first["namespace"], "test")
        self.assertEqual(first["pid"], os.getpid())
        self.assertEqual((first["who"], first["size"]), ("world", 3))
        self.assertTrue(first["time"].endswith("+00:00"))
        self.assertEqual(second["level"], "warn")
        self.assertEqual(second["message"], "second\nline")
        self.assertIn("1.2.3.4", second["peer"])

    def test_failure(self) -> None:
        """
        A failure's type and traceback become fields of the line.
        """
        try:
            raise KeyError("x")
        except KeyError:
            failure = Failure()
        record = json.loads(
            event_as_json(
                {
                    "log_format": "oops",
                    "log_failure": failure,
                    "log_level": LogLevel.critical,
                }
            )
        )
        self.assertEqual(record["error"], "KeyError")
        self.assertIn("Traceback", record["traceback"])
        self.assertEqual(record["level"], "critical")


class ConnectionEventTests(SynchronousTestCase):
    def test_open_and_close_events(self) -> None:
        """
        A connection emits connection-opened and connection-closed events
        carrying peer, listener, duration, frames and bytes.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        factory = EchoPlusFactory(ListenerSettings(), clock)
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", 4444))
        protocol.makeConnection(transport)
        protocol.dataReceived(b"ab\ncd\n")
        clock.advance(2.5)
        protocol.connectionLost(Failure(ConnectionError("gone")))
        opened = [e for e in events if e.get("event") == "connection-opened"]
        closed = [e for e in events if e.get("event") == "connection-closed"]
        self.assertEqual(len(opened), 1)
        self.assertEqual(opened[0]["peer"], "10.1.2.3:4444")
        self.assertEqual(opened[0]["listener"], ListenerSettings().endpoint)
        self.assertEqual(len(closed), 1)
        event = closed[0]
        self.assertEqual(event["duration"], 2.5)
        self.assertEqual((event["frames_received"], event["frames_sent"]), (2, 2))
        self.assertEqual((event["bytes_received"], event["bytes_sent"]), (6, 6))
        self.assertEqual(event["reason"], "ConnectionError")


class JSONLaunchTests(SynchronousTestCase):
    def test_log_format_json(self) -> None:
        """
        With --log-format json every line twistd prints parses as JSON,
        including the connection events.
        """
        server = Twistd(
            ["--listen", "tcp:0:interface=127.0.0.1", "--log-format", "json"]
        )
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"hi\n")
            self.assertEqual(receive_lines(sock, 1), [b"hi"])
        server.wait_for("connection-closed")
        server.stop()
        records = [json.loads(line) for line in server.drain_output().splitlines()]
        events = {record.get("event") for record in records}
        self.assertTrue({"connection-opened", "connection-closed"} <= events)
        self.assertTrue(all("message" in record for record in records))
