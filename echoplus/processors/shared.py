"""
The shared-state built-ins: C{broadcast} and C{pubsub}.

Both are one instance per listener (the default for a processor factory)
and provide L{IConnectionObserver}, so they hear about every connection of
their listener: that is where they keep their tables, and where a closed
connection leaves them (no leak).  Deliveries go out with L{fan_out}, which
encodes a frame once per wire format, not once per receiver.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.errors import RequestError
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors.base import ProcessorFactory

__all__ = ["SHARED_BUILTINS", "Broadcast", "PubSub", "fan_out"]


def fan_out(contexts: Iterable[ConnectionContext], payload: bytes) -> int:
    """
    Push C{payload} to every connection in C{contexts}, encoding the frame
    once per wire format (see L{ConnectionContext.send_shared}).

    @return: how many connections it was sent to (a push to a closing or
        closed connection is a no-op and does not count).
    """
    encodings: dict[Any, bytes] = {}
    count = 0
    for context in list(contexts):
        if context.send_shared(payload, encodings):
            count += 1
    return count


@implementer(IProcessor, IConnectionObserver)
class Broadcast:
    """
    Each message goes to every I{other} connection of the listener; the
    sender gets no reply.

    @ivar connections: the open connections, in the order they opened.
    """

    def __init__(self) -> None:
        self.connections: dict[ConnectionContext, None] = {}

    def connection_made(self, context: ConnectionContext) -> None:
        """
        Add the new connection to the listener's connections.
        """
        self.connections[context] = None

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        """
        Forget the closed connection.
        """
        self.connections.pop(context, None)

    def process(self, message: bytes, context: ConnectionContext) -> None:
        """
        Push C{message} to every other connection; no reply.
        """
        fan_out((other for other in self.connections if other is not context), message)


_USAGE = "use SUB <topic>, UNSUB <topic> or PUB <topic> <payload>"


@implementer(IProcessor, IConnectionObserver)
class PubSub:
    """
    Topics: C{SUB <topic>} answers C{OK SUB <topic>}, C{UNSUB <topic>}
    answers C{OK UNSUB <topic>}, and C{PUB <topic> <payload>} answers
    C{OK PUB <n>} after every one of the topic's C{n} subscribers (the
    publisher too, if subscribed) was sent C{MSG <topic> <payload>}.
    Anything else is C{ERROR bad-request: ...}.  A topic is one word of
    non-space bytes.  A connection may subscribe to at most C{max_topics}
    topics (a bad request beyond), so no client can grow the tables without
    bound.

    @ivar topics: topic to its subscribers; a topic with no subscriber is
        removed.
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
        self.topics: dict[bytes, dict[ConnectionContext, None]] = {}
        self.subscriptions: dict[ConnectionContext, set[bytes]] = {}

    def connection_made(self, context: ConnectionContext) -> None:
        """
        Nothing to do: a connection joins the tables when it subscribes.
        """
        pass

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        """
        Remove the closed connection from every topic it subscribed to.
        """
        for topic in self.subscriptions.pop(context, ()):
            self._forget(topic, context)

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        """
        Answer one C{SUB}, C{UNSUB} or C{PUB} request.
        """
        command, _, rest = message.partition(b" ")
        if command == b"PUB":
            topic, space, payload = rest.partition(b" ")
            if not space:
                raise RequestError(f"PUB needs a topic and a payload; {_USAGE}")
            _check_topic(topic)
            subscribers = self.topics.get(topic, ())
            sent = fan_out(subscribers, b"MSG %b %b" % (topic, payload))
            return b"OK PUB %d" % (sent,)
        if command == b"SUB":
            _check_topic(rest)
            topics = self.subscriptions.setdefault(context, set())
            if rest not in topics and len(topics) >= self.max_topics:
                raise RequestError(f"at most {self.max_topics} subscriptions")
            topics.add(rest)
            self.topics.setdefault(rest, {})[context] = None
            return b"OK SUB " + rest
        if command == b"UNSUB":
            _check_topic(rest)
            topics = self.subscriptions.get(context)
            if topics is not None and rest in topics:
                topics.discard(rest)
                if not topics:
                    del self.subscriptions[context]
                self._forget(rest, context)
            return b"OK UNSUB " + rest
        raise RequestError(f"unknown command; {_USAGE}")

    def _forget(self, topic: bytes, context: ConnectionContext) -> None:
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.pop(context, None)
            if not subscribers:
                del self.topics[topic]


def _check_topic(topic: bytes) -> None:
    if not topic or len(topic.split()) != 1 or topic.strip() != topic:
        raise RequestError(f"a topic is one word; {_USAGE}")


#: The shared-state built-ins, registered with the others.
SHARED_BUILTINS: tuple[ProcessorFactory, ...] = (
    ProcessorFactory(
        "broadcast",
        "send each message to every other connection of the listener; no reply",
        Broadcast,
    ),
    ProcessorFactory(
        "pubsub",
        "topics: SUB <topic>, UNSUB <topic>, PUB <topic> <payload> "
        "(subscribers get MSG <topic> <payload>)",
        PubSub,
        options={"max_topics": "most topics one connection may subscribe to (1000)"},
    ),
)
