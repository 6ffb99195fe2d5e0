"""
Ordered per-connection dispatch of messages through the processor chain.

Synchronous processors run with no L{Deferred} per message: while nothing
is pending, their replies go straight into the caller's output batch.  The
first asynchronous result opens a queue of slots, one per request, and
every later reply (synchronous or not) waits in its slot until the slots
before it are filled: replies leave in request order, whatever order they
complete in.
"""

from __future__ import annotations

from functools import partial
from inspect import isawaitable, iscoroutine
from typing import Any, Callable, Sequence

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    ensureDeferred,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoplus.context import ConnectionContext
from echoplus.errors import ProcessorFailed, ProcessorTimeout, RequestError
from echoplus.interfaces import IBatchProcessor, IProcessor

__all__ = ["OrderedDispatcher"]

_ONLY_BYTES = {bytes}


async def _awaited(awaitable: Any) -> Any:
    """
    Wrap an awaitable that is not a coroutine, so that C{ensureDeferred}
    takes it.
    """
    return await awaitable


class _Slot:
    """
    A request whose reply is pending, or ready but behind a pending one.
    """

    __slots__ = ("deferred", "expired", "replies", "timer")

    def __init__(self, deferred: Deferred[list[bytes]] | None) -> None:
        self.deferred = deferred
        self.replies: list[bytes] | None = None
        self.timer: IDelayedCall | None = None
        self.expired = False


def _position(processes: tuple[Any, ...], process: Any) -> int:
    """
    The index of C{process} in C{processes}, by identity.
    """
    for index, candidate in enumerate(processes):
        if candidate is process:
            return index
    raise ValueError("not in the chain")


