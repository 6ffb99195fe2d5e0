"""
pytest fixtures for echoplus, on the reactor of pytest-twisted.

Installed with echoplus through the C{pytest11} entry point, so any
project with echoplus and pytest-twisted installed has them:

  - C{echoplus_listener}: a real listener on a free loopback port,
    in-process, configured by the C{echoplus} marker, with a connected
    client::

        @pytest.mark.echoplus(framing="netstring", processors=["upper"])
        @pytest_twisted.ensureDeferred
        async def test_upper(echoplus_listener):
            replies = await echoplus_listener.client.request(b"hi")
            assert replies == [b"HI"]

    It is an L{echoplus.testing.LiveListener}: C{.endpoint} is its client
    endpoint string, C{.client} the connected
    L{echoplus.testing.LiveClient}, C{.connect()} connects more clients.
  - C{echoplus_serve}: a function C{serve(framing, processors, **limits)}
    returning a L{Deferred} of a L{echoplus.testing.LiveListener}, for
    several listeners or settings chosen in the test.
  - C{echoplus_harness}: an in-memory L{echoplus.testing.FrameHarness}
    configured by the same marker (no sockets, no reactor).

Listeners and their clients are stopped after the test.  Nothing here
imports the reactor before pytest-twisted installed it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

__all__ = ["echoplus_harness", "echoplus_listener", "echoplus_serve"]


def pytest_configure(config: pytest.Config) -> None:
    """
    Register the C{echoplus} marker.
    """
    config.addinivalue_line(
        "markers",
        "echoplus(framing='line', processors=('echo',), **limits): settings of "
        "the echoplus_listener fixture",
    )


def _twisted() -> Any:
    """
    The reactor pytest-twisted runs, and its C{blockon}.
    """
    try:
        import pytest_twisted
    except ImportError:  # pragma: no cover - pytest-twisted is a test extra
        pytest.skip("the echoplus fixtures need pytest-twisted")
    from twisted.internet import reactor

    return reactor, pytest_twisted.blockon


@pytest.fixture
def echoplus_serve() -> Iterator[Callable[..., Any]]:
    """
    A function that starts a listener on a free loopback port:
    C{serve(framing="line", processors=("echo",), **limits)} returns a
    L{Deferred} of an L{echoplus.testing.LiveListener}.  Every listener
    started is stopped after the test.
    """
    from echoplus.testing import serve

    reactor, blockon = _twisted()
    listeners: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        started = serve(reactor, *args, **kwargs)
        return started.addCallback(_remember, listeners)

    yield start
    for listener in listeners:
        blockon(listener.stop())


def _remember(listener: Any, listeners: list[Any]) -> Any:
    listeners.append(listener)
    return listener


@pytest.fixture
def echoplus_listener(
    request: pytest.FixtureRequest, echoplus_serve: Callable[..., Any]
) -> Any:
    """
    A listener on a free loopback port with one connected client
    (C{.client}); its settings come from the test's C{echoplus} marker
    (line-framed echo without one).
    """
    _, blockon = _twisted()
    args, kwargs = _marker_arguments(request)
    listener = blockon(echoplus_serve(*args, **kwargs))
    blockon(listener.connect())
    return listener


@pytest.fixture
def echoplus_harness(request: pytest.FixtureRequest) -> Iterator[Any]:
    """
    An in-memory L{echoplus.testing.FrameHarness} whose settings come from
    the test's C{echoplus} marker (line-framed echo without one); stopped
    after the test.
    """
    from echoplus.testing import FrameHarness

    args, kwargs = _marker_arguments(request)
    harness = FrameHarness(*args, **kwargs)
    yield harness
    harness.stop()


def _marker_arguments(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    marker = request.node.get_closest_marker("echoplus")
    if marker is None:
        return (), {}
    return marker.args, dict(marker.kwargs)
