"""
The in-process broker, C{--broker memory} (the default): topics shared by
every listener of one process, delivered synchronously, so a topic's
frames reach its subscribers in publish order by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from echoplus.cluster.local import LocalSubscribers
from echoplus.interfaces import IBroker

if TYPE_CHECKING:
    from echoplus.cluster.metrics import BrokerMetrics
    from echoplus.context import ConnectionContext

__all__ = ["MemoryBroker"]


@implementer(IBroker)
class MemoryBroker:
    """
    Topics in this process only.

    C{publish} pushes to every subscriber before its L{Deferred} fires, and
    counts the subscribers it was sent to (a closing connection does not
    count).  It never fails: there is no link to lose.
    """

    name = "memory"

    def __init__(self, metrics: BrokerMetrics | None = None) -> None:
        """
        @param metrics: where publishes and deliveries are counted, if
            anywhere.
        """
        self.local = LocalSubscribers()
        self.metrics = metrics

    def publish(
        self, topic: bytes, frame: bytes, sender: ConnectionContext | None = None
    ) -> Deferred[int]:
        sent = self.local.deliver(topic, frame, None if sender is None else sender.id)
        if self.metrics is not None:
            self.metrics.published(sent)
        return succeed(sent)

    def subscribe(
        self, topic: bytes, context: ConnectionContext, gap: bytes | None = None
    ) -> Deferred[None]:
        self.local.add(topic, context, gap)
        return succeed(None)

    def unsubscribe(self, topic: bytes, context: ConnectionContext) -> None:
        self.local.remove(topic, context)

    def unsubscribe_all(self, context: ConnectionContext) -> None:
        self.local.remove_all(context)

    def subscribers(self, topic: bytes) -> Deferred[int]:
        return succeed(self.local.count(topic))

    def status(self) -> str:
        return "memory"