class OrderedDispatcher:
    """
    Runs one connection's messages through its chain and releases replies
    in request order.

    @ivar closed: set by L{close}; nothing is delivered afterwards.
    """

    _log = Logger()

    # One dispatcher per connection: slots keep it small (no __dict__).
    __slots__ = (
        "_batch_processes",
        "_cancelling",
        "_clock",
        "_context",
        "_deliver",
        "_names",
        "_on_settled",
        "_out",
        "_processes",
        "_slots",
        "closed",
        "on_async_done",
        "on_error",
        "timeout",
    )

    def __init__(
        self,
        processors: Sequence[tuple[str, IProcessor]],
        context: ConnectionContext,
        deliver: Callable[[list[bytes]], None],
        clock: IReactorTime,
        timeout: float = 0,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        """
        @param processors: the chain, as C{(name, processor)} pairs.
        @param context: passed to every C{process} call.
        @param deliver: called with replies that complete after the call to
            L{dispatch} that received their requests returned.
        @param clock: used for the processor timeout.
        @param timeout: seconds an asynchronous reply may take; 0 for no
            limit.
        @param on_settled: called whenever pending requests complete, so
            that the owner can resume reading or finish closing.
        """
        self._names = tuple(name for name, _ in processors)
        processes: list[Callable[..., Any]] = []
        for _, processor in processors:
            process = processor.process
            if any(process is seen for seen in processes):
                # dispatch() finds a processor's position by identity: make
                # a shared callable (a staticmethod, say) distinct.
                process = partial(process)
            processes.append(process)
        self._processes = tuple(processes)
        self._batch_processes = (
            tuple(processor.process_batch for _, processor in processors)
            if all(IBatchProcessor.providedBy(p) for _, p in processors)
            else None
        )
        self._context = context
        self._deliver = deliver
        self._clock = clock
        self.timeout = timeout
        self._on_settled = on_settled
        # A list, not a deque: an empty deque costs about 600 bytes per
        # connection, and the queue is short (at most the in-flight limit
        # plus one read) and released from its head in one slice.
        self._slots: list[_Slot] = []
        self._out: list[bytes] | None = None
        self._cancelling = 0
        self.closed = False
        #: Called with the kind of every error reply (for metrics), if set.
        self.on_error: Callable[[str], None] | None = None
        #: Called with the seconds each asynchronous request took, from
        #: dispatch until its replies were ready (for metrics), if set.
        self.on_async_done: Callable[[float], None] | None = None

    @property
    def pending(self) -> int:
        """
        How many requests are waiting for their replies to be released.
        """
        return len(self._slots)

    def dispatch(self, messages: Sequence[bytes], out: list[bytes]) -> int:
        """
        Run each message through the chain, appending to C{out} every reply
        that is due now.  Replies that are due later go to C{deliver}.

        @return: how many requests are pending afterwards (L{pending}).
        """
        slots = self._slots
        if self._batch_processes is not None and not slots and len(messages) > 1:
            replies = self._run_batch(messages)
            if replies is not None:
                out += replies
                return 0
        run = self._run
        processes = self._processes
        count = len(processes)
        context = self._context
        append = out.append
        single = processes[0] if count == 1 else None
        self._out = out
        try:
            for message in messages:
                if slots:
                    result = run(0, message)
                elif single is not None:
                    # The fast path for a chain of one: the same as below
                    # without the loop over the chain.
                    try:
                        reply = single(message, context)
                    except RequestError as error:
                        self._report(error.kind)
                        result = [error.payload()]
                    except Exception:
                        result = [self._failed(0, Failure())]
                    else:
                        if type(reply) is bytes:
                            append(reply)
                            continue
                        result = [] if reply is None else self._handle(1, reply)
                else:
                    # The fast path, while nothing is pending: the chain is
                    # run inline and a bytes reply goes straight into the
                    # batch, with no call to _run and no list per message.
                    # Anything else is handled exactly as _run would.  The
                    # position in the chain is looked up only then (each
                    # entry of _processes is a distinct bound method).
                    for process in processes:
                        try:
                            reply = process(message, context)
                        except RequestError as error:
                            self._report(error.kind)
                            result = [error.payload()]
                            break
                        except Exception:
                            index = _position(processes, process)
                            result = [self._failed(index, Failure())]
                            break
                        if type(reply) is bytes:
                            message = reply
                        else:
                            index = _position(processes, process) + 1
                            result = [] if reply is None else self._handle(index, reply)
                            break
                    else:
                        append(message)
                        continue
                if type(result) is list:
                    if slots:
                        slot = _Slot(None)
                        slot.replies = result
                        slots.append(slot)
                    else:
                        out += result
                else:
                    self._wait(result)
            if slots and slots[0].replies is not None:
                self._release()
        finally:
            self._out = None
        return len(slots)

    def _run_batch(self, messages: Sequence[bytes]) -> list[bytes] | None:
        """
        Run a whole read through a chain of L{IBatchProcessor}s: one call
        per processor.  Return L{None} to have the messages processed one
        by one instead (a processor raised, or broke the batch contract).
        """
        batch = messages
        context = self._context
        count = len(messages)
        try:
            for process_batch in self._batch_processes:  # type: ignore[union-attr]
                batch = process_batch(batch, context)
                if type(batch) is not list or len(batch) != count:
                    return None
        except Exception:
            return None  # process() answers each message, errors included
        # The messages themselves passed back (echo) need no check.
        if batch is not messages and set(map(type, batch)) != _ONLY_BYTES:
            return None
        return batch

    def close(self) -> None:
        """
        Cancel every pending request; deliver nothing from now on.
        """
        self.closed = True
        slots, self._slots = self._slots, []
        for slot in slots:
            if slot.deferred is not None and slot.replies is None:
                self._cancel(slot.deferred)
            if slot.timer is not None and slot.timer.active():
                slot.timer.cancel()

    # The chain.

    def _run(self, index: int, message: bytes) -> Any:
        """
        Run C{message} through the chain from processor C{index}; return the
        replies, or a L{Deferred} of them.
        """
        processes = self._processes
        context = self._context
        count = len(processes)
        while index < count:
            try:
                result = processes[index](message, context)
            except RequestError as error:
                self._report(error.kind)
                return [error.payload()]
            except Exception:
                return [self._failed(index, Failure())]
            index += 1
            if type(result) is bytes:
                message = result
            elif result is None:
                return []
            else:
                return self._handle(index, result)
        return [message]

    def _handle(self, index: int, result: Any) -> Any:
        """
        Carry on from processor C{index} with the previous processor's
        C{result}, whatever its type.
        """
        if type(result) is bytes:
            return self._run(index, result)
        if result is None:
            return []
        if isinstance(result, (bytearray, memoryview)):
            return self._run(index, bytes(result))
        if isinstance(result, (list, tuple)):
            return self._fan_out(index, result)
        if isinstance(result, Deferred) or isawaitable(result):
            if isinstance(result, Deferred):
                deferred = result
            else:
                deferred = ensureDeferred(
                    result if iscoroutine(result) else _awaited(result)
                )
            return deferred.addCallbacks(
                lambda value: self._handle(index, value),
                lambda failure: self._async_failed(index - 1, failure),
            )
        try:
            raise TypeError(
                f"process() returned {type(result).__name__}, not bytes, None, "
                "a list of bytes or a Deferred"
            )
        except TypeError:
            return [self._failed(index - 1, Failure())]

    def _fan_out(self, index: int, results: Sequence[Any]) -> Any:
        """
        Pass each of several outputs through the rest of the chain.
        """
        parts = [self._handle(index, item) for item in results]
        if not any(isinstance(part, Deferred) for part in parts):
            return [reply for part in parts for reply in part]
        gathered = gatherResults(
            [part if isinstance(part, Deferred) else succeed(part) for part in parts],
            consumeErrors=True,
        )
        # Only a cancellation gets past the parts' own error handling:
        # unwrap it so that a timeout is still recognised as one.
        return gathered.addCallbacks(
            lambda lists: [reply for part in lists for reply in part],
            lambda failure: failure.value.subFailure
            if failure.check(FirstError)
            else failure,
        )

    def _failed(self, index: int, failure: Failure) -> bytes:
        """
        Log a processor's failure; return the error payload its request gets.
        """
        name = self._names[index]
        self._report("processor-failed")
        self._log.failure(
            "Processor {processor} failed on connection {connection_id}",
            failure,
            processor=name,
            connection_id=self._context.id,
        )
        return ProcessorFailed(name).payload()

    def _async_failed(self, index: int, failure: Failure) -> Any:
        """
        Turn the failure of processor C{index}'s Deferred into its request's
        error reply; let our own cancellations through to L{_unfinished}.
        """
        if self._cancelling and failure.check(CancelledError):
            return failure  # a timeout or a closed connection
        if failure.check(RequestError):
            self._report(failure.value.kind)
            return [failure.value.payload()]
        return [self._failed(index, failure)]

    # Ordering.

    def _wait(self, deferred: Deferred[list[bytes]]) -> None:
        """
        Queue a slot for a request whose replies are not ready yet.
        """
        slot = _Slot(deferred)
        self._slots.append(slot)
        if self.on_async_done is not None:
            deferred.addBoth(self._async_done, self._clock.seconds())
        deferred.addErrback(self._unfinished, slot)
        deferred.addCallback(self._fill, slot)
        if self.timeout > 0 and slot.replies is None:
            slot.timer = self._clock.callLater(self.timeout, self._expire, slot)

    def _async_done(self, result: Any, started: float) -> Any:
        assert self.on_async_done is not None
        self.on_async_done(self._clock.seconds() - started)
        return result

    def _cancel(self, deferred: Deferred[Any]) -> None:
        """
        Cancel one of our pending Deferreds, telling the cancellation apart
        from a C{CancelledError} a processor raises itself.
        """
        self._cancelling += 1
        try:
            deferred.cancel()
        finally:
            self._cancelling -= 1

    def _expire(self, slot: _Slot) -> None:
        """
        The processor timeout passed: cancel the request, which answers
        C{ERROR timeout} in its slot.
        """
        slot.timer = None
        slot.expired = True
        assert slot.deferred is not None
        self._cancel(slot.deferred)
        if slot.replies is None:  # still paused on something uncancellable
            self._fill(self._unfinished(Failure(CancelledError()), slot), slot)

    def _unfinished(self, failure: Failure, slot: _Slot) -> list[bytes]:
        """
        The replies of a request that did not complete: a timeout, a closed
        connection, or a failure outside any processor.
        """
        if slot.expired:
            self._report("timeout")
            return [
                ProcessorTimeout(f"no reply within {self.timeout:g} seconds").payload()
            ]
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if failure.check(CancelledError) and self.closed:
            return []
        self._log.failure(
            "Unexpected failure on connection {connection_id}",
            failure,
            connection_id=self._context.id,
        )
        return [ProcessorFailed("internal").payload()]

    def _report(self, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(kind)

    def _fill(self, replies: list[bytes], slot: _Slot) -> None:
        """
        Store a request's replies; release them if nothing is ahead.
        """
        if slot.replies is not None:
            return  # answered already (a timeout), this is the late result
        slot.replies = replies
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if self.closed or self._out is not None:
            return  # released at the end of dispatch()
        if self._slots and self._slots[0] is slot:
            self._release()

    def _release(self) -> None:
        """
        Hand over the replies of every ready slot at the head of the queue.
        """
        slots = self._slots
        ready: list[bytes] = []
        done = 0
        for slot in slots:
            if slot.replies is None:
                break
            ready += slot.replies
            done += 1
        del slots[:done]
        if self._out is not None:
            self._out += ready
        else:
            if ready:
                self._deliver(ready)
            if self._on_settled is not None:
                self._on_settled()
