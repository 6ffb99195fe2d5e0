"""
The shared-state built-ins: C{broadcast} and C{pubsub}.

Both keep their topics in the process's broker (C{context.broker}, an
L{echoplus.interfaces.IBroker}): in this process with C{--broker memory}
(the default), where every listener shares them, and on every node of a
Redis broker with C{--broker redis://...}.  They provide
L{IConnectionObserver}, so a closed connection leaves its topics (no
leak).  Deliveries are encoded once per wire format, not once per receiver
(L{fan_out}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus.context import ConnectionContext, fan_out
from echoplus.errors import RequestError
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors.base import ProcessorFactory

__all__ = ["SHARED_BUILTINS", "Broadcast", "PubSub", "fan_out", "settle"]


def settle(deferred: Deferred[Any], then: Callable[[Any], Any]) -> Any:
    """
    C{then(result)} at once when C{deferred} has already fired (the memory
    broker's answers), so that the reply stays synchronous; otherwise a
    L{Deferred} of it.  A failure is raised (at once) or passed on.
    """
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    if outcome:
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return then(outcome[0])
    return deferred.addCallback(lambda _: outcome[0]).addCallback(then)


def _no_reply(count: int) -> None:
    return None


@implementer(IProcessor, IConnectionObserver)
class Broadcast:
    """
    Each message goes to every I{other} connection of its group, on every
    node; the sender gets no reply (C{ERROR unavailable: broker} when the
    broker cannot take it).

    @ivar group: the group's name; by default the listener's name, so that
        each listener is a group (and so are the same listener's workers
        and nodes on one broker).
    @ivar connections: this listener's open connections, in the order they
        opened.
    """

    def __init__(self, group: Any = None) -> None:
        """
        @param group: the group's name (default: the listener's).
        """
        if group is not None and (not str(group) or len(str(group).split()) != 1):
            raise ValueError(f"group must be one word, not {group!r}")
        self.group = None if group is None else str(group)
        self.connections: dict[ConnectionContext, None] = {}

    def _topic(self, context: ConnectionContext) -> bytes:
        # A space keeps it apart from every pubsub topic (one word).
        return b"broadcast " + (self.group or context.listener).encode()

    def connection_made(self, context: ConnectionContext) -> None:
        """
        Join the group.
        """
        self.connections[context] = None
        context.broker.subscribe(self._topic(context), context)

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        """
        Leave the group.
        """
        self.connections.pop(context, None)
        context.broker.unsubscribe(self._topic(context), context)

    def process(self, message: bytes, context: ConnectionContext) -> Any:
        """
        Publish C{message} to every other connection of the group; no reply.
        """
        published = context.broker.publish(self._topic(context), message, context)
        return settle(published, _no_reply)


_USAGE = "use SUB <topic>, UNSUB <topic> or PUB <topic> <payload>"


@implementer(IProcessor, IConnectionObserver)
class PubSub:
    """
    Topics: C{SUB <topic>} answers C{OK SUB <topic>}, C{UNSUB <topic>}
    answers C{OK UNSUB <topic>}, and C{PUB <topic> <payload>} answers
    C{OK PUB <n>} once the topic's C{n} subscribers, on every node (the
    publisher too, if subscribed), are sent C{MSG <topic> <payload>}; or
    C{ERROR unavailable: broker} when the broker cannot take it.  A
    subscriber whose node may have missed frames receives C{GAP <topic>}.
    Anything else is C{ERROR bad-request: ...}.  A topic is one word of
    non-space bytes.  A connection may subscribe to at most C{max_topics}
    topics (a bad request beyond), so no client can grow the tables without
    bound.

    @ivar subscriptions: connection to the topics it subscribed to.
    """

    def __init__(self, max_topics: Any = 1000) -> None:
        """
        @param max_topics: the most topics one connection may subscribe to.
        """
        try:
            self.max_topics = int(max_topics)
        except (TypeError, ValueError):
            raise ValueError(f"max_topics must be a whole number, not {max_topics!r}")
        if self.max_topics < 1:
            raise ValueError(f"max_topics must be at least 1, not {max_topics!r}")
        self.subscriptions: dict[ConnectionContext, set[bytes]] = {}

    @property
    def topics(self) -> dict[bytes, dict[ConnectionContext, None]]:
        """
        Topic to this listener's subscribers of it (a view, for tests and
        introspection; the broker holds the real table).
        """
        table: dict[bytes, dict[ConnectionContext, None]] = {}
        for context, topics in self.subscriptions.items():
            for topic in topics:
                table.setdefault(topic, {})[context] = None
        return table

    def connection_made(self, context: ConnectionContext) -> None:
        """
        Nothing to do: a connection joins topics when it subscribes.
        """

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        """
        Remove the closed connection from every topic it subscribed to.
        """
        for topic in sorted(self.subscriptions.pop(context, ())):
            context.broker.unsubscribe(topic, context)

    def process(self, message: bytes, context: ConnectionContext) -> Any:
        """
        Answer one C{SUB}, C{UNSUB} or C{PUB} request.
        """
        command, _, rest = message.partition(b" ")
        if command == b"PUB":
            topic, space, payload = rest.partition(b" ")
            if not space:
                raise RequestError(f"PUB needs a topic and a payload; {_USAGE}")
            _check_topic(topic)
            published = context.broker.publish(topic, b"MSG %b %b" % (topic, payload))
            return settle(published, _ok_pub)
        if command == b"SUB":
            _check_topic(rest)
            topics = self.subscriptions.setdefault(context, set())
            if rest not in topics and len(topics) >= self.max_topics:
                if not topics:
                    del self.subscriptions[context]
                raise RequestError(f"at most {self.max_topics} subscriptions")
            topics.add(rest)
            joined = context.broker.subscribe(rest, context, b"GAP " + rest)
            return settle(joined, lambda _: b"OK SUB " + rest)
        if command == b"UNSUB":
            _check_topic(rest)
            topics = self.subscriptions.get(context)
            if topics is not None and rest in topics:
                topics.discard(rest)
                if not topics:
                    del self.subscriptions[context]
                context.broker.unsubscribe(rest, context)
            return b"OK UNSUB " + rest
        raise RequestError(f"unknown command; {_USAGE}")


def _ok_pub(count: int) -> bytes:
    return b"OK PUB %d" % (count,)


def _check_topic(topic: bytes) -> None:
    if not topic or len(topic.split()) != 1 or topic.strip() != topic:
        raise RequestError(f"a topic is one word; {_USAGE}")


#: The shared-state built-ins, registered with the others.
SHARED_BUILTINS: tuple[ProcessorFactory, ...] = (
    ProcessorFactory(
        "broadcast",
        "send each message to every other connection of the group (the "
        "listener, on every node of the broker); no reply",
        Broadcast,
        options={"group": "the group's name (default: the listener's)"},
    ),
    ProcessorFactory(
        "pubsub",
        "topics: SUB <topic>, UNSUB <topic>, PUB <topic> <payload> "
        "(subscribers get MSG <topic> <payload>)",
        PubSub,
        options={"max_topics": "most topics one connection may subscribe to (1000)"},
    ),
)
