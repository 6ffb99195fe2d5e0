"""
Tests for L{echoplus.dispatch.OrderedDispatcher}: ordering, the synchronous
fast path, fan-out, timeouts, cancellation and failure isolation.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echoplus.config import ListenerSettings
from echoplus.context import ConnectionContext
from echoplus.dispatch import OrderedDispatcher
from echoplus.errors import ProcessorFailed, RequestError
from echoplus.factory import EchoPlusFactory
from echoplus.interfaces import IBatchProcessor, IProcessor
from echoplus.processors import parse_chain
from echoplus.protocols import FramedProtocol
from tests.sample_processors import SECRET, AsyncBoom, Boom, Controlled, Refuse

MODES = ("sync", "deferred", "coroutine", "fired", "list", "none")


@implementer(IProcessor)
class Planned:
    """
    Appends C{.tag} to each message, answering the way a plan says: at
    once, through a Deferred or a coroutine fired later, an already fired
    Deferred, a list of two outputs, or no reply.
    """

    def __init__(self, tag: bytes, plan: dict[bytes, str], waiting: list[Any]):
        self.tag = tag
        self.plan = plan
        self.waiting = waiting

    def process(self, message: bytes, context: ConnectionContext) -> Any:
        reply = message + b"." + self.tag
        mode = self.plan.get(message, "sync")
        if mode == "sync":
            return reply
        if mode == "none":
            return None
        if mode == "list":
            return [reply + b"a", reply + b"b"]
        if mode == "fired":
            return succeed(reply)
        deferred: Deferred[bytes] = Deferred()
        self.waiting.append((deferred, reply))
        if mode == "deferred":
            return deferred
        return self._later(deferred)

    async def _later(self, deferred: Deferred[bytes]) -> bytes:
        return await deferred


def expected_replies(
    messages: list[bytes], tags: list[bytes], plan: dict[bytes, str]
) -> list[bytes]:
    """
    What the chain must answer, in order, computed without Twisted.
    """
    replies = []
    for message in messages:
        outputs = [message]
        for tag in tags:
            following = []
            for output in outputs:
                reply = output + b"." + tag
                mode = plan.get(output, "sync")
                if mode == "list":
                    following += [reply + b"a", reply + b"b"]
                elif mode != "none":
                    following.append(reply)
            outputs = following
        replies += outputs
    return replies


def make_context(clock: Clock | None = None) -> ConnectionContext:
    return ConnectionContext(7, None, "test", clock or Clock(), push=lambda _: None)


class Recorder:
    """
    Collects what a dispatcher delivers late, and how often it settled.
    """

    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.settled = 0

    def deliver(self, replies: list[bytes]) -> None:
        self.delivered += replies

    def on_settled(self) -> None:
        self.settled += 1


def make_dispatcher(
    processors: list[tuple[str, Any]], timeout: float = 0, clock: Clock | None = None
) -> tuple[OrderedDispatcher, Recorder, Clock]:
    clock = clock or Clock()
    recorder = Recorder()
    dispatcher = OrderedDispatcher(
        processors,
        make_context(clock),
        recorder.deliver,
        clock,
        timeout,
        recorder.on_settled,
    )
    return dispatcher, recorder, clock


class OrderingTests(SynchronousTestCase):
    """
    Replies leave in request order, whatever order they complete in.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        count=st.integers(1, 12),
        tags=st.lists(st.sampled_from([b"x", b"y", b"z"]), min_size=1, max_size=3),
        modes=st.lists(st.sampled_from(MODES), min_size=60, max_size=60),
        data=st.data(),
    )
    def test_random_completion_order(
        self, count: int, tags: list[bytes], modes: list[str], data: Any
    ) -> None:
        """
        A chain mixing synchronous, Deferred, coroutine, already-fired and
        fanning-out processors answers in request order when its Deferreds
        fire in a random order.
        """
        messages = [b"%d" % i for i in range(count)]
        # Every output a processor can see, in a fixed order, gets a mode.
        seen: list[bytes] = []
        outputs = list(messages)
        for tag in tags:
            seen += outputs
            outputs = [o + b"." + tag + s for o in outputs for s in (b"", b"a", b"b")]
        plan = dict(zip(seen, modes, strict=False))
        waiting: list[Any] = []
        chain = [(tag.decode(), Planned(tag, plan, waiting)) for tag in tags]
        dispatcher, recorder, _ = make_dispatcher(chain)
        out: list[bytes] = []
        dispatcher.dispatch(messages, out)
        fired = 0
        while waiting:
            index = data.draw(st.integers(0, len(waiting) - 1), label="fire")
            deferred, reply = waiting.pop(index)
            deferred.callback(reply)
            fired += 1
            self.assertLess(fired, 10_000)
        self.assertEqual(
            out + recorder.delivered, expected_replies(messages, tags, plan)
        )
        self.assertEqual(dispatcher.pending, 0)

    def test_later_request_waits_for_earlier(self) -> None:
        """
        A synchronous reply to a later request waits behind a pending one and
        both leave together, in order, when the earlier one completes.
        """
        plan = {b"1": "deferred"}
        waiting: list[Any] = []
        dispatcher, recorder, _ = make_dispatcher([("p", Planned(b"p", plan, waiting))])
        out: list[bytes] = []
        dispatcher.dispatch([b"0", b"1", b"2"], out)
        self.assertEqual(out, [b"0.p"])
        self.assertEqual(dispatcher.pending, 2)
        deferred, reply = waiting.pop()
        deferred.callback(reply)
        self.assertEqual(recorder.delivered, [b"1.p", b"2.p"])
        self.assertEqual(recorder.settled, 1)

    def test_already_fired_deferred(self) -> None:
        """
        A Deferred that has already fired answers within the same dispatch.
        """
        dispatcher, recorder, _ = make_dispatcher(
            [("p", Planned(b"p", {b"0": "fired"}, []))]
        )
        out: list[bytes] = []
        dispatcher.dispatch([b"0", b"1"], out)
        self.assertEqual(out, [b"0.p", b"1.p"])
        self.assertEqual(recorder.delivered, [])
        self.assertEqual(dispatcher.pending, 0)

    def test_any_awaitable(self) -> None:
        """
        A processor may return any awaitable, not only a coroutine or a
        Deferred.
        """

        class Awaitable:
            def __init__(self, deferred: Deferred[bytes]) -> None:
                self.deferred = deferred

            def __await__(self) -> Any:
                return (yield from self.deferred.__await__())

        @implementer(IProcessor)
        class Later:
            def __init__(self) -> None:
                self.deferred: Deferred[bytes] = Deferred()

            def process(self, message: bytes, context: Any) -> Awaitable:
                return Awaitable(self.deferred)

        later = Later()
        dispatcher, recorder, _ = make_dispatcher([("later", later), ("up", Boom())])
        dispatcher.dispatch([b"x"], [])
        later.deferred.callback(b"done")
        self.assertEqual(recorder.delivered, [b"done"])

    def test_list_fans_out_through_rest_of_chain(self) -> None:
        """
        Each reply of a processor that returns a list goes through the rest
        of the chain, asynchronous links included.
        """
        waiting: list[Any] = []
        plan = {b"m": "list", b"m.1a": "deferred", b"m.1b": "coroutine"}
        chain = [
            ("one", Planned(b"1", plan, waiting)),
            ("two", Planned(b"2", plan, waiting)),
        ]
        dispatcher, recorder, _ = make_dispatcher(chain)
        out: list[bytes] = []
        dispatcher.dispatch([b"m"], out)
        self.assertEqual(out, [])
        # Complete the second branch first.
        for deferred, reply in reversed(waiting):
            deferred.callback(reply)
        self.assertEqual(recorder.delivered, [b"m.1a.2", b"m.1b.2"])


