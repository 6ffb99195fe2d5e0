"""
Tests for L{echoplus.endpoints}: endpoint strings with echoplus's defaults
(backlog 1024, UNIX sockets 0660) and extensions.
"""

from __future__ import annotations

import os
import stat
import tempfile

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import _parse
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoplus.endpoints import (
    DEFAULT_BACKLOG,
    parse_description,
    server_from_string,
    unparse_description,
    with_defaults,
)
from echoplus.proxy import DEFAULT_HEADER_TIMEOUT, ProxyHeaderFactory
from tests.support import Twistd, receive_lines

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
# Twisted requires ASCII keyword names.
_key = st.text(
    st.characters(max_codepoint=127, blacklist_characters="="),
    min_size=1,
    max_size=8,
)


class DescriptionTests(SynchronousTestCase):
    """
    Tests for L{parse_description} and L{unparse_description}.
    """

    def test_parse_like_twisted(self) -> None:
        """
        Colons, escapes and keyword arguments parse as Twisted parses them.
        """
        description = r"unix:/tmp/a\:b\\c:mode=600:lockfile=0"
        self.assertEqual(parse_description(description), _parse(description))
        self.assertEqual(
            parse_description(description),
            (["unix", "/tmp/a:b\\c"], {"mode": "600", "lockfile": "0"}),
        )

    @given(
        st.lists(_text, min_size=1, max_size=4),
        st.dictionaries(_key, _text, max_size=4),
    )
    def test_round_trip(self, args: list[str], kwargs: dict[str, str]) -> None:
        """
        Any arguments survive unparsing and parsing, and Twisted reads the
        unparsed string the same way.
        """
        description = unparse_description(args, kwargs)
        self.assertEqual(parse_description(description), (args, kwargs))
        self.assertEqual(_parse(description), (args, kwargs))


class DefaultsTests(SynchronousTestCase):
    """
    Tests for L{with_defaults}.
    """

    def test_backlog_default(self) -> None:
        """
        tcp, tcp6, ssl and unix strings without backlog= get 1024.
        """
        for description in (
            "tcp:5000",
            "tcp6:5000:interface=\\:\\:1",
            "ssl:443:privateKey=k.pem",
            "unix:/tmp/s",
        ):
            _, kwargs = parse_description(with_defaults(description))
            self.assertEqual(kwargs["backlog"], str(DEFAULT_BACKLOG), description)

    def test_backlog_given_wins(self) -> None:
        """
        A backlog= in the string is kept.
        """
        _, kwargs = parse_description(with_defaults("tcp:5000:backlog=7"))
        self.assertEqual(kwargs["backlog"], "7")

    def test_unix_mode_default(self) -> None:
        """
        unix strings without mode= get 660; a given mode= wins.
        """
        _, kwargs = parse_description(with_defaults("unix:/tmp/s"))
        self.assertEqual(kwargs["mode"], "660")
        _, kwargs = parse_description(with_defaults("unix:/tmp/s:mode=600"))
        self.assertEqual(kwargs["mode"], "600")

    def test_inside_haproxy(self) -> None:
        """
        The wrapped endpoint of a haproxy: string gets the defaults.
        """
        args, kwargs = parse_description(with_defaults("haproxy:unix:/tmp/s"))
        self.assertEqual(args, ["haproxy", "unix", "/tmp/s"])
        self.assertEqual(kwargs, {"backlog": "1024", "mode": "660"})

    def test_other_types_unchanged(self) -> None:
        """
        Endpoint types that take no backlog are left alone.
        """
        for description in ("systemd:domain=INET:index=0", "stdio:"):
            self.assertEqual(with_defaults(description), description)


class ServerFromStringTests(SynchronousTestCase):
    """
    Tests for L{server_from_string} on a memory reactor.
    """

    def listen(self, description: str) -> MemoryReactorClock:
        memory = MemoryReactorClock()
        server_from_string(memory, description).listen(Factory.forProtocol(Protocol))
        return memory

    def test_tcp_backlog(self) -> None:
        """
        tcp: listens with backlog 1024 unless the string says otherwise.
        """
        port, _, backlog, interface = self.listen(
            "tcp:0:interface=127.0.0.1"
        ).tcpServers[0]
        self.assertEqual((port, backlog, interface), (0, 1024, "127.0.0.1"))
        _, _, backlog, _ = self.listen("tcp:0:backlog=5").tcpServers[0]
        self.assertEqual(backlog, 5)

    def test_unix_mode_and_backlog(self) -> None:
        """
        unix: listens with mode 0660 and backlog 1024 by default.
        """
        address, _, backlog, mode, want_pid = self.listen("unix:/tmp/x").unixServers[0]
        self.assertEqual(
            (address, backlog, mode, want_pid), ("/tmp/x", 1024, 0o660, True)
        )

    def test_haproxy_wraps(self) -> None:
        """
        haproxy: listens on the wrapped endpoint with echoplus's PROXY
        factory, its header timeout taken from headerTimeout=.
        """
        _, factory, backlog, _ = self.listen("haproxy:tcp:0").tcpServers[0]
        self.assertIsInstance(factory, ProxyHeaderFactory)
        self.assertEqual((factory.timeout, backlog), (DEFAULT_HEADER_TIMEOUT, 1024))
        _, factory, _, _ = self.listen("haproxy:headerTimeout=2.5:tcp:0").tcpServers[0]
        self.assertEqual(factory.timeout, 2.5)

    def test_bad_strings(self) -> None:
        """
        Malformed strings raise ValueError without listening.
        """
        for description in (
            "haproxy:tcp:0:headerTimeout=-1",
            "ssl:0:privateKey=/nonexistent/key.pem",
            "ssl:0:noSuchKey=1",
            "tcp:notaport",
        ):
            self.assertRaises(ValueError, server_from_string, object(), description)


class UnixSocketTests(TestCase):
    """
    UNIX socket files created through L{server_from_string}.
    """

    def test_not_world_writable(self) -> None:
        """
        A unix: socket without mode= is created 0660: no access for others.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "s.sock")
        endpoint = server_from_string(reactor, f"unix:{path}")
        listening = endpoint.listen(Factory.forProtocol(Protocol))

        def check(port: object) -> object:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            self.assertEqual(mode & stat.S_IRWXO, 0)
            self.assertEqual(mode, 0o660)
            return port.stopListening()  # type: ignore[attr-defined]

        return listening.addCallback(check)


class UnixListenerTests(SynchronousTestCase):
    """
    twistd serving a UNIX socket.
    """

    def test_echo_over_unix_socket(self) -> None:
        """
        twistd listens on a unix: endpoint with a 0660 socket and echoes.
        """
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "echo.sock")
        server = Twistd(["--listen", f"unix:{path}"])
        self.addCleanup(os.rmdir, directory)
        self.addCleanup(server.stop)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        with server.connect() as sock:
            sock.sendall(b"over unix\n")
            self.assertEqual(receive_lines(sock, 1), [b"over unix"])
