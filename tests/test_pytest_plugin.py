"""
The pytest fixtures of L{echoplus.pytest_plugin} (pytest only: the
functions below need pytest-twisted), and the same live helpers from a
trial C{TestCase}.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoplus.testing import LiveListener, serve


@pytest.mark.echoplus(framing="netstring", processors=["upper"])
@pytest_twisted.ensureDeferred
async def test_listener_fixture_follows_its_marker(echoplus_listener):
    """
    The echoplus_listener fixture serves the marker's framing and chain on
    a loopback port, with a connected client.
    """
    assert isinstance(echoplus_listener, LiveListener)
    assert echoplus_listener.endpoint.startswith("tcp:127.0.0.1:")
    replies = await echoplus_listener.client.request(b"hi", b"there")
    assert replies == [b"HI", b"THERE"]


@pytest.mark.echoplus(framing="websocket", processors=["upper"])
@pytest_twisted.ensureDeferred
async def test_listener_fixture_speaks_websocket(echoplus_listener):
    """
    The live client of a websocket listener does the handshake first.
    """
    replies = await echoplus_listener.client.request(b"hi", b"\xffbin")
    assert replies == [b"HI", b"\xffBIN"]


@pytest_twisted.ensureDeferred
async def test_listener_fixture_defaults_to_line_echo(echoplus_listener):
    """
    Without a marker the fixture serves line-framed echo.
    """
    assert await echoplus_listener.client.request(b"ping") == [b"ping"]


@pytest_twisted.ensureDeferred
async def test_serve_fixture_starts_several_listeners(echoplus_serve):
    """
    echoplus_serve starts listeners chosen in the test, each on its own
    port, and their clients talk to the right one.
    """
    broadcast = await echoplus_serve("int32", ["broadcast"])
    upper = await echoplus_serve("line", "upper", max_frame=8)
    assert broadcast.endpoint != upper.endpoint
    alice = await broadcast.connect()
    bob = await broadcast.connect()
    await _until_connected(broadcast, 2)
    alice.send(b"hello bob")
    assert await bob.receive() == [b"hello bob"]
    client = await upper.connect()
    assert await client.request(b"short") == [b"SHORT"]
    client.send(b"much too long")
    assert await client.receive() == [
        b"ERROR frame-too-long: line exceeds the limit of 8 bytes"
    ]
    await client.closed


@pytest_twisted.ensureDeferred
async def test_receive_fails_when_the_server_closes(echoplus_serve):
    """
    A client waiting for more frames than the server sends before closing
    gets ConnectionDone, not a hang.
    """
    listener = await echoplus_serve("line", "echo", max_frame=4)
    client = await listener.connect()
    waiting = client.receive(2)
    client.send(b"toolong")
    with pytest.raises(ConnectionDone):
        await waiting


@pytest.mark.echoplus("int16", ["pubsub"], max_frame=100)
def test_harness_fixture_follows_its_marker(echoplus_harness):
    """
    The echoplus_harness fixture is a FrameHarness built from the marker.
    """
    subscriber = echoplus_harness.client()
    subscriber.send(b"SUB t")
    echoplus_harness.send(b"PUB t hi")
    assert echoplus_harness.settings.framing == "int16"
    assert echoplus_harness.settings.max_frame == 100
    assert echoplus_harness.replies() == [b"OK PUB 1"]
    assert subscriber.replies() == [b"OK SUB t", b"MSG t hi"]


def test_harness_fixture_defaults_to_line_echo(echoplus_harness):
    """
    Without a marker the harness fixture is line-framed echo.
    """
    echoplus_harness.send(b"hi")
    assert echoplus_harness.replies() == [b"hi"]
    assert echoplus_harness.written == b"hi\n"


@pytest_twisted.ensureDeferred
async def test_serve_on_a_unix_socket(echoplus_serve, tmp_path):
    """
    echoplus_serve takes any endpoint string; a UNIX socket gets a unix:
    client endpoint.
    """
    path = tmp_path / "echo.sock"
    listener = await echoplus_serve("netstring", "reverse", endpoint=f"unix:{path}")
    assert listener.endpoint == f"unix:{path}"
    client = await listener.connect()
    assert await client.request(b"abc") == [b"cba"]


@pytest_twisted.ensureDeferred
async def test_receive_times_out(echoplus_serve):
    """
    Waiting for a frame that never comes fails with a timeout, not a hang,
    and the client can still be used afterwards.
    """
    listener = await echoplus_serve("line", "broadcast")
    client = await listener.connect()
    with pytest.raises(defer.TimeoutError):
        await client.receive(1, timeout=0.2)
    other = await listener.connect()
    await _until_connected(listener, 2)
    other.send(b"late")
    assert await client.receive() == [b"late"]


async def _until_connected(listener: LiveListener, count: int) -> None:
    """
    Wait (bounded) until the server has accepted C{count} connections.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(200):
        if len(listener.factory.connections) >= count:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the server did not see the connections")


def _under_pytest_twisted() -> bool:
    """
    Whether pytest-twisted has installed its reactor (we run under pytest).
    """
    return pytest_twisted._instances.reactor is not None


class ServeTests(TestCase):
    """
    L{serve} from a trial C{TestCase}, as docs/testing.md shows it.

    pytest-twisted runs the reactor in its own greenlet, where a trial
    C{TestCase} cannot spin it: under pytest the fixture tests above cover
    the same code.
    """

    if _under_pytest_twisted():
        skip = "a Deferred-returning trial TestCase runs under trial only"

    @defer.inlineCallbacks
    def test_serve_under_trial(self):
        """
        serve() runs a real listener on the trial reactor; a client's
        request gets its replies in order.
        """
        from twisted.internet import reactor

        listener = yield serve(reactor, "netstring", ["upper", "reverse"])
        self.addCleanup(listener.stop)
        client = yield listener.connect()
        replies = yield client.request(b"abc", b"de")
        self.assertEqual(replies, [b"CBA", b"ED"])


class ImportTests(SynchronousTestCase):
    """
    The plugin is loaded by every pytest run: it must not install a reactor.
    """

    def test_no_reactor_on_import(self) -> None:
        """
        Importing the plugin and the test kit imports no global reactor, so
        pytest-twisted (or trial) can still install its own.
        """
        code = (
            "import sys, echoplus.pytest_plugin, echoplus.testing; "
            "sys.exit('twisted.internet.reactor' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], timeout=60)
        self.assertEqual(result.returncode, 0)
