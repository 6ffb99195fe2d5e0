"""
STX/ETX framing: every frame is 0x02 (STX), the payload, then 0x03 (ETX).

Serve it with::

    twistd -n echoplus --framing examples.stx_etx:StxEtxProtocol
"""

from echoplus.protocols import DelimitedProtocol

STX = b"\x02"
ETX = b"\x03"


class StxEtxProtocol(DelimitedProtocol):
    """
    Frames end with ETX (the delimiter) and start with STX (checked and
    stripped by decode_frame, added back by encode_frame).
    """

    delimiter = ETX

    def decode_frame(self, frame: bytes) -> bytes:
        if not frame.startswith(STX):
            raise ValueError("a frame must start with STX")
        return frame[1:]

    def encode_frame(self, payload: bytes) -> bytes:
        return STX + payload