class FastPathTests(SynchronousTestCase):
    """
    Synchronous processors cost no Deferred per message.
    """

    def test_sync_chain_creates_no_deferred(self) -> None:
        """
        Dispatching through synchronous processors creates no Deferred at
        all and answers within the call.
        """
        created = []
        original = Deferred.__init__

        def counting_init(self: Deferred[Any], *args: Any, **kwargs: Any) -> None:
            created.append(self)
            original(self, *args, **kwargs)

        self.patch(Deferred, "__init__", counting_init)
        plan = {b"3": "list", b"5": "none"}
        chain = [("a", Planned(b"a", plan, [])), ("b", Planned(b"b", plan, []))]
        dispatcher, recorder, _ = make_dispatcher(chain, timeout=30)
        out: list[bytes] = []
        messages = [b"%d" % i for i in range(200)]
        dispatcher.dispatch(messages, out)
        self.assertEqual(created, [])
        self.assertEqual(out, expected_replies(messages, [b"a", b"b"], plan))
        self.assertEqual(dispatcher.pending, 0)
        # The counter does see Deferreds when there are some.
        succeed(None)
        self.assertEqual(len(created), 1)

    def test_shared_callable_keeps_chain_positions(self) -> None:
        """
        One callable serving several links (a staticmethod) still fails
        under the right name and carries on from the right link.
        """

        @implementer(IProcessor)
        class Bang:
            @staticmethod
            def process(message: bytes, context: Any) -> Any:
                if message == b"fan":
                    return [b"x", b"y"]
                if message.endswith(b"!!!"):
                    raise RuntimeError("too loud")
                return message + b"!"

        chain = [("first", Bang()), ("second", Bang()), ("third", Bang())]
        dispatcher, _, _ = make_dispatcher(chain)
        out: list[bytes] = []
        dispatcher.dispatch([b"a", b"a!", b"fan"], out)
        self.assertEqual(out[0], b"a!!!")
        self.assertEqual(out[1], ProcessorFailed("third").payload())
        self.assertEqual(out[2:], [b"x!!", b"y!!"])
        self.flushLoggedErrors(RuntimeError)


