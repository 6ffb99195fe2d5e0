"""
Run C{twistd} on Twisted's asyncio reactor over uvloop's event loop.

    python benchmarks/twistd_uvloop.py -n echoplus [options]

twistd's C{--reactor asyncio} always takes the standard library's loop;
this launcher installs the reactor on a uvloop loop first.  Used by the
C{reactor} scenario of C{run.py} (see README.md there: on this machine it
measured no faster than the default epoll reactor, so nothing needs to be
chosen).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Install the asyncio reactor on uvloop, then run twistd."""
    import uvloop
    from twisted.internet import asyncioreactor

    asyncioreactor.install(uvloop.new_event_loop())
    from twisted.scripts.twistd import run

    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
