"""
The C{echoplus} command: tools around a running or planned echoplus server.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from echoplus import __version__

__all__ = ["main"]


def _processors(arguments: argparse.Namespace) -> int:
    from echoplus.errors import ConfigError
    from echoplus.processors import all_factories

    try:
        factories = all_factories()
    except ConfigError as error:
        print(f"echoplus: error: {error}", file=sys.stderr)
        return 1
    from echoplus.processors.builtin import BUILTINS

    width = max(len(name) for name in factories)
    for name, factory in factories.items():
        notes = [] if factory in BUILTINS else ["plugin"]
        if getattr(factory, "per_connection", False):
            notes.append("one per connection")
        note = f" [{', '.join(notes)}]" if notes else ""
        print(f"{name:<{width}}  {factory.description}{note}")
        for option, description in getattr(factory, "options", {}).items():
            print(f"{'':<{width}}    {option}: {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """
    The argument parser of the C{echoplus} command and its subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="echoplus",
        description=(
            "Tools for echoplus servers.  The server itself runs under twistd: "
            "twistd -n echoplus --help."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(title="commands", dest="command")
    listing = commands.add_parser(
        "processors", help="list the built-in and plugin processors"
    )
    listing.set_defaults(run=_processors)
    from echoplus.check import add_check_command

    add_check_command(commands)
    from echoplus.client import add_send_command

    add_send_command(commands)
    from echoplus.bench import add_bench_command

    add_bench_command(commands)
    from echoplus.cluster.publish import add_publish_command

    add_publish_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the C{echoplus} command; return its exit status.
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if not getattr(arguments, "run", None):
        parser.print_help()
        return 0
    try:
        status = int(arguments.run(arguments))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``echoplus processors | head``): stop quietly,
        # and keep Python from failing again while flushing at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
