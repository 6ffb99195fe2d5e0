"""
The service tree: one listening service per configured listener under one
L{EchoPlusService}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoplus.cluster.service import BrokerService, make_broker
from echoplus.config import ListenerSettings, Settings
from echoplus.drain import Drainer
from echoplus.endpoints import server_from_string
from echoplus.errors import ConfigError
from echoplus.factory import EchoPlusFactory
from echoplus.metrics import Metrics, MetricsService
from echoplus.processors.chain import ProcessorChain
from echoplus.reload import ReloadPlan, install_sighup

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
        if self.port is None:
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
    @ivar fixed_listeners: set when the listeners cannot change on a reload
        (a worker serving sockets its parent bound).
    """

    _log = Logger()
    fixed_listeners = False

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        metrics: Metrics | None = None,
        load: Callable[[], Settings] | None = None,
    ) -> None:
        """
        @param metrics: where to count; by default a new L{Metrics} with
            its own registry when C{settings.metrics} is set, else none.
        @param load: re-reads the configuration (file and environment, with
            the original command line) for L{reload}; with it, SIGHUP
            reloads while the service runs.
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self._load = load
        self._restore_sighup: Callable[[], None] | None = None
        self.draining = False
        if metrics is None and settings.metrics:
            metrics = Metrics()
        self.metrics = metrics
        # Not a child either: started before the listeners accept, stopped
        # after they drained (their last requests may still publish).
        self.broker = make_broker(
            settings, reactor, metrics.registry if metrics is not None else None
        )
        self.broker_service = BrokerService(self.broker)
        self.factories: dict[str, EchoPlusFactory] = {}
        self._retired: list[EchoPlusFactory] = []
        self.drainer = Drainer(reactor, self._drained_factories, settings.drain_timeout)
        for listener in settings.listeners:
            self.add_listener(self.make_listener(listener))
        # Not a child: /metrics and /healthz (503) stay up during the drain.
        self.metrics_service: MetricsService | None = None
        if metrics is not None and settings.metrics:
            self.metrics_service = MetricsService(
                settings.metrics,
                metrics.registry,
                self.healthy,
                reactor,
                metrics.flush,
                details=self.health_details,
            )

    def make_listener(self, listener: ListenerSettings) -> ListenerService:
        """
        A new listener service (not yet part of this service) and its
        factory.
        """
        factory = EchoPlusFactory(listener, self.reactor, broker=self.broker)
        if self.metrics is not None:
            factory.metrics = self.metrics.for_listener(
                factory.name, factory.connections
            )
        return ListenerService(listener.endpoint, factory, self.reactor)

    def add_listener(self, child: ListenerService) -> None:
        """
        Make C{child} part of this service (it starts if this one runs).
        """
        self.factories[child.endpoint] = child.factory
        child.setServiceParent(self)

    def remove_listener(self, endpoint: str) -> None:
        """
        Stop accepting on C{endpoint}; its open connections carry on.
        """
        factory = self.factories.pop(endpoint, None)
        if factory is not None:
            self._retired.append(factory)
        self.getServiceNamed(endpoint).disownServiceParent()

    def _drained_factories(self) -> list[EchoPlusFactory]:
        """
        The factories whose connections a drain waits for: the listeners'
        and those of removed listeners that still have connections.
        """
        self._retired = [factory for factory in self._retired if factory.connections]
        return [*self.factories.values(), *self._retired]

    def reload(self) -> bool:
        """
        Re-read the configuration and apply it (SIGHUP).  Everything is
        validated first: an invalid configuration is logged and changes
        nothing.

        @return: whether the new configuration was applied.
        """
        if self._load is None or self.settings.config is None:
            self._log.info("Reload: no config file, nothing to reload")
            return False
        if self.draining:
            self._log.info("Reload ignored: the service is stopping")
            return False
        try:
            plan = self.apply_reload(self._load())
        except ConfigError as error:
            self._log.error(
                "Reload of {config} refused, the running configuration stays: {errors}",
                config=self.settings.config,
                errors="; ".join(str(error).splitlines()),
            )
            return False
        self._log.info(
            "Reloaded {config}: {summary}",
            config=self.settings.config,
            summary=plan.summary(),
        )
        return True

    def apply_reload(self, new: Settings) -> ReloadPlan:
        """
        Take this service from its settings to C{new}, all or nothing.

        The new chains are resolved and the new listeners bound before
        anything changes, and a failure there leaves the service as it
        was.  Then existing listeners are reconfigured (open connections
        pick the change up from their next read), new listeners join and
        removed ones stop accepting while their open connections finish.

        @param new: validated settings.
        @raise ConfigError: a chain cannot be resolved or a new listener
            cannot bind; nothing changed.
        """
        plan = ReloadPlan.between(self.settings, new, self.fixed_listeners)
        chains = {
            after.endpoint: ProcessorChain(after.processors)
            for before, after in plan.changed
            if before.processors != after.processors
        }
        started: list[ListenerService] = []
        try:
            for listener in plan.added:
                child = self.make_listener(listener)
                if self.running:
                    child.privilegedStartService()
                started.append(child)
        except ConfigError:
            for child in started:
                child.stopService()
            raise
        for child in started:
            self.add_listener(child)
        for _, after in plan.changed:
            factory = self.factories[after.endpoint]
            factory.configure(after, chains.get(after.endpoint, factory.chain))
        for endpoint in plan.removed:
            self.remove_listener(endpoint)
        self.settings = plan.settings
        self.drainer.timeout = plan.settings.drain_timeout
        return plan

    def privilegedStartService(self) -> None:
        # Reload on SIGHUP from now on: until then SIGHUP ends the process.
        self._handle_sighup()
        super().privilegedStartService()
        if self.metrics_service is not None:
            self.metrics_service.privilegedStartService()

    def startService(self) -> None:
        """
        Start every listener; with a C{load} function, reload on SIGHUP.
        """
        if not self.broker_service.running:
            self.broker_service.startService()
        super().startService()
        if self.metrics_service is not None and not self.metrics_service.running:
            self.metrics_service.startService()
        if self.metrics is not None:
            self.metrics.start_flushing(self.reactor)
        self._handle_sighup()

    def _handle_sighup(self) -> None:
        """
        With a C{load} function, make SIGHUP call L{reload} (once).
        """
        if self._load is not None and self._restore_sighup is None:
            self._restore_sighup = install_sighup(self.reactor, self.reload)

    def stopService(self) -> Any:
        """
        Stop accepting, then let open connections finish their requests for
        up to C{drain_timeout} seconds (see L{echoplus.drain}).
        """
        if self._restore_sighup is not None:
            self._restore_sighup()
            self._restore_sighup = None
        self.draining = True
        stopped = super().stopService()
        stopped.addCallback(lambda _: self.drainer.drain())
        stopped.addCallback(lambda _: self.broker_service.stopService())
        if self.metrics is not None:
            stopped.addCallback(lambda _: self.metrics.stop_flushing())
        if self.metrics_service is not None:
            stopped.addCallback(lambda _: self.metrics_service.stopService())
        return stopped

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

    def health_details(self) -> str:
        """
        The lines C{/healthz} adds after its verdict: the broker's state.
        """
        return f"broker: {self.broker.status()} ({self.broker.name})"

    def setServiceParent(self, parent: Any) -> None:
        """
        Attach to twistd's application; with C{log_format = "json"}, make
        JSON lines its log observer (twistd asks the application for an
        C{ILogObserver} component before it starts logging).
        """
        super().setServiceParent(parent)
        if self.settings.log_format == "json":
            from echoplus.logs import use_json_lines

            use_json_lines(parent)
