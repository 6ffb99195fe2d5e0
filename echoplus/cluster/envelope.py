"""
The record a Redis broker carries for one published frame, on the topic's
channel and in its history: sans-IO, so that both the engine and its tests
read it without a socket.

Wire form (built by the publish script in L{echoplus.cluster.scripts}, one
line of ASCII fields and then the frame's bytes as they are)::

    <epoch> <offset> <published> <origin> <frame>

  - C{epoch}: the topic's history generation, a random token chosen by the
    first publish after the topic's history was created (or lost);
  - C{offset}: 1, 2, 3... within the epoch, with no holes;
  - C{published}: the publishing node's clock, in seconds since the epoch
    (publish-to-delivery latency);
  - C{origin}: C{-}, or C{<node>/<connection id>} of a sender that must not
    receive it (C{broadcast});
  - C{frame}: what every subscriber receives.
"""

from __future__ import annotations

import attrs

__all__ = ["Envelope", "decode_envelope", "encode_envelope"]


@attrs.frozen
class Envelope:
    """
    One published frame as a node receives it.
    """

    epoch: bytes
    offset: int
    published: float
    origin: bytes
    frame: bytes

    def skip_id(self, node: bytes) -> int | None:
        """
        The id of the local connection that must not receive this frame
        (its sender), when the sender is on C{node}; else L{None}.
        """
        if self.origin == b"-":
            return None
        origin_node, _, connection = self.origin.rpartition(b"/")
        return int(connection) if origin_node == node else None


def encode_envelope(
    epoch: bytes, offset: int, published: float, origin: bytes, frame: bytes
) -> bytes:
    """
    The wire form of an envelope (what the publish script builds; used by
    fakes and tests).
    """
    return b"%b %d %.6f %b %b" % (epoch, offset, published, origin, frame)


def decode_envelope(data: bytes) -> Envelope:
    """
    Parse the wire form.

    @raise ValueError: it is not one.
    """
    fields = data.split(b" ", 4)
    if len(fields) != 5:
        raise ValueError("not an echoplus broker envelope")
    epoch, offset, published, origin, frame = fields
    return Envelope(epoch, int(offset), float(published), origin, frame)
