"""
The twistd plugin's options and service maker: C{twistd -n echoplus}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

from twisted.application.service import IService
from twisted.python import usage

from echoplus.config import OPTIONS, Settings, did_you_mean, load_settings, resolve
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

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line.  A mistake is one C{echoplus: error:} line
        on standard error and exit status 1: raised as a C{UsageError},
        twistd would print its whole usage first.

        Options must be spelled in full: C{getopt} would silently take an
        unambiguous prefix (C{--max-fram 4} as C{--max-frame}), so a prefix
        is refused with a "did you mean" instead.
        """
        arguments = sys.argv[1:] if options is None else list(options)
        try:
            self._check_spelling(arguments)
            super().parseOptions(arguments)
        except usage.UsageError as error:
            sys.stderr.write(f"echoplus: error: {error}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    def _check_spelling(self, arguments: Sequence[str]) -> None:
        """
        Refuse an option that is not one of ours, as C{getopt} reads the
        line: up to the first argument that is no option, or C{--}.

        @raise usage.UsageError: the first unknown option, with a hint.
        """
        takes_value = {name.rstrip("="): name.endswith("=") for name in self.longOpt}
        position = 0
        while position < len(arguments):
            argument = arguments[position]
            if argument == "--" or not argument.startswith("-") or argument == "-":
                return
            name, equals, _ = argument[2:].partition("=")
            if not argument.startswith("--") or name not in takes_value:
                raise usage.UsageError(_unknown_option(argument, sorted(takes_value)))
            position += 2 if takes_value[name] and not equals else 1

    def parseArgs(self, *arguments: str) -> None:
        """
        Refuse arguments that are not options: every setting is one.
        """
        if arguments:
            raise usage.UsageError(
                f"unexpected argument {arguments[0]!r}: every setting is an "
                "--option (twistd -n echoplus --help lists them)"
            )

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


def _unknown_option(argument: str, names: Sequence[str]) -> str:
    """
    The error for an option C{argument} that is none of C{names} (long
    option names without C{--}): what it may have meant, or that it
    belongs to twistd.
    """
    option = argument.partition("=")[0]
    text = f"unknown option {option}"
    if option.startswith("--"):
        prefixed = [name for name in names if name.startswith(option[2:])]
        if len(prefixed) == 1:
            return f"{text} (did you mean --{prefixed[0]}? options are spelled in full)"
    if _is_twistd_option(option):
        return (
            f"{text}: that is twistd's own option; put it before 'echoplus' "
            "(twistd [twistd options] echoplus [echoplus options])"
        )
    if option.startswith("--"):
        return text + did_you_mean(option, [f"--{name}" for name in names])
    return text + "; twistd -n echoplus --help lists the options"


def _is_twistd_option(option: str) -> bool:
    """
    Whether C{option} (C{--name} or C{-x}) is one of twistd's own options.
    """
    from twisted.scripts.twistd import ServerOptions

    server = ServerOptions()
    if option.startswith("--"):
        return option[2:] in {name.rstrip("=") for name in server.longOpt}
    return len(option) == 2 and option[1] in server.shortOpt.replace(":", "")


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


def makeService(options: Mapping[str, Any], reactor: Any = None) -> IService:
    """
    Validate the configuration, build the service tree and bind its
    endpoints.  An invalid configuration, or an endpoint that cannot
    listen, exits with status 1 and one line per fault.

    @param reactor: the reactor to serve with; by default the global one.
    """
    if reactor is None:
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
        pool = workers.WorkerPool(settings, reactor, workers.option_arguments(options))
        _bind_or_exit(pool)
        return pool
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
    else:
        _bind_or_exit(service)
    # After the reactor's own handlers, which would make twistd exit by the
    # signal (status -15) instead of 0 after a graceful drain.
    reactor.addSystemEventTrigger(
        "after", "startup", install_signal_handlers, reactor, service.drainer
    )
    return service


def _bind_or_exit(service: Any) -> None:
    """
    Bind every endpoint of C{service} now, before twistd starts logging, so
    that a port in use is reported exactly like a configuration error: one
    line and status 1.  Listeners are announced in the log later, once all
    of them are bound and the service starts.
    """
    try:
        service.bind()
    except ConfigError as error:
        _report(error)
        raise SystemExit(1) from None


def _report(error: ConfigError) -> None:
    for line in str(error).splitlines():
        sys.stderr.write(f"echoplus: error: {line}\n")
    sys.stderr.flush()


def _report_bind_errors_briefly() -> None:
    """
    Report a L{ConfigError} escaping twistd's start-up (a worker that
    cannot be started, a worker's own bind) as one line instead of a
    traceback.

    That happens after twistd wrote its pid file; twistd removes that file
    only for an L{Exception}, so the error must stay an exception, and only
    its printing changes.  (The listeners of the main process are bound
    earlier, in L{makeService}.)
    """
    previous = sys.excepthook

    def excepthook(kind: Any, value: Any, traceback: Any) -> None:
        if isinstance(value, ConfigError):
            _report(value)
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook
