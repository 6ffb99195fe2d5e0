"""
Tests for live reload: L{echoplus.reload} (the plan, applying it, the
SIGHUP handler), L{EchoPlusService.reload} on temporary config files with a
memory reactor, and open connections picking up a reload.
"""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.config import ListenerSettings, Settings, load_settings
from echoplus.factory import EchoPlusFactory
from echoplus.interfaces import IConnectionObserver, IProcessor
from echoplus.processors.chain import ProcessorChain, ProcessorEntry, parse_chain
from echoplus.reload import ReloadPlan, install_sighup
from echoplus.service import EchoPlusService

TCP = "tcp:0:interface=127.0.0.1"
OTHER = "tcp:7001:interface=127.0.0.1"


def listener(endpoint: str = TCP, **changes: Any) -> ListenerSettings:
    """
    Listener settings with C{changes}; C{processors} as chain text.
    """
    if isinstance(changes.get("processors"), str):
        changes["processors"] = parse_chain(changes["processors"])
    return ListenerSettings(endpoint=endpoint, **changes)


class PlanTests(SynchronousTestCase):
    def test_added_removed_changed(self) -> None:
        """
        The plan lists listeners to start, to stop, and to change.
        """
        old = Settings(listeners=(listener(TCP), listener("unix:/tmp/gone")))
        new = Settings(
            listeners=(listener(TCP, max_frame=10), listener(OTHER)),
        )
        plan = ReloadPlan.between(old, new)
        self.assertEqual(plan.added, (listener(OTHER),))
        self.assertEqual(plan.removed, ("unix:/tmp/gone",))
        self.assertEqual(plan.changed, ((listener(TCP), listener(TCP, max_frame=10)),))
        self.assertEqual(
            plan.summary(),
            f"{TCP}: max_frame 65536 -> 10; started {OTHER}; stopped unix:/tmp/gone",
        )

    def test_unchanged(self) -> None:
        """
        Equal settings plan nothing.
        """
        settings = Settings(listeners=(listener(),))
        plan = ReloadPlan.between(settings, settings)
        self.assertEqual((plan.added, plan.removed, plan.changed), ((), (), ()))
        self.assertEqual(plan.summary(), "nothing changed")

    def test_restart_keys_keep_old_values(self) -> None:
        """
        Process-wide keys other than drain_timeout keep their running value
        and are reported as needing a restart.
        """
        old = Settings(listeners=(listener(),), workers=1, drain_timeout=10)
        new = Settings(listeners=(listener(),), workers=4, drain_timeout=3)
        plan = ReloadPlan.between(old, new)
        self.assertEqual(plan.settings.workers, 1)
        self.assertEqual(plan.settings.drain_timeout, 3)
        self.assertEqual(plan.restart_needed, ("workers",))
        self.assertEqual(plan.summary(), "needs a restart: workers")

    def test_fixed_listeners(self) -> None:
        """
        When listeners cannot change (a worker), added and removed ones are
        reported as needing a restart, and existing ones still change.
        """
        old = Settings(listeners=(listener(TCP), listener("unix:/tmp/kept")))
        new = Settings(listeners=(listener(TCP, max_frame=10), listener(OTHER)))
        plan = ReloadPlan.between(old, new, fixed_listeners=True)
        self.assertEqual((plan.added, plan.removed), ((), ()))
        self.assertEqual(plan.changed, ((listener(TCP), listener(TCP, max_frame=10)),))
        self.assertEqual(
            [s.endpoint for s in plan.settings.listeners], [TCP, "unix:/tmp/kept"]
        )
        self.assertEqual(plan.restart_needed, ("listen",))


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which port 7001 is in use.
    """

    def listenTCP(self, port: int, factory: Any, *args: Any, **kwargs: Any) -> Any:
        if port == 7001:
            raise CannotListenError("127.0.0.1", port, OSError("in use"))
        return super().listenTCP(port, factory, *args, **kwargs)


class ServiceReloadTests(SynchronousTestCase):
    """
    L{EchoPlusService.reload} re-reads a temporary config file.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.path = os.path.join(directory, "echoplus.toml")
        self.events: list[dict[str, Any]] = []
        self.patch(EchoPlusService, "_log", Logger(observer=self.events.append))

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as stream:
            stream.write(text)

    def service(
        self, text: str, reactor: Any = None, environ: Any = None
    ) -> EchoPlusService:
        """
        A running service for a file with C{text}.
        """
        self.write(text)
        environ = {} if environ is None else environ
        options = {"config": self.path}
        service = EchoPlusService(
            load_settings(options, environ),
            reactor or MemoryReactorClock(),
            load=lambda: load_settings(options, environ),
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) for event in self.events]

    def test_changed_chain_and_limits(self) -> None:
        """
        A changed chain and limit reconfigure the existing factory.
        """
        service = self.service(f'processors = ["upper"]\nlisten = ["{TCP}"]\n')
        factory = service.factories[TCP]
        generation = factory.generation
        self.write(f'processors = ["reverse"]\nmax_frame = 9\nlisten = ["{TCP}"]\n')
        self.assertTrue(service.reload())
        self.assertIs(service.factories[TCP], factory)
        self.assertEqual(str(factory.chain), "reverse")
        self.assertEqual(factory.settings.max_frame, 9)
        self.assertEqual(factory.generation, generation + 1)
        self.assertEqual(
            self.messages()[-1],
            f"Reloaded {self.path}: {TCP}: processors upper -> reverse, "
            "max_frame 65536 -> 9",
        )

    def test_unchanged_chain_keeps_its_state(self) -> None:
        """
        When only limits change, the chain (and shared state such as a
        counter's) is kept.
        """
        service = self.service(f'processors = ["counter"]\nlisten = ["{TCP}"]\n')
        chain = service.factories[TCP].chain
        self.write(f'processors = ["counter"]\nmax_inflight = 3\nlisten = ["{TCP}"]\n')
        self.assertTrue(service.reload())
        self.assertIs(service.factories[TCP].chain, chain)

    def test_invalid_file_changes_nothing(self) -> None:
        """
        An invalid file is refused with a logged error naming the fault,
        and nothing changes.
        """
        service = self.service(f'processors = ["upper"]\nlisten = ["{TCP}"]\n')
        settings, factory = service.settings, service.factories[TCP]
        generation = factory.generation
        self.write(f'processors = ["upper"]\nmax_frmae = 1\nlisten = ["{TCP}"]\n')
        self.assertFalse(service.reload())
        self.assertIs(service.settings, settings)
        self.assertEqual(factory.generation, generation)
        self.assertEqual(self.events[-1]["log_level"].name, "error")
        self.assertIn("max_frmae", self.messages()[-1])
        self.assertIn("did you mean 'max_frame'", self.messages()[-1])

    def test_syntax_error_changes_nothing(self) -> None:
        """
        A TOML syntax error is refused too.
        """
        service = self.service(f'listen = ["{TCP}"]\n')
        settings = service.settings
        self.write("listen = [\n")
        self.assertFalse(service.reload())
        self.assertIs(service.settings, settings)
        self.assertIn("TOML syntax error", self.messages()[-1])

    def test_added_and_removed_listeners(self) -> None:
        """
        A listener added to the file starts; a removed one stops listening.
        """
        reactor = MemoryReactorClock()
        service = self.service(f'listen = ["{TCP}"]\n', reactor)
        self.assertEqual(len(reactor.tcpServers), 1)
        old_child = service.getServiceNamed(TCP)
        self.write(f'listen = ["{OTHER}"]\n')
        self.assertTrue(service.reload())
        self.assertEqual(list(service.factories), [OTHER])
        self.assertEqual(reactor.tcpServers[-1][0], 7001)
        self.assertIsNone(old_child.port)
        self.assertIsNone(old_child.parent)
        new_child = service.getServiceNamed(OTHER)
        self.assertIsNotNone(new_child.port)
        self.assertTrue(new_child.running)

    def test_bind_failure_changes_nothing(self) -> None:
        """
        A new listener that cannot bind refuses the whole reload.
        """
        service = self.service(f'listen = ["{TCP}"]\n', RefusingReactor())
        factory = service.factories[TCP]
        self.write(f'max_frame = 5\nlisten = ["{TCP}", "{OTHER}"]\n')
        self.assertFalse(service.reload())
        self.assertEqual(list(service.factories), [TCP])
        self.assertEqual(factory.settings.max_frame, 65536)
        self.assertIn("cannot listen on " + OTHER, self.messages()[-1])

    def test_environment_is_reread(self) -> None:
        """
        A reload re-reads the environment, which still wins over the file.
        """
        environ = {"ECHOPLUS_MAX_FRAME": "50"}
        service = self.service(f'max_frame = 10\nlisten = ["{TCP}"]\n', environ=environ)
        self.assertEqual(service.factories[TCP].settings.max_frame, 50)
        environ["ECHOPLUS_MAX_FRAME"] = "60"
        self.write(f'max_frame = 20\nlisten = ["{TCP}"]\n')
        self.assertTrue(service.reload())
        self.assertEqual(service.factories[TCP].settings.max_frame, 60)

    def test_ignored_while_stopping(self) -> None:
        """
        A reload while the service drains changes nothing.
        """
        service = self.service(f'listen = ["{TCP}"]\n')
        settings = service.settings
        service.draining = True
        self.write(f'max_frame = 5\nlisten = ["{TCP}"]\n')
        self.assertFalse(service.reload())
        self.assertIs(service.settings, settings)
        self.assertEqual(self.messages()[-1], "Reload ignored: the service is stopping")

    def test_without_config_file(self) -> None:
        """
        Without a config file a reload is a logged no-op.
        """
        settings = Settings(listeners=(listener(),))
        service = EchoPlusService(
            settings, MemoryReactorClock(), load=lambda: self.fail("loaded")
        )
        self.assertFalse(service.reload())
        self.assertIs(service.settings, settings)
        self.assertEqual(self.messages(), ["Reload: no config file, nothing to reload"])


