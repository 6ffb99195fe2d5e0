"""
Process resource limits: as many open files as the system lets us have.

Every connection costs a file descriptor; the usual soft limit (1024) is
far below C{--max-connections}' default (10000).  At start-up the soft
C{RLIMIT_NOFILE} is raised to the hard limit, and the result is logged.

When descriptors run out anyway, Twisted's listening ports keep one
descriptor in reserve: on C{EMFILE} they close it, accept the waiting
connection, close that at once and reserve again, so the server neither
spins on a listening socket that stays readable nor crashes (see
C{tests/test_resources.py}).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

__all__ = ["open_files_limit", "raise_open_files_limit"]

_log = Logger()

#: Where the hard limit is "unlimited", raise the soft limit to this much.
UNLIMITED_TARGET = 1048576


def open_files_limit() -> tuple[int, int] | None:
    """
    The soft and hard C{RLIMIT_NOFILE}, or C{None} where there is none.
    """
    if resource is None:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_open_files_limit(log: Any = _log) -> int | None:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit, and log the outcome.

    @param log: a C{twisted.logger.Logger}.
    @return: the soft limit now in force, or C{None} where there is none.
    """
    limits = open_files_limit()
    if limits is None:
        return None
    soft, hard = limits
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warn(
                "Cannot raise the open files limit from {soft} to {target}: {error}",
                soft=soft,
                target=target,
                error=error,
            )
            return soft
        log.info(
            "Raised the open files limit from {soft} to {target}",
            soft=soft,
            target=target,
        )
        return target
    log.info("Open files limit: {soft}", soft=soft)
    return soft
