"""
Building the broker that the settings name, and running it as a service of
the service tree: started before the listeners, stopped after them.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from echoplus.cluster.memory import MemoryBroker
from echoplus.cluster.url import parse_broker_url
from echoplus.errors import ConfigError
from echoplus.interfaces import IBroker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from echoplus.cluster.metrics import BrokerMetrics
    from echoplus.cluster.redis import RedisBroker
    from echoplus.cluster.url import BrokerURL
    from echoplus.config import Settings

__all__ = ["BrokerService", "make_broker", "node_id", "redis_broker"]


def node_id() -> bytes:
    """
    A node id unique on its broker: host, process and a random part.
    """
    host = socket.gethostname().replace(" ", "_").replace("/", "_") or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}".encode()


def make_broker(
    settings: Settings, reactor: Any, registry: CollectorRegistry | None = None
) -> IBroker:
    """
    The broker C{settings.broker} names; the Redis client is imported only
    here, and only for a Redis URL.

    @param registry: where the C{echoplus_broker_*} series go, if anywhere.
    @raise ConfigError: a Redis broker without the C{redis} extra
        installed.
    """
    metrics = None
    if registry is not None:
        from echoplus.cluster.metrics import BrokerMetrics

        metrics = BrokerMetrics(registry)
    url = parse_broker_url(settings.broker)
    if url.is_memory:
        if metrics is not None:
            metrics.connected(True)
        return MemoryBroker(metrics)
    return redis_broker(
        url,
        reactor,
        prefix=settings.broker_prefix,
        history=settings.broker_history,
        ttl=settings.broker_ttl,
        metrics=metrics,
    )


def redis_broker(
    url: BrokerURL,
    reactor: Any,
    prefix: str,
    history: int,
    ttl: float,
    metrics: BrokerMetrics | None = None,
) -> RedisBroker:
    """
    A Redis engine (not started) for C{url}, as a new node.

    @raise ConfigError: the C{redis} extra is not installed.
    """
    try:
        from echoplus.cluster.link import RedisLink
        from echoplus.cluster.redis import RedisBroker
    except ImportError as error:
        raise ConfigError(
            f"--broker {url.display()} needs the Redis client ({error.name} is "
            "missing): pip install 'echoplus[redis]'"
        ) from None
    link = RedisLink(url, prefix, node_id(), reactor, ttl=ttl, history=history)
    return RedisBroker(link, reactor, history=history, ttl=ttl, metrics=metrics)


class BrokerService(Service):
    """
    Starts the broker's link (if it has one) with the service and stops it
    after the listeners have drained.
    """

    name = "broker"

    def __init__(self, broker: IBroker) -> None:
        self.broker = broker

    def startService(self) -> None:
        super().startService()
        start = getattr(self.broker, "start", None)
        if start is not None:
            start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        stop = getattr(self.broker, "stop", None)
        return stop() if stop is not None else succeed(None)
