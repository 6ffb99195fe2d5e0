"""
Profile a real echoplus listener under load: where the server's time goes.

    python benchmarks/profile_server.py [--framing line] [--seconds 5] [--top 25]

Runs an echoplus listener (the real factory and protocol, epoll reactor)
in this process under cProfile, drives it with the C load generator
(C{loadgen.c} beside this file, built on the fly) or C{echoplus bench} from
another process, and prints the functions with the most own time.  The
server is pinned to core 0 and the load to core 1 when C{taskset} exists.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> int:
    """Run the profile and print it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framing", default="line", choices=("line", "int32", "raw"))
    parser.add_argument("--processors", default="echo")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25)
    arguments = parser.parse_args()

    from twisted.internet import epollreactor

    epollreactor.install()
    from run import build_loadgen
    from twisted.internet import reactor

    from echoplus.config import ListenerSettings
    from echoplus.factory import EchoPlusFactory
    from echoplus.processors.chain import parse_chain

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    settings = ListenerSettings(
        endpoint="tcp:0:interface=127.0.0.1",
        framing=arguments.framing,
        processors=parse_chain(arguments.processors),
    )
    factory = EchoPlusFactory(settings, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port
    loadgen = build_loadgen(None)
    size = 64
    if loadgen:
        command = [loadgen, str(port), "50", "16", str(size)]
        command += [str(arguments.seconds), arguments.framing]
    else:
        command = [sys.executable, "-m", "echoplus", "bench", f"tcp:127.0.0.1:{port}"]
        command += [
            "--framing",
            arguments.framing,
            "--duration",
            str(arguments.seconds),
        ]
    if (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "1", *command]
    profiler = cProfile.Profile()

    def start() -> None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        profiler.enable()

        def finished() -> None:
            if process.poll() is None:
                reactor.callLater(0.1, finished)
                return
            profiler.disable()
            print(process.stdout.read() if process.stdout else "")
            reactor.stop()

        reactor.callLater(0.1, finished)

    reactor.callWhenRunning(start)
    reactor.run()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(arguments.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
