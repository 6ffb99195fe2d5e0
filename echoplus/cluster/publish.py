"""
C{echoplus publish}: put one message into a topic from outside the
servers, through the same broker and scripts the nodes use (for the
Redis-level contract other programs may follow, see docs/shared-state.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_publish_command", "run_publish"]


def add_publish_command(commands: Any) -> None:
    """
    Add the C{publish} subcommand to the C{echoplus} command's subparsers.
    """
    environ = os.environ
    parser = commands.add_parser(
        "publish",
        help="publish a message into a topic through the broker",
        description=(
            "Publish PAYLOAD to TOPIC on the broker the servers share: every "
            "pubsub subscriber of TOPIC, on every node, receives "
            "'MSG TOPIC PAYLOAD' (or PAYLOAD as it is, with --raw).  Prints "
            "'OK PUB <n>', n being the subscribers it went to."
        ),
    )
    parser.add_argument("topic", metavar="TOPIC", help="the topic, one word")
    parser.add_argument(
        "payload", metavar="PAYLOAD", nargs="+", help="the message (words are joined)"
    )
    parser.add_argument(
        "--broker",
        default=environ.get("ECHOPLUS_BROKER", ""),
        metavar="URL",
        help="redis://..., rediss://... or unix:///path [default: $ECHOPLUS_BROKER]",
    )
    parser.add_argument(
        "--broker-prefix",
        default=environ.get("ECHOPLUS_BROKER_PREFIX", "echoplus"),
        metavar="NAME",
        help="the servers' key prefix [default: echoplus]",
    )
    parser.add_argument(
        "--broker-history",
        type=int,
        default=int(environ.get("ECHOPLUS_BROKER_HISTORY", "1000")),
        metavar="N",
        help="the servers' per-topic history [default: 1000]",
    )
    parser.add_argument(
        "--broker-ttl",
        type=float,
        default=float(environ.get("ECHOPLUS_BROKER_TTL", "30")),
        metavar="SECONDS",
        help="the servers' node ttl [default: 30]",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="subscribers receive PAYLOAD as it is, not 'MSG TOPIC PAYLOAD'",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="for reaching the broker and its answer [default: 10]",
    )
    parser.set_defaults(run=run_publish)


def run_publish(arguments: argparse.Namespace) -> int:
    """
    Connect, publish once, print C{OK PUB <n>}; one C{echoplus publish:}
    line and exit 1 on any failure.
    """
    from echoplus.cluster.url import parse_broker_url
    from echoplus.parsers import prefix

    topic = arguments.topic.encode()
    payload = " ".join(arguments.payload).encode()
    try:
        if not arguments.broker:
            raise ValueError(
                "no broker: give --broker redis://... or set ECHOPLUS_BROKER"
            )
        url = parse_broker_url(arguments.broker)
        if url.is_memory:
            raise ValueError(
                "the memory broker lives inside one server process; "
                "publish needs --broker redis://..."
            )
        prefix(arguments.broker_prefix)
        if not topic or len(topic.split()) != 1:
            raise ValueError(f"a topic is one word, not {arguments.topic!r}")
    except ValueError as error:
        print(f"echoplus publish: {error}", file=sys.stderr)
        return 1
    frame = payload if arguments.raw else b"MSG %b %b" % (topic, payload)
    outcome: dict[str, Any] = {}

    def main(reactor: Any) -> Any:
        return _publish(reactor, arguments, url, topic, frame, outcome)

    from twisted.internet import task

    try:
        task.react(main)
    except SystemExit as exit:
        if exit.code not in (0, None):
            return int(exit.code)
    if "error" in outcome:
        print(f"echoplus publish: {outcome['error']}", file=sys.stderr)
        return 1
    print(f"OK PUB {outcome['count']}")
    return 0


async def _publish(
    reactor: Any,
    arguments: argparse.Namespace,
    url: Any,
    topic: bytes,
    frame: bytes,
    outcome: dict[str, Any],
) -> None:
    from twisted.internet.task import deferLater

    from echoplus.cluster.service import redis_broker
    from echoplus.errors import ConfigError

    try:
        broker = redis_broker(
            url,
            reactor,
            prefix=arguments.broker_prefix,
            history=arguments.broker_history,
            ttl=arguments.broker_ttl,
        )
    except ConfigError as error:
        outcome["error"] = str(error)
        return
    broker.start()
    deadline = reactor.seconds() + arguments.timeout
    try:
        while broker.status() != "connected":
            if reactor.seconds() > deadline:
                why = broker.last_failure or "no answer"
                outcome["error"] = f"cannot reach the broker {url.display()}: {why}"
                return
            await deferLater(reactor, 0.05, lambda: None)
        try:
            outcome["count"] = await broker.publish(topic, frame)
        except Exception as error:  # Unavailable, or the link lost meanwhile
            outcome["error"] = f"the broker {url.display()} did not take it: {error}"
    finally:
        await broker.stop()