class TimeoutTests(SynchronousTestCase):
    """
    A reply not ready within the processor timeout becomes C{ERROR timeout}.
    """

    def test_timeout_in_its_slot(self) -> None:
        """
        A timed-out request answers C{ERROR timeout: ...} in its own slot,
        its Deferred is cancelled, and later requests still answer in order.
        """
        controlled = Controlled()
        dispatcher, recorder, clock = make_dispatcher([("slow", controlled)], timeout=2)
        out: list[bytes] = []
        dispatcher.dispatch([b"first", b"second"], out)
        clock.advance(1)
        controlled.fire(1)  # "second" completes first, waits for "first"
        self.assertEqual(recorder.delivered, [])
        clock.advance(1)
        self.assertEqual(controlled.cancelled, [b"first"])
        self.assertEqual(len(recorder.delivered), 2)
        self.assertTrue(recorder.delivered[0].startswith(b"ERROR timeout: "))
        self.assertEqual(recorder.delivered[1], b"second")
        out = []
        dispatcher.dispatch([b"third"], out)
        controlled.fire(-1)
        self.assertEqual(recorder.delivered[2:], [b"third"])
        self.assertEqual(dispatcher.pending, 0)

    def test_timeout_of_fanned_out_request(self) -> None:
        """
        A request whose outputs fan out to several pending Deferreds times
        out as one, with an C{ERROR timeout} reply.
        """
        controlled = Controlled()
        chain = [("fan", Planned(b"f", {b"m": "list"}, [])), ("slow", controlled)]
        dispatcher, recorder, clock = make_dispatcher(chain, timeout=1)
        dispatcher.dispatch([b"m"], [])
        clock.advance(1)
        self.assertEqual(len(recorder.delivered), 1)
        self.assertTrue(recorder.delivered[0].startswith(b"ERROR timeout: "))
        self.assertEqual(sorted(controlled.cancelled), [b"m.fa", b"m.fb"])

    @settings(max_examples=100, deadline=None)
    @given(
        outcomes=st.lists(
            st.sampled_from(["sync", "fire", "hang", "fail"]), min_size=1, max_size=15
        ),
        data=st.data(),
    )
    def test_timeouts_keep_order(self, outcomes: list[str], data: Any) -> None:
        """
        Whatever mix of immediate, late, failing and never-answered requests,
        fired in any order, each request answers once, in its own slot:
        its reply, C{ERROR processor-failed} or C{ERROR timeout}.
        """
        plan = {
            b"%d" % i: "sync" if o == "sync" else "deferred"
            for i, o in enumerate(outcomes)
        }
        waiting: list[Any] = []
        dispatcher, recorder, clock = make_dispatcher(
            [("p", Planned(b"p", plan, waiting))], timeout=5
        )
        out: list[bytes] = []
        dispatcher.dispatch([b"%d" % i for i in range(len(outcomes))], out)
        by_reply = {reply: deferred for deferred, reply in waiting}
        late = [i for i, o in enumerate(outcomes) if o in ("fire", "fail")]
        order = data.draw(st.permutations(late), label="order")
        clock.advance(data.draw(st.floats(0, 4.9), label="before"))
        for i in order:
            deferred = by_reply[b"%d.p" % i]
            if outcomes[i] == "fire":
                deferred.callback(b"%d.p" % i)
            else:
                deferred.errback(ValueError(SECRET))
        clock.advance(5)
        expected = {
            "sync": lambda i: b"%d.p" % i,
            "fire": lambda i: b"%d.p" % i,
            "fail": lambda i: b"ERROR processor-failed: p",
            "hang": lambda i: b"ERROR timeout: no reply within 5 seconds",
        }
        self.assertEqual(
            out + recorder.delivered,
            [expected[o](i) for i, o in enumerate(outcomes)],
        )
        self.assertEqual(dispatcher.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.flushLoggedErrors(ValueError)

    def test_timeout_of_uncancellable_deferred(self) -> None:
        """
        A Deferred that cannot run its callbacks when cancelled (it is
        paused) still answers C{ERROR timeout} on time, and its late result
        is dropped.
        """

        @implementer(IProcessor)
        class Stuck:
            def __init__(self) -> None:
                self.deferreds: list[Deferred[bytes]] = []

            def process(self, message: bytes, context: Any) -> Deferred[bytes]:
                deferred: Deferred[bytes] = Deferred()
                deferred.pause()
                self.deferreds.append(deferred)
                return deferred

        stuck = Stuck()
        dispatcher, recorder, clock = make_dispatcher([("stuck", stuck)], timeout=1)
        dispatcher.dispatch([b"x"], [])
        clock.advance(1)
        self.assertEqual(
            recorder.delivered, [b"ERROR timeout: no reply within 1 seconds"]
        )
        self.assertEqual(dispatcher.pending, 0)
        stuck.deferreds[0].unpause()
        self.assertEqual(len(recorder.delivered), 1)
        self.flushLoggedErrors(CancelledError)

    def test_zero_timeout_waits_forever(self) -> None:
        """
        With a timeout of 0 no timer is set and a late reply still arrives.
        """
        controlled = Controlled()
        dispatcher, recorder, clock = make_dispatcher([("slow", controlled)], timeout=0)
        dispatcher.dispatch([b"late"], [])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10**6)
        controlled.fire()
        self.assertEqual(recorder.delivered, [b"late"])


