"""
Chat rooms, a shared-state processor: one instance serves every connection
of its listener and hears them come and go (IConnectionObserver).

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
"""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.errors import RequestError
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors.shared import fan_out


@implementer(IProcessor, IConnectionObserver)
class ChatRooms:
    """
    Rooms of connections; a connection is in at most one room.

    @ivar rooms: room name to its members (in joining order).
    @ivar where: connection to the room it is in.
    @ivar names: connection to its chosen name.
    """

    def __init__(self) -> None:
        self.rooms: dict[bytes, dict[ConnectionContext, None]] = {}
        self.where: dict[ConnectionContext, bytes] = {}
        self.names: dict[ConnectionContext, bytes] = {}

    def connection_made(self, context: ConnectionContext) -> None:
        pass

    def connection_lost(self, context: ConnectionContext, reason: Failure) -> None:
        self._leave(context)
        self.names.pop(context, None)

    def process(self, message: bytes, context: ConnectionContext) -> bytes | None:
        command, _, argument = message.partition(b" ")
        if command == b"SAY":
            room = self.where.get(context)
            if room is None:
                raise RequestError("JOIN a room first")
            line = b"%b %b: %b" % (room, self._name(context), argument)
            fan_out(self.rooms[room], line)
            return None
        if command == b"JOIN" and _is_word(argument):
            self._leave(context)
            self._tell(argument, b"* %b joined" % self._name(context))
            self.rooms.setdefault(argument, {})[context] = None
            self.where[context] = argument
            return b"OK JOIN " + argument
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

    def _tell(self, room: bytes, line: bytes) -> None:
        fan_out(self.rooms.get(room, ()), line)

    def _leave(self, context: ConnectionContext) -> bytes | None:
        """
        Take C{context} out of its room, telling the others; return the room.
        """
        room = self.where.pop(context, None)
        if room is not None:
            members = self.rooms[room]
            del members[context]
            if not members:
                del self.rooms[room]
            self._tell(room, b"* %b left" % self._name(context))
        return room


def _is_word(text: bytes) -> bool:
    return bool(text) and len(text.split()) == 1 and text.strip() == text
