"""
The service tree: one listening service per configured listener under one
L{EchoPlusService}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoplus.config import Settings
from echoplus.drain import Drainer
from echoplus.endpoints import server_from_string
from echoplus.errors import ConfigError
from echoplus.factory import EchoPlusFactory
from echoplus.metrics import Metrics, MetricsService

__all__ = ["EchoPlusService", "ListenerService"]


class ListenerService(Service):
    """
    Listens on one endpoint string with one L{EchoPlusFactory}.

    The endpoint is bound in C{privilegedStartService}, before twistd drops
    privileges, and a failure to bind is raised there and then as a
    L{ConfigError} naming the endpoint.
    """

    _log = Logger()

    def __init__(self, endpoint: str, factory: EchoPlusFactory, reactor: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self._reactor = reactor
        self.port: IListeningPort | None = None
        self.name = endpoint

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        endpoint = server_from_string(self._reactor, self.endpoint)
        outcome: list[Any] = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ConfigError(f"cannot listen on {self.endpoint}: no answer")
        if isinstance(outcome[0], Failure):
            reason = outcome[0].value
            raise ConfigError(f"cannot listen on {self.endpoint}: {_describe(reason)}")
        self.port = outcome[0]
        self._log.info(
            "echoplus listening on {endpoint} at {address} ({framing}, {chain})",
            endpoint=self.endpoint,
            address=_address(self.port.getHost()),
            framing=self.factory.settings.framing,
            chain=str(self.factory.chain),
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def _address(address: Any) -> str:
    """
    A listening address as C{host:port} or a UNIX path.
    """
    if hasattr(address, "port"):
        return f"{address.host}:{address.port}"
    name = getattr(address, "name", None)
    return name.decode() if isinstance(name, bytes) else str(name or address)


def _describe(error: BaseException) -> str:
    """
    The useful part of a bind error, without Twisted's wrapping.
    """
    socket_error = getattr(error, "socketError", None)
    if socket_error is not None:
        return getattr(socket_error, "strerror", None) or str(socket_error)
    return str(error) or type(error).__name__


class EchoPlusService(MultiService):
    """
    The whole server: a L{ListenerService} per listener.

    @ivar settings: the L{Settings} in force.
    @ivar factories: the listeners' factories, by endpoint string.
    @ivar metrics: the service's L{Metrics} (C{None} when not collected).
    @ivar draining: set while the service drains; C{/healthz} answers 503.
    """

    def __init__(
        self, settings: Settings, reactor: Any, metrics: Metrics | None = None
    ) -> None:
        """
        @param metrics: where to count; by default a new L{Metrics} with
            its own registry when C{settings.metrics} is set, else none.
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.draining = False
        if metrics is None and settings.metrics:
            metrics = Metrics()
        self.metrics = metrics
        self.factories: dict[str, EchoPlusFactory] = {}
        self.drainer = Drainer(reactor, self.factories.values, settings.drain_timeout)
        for listener in settings.listeners:
            factory = EchoPlusFactory(listener, reactor)
            if metrics is not None:
                factory.metrics = metrics.for_listener(factory.name)
            self.factories[listener.endpoint] = factory
            ListenerService(listener.endpoint, factory, reactor).setServiceParent(self)
        if metrics is not None and settings.metrics:
            MetricsService(
                settings.metrics, metrics.registry, self.healthy, reactor
            ).setServiceParent(self)

    def stopService(self) -> Any:
        """
        Stop accepting, then let open connections finish their requests for
        up to C{drain_timeout} seconds (see L{echoplus.drain}).
        """
        self.draining = True
        stopped = super().stopService()
        return stopped.addCallback(lambda _: self.drainer.drain())

    def healthy(self) -> bool:
        """
        Whether the service is up: running, not draining, and every
        listener listening.  C{/healthz} answers 200 when it is.
        """
        if not self.running or self.draining:
            return False
        return all(
            service.port is not None
            for service in self
            if isinstance(service, ListenerService)
        )

    def setServiceParent(self, parent: Any) -> None:
        """
        Attach to twistd's application; with C{log_format = "json"}, make
        JSON lines its log observer (twistd asks the application for an
        C{ILogObserver} component before it starts logging).
        """
        super().setServiceParent(parent)
        if self.settings.log_format == "json" and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            from echoplus.logs import json_observer

            parent.setComponent(ILogObserver, json_observer())
