"""
A framing seen from the client side: frame requests, split and decode
replies, with the same protocol class (and so the same sans-IO codecs and
C{encode_frame}/C{decode_frame} hooks) the server uses.

C{echoplus send}, L{echoplus.testing.FrameHarness} clients and the pytest
plugin's live clients all talk to a listener through this one piece.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import attrs

from echoplus.config import ListenerSettings
from echoplus.framing import Decoder, Encoder
from echoplus.protocols import FramedProtocol, find_framing

__all__ = ["UNLIMITED", "ClientCodec"]

#: The C{max_frame} of a client's decoder: a client accepts whatever the
#: server chose to send.
UNLIMITED = 2**31 - 1


@attrs.define
class ClientCodec:
    """
    One framing, client side.

    @ivar decoder: the reply decoder; after L{decode}, its C{error} tells
        whether the reply stream was malformed.
    """

    _protocol: FramedProtocol
    _encoder: Encoder
    decoder: Decoder

    @classmethod
    def for_protocol(
        cls, protocol: FramedProtocol, max_frame: int = UNLIMITED
    ) -> ClientCodec:
        """
        The codec of a protocol instance (one whose C{factory} is set, since
        the line framing reads its delimiter from the listener's settings).
        """
        make_client_codec = getattr(protocol, "make_client_codec", None)
        if make_client_codec is not None:  # a framing whose client side differs
            codec = make_client_codec(max_frame)
            return cls(protocol, codec, codec)
        return cls(protocol, protocol.make_encoder(), protocol.make_decoder(max_frame))

    @classmethod
    def for_framing(
        cls,
        framing: str,
        delimiter: bytes = b"\n",
        max_frame: int = UNLIMITED,
        **settings: Any,
    ) -> ClientCodec:
        """
        The codec of a framing name or C{module:Class} path.

        @param settings: other L{ListenerSettings} fields the framing's
            client needs (C{ws_path}, ...).
        @raise echoplus.errors.ConfigError: no such framing.
        """
        protocol = find_framing(framing)()
        protocol.factory = SimpleNamespace(  # type: ignore[assignment]
            settings=ListenerSettings(
                delimiter=delimiter, max_frame=max_frame, **settings
            )
        )
        return cls.for_protocol(protocol, max_frame)

    def opening(self) -> bytes:
        """
        What a client sends first, right after connecting: the handshake
        of a framing that has one (C{websocket}); empty for the others.
        """
        opening = getattr(self.decoder, "opening", None)
        return opening() if opening is not None else b""

    def encode(self, payloads: Sequence[bytes]) -> bytes:
        """
        Frame C{payloads} into the bytes of one write.

        @raise ValueError: the framing cannot carry one of them.
        """
        protocol = self._protocol
        if protocol._encodes_frames:
            payloads = [protocol.encode_frame(payload) for payload in payloads]
        return self._encoder.encode_batch(list(payloads))

    def decode(self, data: bytes) -> list[bytes]:
        """
        Feed received bytes; return the payloads of the frames they
        complete.  Check C{decoder.error} for a malformed stream.

        @raise ValueError: C{decode_frame} refused a frame.
        """
        frames = self.decoder.feed(data)
        protocol = self._protocol
        if protocol._decodes_frames:
            frames = [protocol.decode_frame(frame) for frame in frames]
        return frames
