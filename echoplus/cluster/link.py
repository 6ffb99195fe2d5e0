"""
The Redis broker's link: two connections to one Redis server, a command
connection (scripts) and a subscriber connection (the topics' channels),
made and remade by Twisted's C{ClientService} with a backoff and jitter.

The RESP side is txredisapi's: its protocol classes encode commands, parse
replies (with hiredis when installed) and route pub/sub messages.  What is
wrapped here, and why:

  - txredisapi's own factories reconnect with their own pool machinery and
    the global reactor; we drive its protocols with C{ClientService} on the
    reactor we are handed, as the house style asks.
  - It does not restore subscriptions after a reconnect, nor load scripts
    on a new connection: the link loads the scripts on every command
    connection, and tells the engine when it is up again so that the
    engine resubscribes and recovers (L{echoplus.cluster.redis}).
  - Its C{SUBSCRIBE} of several channels at once lets the extra
    confirmations answer the next command; the link subscribes one channel
    per command.

The two connections are one link: when either is lost, the other is
closed too, and the link is up again only when both are back and the
scripts are loaded.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from echoplus.cluster.scripts import SCRIPTS, Keys
from echoplus.cluster.url import BrokerURL

__all__ = ["LinkRefused", "RedisLink", "client_endpoint"]

#: Seconds to wait for a TCP or UNIX connection to Redis.
CONNECT_TIMEOUT = 5.0
#: Seconds the history and position of a topic are kept after its last
#: publish.
TOPIC_EXPIRY = 86400


def client_endpoint(reactor: Any, url: BrokerURL) -> IStreamClientEndpoint:
    """
    The Twisted client endpoint for a C{redis://}, C{rediss://} or
    C{unix://} broker URL.
    """
    if url.scheme == "unix":
        return UNIXClientEndpoint(reactor, url.path, timeout=CONNECT_TIMEOUT)
    endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=CONNECT_TIMEOUT)
    if url.scheme == "rediss":
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        root = None
        if url.ca is not None:
            with open(url.ca, "rb") as pem:
                root = Certificate.loadPEM(pem.read())
        options = optionsForClientTLS(url.host, trustRoot=root)
        return wrapClientTLS(options, endpoint)  # type: ignore[no-any-return]
    return endpoint


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.factory.on_message(channel, message)


class _Factory(Factory):
    """
    Builds txredisapi protocols for C{ClientService}, with the attributes
    txredisapi's C{connectionMade} uses when authentication fails.
    """

    noisy = False
    isLazy = True

    def __init__(self, protocol: type, url: BrokerURL) -> None:
        self.protocol = protocol
        self.url = url
        self.error: str | None = None
        self.on_message: Callable[[bytes, bytes], None] = lambda channel, data: None

    def buildProtocol(self, addr: Any) -> Any:
        self.error = None  # a reason belongs to one connection, not the next
        protocol = self.protocol(
            None,  # charset: replies stay bytes
            password=self.url.password,
            dbid=self.url.db or None,
            convertNumbers=False,
            username=self.url.username,
        )
        protocol.factory = self
        return protocol

    def stopTrying(self) -> None:
        """
        Called by txredisapi when authentication fails: C{ClientService}
        keeps trying (the password may be fixed on the server).
        """

    def connectionError(self, why: str) -> None:
        """
        Called by txredisapi with why the connection is unusable.
        """
        self.error = why


class LinkRefused(Exception):
    """
    Redis closed a new connection before it became usable; the message is
    Redis's reason (a wrong password, an unknown database).
    """


def _ready(protocol: Any) -> Deferred[Any]:
    """
    Fire with C{protocol} once txredisapi has authenticated and selected
    the database; fail if the connection is lost first.
    """
    outcome: Deferred[Any] = Deferred()

    def connected(_: Any) -> None:
        if not outcome.called:
            outcome.callback(protocol)

    def lost(_: Any) -> None:
        if not outcome.called:
            why = protocol.factory.error or "the connection was closed"
            outcome.errback(Failure(LinkRefused(why)))

    protocol.whenConnected().addCallback(connected)
    protocol.whenDisconnected().addCallback(lost)
    return outcome


class RedisLink:
    """
    The Redis side of the broker, as the operations the engine needs.

    @ivar up: both connections are usable and the scripts are loaded.
    @ivar on_up: called each time the link comes up.
    @ivar on_down: called with a reason each time it goes down.
    @ivar on_failure: called with a reason each time a connection attempt
        fails.
    @ivar on_message: called with C{(topic, data)} for every message on a
        topic channel.
    """

    def __init__(
        self,
        url: BrokerURL,
        prefix: str,
        node: bytes,
        reactor: Any,
        ttl: float,
        history: int,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self.url = url
        self.keys = Keys(prefix.encode())
        self.node = node
        self.up = False
        self.on_up: Callable[[], None] = lambda: None
        self.on_down: Callable[[str], None] = lambda why: None
        self.on_failure: Callable[[str], None] = lambda why: None
        self.on_message: Callable[[bytes, bytes], None] = lambda topic, data: None
        self._ttl = ttl
        self._history = history
        self._stopping = False
        self._reactor = reactor
        endpoint = endpoint if endpoint is not None else client_endpoint(reactor, url)
        retry = backoffPolicy(
            initialDelay=0.2,
            maxDelay=5.0,
            factor=2.0,
            jitter=lambda: random.uniform(0, 0.2),
        )
        subscriber_factory = _Factory(_Subscriber, url)
        subscriber_factory.on_message = self._message
        self._factories = {
            "command": _Factory(txredisapi.RedisProtocol, url),
            "subscriber": subscriber_factory,
        }
        self._services = {
            "command": ClientService(
                endpoint,
                self._factories["command"],
                retryPolicy=retry,
                clock=reactor,
                prepareConnection=self._prepare_command,
            ),
            "subscriber": ClientService(
                endpoint,
                subscriber_factory,
                retryPolicy=retry,
                clock=reactor,
                prepareConnection=self._prepare_subscriber,
            ),
        }
        self._protocols: dict[str, Any] = {"command": None, "subscriber": None}

    # Lifetime.

    def start(self) -> None:
        """
        Start connecting; keep reconnecting until L{stop}.
        """
        self._stopping = False
        for name, service in self._services.items():
            service.startService()
            self._watch(name)

    def stop(self) -> Deferred[Any]:
        """
        Close both connections and stop reconnecting.
        """
        self._stopping = True
        self.up = False
        return gatherResults(
            [service.stopService() for service in self._services.values()],
            consumeErrors=True,
        )

    def reset(self) -> None:
        """
        Drop both connections (a heartbeat went unanswered): they are made
        again, and the engine recovers as after any loss.
        """
        for protocol in self._protocols.values():
            if protocol is not None:
                protocol.transport.abortConnection()

    def _watch(self, name: str) -> None:
        self._services[name].whenConnected(failAfterFailures=1).addCallbacks(
            self._connected, self._failed, callbackArgs=(name,), errbackArgs=(name,)
        )

    def _prepare_command(self, protocol: Any) -> Deferred[Any]:
        def load(_: Any) -> Deferred[Any]:
            return gatherResults(
                [protocol.script_load(script.source) for script in SCRIPTS.values()],
                consumeErrors=True,
            )

        return self._in_time(protocol, _ready(protocol).addCallback(load))

    def _prepare_subscriber(self, protocol: Any) -> Deferred[Any]:
        return self._in_time(protocol, _ready(protocol))

    def _in_time(self, protocol: Any, preparing: Deferred[Any]) -> Deferred[Any]:
        """
        Abort a new connection that is not ready within C{CONNECT_TIMEOUT}
        (a path that stalls, or a server that does not answer): the
        preparation then fails and C{ClientService} tries again.  Without
        it, a connection that never answers would be waited for forever.
        """

        def abort() -> None:
            protocol.factory.error = (
                f"no answer within {CONNECT_TIMEOUT:g} s of connecting"
            )
            protocol.transport.abortConnection()

        timer = self._reactor.callLater(CONNECT_TIMEOUT, abort)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return preparing.addBoth(done)

    def _connected(self, protocol: Any, name: str) -> None:
        self._protocols[name] = protocol
        protocol.whenDisconnected().addCallback(self._lost, name, protocol)
        if not self.up and all(self._protocols.values()):
            self.up = True
            self.on_up()

    def _failed(self, failure: Failure, name: str) -> None:
        if self._stopping or failure.check(CancelledError):
            return
        self.on_failure(_reason(failure))
        # Not at once: ClientService is in the middle of a transition.
        self._reactor.callLater(0, self._watch, name)

    def _lost(self, _: Any, name: str, protocol: Any) -> None:
        if self._protocols[name] is not protocol:
            return
        self._protocols[name] = None
        was_up, self.up = self.up, False
        for other in self._protocols.values():
            if other is not None:
                # Aborted, not closed: a graceful close waits for buffered
                # bytes, forever when the path stalled, and the link would
                # come up again on that dead connection.
                other.transport.abortConnection()
        if was_up:
            self.on_down("the connection was lost")
        if not self._stopping:
            # Not at once: this runs inside the protocol's connectionLost,
            # before ClientService has heard of the loss, and it would hand
            # back the dead protocol.
            self._reactor.callLater(0, self._watch, name)

    def _message(self, channel: bytes, data: bytes) -> None:
        topic = self.keys.topic_of(channel)
        if topic is not None:
            self.on_message(topic, data)

    # Operations.

    def _command(self, *args: Any) -> Deferred[Any]:
        protocol = self._protocols["command"]
        if not self.up or protocol is None:
            return _down()
        return maybeDeferred(protocol.execute_command, *args)

    def _run(self, name: str, keys: list[bytes], args: list[Any]) -> Deferred[Any]:
        script = SCRIPTS[name]

        def reload(failure: Failure) -> Any:
            if failure.check(txredisapi.ResponseError) and "NOSCRIPT" in str(
                failure.value
            ):
                return self._command("SCRIPT", "LOAD", script.source).addCallback(
                    lambda _: self._command(
                        "EVALSHA", script.sha, len(keys), *keys, *args
                    )
                )
            return failure

        return self._command("EVALSHA", script.sha, len(keys), *keys, *args).addErrback(
            reload
        )

    def publish(
        self,
        topic: bytes,
        frame: bytes,
        origin: bytes,
        sender_subscribed: bool,
        epoch: bytes,
        published: float,
    ) -> Deferred[int]:
        """
        Run the publish script: append to the topic's history and publish.

        @return: a L{Deferred} of the live subscriber count.
        """
        keys = self.keys
        return self._run(
            "publish",
            [keys.meta(topic), keys.hist(topic), keys.subs(topic), keys.nodes],
            [
                keys.channel(topic),
                frame,
                origin,
                b"1" if sender_subscribed else b"0",
                epoch,
                self._history,
                self._ttl,
                b"%.6f" % (published,),
                TOPIC_EXPIRY,
            ],
        ).addCallback(int)

    def set_count(self, topic: bytes, count: int) -> Deferred[tuple[bytes, int]]:
        """
        Record how many subscribers of C{topic} this node has.

        @return: a L{Deferred} of the topic's position C{(epoch, offset)}.
        """
        keys = self.keys
        return self._run(
            "set_count",
            [keys.subs(topic), keys.node(self.node), keys.meta(topic)],
            [self.node, count, topic],
        ).addCallback(lambda reply: (reply[0], int(reply[1])))

    def count(self, topic: bytes) -> Deferred[int]:
        """
        The live subscriber count of C{topic}.
        """
        keys = self.keys
        return self._run(
            "count", [keys.subs(topic), keys.nodes], [self._ttl]
        ).addCallback(int)

    def fetch(
        self, topic: bytes, epoch: bytes | None, after: int, limit: int
    ) -> Deferred[tuple[bytes, int, bytes, list[bytes]]]:
        """
        The topic's position, the envelope at C{after} (C{b""} when it is
        not in the history, or the epoch is not C{epoch}), and the history
        after C{(epoch, after)}.
        """
        keys = self.keys
        return self._run(
            "fetch",
            [keys.meta(topic), keys.hist(topic)],
            [epoch or b"", after, max(limit, 1)],
        ).addCallback(
            lambda reply: (reply[0], int(reply[1]), reply[2], list(reply[3:]))
        )

    def heartbeat(self) -> Deferred[tuple[int, bool]]:
        """
        Mark this node alive; forget nodes silent past the ttl.

        @return: a L{Deferred} of how many nodes were forgotten, and whether
            this node was not registered (its counts are gone).
        """
        return self._run(
            "heartbeat", [self.keys.nodes], [self.node, self._ttl, self.keys.prefix]
        ).addCallback(lambda reply: (int(reply[0]), bool(int(reply[1]))))

    def leave(self) -> Deferred[Any]:
        """
        Forget this node: its subscribers stop counting at once.
        """
        return self._run("leave", [self.keys.nodes], [self.node, self.keys.prefix])

    def listen(self, topic: bytes) -> Deferred[Any]:
        """
        Subscribe to the topic's channel (one channel per command: see the
        module docstring).
        """
        protocol = self._protocols["subscriber"]
        if not self.up or protocol is None:
            return _down()
        return maybeDeferred(protocol.subscribe, [self.keys.channel(topic)])

    def unlisten(self, topic: bytes) -> Deferred[Any]:
        """
        Unsubscribe from the topic's channel.
        """
        protocol = self._protocols["subscriber"]
        if not self.up or protocol is None:
            return _down()
        return maybeDeferred(protocol.unsubscribe, [self.keys.channel(topic)])

    def sync(self) -> Deferred[Any]:
        """
        Fire once every message Redis sent the subscriber connection before
        now was received (a C{PING} answered in order with them).
        """
        protocol = self._protocols["subscriber"]
        if not self.up or protocol is None:
            return _down()
        return maybeDeferred(protocol.execute_command, "PING")


def _down() -> Deferred[Any]:
    failed: Deferred[Any] = Deferred()
    failed.errback(Failure(ConnectionLost("the broker link is down")))
    return failed


def _reason(failure: Failure) -> str:
    """
    A connection failure in one short phrase: the OS's words when there is
    an OS error behind it, else the error's own text.
    """
    value = failure.value
    inner = getattr(value, "socketError", None) or getattr(value, "osError", None)
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    if isinstance(inner, int):
        return os.strerror(inner)
    if isinstance(value, OSError) and value.strerror:
        return value.strerror
    text = str(value).strip() or type(value).__name__
    return text.rstrip(".")
