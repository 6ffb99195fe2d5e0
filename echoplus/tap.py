"""
The twistd plugin's options and service maker: C{twistd -n echoplus}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from twisted.application.service import IService
from twisted.python import usage

from echoplus.config import OPTIONS, Settings, load_settings, resolve
from echoplus.errors import ConfigError

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    The command line of C{twistd echoplus}.  Every option also has an
    C{ECHOPLUS_<NAME>} environment variable; the command line wins.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve framed messages through a chain of processors.  With no "
        "options: line-framed echo on tcp:5000:interface=127.0.0.1.  Every "
        "option can also be set as ECHOPLUS_<NAME> in the environment "
        "(e.g. ECHOPLUS_MAX_FRAME) or in the --config file; the command line "
        "wins over the environment, which wins over the file.  SIGHUP "
        "re-reads the file and the environment (echoplus check FILE "
        "validates a file first)."
    )
    optParameters = [
        [spec.option_name, None, None, spec.help]
        for spec in OPTIONS
        if not spec.repeatable
    ]

    def __init__(self) -> None:
        super().__init__()
        for spec in OPTIONS:
            if spec.repeatable:
                self[spec.option_name] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint string to listen on (repeatable)
        [default: tcp:5000:interface=127.0.0.1]
        """
        self["listen"].append(endpoint)

    def opt_allow(self, network: str) -> None:
        """
        Accept only clients in this network, e.g. 10.0.0.0/8 (repeatable)
        """
        self["allow"].append(network)

    def opt_deny(self, network: str) -> None:
        """
        Refuse clients in this network (repeatable)
        """
        self["deny"].append(network)

    def opt_ws_origins(self, origin: str) -> None:
        """
        websocket: accept browsers from this origin, scheme://host[:port]
        or * (repeatable) [default: the request's own host only]
        """
        self["ws-origins"].append(origin)


def settings_from(options: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """
    Build the settings from parsed options, the environment and the
    config file they name; print a warning line for each suspicious
    C{ECHOPLUS_*} variable.

    @raise ConfigError: the configuration is invalid.
    """
    resolved = resolve(options, environ)
    for warning in resolved.warnings:
        sys.stderr.write(f"echoplus: warning: {warning}\n")
    return resolved.settings


def makeService(options: Mapping[str, Any]) -> IService:
    """
    Validate the configuration and build the service tree.  An invalid
    configuration exits with status 1 and one line per fault.
    """
    from twisted.internet import reactor

    from echoplus import workers
    from echoplus.drain import install_signal_handlers
    from echoplus.resources import raise_open_files_limit
    from echoplus.service import EchoPlusService

    try:
        settings = settings_from(options, os.environ)
    except ConfigError as error:
        _report(error)
        raise SystemExit(1) from None
    _report_bind_errors_briefly()
    raise_open_files_limit()
    worker = workers.is_worker()
    if settings.workers > 1 and not worker:
        return workers.WorkerPool(settings, reactor, workers.option_arguments(options))
    if worker:
        settings = workers.worker_settings(settings)
    # SIGHUP re-reads the file and the environment under the same command line.
    command_line = dict(options)
    if command_line.get("config"):  # twistd --rundir changes directory later
        command_line["config"] = os.path.abspath(command_line["config"])

    def load() -> Settings:
        reloaded = load_settings(command_line, os.environ)
        return workers.worker_settings(reloaded) if worker else reloaded

    service = EchoPlusService(
        settings,
        reactor,
        metrics=workers.worker_metrics() if worker else None,
        load=load,
    )
    if worker:
        workers.adopt_listeners(service)
        service.fixed_listeners = True
    # After the reactor's own handlers, which would make twistd exit by the
    # signal (status -15) instead of 0 after a graceful drain.
    reactor.addSystemEventTrigger(
        "after", "startup", install_signal_handlers, reactor, service.drainer
    )
    return service


def _report(error: ConfigError) -> None:
    for line in str(error).splitlines():
        sys.stderr.write(f"echoplus: error: {line}\n")
    sys.stderr.flush()


def _report_bind_errors_briefly() -> None:
    """
    Report a L{ConfigError} escaping twistd's start-up (a port in use, say)
    as one line instead of a traceback.

    Binding happens in C{privilegedStartService}, after twistd wrote its
    pid file; twistd removes that file only for an L{Exception}, so the
    error must stay an exception, and only its printing changes.
    """
    previous = sys.excepthook

    def excepthook(kind: Any, value: Any, traceback: Any) -> None:
        if isinstance(value, ConfigError):
            _report(value)
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook
