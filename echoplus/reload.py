"""
Live reload: what changed between two L{Settings} (a L{ReloadPlan}), and
the SIGHUP handler.

This module knows settings, not the service tree:
L{echoplus.service.EchoPlusService.apply_reload} applies a plan to a
running service.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

import attrs
from twisted.logger import Logger

from echoplus.check import format_value
from echoplus.config import ListenerSettings, Settings

__all__ = ["LIVE_SERVICE_KEYS", "ReloadPlan", "install_sighup"]

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
