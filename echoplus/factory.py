"""
The factory behind every listener: its settings, its processor chain and
the bookkeeping of its open connections.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoplus.cluster.memory import MemoryBroker
from echoplus.interfaces import IBroker, IConnectionObserver
from echoplus.logs import log_connection_closed, log_connection_opened
from echoplus.policies import ListenerPolicies
from echoplus.processors.chain import ProcessorChain
from echoplus.protocols import FramedProtocol, find_framing

if TYPE_CHECKING:
    from echoplus.config import ListenerSettings
    from echoplus.metrics import ListenerMetrics

__all__ = ["EchoPlusFactory"]

_connection_ids: Iterator[int] = itertools.count(1)


class EchoPlusFactory(Factory):
    """
    Builds the protocols of one listener and keeps its open connections.

    @ivar settings: the listener's current L{ListenerSettings}.
    @ivar chain: the listener's current L{ProcessorChain}.
    @ivar generation: increases on every L{configure}; open connections
        compare it to pick up a reload.
    @ivar connections: the open connections, by connection id.
    @ivar clock: the reactor (or a C{task.Clock}) that times everything.
    @ivar policies: the listener's L{ListenerPolicies}: access control,
        connection limits and the timeout sweep.
    @ivar metrics: the listener's L{ListenerMetrics}, or C{None} when
        metrics are off; set by the service before the listener starts.
    @ivar broker: the process's L{IBroker}, handed to every connection as
        C{context.broker}.
    """

    _log = Logger()
    noisy = False
    protocol: type[FramedProtocol]  # type: ignore[assignment]
    metrics: ListenerMetrics | None = None

    def __init__(
        self,
        settings: ListenerSettings,
        clock: IReactorTime,
        chain: ProcessorChain | None = None,
        name: str | None = None,
        broker: IBroker | None = None,
    ) -> None:
        """
        @param settings: the listener's settings.
        @param clock: the reactor, or a C{task.Clock} in tests.
        @param chain: the resolved chain; resolved from C{settings} when
            not given.
        @param name: the listener's name for contexts, logs and metrics;
            its endpoint string by default.
        @param broker: the process's broker, shared by its listeners; an
            in-process one of its own by default.
        """
        self.name = name if name is not None else settings.endpoint
        self.broker = broker if broker is not None else MemoryBroker()
        self.clock = clock
        self.connections: dict[int, FramedProtocol] = {}
        self.policies = ListenerPolicies(clock, self.connections)
        self.generation = 0
        self.configure(settings, chain)

    def configure(
        self, settings: ListenerSettings, chain: ProcessorChain | None = None
    ) -> None:
        """
        Apply new settings: new connections use them at once, open ones
        from their next read.
        """
        self.protocol = find_framing(settings.framing)
        self.chain = chain if chain is not None else ProcessorChain(settings.processors)
        self.settings = settings
        self.policies.configure(settings)
        self.generation += 1

    def next_connection_id(self) -> int:
        """
        A connection id unique within this process.
        """
        return next(_connection_ids)

    def buildProtocol(self, addr: IAddress) -> FramedProtocol | None:  # type: ignore[override]
        protocol = self.protocol()
        protocol.factory = self
        return protocol

    def connection_opened(self, protocol: FramedProtocol) -> None:
        """
        Record an open connection and tell the observers in its chain.
        """
        self.connections[protocol.context.id] = protocol
        self.policies.opened(protocol.context.peer)
        if self.metrics is not None:
            self.metrics.opened()
        log_connection_opened(self._log, protocol.context)
        for name, observer in _observers(protocol):
            self._notify(name, observer.connection_made, protocol.context)

    def connection_closed(self, protocol: FramedProtocol, reason: Failure) -> None:
        """
        Forget a closed connection and tell the observers in its chain.
        """
        if self.connections.pop(protocol.context.id, None) is None:
            return
        self.policies.closed(protocol.context.peer)
        if self.metrics is not None:
            self.metrics.closed(protocol.counts())
        log_connection_closed(
            self._log,
            protocol.context,
            self.clock.seconds() - protocol.opened_at,
            protocol.counts(),
            reason,
        )
        for name, observer in _observers(protocol):
            self._notify(name, observer.connection_lost, protocol.context, reason)

    def connection_rechained(
        self, protocol: FramedProtocol, previous: Sequence[tuple[str, Any]]
    ) -> None:
        """
        An open connection moved to a reloaded chain: observers only in the
        old chain hear it leave, observers only in the new one hear it
        arrive.
        """
        old = {id(pair[1]): pair for pair in _observers(previous)}
        new = {id(pair[1]): pair for pair in _observers(protocol)}
        reason = Failure(ConnectionDone("processor chain reloaded"))
        for key, (name, observer) in old.items():
            if key not in new:
                self._notify(name, observer.connection_lost, protocol.context, reason)
        for key, (name, observer) in new.items():
            if key not in old:
                self._notify(name, observer.connection_made, protocol.context)

    def _notify(self, name: str, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            self._log.failure("Connection observer {processor} failed", processor=name)


def _observers(
    protocol: FramedProtocol | Sequence[tuple[str, Any]],
) -> list[tuple[str, Any]]:
    processors = getattr(protocol, "processors", protocol)
    return [
        (name, processor)
        for name, processor in processors
        if IConnectionObserver.providedBy(processor)
    ]
