"""
The parts of the test kit that L{echoplus.testing} and its live helpers
share: building a test listener's chain and settings, and the in-memory
clock and transport of L{echoplus.testing.FrameHarness}.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import attrs
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echoplus.config import OPTIONS, ListenerSettings
from echoplus.interfaces import IProcessor, IProcessorFactory
from echoplus.processors.base import ProcessorFactory
from echoplus.processors.chain import ProcessorChain, ProcessorEntry, parse_chain
from echoplus.protocols import FramedProtocol, find_framing

#: Bytes a harness transport holds unread before it pauses its producer,
#: like Twisted's own transports (their C{bufferSize}).
HIGH_WATER = 65536

_SPECS = {spec.key: spec for spec in OPTIONS}


class HarnessError(Exception):
    """
    A test used the harness wrongly, e.g. sent on a closed connection.
    """


ProcessorSpec = Any  # str | ProcessorEntry | IProcessor | IProcessorFactory | type


class ObjectChain(ProcessorChain):
    """
    A L{ProcessorChain} whose links may also be processor objects,
    processor factories or classes, not only names.
    """

    def __init__(self, specs: ProcessorSpec | Sequence[ProcessorSpec]) -> None:
        self._objects: dict[int, IProcessorFactory] = {}
        if isinstance(specs, (str, ProcessorEntry)) or not isinstance(
            specs, (list, tuple)
        ):
            specs = [specs]
        entries: list[ProcessorEntry] = []
        for spec in specs:
            if isinstance(spec, str):
                entries += parse_chain(spec)
            elif isinstance(spec, ProcessorEntry):
                entries.append(spec)
            else:
                entry = ProcessorEntry(_name_of(spec))
                self._objects[id(entry)] = _factory_of(spec)
                entries.append(entry)
        if not entries:
            raise HarnessError("FrameHarness needs at least one processor")
        super().__init__(tuple(entries))

    def _find_factory(self, entry: ProcessorEntry) -> IProcessorFactory:
        found = self._objects.get(id(entry))
        return found if found is not None else super()._find_factory(entry)


def _name_of(spec: Any) -> str:
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        return name
    return spec.__name__ if isinstance(spec, type) else type(spec).__name__


def _factory_of(spec: Any) -> IProcessorFactory:
    if IProcessorFactory.providedBy(spec):
        return spec  # type: ignore[no-any-return]
    if IProcessor.providedBy(spec):
        return ProcessorFactory(_name_of(spec), "a processor object", lambda: spec)
    if isinstance(spec, type) and IProcessor.implementedBy(spec):
        return ProcessorFactory(_name_of(spec), "a processor class", spec)
    raise HarnessError(
        f"{spec!r} is not a processor: give a name, a ProcessorEntry, an "
        "IProcessor provider, an IProcessorFactory or a class implementing "
        "IProcessor"
    )


def listener_settings(
    framing: str | type[FramedProtocol],
    processors: tuple[ProcessorEntry, ...],
    limits: dict[str, Any],
) -> ListenerSettings:
    """
    Build the L{ListenerSettings} of a test listener, validating every
    keyword like the command line does.

    @raise TypeError: an unknown keyword; the message names it.
    @raise ValueError: a bad value; the message names the keyword.
    """
    if isinstance(framing, type):
        framing = f"{framing.__module__}:{framing.__qualname__}"
    find_framing(framing)
    fields = set(attrs.fields_dict(ListenerSettings)) - {"framing", "processors"}
    unknown = sorted(set(limits) - fields)
    if unknown:
        raise TypeError(
            f"unknown keyword(s) {', '.join(unknown)}; the listener settings "
            f"are: {', '.join(sorted(fields))}"
        )
    values = {}
    for key, value in limits.items():
        spec = _SPECS.get(key)
        if spec is not None and not (key == "delimiter" and isinstance(value, bytes)):
            try:
                value = spec.parse(value)
            except ValueError as error:
                raise ValueError(f"{key}={value!r}: {error}") from None
        values[key] = value
    return ListenerSettings(framing=framing, processors=processors, **values)


class HarnessClock(Clock):
    """
    A L{Clock} whose C{advance} runs every timed call at its own due time,
    in order, as a reactor would (C{task.Clock} runs them all at the end
    time), and lets the harness settle (deliver closes and queued input)
    after each, as a reactor turn would.
    """

    def __init__(self, settle: Callable[[], None]) -> None:
        super().__init__()
        self._settle = settle

    def advance(self, amount: float) -> None:
        """
        Move time forward by C{amount} seconds, running each due call at its time.
        """
        target = self.seconds() + amount
        for _ in range(100_000):
            due = [
                call.getTime()
                for call in self.getDelayedCalls()
                if call.active() and call.getTime() <= target
            ]
            if not due:
                break
            super().advance(max(min(due) - self.seconds(), 0))
            self._settle()
        super().advance(max(target - self.seconds(), 0))
        self._settle()


class HarnessTransport(StringTransport):
    """
    The server's side of one in-memory connection: records what is written,
    holds it while the client does not read (pausing its producer past
    L{HIGH_WATER}), and supports half-close and abort.
    """

    def __init__(self, peer: Any, host: Any) -> None:
        super().__init__(hostAddress=host, peerAddress=peer, lenient=True)
        self.write_closed = False
        self.reading = True
        self.unread: list[bytes] = []
        self.unread_size = 0
        self.delivered: list[bytes] = []
        self._producer_paused = False

    def write(self, data: bytes) -> None:
        """
        Record C{data}; deliver it, or hold it while the client does not read.
        """
        super().write(data)
        if not data:
            return
        if self.reading:
            self.delivered.append(data)
            return
        self.unread.append(data)
        self.unread_size += len(data)
        if self.unread_size > HIGH_WATER and not self._producer_paused:
            self._producer_paused = True
            if self.producer is not None:
                self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Write every chunk of C{data}, as one write.
        """
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """
        Half-close: the server will write nothing more.
        """
        self.write_closed = True

    def read_all(self) -> None:
        """
        The client reads everything held; the producer resumes.
        """
        self.delivered += self.unread
        self.unread.clear()
        self.unread_size = 0
        if self._producer_paused:
            self._producer_paused = False
            if self.producer is not None and self.connected:
                self.producer.resumeProducing()
