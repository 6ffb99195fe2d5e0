"""
What a processor knows about the connection a message arrived on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import attrs
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from echoplus.interfaces import IBroker

__all__ = ["ConnectionContext", "fan_out"]


@attrs.frozen(eq=False)
class ConnectionContext:
    """
    The per-connection context handed to every processor call.

    One instance is made per connection, never per message.  Contexts
    compare by identity, so they can key dictionaries and sets of
    connections (rooms, topic subscribers).

    @ivar id: the connection's id, unique within the process.
    @ivar peer: the client's address as Twisted reports it (behind
        C{haproxy:}, the address from the PROXY header).
    @ivar listener: the name of the listener (its endpoint string).
    @ivar clock: the connection's reactor, as an C{IReactorTime}: what a
        processor schedules timed work on (a C{task.Clock} under test).
    @ivar broker: the process's L{echoplus.interfaces.IBroker}: topics
        shared by every listener of the process and, with C{--broker
        redis://...}, by every node on that broker.
    """

    id: int
    peer: Any
    listener: str
    clock: IReactorTime = attrs.field(repr=False)
    _push: Callable[[bytes], None] = attrs.field(repr=False, alias="push")
    _push_shared: Callable[[bytes, dict[Any, bytes]], bool] | None = attrs.field(
        default=None, repr=False, alias="push_shared"
    )
    broker: IBroker = attrs.field(default=None, repr=False)

    def send(self, payload: bytes) -> None:
        """
        Push one unsolicited frame to this connection, in its own framing.

        Pushes go out when sent, independently of the request/reply order.
        Pushing to a closed connection does nothing.  A connection whose
        unsent output passes C{--max-write-buffer} is closed with
        C{ERROR overloaded}.
        """
        self._push(payload)

    def send_shared(self, payload: bytes, encodings: dict[Any, bytes]) -> bool:
        """
        Push one frame that goes to many connections at once: pass the same
        (initially empty) C{encodings} dict for every connection of one
        fan-out, and the frame is encoded once per wire format rather than
        once per connection.  Otherwise the same as L{send}.

        @return: whether the frame was sent (C{False}: the connection is
            closing or closed).
        """
        if self._push_shared is None:
            self._push(payload)
            return True
        return self._push_shared(payload, encodings)


def fan_out(
    contexts: Iterable[ConnectionContext], payload: bytes, skip: int | None = None
) -> int:
    """
    Push C{payload} to every connection in C{contexts}, encoding the frame
    once per wire format (see L{ConnectionContext.send_shared}).

    @param skip: the id of a connection in C{contexts} not to push to.
    @return: how many connections it was sent to (a push to a closing or
        closed connection is a no-op and does not count).
    """
    encodings: dict[Any, bytes] = {}
    count = 0
    for context in list(contexts):
        if context.id != skip and context.send_shared(payload, encodings):
            count += 1
    return count