class SighupTests(SynchronousTestCase):
    def test_signal_calls_back_on_reactor(self) -> None:
        """
        SIGHUP hands the callback to the reactor thread; restoring puts the
        previous handler back.
        """
        calls: list[Any] = []

        class Reactor:
            def callFromThread(self, function: Any, *args: Any) -> None:
                calls.append(function)

        previous = signal.getsignal(signal.SIGHUP)
        restore = install_sighup(Reactor(), "callback")  # type: ignore[arg-type]
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            restore()
        self.assertEqual(calls, ["callback"])
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_service_installs_and_restores(self) -> None:
        """
        A service with a loader handles SIGHUP while it runs, and only then.
        """
        previous = signal.getsignal(signal.SIGHUP)
        settings = Settings(listeners=(listener(),))
        service = EchoPlusService(settings, MemoryReactorClock(), load=lambda: settings)
        service.startService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), previous)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


# Processors for the open-connection tests.

EVENTS: list[str] = []


@implementer(IProcessor, IConnectionObserver)
class Watcher:
    """
    Records the connections it hears about in L{EVENTS}.
    """

    def process(self, message: bytes, context: Any) -> bytes:
        return message

    def connection_made(self, context: Any) -> None:
        EVENTS.append(f"made {context.id}")

    def connection_lost(self, context: Any, reason: Any) -> None:
        EVENTS.append(f"lost {context.id}")


