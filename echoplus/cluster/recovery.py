"""
A node's position in one topic's stream, and what to do with each frame
that arrives: deliver it, drop it as a duplicate, or fetch what is missing
from the topic's history first.  Sans-IO: the engine feeds it envelopes and
history and acts on what it returns.

Offsets run 1, 2, 3... without holes within an epoch, so a hole is
visible: a live frame whose offset is not the next one, or a reconnection
(the node was away), starts a recovery.  During a recovery live frames are
held (at most C{limit} of them; any dropped beyond that are fetched from
the history in a further round).  When the history no longer
reaches back to the first missing offset, or the topic's epoch changed
while the node was away, the subscribers are told of a gap.
"""

from __future__ import annotations

import attrs

from echoplus.cluster.envelope import Envelope

__all__ = ["Recovered", "TopicCursor"]


@attrs.frozen
class Recovered:
    """
    The outcome of feeding a history fetch to a L{TopicCursor}.

    @ivar gap: frames may have been lost: tell the subscribers first.
    @ivar history: how many of C{deliver} came from the history.
    @ivar deliver: the envelopes to deliver now, in order.
    @ivar fetch_again: another hole showed; fetch again.
    """

    gap: bool
    history: int
    deliver: list[Envelope]
    fetch_again: bool


class TopicCursor:
    """
    The last epoch and offset of one topic delivered on this node.

    @ivar epoch: the epoch of the last frame delivered, C{b""} when the
        topic had no history yet, or L{None} while the position is unknown
        (just subscribed).
    @ivar offset: the offset of the last frame delivered.
    @ivar recovering: a history fetch is under way; live frames are held.
    """

    def __init__(self, limit: int) -> None:
        """
        @param limit: the most live frames held during a recovery.
        """
        self.epoch: bytes | None = None
        self.offset = 0
        self.recovering = False
        self._limit = max(limit, 1)
        self._held: list[Envelope] = []
        self._away = False
        self._overflow = False
        # What identifies the last frame delivered (its publish time,
        # origin and frame), to tell it from another at the same offset.
        self._mark: tuple[float, bytes, int] | None = None

    def place(self, epoch: bytes, offset: int) -> None:
        """
        Set the position when it is still unknown (the topic's position
        when this node subscribed).
        """
        if self.epoch is None and not self.recovering:
            self.epoch, self.offset = epoch, offset

    def live(self, envelope: Envelope) -> tuple[list[Envelope], bool]:
        """
        A frame arrived on the topic's channel.

        @return: the envelopes to deliver now, and whether to start a
            history fetch.
        """
        if self.recovering:
            if len(self._held) < self._limit:
                self._held.append(envelope)
            else:
                self._overflow = True
            return [], False
        if self.epoch is None or (
            envelope.epoch != self.epoch and envelope.offset == 1
        ):
            # Unknown position, or a new epoch that began while we listened.
            self.epoch, self.offset = envelope.epoch, envelope.offset
            self._mark = _mark(envelope)
            return [envelope], False
        if envelope.epoch == self.epoch:
            if envelope.offset <= self.offset:
                return [], False  # already delivered
            if envelope.offset == self.offset + 1:
                self.offset += 1
                self._mark = _mark(envelope)
                return [envelope], False
        self.recovering = True
        self._held = [envelope]
        return [], True

    def reconnected(self) -> None:
        """
        The link came back: hold live frames until the history was fetched.
        """
        self.recovering = True
        self._held = []
        self._away = True

    def recovered(
        self,
        epoch: bytes,
        current: int,
        entries: list[Envelope],
        at: Envelope | None = None,
    ) -> Recovered:
        """
        Feed the history fetched after a hole or a reconnection.

        @param epoch: the topic's epoch now (C{b""}: no history at all).
        @param current: the topic's last offset now.
        @param entries: the history after this cursor's offset (from the
            start of C{epoch} when it differs), oldest first.
        @param at: the history's entry at this cursor's offset, if it has
            one.
        """
        away, self._away = self._away, False
        gap = False
        deliver: list[Envelope] = []
        if self.epoch is None:
            # We never knew a position: start from now, owing nothing.
            self.epoch, self.offset = epoch, current
        else:
            if epoch == self.epoch and current < self.offset:
                # Rewound (a restart from an older snapshot, a failover to
                # a replica that lagged): what the history holds was
                # delivered already, and what came after it is lost.
                gap = True
                self.offset, self._mark = current, None
            elif (
                at is not None
                and self._mark is not None
                and (at.epoch, at.offset) == (self.epoch, self.offset)
                and _mark(at) != self._mark
            ):
                # Another frame where we delivered ours: the topic rewound
                # and was published past us again.  Lost: what was written
                # in its place before our offset.
                gap = True
            elif epoch != self.epoch:
                # The history we knew was reset: what was published to it
                # while we were away cannot be told.  (A topic that had no
                # history then lost nothing.)
                gap = away and self.epoch != b""
                self.epoch, self.offset = epoch, 0
            fresh = [e for e in entries if e.epoch == epoch and e.offset > self.offset]
            if current > self.offset and (
                not fresh or fresh[0].offset != self.offset + 1
            ):
                gap = True
            deliver.extend(fresh)
            if fresh:
                self._mark = _mark(fresh[-1])
            if fresh and fresh[-1].offset < current:
                # The fetch stopped at its limit (the stream holds more
                # than this node's --broker-history): fetch the rest
                # before anything held.
                self.offset = fresh[-1].offset
                return Recovered(gap, len(deliver), deliver, True)
            self.offset = max(current, self.offset)
        history = len(deliver)
        self.recovering = False
        held, self._held = self._held, []
        overflow, self._overflow = self._overflow, False
        fetch_again = False
        for envelope in held:
            if fetch_again:
                self._held.append(envelope)
                continue
            now, fetch_again = self.live(envelope)
            deliver.extend(now)
        if overflow and not fetch_again:
            # Frames were dropped beyond the hold limit: fetch them now.
            self.recovering, fetch_again = True, True
        return Recovered(gap, history, deliver, fetch_again)


def _mark(envelope: Envelope) -> tuple[float, bytes, int]:
    return (envelope.published, envelope.origin, hash(envelope.frame))
