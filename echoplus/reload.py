"""
Live reload: what changed between two L{Settings}, applying that change to
a running L{echoplus.service.EchoPlusService}, and the SIGHUP handler.

A reload is all or nothing.  New settings arrive already validated; the
new chains are resolved and the new listeners bound before anything
changes, and a failure there leaves the service as it was.  Then existing
listeners get C{factory.configure(...)} (open connections pick the change
up from their next read), new listeners join the service and removed ones
stop accepting while their open connections finish.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.logger import Logger

from echoplus.check import format_value
from echoplus.config import ListenerSettings, Settings
from echoplus.errors import ConfigError
from echoplus.processors.chain import ProcessorChain

if TYPE_CHECKING:
    from echoplus.service import EchoPlusService, ListenerService

__all__ = ["LIVE_SERVICE_KEYS", "ReloadPlan", "apply_reload", "install_sighup"]

#: The process-wide settings a reload changes; the others (metrics,
#: workers, log format, ...) keep their value until a restart.
LIVE_SERVICE_KEYS = frozenset({"config", "drain_timeout"})

_log = Logger()


@attrs.frozen
class ReloadPlan:
    """
    The difference between the running settings and the new ones.

    @ivar added: listeners to start.
    @ivar removed: endpoints of the listeners to stop.
    @ivar changed: C{(old, new)} settings of listeners that stay but change.
    @ivar settings: the settings in force after the reload: the new ones,
        except process-wide keys that need a restart.
    @ivar restart_needed: those keys, when their value changed.
    """

    added: tuple[ListenerSettings, ...]
    removed: tuple[str, ...]
    changed: tuple[tuple[ListenerSettings, ListenerSettings], ...]
    settings: Settings
    restart_needed: tuple[str, ...]

    @classmethod
    def between(
        cls, old: Settings, new: Settings, fixed_listeners: bool = False
    ) -> ReloadPlan:
        """
        The plan that takes a service from C{old} to C{new}.

        @param fixed_listeners: the set of listeners cannot change (a
            worker serves the sockets its parent bound): listeners added or
            removed are reported as needing a restart.
        """
        before = {listener.endpoint: listener for listener in old.listeners}
        after = {listener.endpoint: listener for listener in new.listeners}
        restart = []
        if fixed_listeners and set(after) != set(before):
            restart.append("listen")
            after = {e: after.get(e, listener) for e, listener in before.items()}
            new = attrs.evolve(new, listeners=tuple(after.values()))
        kept: dict[str, Any] = {}
        for field in attrs.fields(Settings):
            name = field.name
            if name == "listeners" or name in LIVE_SERVICE_KEYS:
                continue
            if getattr(old, name) != getattr(new, name):
                kept[name] = getattr(old, name)
        return cls(
            added=tuple(new_l for e, new_l in after.items() if e not in before),
            removed=tuple(e for e in before if e not in after),
            changed=tuple(
                (before[e], new_l)
                for e, new_l in after.items()
                if e in before and before[e] != new_l
            ),
            settings=attrs.evolve(new, **kept),
            restart_needed=(*restart, *kept),
        )

    def summary(self) -> str:
        """
        One line saying what the reload changed.
        """
        parts = []
        for old, new in self.changed:
            changes = ", ".join(
                f"{name} {format_value(getattr(old, name))} -> "
                f"{format_value(getattr(new, name))}"
                for name in _changed_fields(old, new)
            )
            parts.append(f"{new.endpoint}: {changes}")
        parts += [f"started {listener.endpoint}" for listener in self.added]
        parts += [f"stopped {endpoint}" for endpoint in self.removed]
        if self.restart_needed:
            parts.append(f"needs a restart: {', '.join(self.restart_needed)}")
        return "; ".join(parts) or "nothing changed"


def _changed_fields(old: ListenerSettings, new: ListenerSettings) -> list[str]:
    return [
        field.name
        for field in attrs.fields(ListenerSettings)
        if getattr(old, field.name) != getattr(new, field.name)
    ]


def apply_reload(service: EchoPlusService, new: Settings) -> ReloadPlan:
    """
    Take C{service} from its settings to C{new}.

    @raise ConfigError: a chain cannot be resolved or a new listener cannot
        bind; nothing changed.
    """
    plan = ReloadPlan.between(
        service.settings, new, getattr(service, "fixed_listeners", False)
    )
    chains = {
        new_listener.endpoint: ProcessorChain(new_listener.processors)
        for old_listener, new_listener in plan.changed
        if old_listener.processors != new_listener.processors
    }
    started: list[ListenerService] = []
    try:
        for listener in plan.added:
            child = service.make_listener(listener)
            if service.running:
                child.privilegedStartService()
            started.append(child)
    except ConfigError:
        for child in started:
            child.stopService()
        raise
    for child in started:
        service.add_listener(child)
    for _, new_listener in plan.changed:
        factory = service.factories[new_listener.endpoint]
        factory.configure(
            new_listener, chains.get(new_listener.endpoint, factory.chain)
        )
    for endpoint in plan.removed:
        service.remove_listener(endpoint)
    service.settings = plan.settings
    drainer = getattr(service, "drainer", None)
    if drainer is not None:
        drainer.timeout = plan.settings.drain_timeout
    return plan


def install_sighup(reactor: Any, callback: Callable[[], object]) -> Callable[[], None]:
    """
    Make SIGHUP call C{callback} on the reactor thread (by default the
    signal ends the process).

    @return: a function that restores the previous handler.
    """

    def handler(signum: int, frame: Any) -> None:
        # Runs between two bytecodes of the reactor thread: hand over.
        reactor.callFromThread(callback)

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