class OpenConnectionTests(SynchronousTestCase):
    """
    Open connections pick up a reload from their next read.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = EchoPlusFactory(listener(processors="upper"), self.clock)
        del EVENTS[:]

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(transport)
        return protocol, transport

    def reload(self, **changes: Any) -> None:
        settings = attrs.evolve(
            self.factory.settings,
            **{
                key: parse_chain(value) if key == "processors" else value
                for key, value in changes.items()
            },
        )
        chain = (
            ProcessorChain(settings.processors)
            if settings.processors != self.factory.settings.processors
            else self.factory.chain
        )
        self.factory.configure(settings, chain)

    def test_new_chain_keeps_buffered_bytes(self) -> None:
        """
        A frame split across a reload is answered whole, by the new chain.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"one\nhal")
        self.reload(processors="reverse")
        protocol.dataReceived(b"f\n")
        self.assertEqual(transport.value(), b"ONE\nflah\n")
        self.assertFalse(transport.disconnecting)

    def test_pending_replies_of_old_chain_stay_in_order(self) -> None:
        """
        While a reply of the old chain is pending, frames still go to the
        old chain, so replies stay in order; then the new chain takes over.
        """
        self.factory.configure(listener(processors="delay(seconds=1),upper"))
        protocol, transport = self.connect()
        protocol.dataReceived(b"a\n")
        self.reload(processors="reverse")
        protocol.dataReceived(b"bc\n")
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(transport.value(), b"A\nBC\n")
        protocol.dataReceived(b"de\n")
        self.assertEqual(transport.value(), b"A\nBC\ned\n")

    def test_smaller_max_frame_applies(self) -> None:
        """
        A smaller max_frame applies to an open connection's next frame.
        """
        protocol, transport = self.connect()
        self.reload(max_frame=4)
        protocol.dataReceived(b"abcd\nabcdef\n")
        self.assertEqual(
            transport.value(),
            b"ABCD\nERROR frame-too-long: line exceeds the limit of 4 bytes\n",
        )

    def test_framing_applies_to_new_connections(self) -> None:
        """
        A framing change leaves open connections in their framing.
        """
        old, old_transport = self.connect()
        self.reload(framing="int8")
        old.dataReceived(b"x\n")
        self.assertEqual(old_transport.value(), b"X\n")
        new, new_transport = self.connect()
        new.dataReceived(b"\x01y")
        self.assertEqual(new_transport.value(), b"\x01Y")

    def test_observers_hear_the_change(self) -> None:
        """
        An observer leaving the chain hears the connection lost; one joining
        hears it made.
        """
        watcher = ProcessorEntry("tests.test_reload:Watcher")
        self.factory.configure(
            attrs.evolve(self.factory.settings, processors=(watcher,))
        )
        protocol, _ = self.connect()
        self.assertEqual(EVENTS, [f"made {protocol.context.id}"])
        self.reload(processors="upper")
        protocol.dataReceived(b"x\n")
        self.reload(processors="tests.test_reload:Watcher")
        protocol.dataReceived(b"y\n")
        identifier = protocol.context.id
        self.assertEqual(
            EVENTS, [f"made {identifier}", f"lost {identifier}", f"made {identifier}"]
        )
