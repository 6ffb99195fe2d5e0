"""
C{systemd:} endpoints: listening sockets passed by socket activation, the
way C{sd_listen_fds(3)} finds them.

An activator (a systemd socket unit, C{systemd-socket-activate}, another
service manager, or a L{echoplus.workers.WorkerPool}) passes sockets from
descriptor 3 on and sets C{LISTEN_PID} (this process) and C{LISTEN_FDS}
(how many); C{LISTEN_FDNAMES} (their names, C{:}-separated) is optional.
Twisted's own C{systemd:} parser ignores every socket when the names are
missing, which C{systemd-socket-activate} without C{--fdname} and other
activators do; here only C{name=} needs them.

Keys: C{domain=} (C{INET}, C{INET6} or C{UNIX}, required) and exactly one
of C{index=N} (the N-th passed socket, from 0) or C{name=NAME}.  The
socket is looked up when the endpoint listens, so C{echoplus check} can
validate the string in a process that was passed nothing.

Importing C{twisted.internet.endpoints} (which twistd's plugin scan does
before echoplus runs) deletes C{LISTEN_PID} and C{LISTEN_FDS} from
C{os.environ}.  So the variables are read as this module found them when
first imported (a worker imports it first, see L{echoplus.worker}), else
as the process was started with them (C{/proc/self/environ} on Linux,
which that deletion does not change).  This module imports
C{twisted.internet.endpoints} only when an endpoint listens.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from zope.interface import implementer

__all__ = [
    "LISTEN_FDS_START",
    "activation_environment",
    "find_passed_socket",
    "passed_sockets",
    "systemd_server_endpoint",
]

#: The first descriptor an activator passes (C{SD_LISTEN_FDS_START}).
LISTEN_FDS_START = 3

_DOMAINS = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}

_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: The activation variables when this module was first imported.
_AT_IMPORT = {name: os.environ[name] for name in _VARIABLES if name in os.environ}


def activation_environment() -> dict[str, str]:
    """
    The C{LISTEN_*} variables of this process: as they were when this
    module was first imported, else as the process was started with them
    (on Linux), else as they are now.
    """
    if "LISTEN_PID" in _AT_IMPORT:
        return dict(_AT_IMPORT)
    try:
        with open("/proc/self/environ", "rb") as stream:
            entries = stream.read().split(b"\0")
    except OSError:
        return {name: os.environ[name] for name in _VARIABLES if name in os.environ}
    found = {}
    for entry in entries:
        name, _, value = entry.decode("utf-8", "replace").partition("=")
        if name in _VARIABLES:
            found[name] = value
    return found


def passed_sockets(
    environ: Mapping[str, str], pid: int
) -> tuple[list[int], list[str] | None]:
    """
    The descriptors passed to process C{pid}, and their names (C{None} when
    the activator gave none, or not one per socket).
    """
    if environ.get("LISTEN_PID", "").strip() != str(pid):
        return [], None
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return [], None
    descriptors = list(range(LISTEN_FDS_START, LISTEN_FDS_START + max(count, 0)))
    names = environ.get("LISTEN_FDNAMES")
    split = names.split(":") if names is not None else None
    if split is not None and len(split) != len(descriptors):
        split = None
    return descriptors, split


def systemd_server_endpoint(
    reactor: Any,
    args: list[str],
    kwargs: dict[str, str],
    environ: Mapping[str, str] | None = None,
) -> IStreamServerEndpoint:
    """
    Build a C{systemd:} endpoint from its parsed string (without the
    C{systemd} prefix): see the module docstring for the keys.

    @param environ: the C{LISTEN_*} variables; by default
        L{activation_environment}, read when the endpoint listens.

    @raise ValueError: a key or value is wrong (the message says which).
    """
    unknown = sorted(set(kwargs) - {"domain", "index", "name"})
    if args or unknown:
        extra = unknown[0] if unknown else args[0]
        raise ValueError(
            f"systemd: unexpected {extra!r} (keys: domain=, index= or name=)"
        )
    domain = kwargs.get("domain", "")
    if domain not in _DOMAINS:
        raise ValueError(
            f"systemd: domain= must be INET, INET6 or UNIX, not {domain!r}"
        )
    index, name = kwargs.get("index"), kwargs.get("name")
    if (index is None) == (name is None):
        raise ValueError("systemd: give exactly one of index= and name=")
    if index is not None and not (index.isdigit() and index.isascii()):
        raise ValueError(f"systemd: index= must be a number from 0, not {index!r}")
    return _PassedSocketEndpoint(
        reactor,
        _DOMAINS[domain],
        int(index) if index is not None else None,
        name,
        environ,
    )


@implementer(IStreamServerEndpoint)
class _PassedSocketEndpoint:
    """
    Adopts a socket passed by an activator, found when listening.
    """

    def __init__(
        self,
        reactor: Any,
        family: int,
        index: int | None,
        name: str | None,
        environ: Mapping[str, str] | None,
    ) -> None:
        self._reactor = reactor
        self._family = family
        self._index = index
        self._name = name
        self._environ = environ

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        environ = self._environ
        if environ is None:
            environ = activation_environment()
        try:
            descriptor = find_passed_socket(
                environ, os.getpid(), self._index, self._name
            )
        except ValueError as error:
            return fail(error)
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        adopted = AdoptedStreamServerEndpoint(self._reactor, descriptor, self._family)
        return adopted.listen(factory)


def find_passed_socket(
    environ: Mapping[str, str],
    pid: int,
    index: int | None = None,
    name: str | None = None,
) -> int:
    """
    The descriptor of the passed socket at C{index}, or named C{name}.

    @param environ: the C{LISTEN_*} variables.
    @param pid: this process.
    @raise ValueError: there is none; the message says what is missing.
    """
    descriptors, names = passed_sockets(environ, pid)
    if not descriptors:
        raise ValueError(
            "no socket was passed to this process (LISTEN_PID and "
            "LISTEN_FDS, which socket activation sets, do not name it)"
        )
    if index is not None:
        if index >= len(descriptors):
            raise ValueError(
                f"index={index}, but {len(descriptors)} socket(s) "
                "were passed (the first is index=0)"
            )
        return descriptors[index]
    if names is None:
        raise ValueError(
            f"name={name} needs LISTEN_FDNAMES, which the activator "
            "did not set (systemd-socket-activate sets it with --fdname); "
            "use index= instead"
        )
    if name not in names:
        raise ValueError(
            f"no socket named {name!r} was passed (names: {', '.join(names)})"
        )
    return descriptors[names.index(name)]
