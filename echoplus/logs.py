"""
Structured logging: the connection events echoplus emits and a JSON-lines
observer for C{--log-format json}.

Every echoplus log event is a C{twisted.logger} event whose fields
(C{connection_id}, C{peer}, C{listener}, C{kind}, ...) are kept as they
are; the text format is the default twistd one, and L{JSONLinesObserver}
writes each event as one JSON object per line, with those fields as keys.

Two ways to get JSON lines:
  - C{twistd -n echoplus --log-format json} (or C{ECHOPLUS_LOG_FORMAT=json},
    or C{log_format = "json"} in the config file): the service installs
    L{json_observer} as the application's log observer;
  - C{twistd -n --logger echoplus.logs.json_observer echoplus ...}: twistd's
    own option, for any twistd application.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "JSONLinesObserver",
    "event_as_json",
    "format_address",
    "json_observer",
    "log_connection_closed",
    "log_connection_opened",
    "use_json_lines",
]

# Keys of legacy (twisted.python.log) events that the standard fields
# replace.
_LEGACY_KEYS = frozenset({"message", "isError", "time", "format", "why", "failure"})
_PLAIN = (str, int, float, bool, type(None))


def format_address(address: Any) -> str:
    """
    A Twisted address as C{host:port} (C{[host]:port} for IPv6), a UNIX
    socket path, or its C{str} for anything else.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        return name.decode("utf-8", "replace")
    if name:
        return str(name)
    return str(address)


def _plain(value: Any) -> Any:
    """
    A JSON-ready version of one event field.
    """
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each log event as one JSON object on one line: C{time} (ISO 8601,
    UTC), C{level}, C{namespace}, C{pid}, C{message} (the formatted text),
    the event's own fields, and C{error}/C{traceback} for a failure.
    """

    def __init__(self, output: IO[str]) -> None:
        """
        @param output: a text file, flushed after every line.
        """
        self._output = output

    def __call__(self, event: dict[str, Any]) -> None:
        self._output.write(event_as_json(event) + "\n")
        self._output.flush()


def event_as_json(event: dict[str, Any]) -> str:
    """
    One log event as a one-line JSON object (see L{JSONLinesObserver}).
    """
    record: dict[str, Any] = {}
    when = event.get("log_time")
    if isinstance(when, (int, float)):
        record["time"] = datetime.fromtimestamp(when, timezone.utc).isoformat(
            timespec="milliseconds"
        )
    record["level"] = getattr(event.get("log_level"), "name", "info")
    record["namespace"] = event.get("log_namespace", "")
    record["pid"] = os.getpid()  # tells --workers' processes apart
    record["message"] = formatEvent(event)
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        record[key] = _plain(value)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["error"] = failure.type.__name__ if failure.type else "unknown"
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, separators=(",", ":"), default=str)


def json_observer() -> JSONLinesObserver:
    """
    A L{JSONLinesObserver} on standard output: usable as
    C{twistd --logger echoplus.logs.json_observer}.
    """
    return JSONLinesObserver(sys.stdout)


def use_json_lines(application: Any) -> None:
    """
    Make L{json_observer} twistd's log observer for C{application}: twistd
    asks the application for an C{ILogObserver} component before it starts
    logging.  Anything that is not twistd's application is left alone.
    """
    if hasattr(application, "setComponent"):
        application.setComponent(ILogObserver, json_observer())


def log_connection_opened(log: Logger, context: Any) -> None:
    """
    Emit the C{connection-opened} event of a connection's context.
    """
    log.info(
        "Connection {connection_id} from {peer} opened on {listener}",
        event="connection-opened",
        connection_id=context.id,
        peer=format_address(context.peer),
        listener=context.listener,
    )


def log_connection_closed(
    log: Logger,
    context: Any,
    duration: float,
    counts: tuple[int, int, int, int],
    reason: Failure | None,
) -> None:
    """
    Emit the C{connection-closed} event: how long the connection lasted and
    what went through it.

    @param counts: frames received, frames sent, bytes received, bytes sent.
    """
    frames_received, frames_sent, bytes_received, bytes_sent = counts
    cause = "closed"
    if reason is not None and reason.type is not None:
        cause = reason.type.__name__
    log.info(
        "Connection {connection_id} from {peer} closed after {duration:.3f}s: "
        "{frames_received} frames in, {frames_sent} out ({reason})",
        event="connection-closed",
        connection_id=context.id,
        peer=format_address(context.peer),
        listener=context.listener,
        duration=round(duration, 6),
        frames_received=frames_received,
        frames_sent=frames_sent,
        bytes_received=bytes_received,
        bytes_sent=bytes_sent,
        reason=cause,
    )
