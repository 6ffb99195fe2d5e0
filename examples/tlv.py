"""
Type-length-value framing: a 1-byte type, a 2-byte big-endian length, then
that many bytes of value.  Processors see the type byte followed by the
value, and reply the same way (so error replies have the type C{E}).

Serve it with::

    twistd -n echoplus --framing examples.tlv:TlvProtocol
"""

import struct

from echoplus.errors import FrameTooLong
from echoplus.framing import BufferedDecoder
from echoplus.protocols import FramedProtocol

LENGTH = struct.Struct(">H")


class TlvDecoder(BufferedDecoder):
    """
    A sans-IO TLV decoder: BufferedDecoder holds partial input for us.
    """

    def parse(self, data: bytes, frames: list[bytes]) -> int:
        offset = 0
        while len(data) - offset >= 3:
            (length,) = LENGTH.unpack_from(data, offset + 1)
            if length > self.max_frame:
                self.error = FrameTooLong(f"value of {length} bytes is too long")
                return len(data)
            end = offset + 3 + length
            if end > len(data):
                self.need = end - offset
                return offset
            frames.append(data[offset : offset + 1] + data[offset + 3 : end])
            offset = end
        self.need = 3
        return offset


class TlvEncoder:
    """
    Encode a type byte followed by a value; ValueError if it cannot be.
    """

    def encode(self, payload: bytes) -> bytes:
        if not payload:
            raise ValueError("a TLV payload needs at least its type byte")
        return payload[:1] + LENGTH.pack(len(payload) - 1) + payload[1:]

    def encode_batch(self, payloads: list[bytes]) -> bytes:
        return b"".join([self.encode(payload) for payload in payloads])


class TlvProtocol(FramedProtocol):
    """
    The TLV wire format: our own decoder and encoder.
    """

    def make_decoder(self, max_frame: int) -> TlvDecoder:
        return TlvDecoder(max_frame)

    def make_encoder(self) -> TlvEncoder:
        return TlvEncoder()
