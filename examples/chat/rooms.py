"""
Chat rooms, a shared-state processor: one instance serves every connection
of its listener and hears them come and go (IConnectionObserver).  The
rooms themselves are topics of the process's broker (C{context.broker}), so
with C{--broker redis://...} a room spans every worker and host on that
broker, with nothing Redis-specific here.

Commands, one per frame:

  - C{NICK <name>}: choose your name (C{guest<id>} until then);
    answers C{OK NICK <name>}.
  - C{JOIN <room>}: enter a room (leaving the one you were in); answers
    C{OK JOIN <room>}; the others in the room get C{* <name> joined}.
  - C{SAY <text>}: everyone in your room, you included, gets
    C{<room> <name>: <text>}.
  - C{LEAVE}: answers C{OK LEAVE <room>}; the others get C{* <name> left}.

Serve it with::

    twistd -n echoplus --processor examples.chat.rooms:ChatRooms

and across nodes with C{--broker redis://127.0.0.1:6379} on each.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.errors import RequestError
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors.shared import settle


@implementer(IProcessor, IConnectionObserver)
class ChatRooms:
    """
    Rooms of connections; a connection is in at most one room.

    @ivar where: this listener's connections to the room each is in.
    @ivar names: this listener's connections to their chosen names.
    """

    def __init__(self) -> None:
        self.where: dict[ConnectionContext, bytes] = {}
        self.names: dict[ConnectionContext, bytes] = {}

    @property
    def rooms(self) -> dict[bytes, dict[ConnectionContext, None]]:
        """
        Room name to this listener's members, in joining order (a view; the
        broker holds the topics).
        """
        table: dict[bytes, dict[ConnectionContext, None]] = {}
        for context, room in self.where.items():
            table.setdefault(room, {})[context] = None
        return table

    def connection_made(self, context: ConnectionContext) -> None:
        pass

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        self._leave(context)
        self.names.pop(context, None)

    def process(self, message: bytes, context: ConnectionContext) -> object:
        command, _, argument = message.partition(b" ")
        if command == b"SAY":
            room = self.where.get(context)
            if room is None:
                raise RequestError("JOIN a room first")
            line = b"%b %b: %b" % (room, self._name(context), argument)
            return settle(context.broker.publish(_topic(room), line), _nothing)
        if command == b"JOIN" and _is_word(argument):
            self._leave(context)
            self._tell(argument, b"* %b joined" % self._name(context), context)
            self.where[context] = argument
            joined = context.broker.subscribe(_topic(argument), context)
            return settle(joined, lambda _: b"OK JOIN " + argument)
        if command == b"LEAVE" and not argument:
            room = self._leave(context)
            if room is None:
                raise RequestError("you are not in a room")
            return b"OK LEAVE " + room
        if command == b"NICK" and _is_word(argument):
            self.names[context] = argument
            return b"OK NICK " + argument
        raise RequestError("use NICK <name>, JOIN <room>, SAY <text> or LEAVE")

    def _name(self, context: ConnectionContext) -> bytes:
        return self.names.get(context) or b"guest%d" % (context.id,)

    def _tell(self, room: bytes, line: bytes, sender: ConnectionContext) -> None:
        """
        Tell everyone else in C{room}; a notice lost to a broker outage is
        not worth failing the request for.
        """
        sender.broker.publish(_topic(room), line, sender).addErrback(lambda _: None)

    def _leave(self, context: ConnectionContext) -> bytes | None:
        """
        Take C{context} out of its room, telling the others; return the room.
        """
        room = self.where.pop(context, None)
        if room is not None:
            context.broker.unsubscribe(_topic(room), context)
            self._tell(room, b"* %b left" % self._name(context), context)
        return room


def _topic(room: bytes) -> bytes:
    # A space keeps rooms apart from pubsub topics (one word) on one broker.
    return b"room " + room


def _nothing(count: int) -> None:
    return None


def _is_word(text: bytes) -> bool:
    return bool(text) and len(text.split()) == 1 and text.strip() == text