class CloseTests(SynchronousTestCase):
    """
    Closing cancels what is pending and delivers nothing more.
    """

    def test_close_cancels_pending(self) -> None:
        """
        L{OrderedDispatcher.close} cancels every pending Deferred and its
        timer, and nothing is delivered afterwards.
        """
        controlled = Controlled()
        dispatcher, recorder, clock = make_dispatcher([("slow", controlled)], timeout=5)
        dispatcher.dispatch([b"a", b"b"], [])
        remaining = list(controlled.pending)
        dispatcher.close()
        self.assertEqual(controlled.cancelled, [b"a", b"b"])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(dispatcher.pending, 0)
        self.assertTrue(all(d.called for _, d in remaining))
        self.assertEqual(recorder.delivered, [])
        self.assertEqual(recorder.settled, 0)


class FailureTests(SynchronousTestCase):
    """
    A processor's fault costs its request only.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def failure_events(self) -> list[LogEvent]:
        return [event for event in self.events if "log_failure" in event]

    def test_sync_exception(self) -> None:
        """
        A synchronous exception answers C{ERROR processor-failed: <name>}
        without its text, later requests are answered, and the traceback is
        logged once with the connection id.
        """
        dispatcher, _, _ = make_dispatcher([("boomer", Boom())])
        out: list[bytes] = []
        dispatcher.dispatch([b"ok", b"boom!", b"fine"], out)
        self.assertEqual(out, [b"ok", b"ERROR processor-failed: boomer", b"fine"])
        self.assertNotIn(SECRET.encode(), b"".join(out))
        [event] = self.failure_events()
        self.assertEqual(event["connection_id"], 7)
        self.assertEqual(event["processor"], "boomer")
        self.assertIn(SECRET, event["log_failure"].getTraceback())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_async_exception(self) -> None:
        """
        An exception in a coroutine answers C{ERROR processor-failed} and
        is logged once, with its traceback and the connection id.
        """
        dispatcher, _, _ = make_dispatcher([("echo", Boom()), ("coro", AsyncBoom())])
        out: list[bytes] = []
        dispatcher.dispatch([b"hi", b"boom"], out)
        self.assertEqual(out, [b"hi", b"ERROR processor-failed: echo"])
        self.flushLoggedErrors(RuntimeError)
        dispatcher2, _, _ = make_dispatcher([("coro", AsyncBoom())])
        out = []
        dispatcher2.dispatch([b"boom", b"after"], out)
        self.assertEqual(out, [b"ERROR processor-failed: coro", b"after"])
        events = [e for e in self.failure_events() if e["processor"] == "coro"]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["connection_id"], 7)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_errback_in_deferred(self) -> None:
        """
        A Deferred that fails later answers C{ERROR processor-failed} in its
        slot and the text of the exception stays off the wire.
        """
        controlled = Controlled()
        dispatcher, recorder, _ = make_dispatcher([("slow", controlled)])
        dispatcher.dispatch([b"a", b"b"], [])
        _, deferred = controlled.pending.pop(0)
        deferred.errback(ValueError(SECRET))
        controlled.fire()
        self.assertEqual(recorder.delivered, [b"ERROR processor-failed: slow", b"b"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_processor_cancelled_error(self) -> None:
        """
        A C{CancelledError} of the processor's own (not a timeout, not a
        close) still answers C{ERROR processor-failed}: no request is left
        without a reply.
        """

        @implementer(IProcessor)
        class GivesUp:
            async def process(self, message: bytes, context: Any) -> bytes:
                inner: Deferred[bytes] = Deferred()
                inner.cancel()
                return await inner

        dispatcher, _, _ = make_dispatcher([("gives-up", GivesUp())], timeout=5)
        out: list[bytes] = []
        dispatcher.dispatch([b"a", b"b"], out)
        self.assertEqual(out, [b"ERROR processor-failed: gives-up"] * 2)
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 2)

    def test_request_error(self) -> None:
        """
        C{RequestError("why")}, raised or as a Deferred's failure, answers
        C{ERROR bad-request: why} and logs no traceback.
        """
        dispatcher, _, _ = make_dispatcher([("no", Refuse("not today"))])
        out: list[bytes] = []
        dispatcher.dispatch([b"x"], out)
        self.assertEqual(out, [b"ERROR bad-request: not today"])
        controlled = Controlled()
        dispatcher, recorder, _ = make_dispatcher([("slow", controlled)])
        dispatcher.dispatch([b"x"], [])
        controlled.pending.pop()[1].errback(RequestError("later"))
        self.assertEqual(recorder.delivered, [b"ERROR bad-request: later"])
        self.assertEqual(self.failure_events(), [])

    def test_bad_return_type(self) -> None:
        """
        A processor returning something that is not a reply fails its
        request like an exception.
        """

        @implementer(IProcessor)
        class Wrong:
            def process(self, message: bytes, context: Any) -> Any:
                return 42

        dispatcher, _, _ = make_dispatcher([("wrong", Wrong())])
        out: list[bytes] = []
        dispatcher.dispatch([b"x"], out)
        self.assertEqual(out, [b"ERROR processor-failed: wrong"])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


def connect(chain: str, **limits: Any) -> tuple[FramedProtocol, StringTransport, Clock]:
    """
    A line protocol of a listener serving C{chain}, connected to a
    L{StringTransport}, timed by a L{Clock}.
    """
    clock = Clock()
    listener = ListenerSettings(
        endpoint="test", processors=parse_chain(chain), **limits
    )
    factory = EchoPlusFactory(listener, clock)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def slow_of(protocol: FramedProtocol) -> Controlled:
    """
    The L{Controlled} processor in a connection's chain.
    """
    [controlled] = [p for _, p in protocol.processors if isinstance(p, Controlled)]
    return controlled


CONTROLLED = "tests.sample_processors:Controlled"


class ProtocolDispatchTests(SynchronousTestCase):
    """
    The protocol's side of dispatch: flow control, timeouts and closing.
    """

    def test_inflight_limit_pauses_and_resumes(self) -> None:
        """
        Reading pauses once C{max_inflight} requests are pending and resumes
        when their replies drain, with every reply in order.
        """
        protocol, transport, _ = connect(CONTROLLED, max_inflight=3)
        controlled = slow_of(protocol)
        protocol.dataReceived(b"a\nb\n")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"c\n")
        self.assertEqual(transport.producerState, "paused")
        controlled.fire(1)  # b is ready but waits behind a
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        controlled.fire(0)  # a: a and b leave, one request remains
        self.assertEqual(transport.value(), b"a\nb\n")
        self.assertEqual(transport.producerState, "producing")
        controlled.fire()
        self.assertEqual(transport.value(), b"a\nb\nc\n")
        self.assertEqual(transport.producerState, "producing")

    def test_timeout_error_frame(self) -> None:
        """
        A request not answered within C{processor_timeout} gets
        C{ERROR timeout: ...} in its slot and the connection goes on.
        """
        protocol, transport, clock = connect(
            f"{CONTROLLED},upper", processor_timeout=1.5
        )
        controlled = slow_of(protocol)
        protocol.dataReceived(b"slow\nfast\n")
        controlled.fire(1)
        clock.advance(1.5)
        self.assertEqual(
            transport.value(), b"ERROR timeout: no reply within 1.5 seconds\nFAST\n"
        )
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"again\n")
        controlled.fire(-1)
        self.assertTrue(transport.value().endswith(b"AGAIN\n"))

    def test_disconnect_cancels_and_writes_nothing(self) -> None:
        """
        When the connection is lost its pending Deferreds are cancelled,
        their timers stop, and nothing is written to the closed transport.
        """
        protocol, transport, clock = connect(CONTROLLED, processor_timeout=5)
        controlled = slow_of(protocol)
        protocol.dataReceived(b"one\ntwo\n")
        pending = list(controlled.pending)
        transport.loseConnection()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(controlled.cancelled, [b"one", b"two"])
        self.assertTrue(all(deferred.called for _, deferred in pending))
        clock.advance(10)
        self.assertEqual(transport.value(), b"")

    def test_delay_builtin_orders_and_times_out(self) -> None:
        """
        The C{delay} built-in answers after its delay on the connection's
        clock, and a delay past the timeout is an C{ERROR timeout}.
        """
        protocol, transport, clock = connect("delay(seconds=2)", processor_timeout=3)
        protocol.dataReceived(b"x\ny\n")
        clock.advance(1.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertEqual(transport.value(), b"x\ny\n")
        protocol, transport, clock = connect("delay(seconds=5)", processor_timeout=3)
        protocol.dataReceived(b"x\n")
        clock.advance(3)
        self.assertEqual(
            transport.value(), b"ERROR timeout: no reply within 3 seconds\n"
        )
        clock.advance(10)
        self.assertEqual(
            transport.value(), b"ERROR timeout: no reply within 3 seconds\n"
        )


@implementer(IBatchProcessor)
class CountingBatch:
    """
    Upper-cases; counts its calls; can be told to break the batch contract.
    """

    def __init__(self, batch_result: Any = None) -> None:
        self.process_calls = 0
        self.batch_calls = 0
        self.batch_result = batch_result

    def process(self, message: bytes, context: object) -> bytes:
        self.process_calls += 1
        return message.upper()

    def process_batch(self, messages: list[bytes], context: object) -> Any:
        self.batch_calls += 1
        if self.batch_result is not None:
            return self.batch_result
        return [message.upper() for message in messages]


class BatchProcessorTests(SynchronousTestCase):
    """
    Chains of L{IBatchProcessor}s process a read in one call per processor,
    and fall back to one call per message whenever that is not safe.
    """

    def _harness(self, *processors: object, **limits: Any) -> Any:
        from echoplus.testing import FrameHarness

        return FrameHarness(processors=list(processors), **limits)

    def test_builtins_provide_it(self) -> None:
        """
        C{echo} and every C{Transform} built-in provide L{IBatchProcessor}.
        """
        from echoplus.processors.loading import find_factory

        for name in ("echo", "upper", "lower", "reverse", "rot13", "sha256", "json"):
            verifyObject(IBatchProcessor, find_factory(name)())

    def test_one_call_per_read(self) -> None:
        """
        A read of many frames through a batch chain calls each processor's
        C{process_batch} once and C{process} never.
        """
        first, second = CountingBatch(), CountingBatch()
        harness = self._harness(first, second)
        harness.feed(b"a\nb\nc\n")
        self.assertEqual(harness.replies(), [b"A", b"B", b"C"])
        self.assertEqual((first.batch_calls, second.batch_calls), (1, 1))
        self.assertEqual((first.process_calls, second.process_calls), (0, 0))

    def test_failure_falls_back_per_message(self) -> None:
        """
        When C{process_batch} raises, each message is processed alone, so
        only the bad one gets its error reply, in its place.
        """
        harness = self._harness("json")
        harness.feed(b'{"b":1,"a":2}\nnot json\n[1, 2]\n')
        replies = harness.replies()
        self.assertEqual(replies[0], b'{"a":2,"b":1}')
        self.assertTrue(replies[1].startswith(b"ERROR bad-request: "), replies)
        self.assertEqual(replies[2], b"[1,2]")

    def test_broken_results_fall_back(self) -> None:
        """
        A batch result of the wrong length, type or element type is not
        trusted: the messages are processed one by one.
        """
        for broken in ([b"only one"], (b"A", b"B"), [b"A", "B"]):
            processor = CountingBatch(batch_result=broken)
            harness = self._harness(processor)
            harness.feed(b"a\nb\n")
            self.assertEqual(harness.replies(), [b"A", b"B"], broken)
            self.assertEqual(processor.process_calls, 2, broken)

    def test_mixed_chain_runs_per_message(self) -> None:
        """
        A chain with one processor that does not provide it runs message by
        message.
        """
        batch = CountingBatch()
        harness = self._harness(batch, "counter")
        harness.feed(b"a\nb\n")
        self.assertEqual(harness.replies(), [b"1", b"2"])
        self.assertEqual((batch.batch_calls, batch.process_calls), (0, 2))

    def test_pending_replies_keep_order(self) -> None:
        """
        While an earlier reply is pending, a batch chain's replies queue
        behind it instead of overtaking it.
        """
        later: Deferred[bytes] = Deferred()
        harness = self._harness(_FirstLater(later))
        harness.feed(b"slow\n")
        harness.feed(b"a\nb\n")
        self.assertEqual(harness.replies(), [])
        later.callback(b"SLOW")
        self.assertEqual(harness.replies(), [b"SLOW", b"A", b"B"])


@implementer(IBatchProcessor)
class _FirstLater:
    """
    Answers its first message with a given Deferred, later ones upper-cased
    (in batches too).
    """

    def __init__(self, first: Deferred[bytes]) -> None:
        self._first: Deferred[bytes] | None = first

    def process(self, message: bytes, context: object) -> Any:
        first, self._first = self._first, None
        return first if first is not None else message.upper()

    def process_batch(self, messages: list[bytes], context: object) -> list[bytes]:
        return [message.upper() for message in messages]
