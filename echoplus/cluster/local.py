"""
A node's own subscribers: which local connections subscribe to which
topic, and the fan-out of one frame to them.  Both engines keep one.
"""

from __future__ import annotations

from typing import Iterator

from echoplus.context import ConnectionContext, fan_out

__all__ = ["LocalSubscribers"]


class LocalSubscribers:
    """
    Topic to subscribed connections (each with its gap frame), and back.

    @ivar topics: topic to C{{context: gap frame or None}}, in the order
        they subscribed; a topic with no local subscriber is removed.
    """

    def __init__(self) -> None:
        self.topics: dict[bytes, dict[ConnectionContext, bytes | None]] = {}
        self._by_context: dict[ConnectionContext, set[bytes]] = {}

    def add(self, topic: bytes, context: ConnectionContext, gap: bytes | None) -> bool:
        """
        Subscribe C{context} to C{topic}.

        @return: whether C{topic} had no local subscriber before.
        """
        subscribers = self.topics.get(topic)
        new = subscribers is None
        if subscribers is None:
            subscribers = self.topics[topic] = {}
        subscribers[context] = gap
        self._by_context.setdefault(context, set()).add(topic)
        return new

    def remove(self, topic: bytes, context: ConnectionContext) -> bool:
        """
        Unsubscribe C{context} from C{topic}.

        @return: whether C{topic} lost its last local subscriber.
        """
        topics = self._by_context.get(context)
        if topics is None or topic not in topics:
            return False
        topics.discard(topic)
        if not topics:
            del self._by_context[context]
        subscribers = self.topics[topic]
        del subscribers[context]
        if subscribers:
            return False
        del self.topics[topic]
        return True

    def remove_all(self, context: ConnectionContext) -> list[bytes]:
        """
        Unsubscribe C{context} from every topic.

        @return: the topics that lost their last local subscriber.
        """
        emptied = []
        for topic in sorted(self._by_context.get(context, ())):
            if self.remove(topic, context):
                emptied.append(topic)
        return emptied

    def topics_of(self, context: ConnectionContext) -> list[bytes]:
        """
        The topics C{context} subscribes to.
        """
        return sorted(self._by_context.get(context, ()))

    def count(self, topic: bytes) -> int:
        """
        How many local connections subscribe to C{topic}.
        """
        return len(self.topics.get(topic, ()))

    def has(self, topic: bytes, context: ConnectionContext) -> bool:
        """
        Whether C{context} subscribes to C{topic}.
        """
        return context in self.topics.get(topic, ())

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self.topics))

    def deliver(self, topic: bytes, frame: bytes, skip: int | None = None) -> int:
        """
        Push C{frame} to every local subscriber of C{topic} but the
        connection whose id is C{skip}.

        @return: how many it was pushed to.
        """
        subscribers = self.topics.get(topic)
        if not subscribers:
            return 0
        return fan_out(subscribers, frame, skip)

    def gap(self, topic: bytes) -> int:
        """
        Push each local subscriber of C{topic} its gap frame.

        @return: how many subscribers were told.
        """
        told = 0
        for context, frame in list(self.topics.get(topic, {}).items()):
            if frame is not None and context.send_shared(frame, {}):
                told += 1
        return told
