"""
The C{rot47} processor: an echoplus plugin in its own distribution.

Any module-level object in an C{echoplus/plugins/} directory that provides
C{twisted.plugin.IPlugin} and C{echoplus.interfaces.IProcessorFactory} is a
processor; L{echoplus.processors.ProcessorFactory} provides both.
"""

from __future__ import annotations

from zope.interface import implementer

from echoplus.context import ConnectionContext
from echoplus.interfaces import IProcessor
from echoplus.processors import ProcessorFactory

# Printable ASCII, "!" (33) to "~" (126), rotated by 47 places.
_PRINTABLE = bytes(range(33, 127))
_ROT47 = bytes.maketrans(_PRINTABLE, _PRINTABLE[47:] + _PRINTABLE[:47])


@implementer(IProcessor)
class Rot47:
    """
    Reply with the message's printable ASCII rotated by 47 places; other
    bytes pass unchanged.  Applying it twice gives the message back.
    """

    def process(self, message: bytes, context: ConnectionContext) -> bytes:
        return message.translate(_ROT47)


rot47 = ProcessorFactory(
    name="rot47",
    description="ROT47 of the message's printable ASCII",
    make=Rot47,
)
