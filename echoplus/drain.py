"""
Graceful shutdown: stop accepting, let every connection finish the
requests it has in progress and flush their replies, then close; abort
whatever is left when the drain timeout expires or a second signal comes.

twistd stops services on the reactor's "before shutdown" trigger and waits
for the Deferred C{stopService} returns: L{EchoPlusService.stopService
<echoplus.service.EchoPlusService.stopService>} stops its listeners, then
returns L{Drainer.drain}.

Twisted's own SIGTERM/SIGINT handlers record the signal, and twistd then
kills itself with it after a clean stop (exit status -15): a graceful stop
is not reported as one.  L{install_signal_handlers} replaces them after
start-up so that the first signal stops the reactor (exit status 0 once the
drain is over) and a second one ends the drain at once.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["POLL_INTERVAL", "Drainer", "install_signal_handlers"]

#: Seconds between checks for connections still open during a drain.
POLL_INTERVAL = 0.05

_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class Drainer:
    """
    Drains the connections of a set of factories.

    @ivar draining: whether a drain has started.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        factories: Callable[[], Iterable[Any]],
        timeout: float,
    ) -> None:
        """
        @param clock: the reactor, or a C{task.Clock}.
        @param factories: returns the factories (each with a C{connections}
            dict of protocols that have C{drain()}) to drain.
        @param timeout: seconds connections may take; then they are aborted.
        """
        self._clock = clock
        self._factories = factories
        self.timeout = timeout
        self.draining = False
        self._done: Deferred[None] | None = None
        self._poll: LoopingCall | None = None
        self._deadline: Any = None

    def _open(self) -> list[Any]:
        return [
            protocol
            for factory in self._factories()
            for protocol in list(factory.connections.values())
        ]

    def drain(self) -> Deferred[None]:
        """
        Ask every open connection to finish its work and close.

        @return: fires (never with a failure) once every connection has
            closed, or when the timeout expires and the rest were aborted.
        """
        if self._done is not None:
            return _follow(self._done)
        self.draining = True
        self._done = Deferred()
        open_connections = self._open()
        self._log.info(
            "Draining {count} connection(s) for up to {timeout} seconds",
            count=len(open_connections),
            timeout=self.timeout,
        )
        for protocol in open_connections:
            protocol.drain()
        if self._finish_if_closed():
            return _follow(self._done)
        self._deadline = self._clock.callLater(self.timeout, self._expired)
        self._poll = LoopingCall(self._finish_if_closed)
        self._poll.clock = self._clock
        self._poll.start(POLL_INTERVAL, now=False)
        return _follow(self._done)

    def _finish_if_closed(self) -> bool:
        if self._open():
            return False
        self._finish()
        return True

    def _expired(self) -> None:
        self._deadline = None
        self._log.warn(
            "Drain timeout ({timeout} s): aborting {count} connection(s)",
            timeout=self.timeout,
            count=len(self._open()),
        )
        self.stop_now()

    def stop_now(self) -> None:
        """
        Abort every open connection and finish the drain at once.
        """
        for protocol in self._open():
            protocol.transport.abortConnection()
        self._finish()

    def _finish(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        done = self._done
        if done is not None and not done.called:
            done.callback(None)


def _follow(done: Deferred[None]) -> Deferred[None]:
    """
    A new Deferred that fires when C{done} does (so callers cannot change
    C{done}'s result).
    """
    if done.called:
        return succeed(None)
    follower: Deferred[None] = Deferred()
    done.addCallback(lambda _: follower.callback(None))
    return follower


class _SignalHandler:
    """
    The first SIGTERM/SIGINT stops the reactor gracefully; later ones end
    the drain at once.
    """

    _log = Logger()

    def __init__(self, reactor: Any, drainer: Drainer) -> None:
        self._reactor = reactor
        self._drainer = drainer
        self.received = 0

    def __call__(self, signum: int, frame: Any) -> None:
        # Runs between two bytecodes of the reactor thread: hand over.
        self._reactor.callFromThread(self.handle, signum)

    def handle(self, signum: int) -> None:
        """
        React to one signal, on the reactor thread.
        """
        self.received += 1
        name = _SIGNAL_NAMES.get(signum, str(signum))
        if self.received == 1:
            self._log.info(
                "Received {signal}: stopping gracefully (send it again to stop "
                "at once)",
                signal=name,
            )
            if self._reactor.running:
                self._reactor.stop()
        else:
            self._log.warn("Received {signal} again: stopping now", signal=name)
            self._drainer.stop_now()


def install_signal_handlers(reactor: Any, drainer: Drainer) -> _SignalHandler:
    """
    Make SIGTERM and SIGINT drain gracefully, and a second one stop at once.

    Call this after the reactor installed its own handlers (an "after
    startup" trigger), or they replace these.
    """
    handler = _SignalHandler(reactor, drainer)
    for signum in _SIGNAL_NAMES:
        signal.signal(signum, handler)
    return handler
