"""
Which modules run compiled, and the switch that turns them off.

The build (C{setup.py}) compiles, with Cython in pure-Python mode:
  - C{echoplus/_codecs.py} into C{echoplus._codecs_c} (a module of its own,
    so that both codecs can be loaded side by side: L{echoplus.framing}
    picks one);
  - the per-read path, L{COMPILED_MODULES}, each into an extension of the
    same name beside its source, which Python then imports instead of the
    source.  Their classes stay Python classes: subclasses, C{__slots__},
    interfaces and tests see no difference.

C{ECHOPLUS_NO_EXTENSIONS=1} in the environment, or, in a source checkout,
a source newer than its build (edited since the last
C{setup.py build_ext --inplace}), makes the source win: L{install} puts a finder
before Python's own that loads those modules from their C{.py} files.

Imports nothing beyond the standard library, and nothing from Twisted.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
)
from typing import Mapping, Sequence

#: Set to C{1} (any non-empty value but C{0}) to run every module from its
#: Python source even when compiled ones are installed.
NO_EXTENSIONS_VARIABLE = "ECHOPLUS_NO_EXTENSIONS"

#: The modules of the per-read path compiled under their own names.
COMPILED_MODULES = ("echoplus.dispatch", "echoplus.protocols", "echoplus.transports")

_HERE = os.path.dirname(os.path.abspath(__file__))


def wants_extensions(environ: Mapping[str, str]) -> bool:
    """
    Whether the environment allows the compiled modules.
    """
    return environ.get(NO_EXTENSIONS_VARIABLE, "") in ("", "0")


def _build_of(name: str) -> str | None:
    """
    The compiled file of module C{name} in this package, if there is one.
    """
    base = os.path.join(_HERE, name.rpartition(".")[2])
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


#: Whether this package runs from a source checkout (built in place): only
#: there can a source be edited after its build.  An install's file times
#: say nothing about which was built from which.
_CHECKOUT = os.path.exists(os.path.join(os.path.dirname(_HERE), "setup.py"))


def stale(name: str, source: str) -> bool:
    """
    Whether, in a source checkout, the compiled build of C{name} is older
    than C{source} (the file it was built from): then it is not used.
    """
    if not _CHECKOUT:
        return False
    build = _build_of(name)
    return build is not None and os.path.getmtime(source) > os.path.getmtime(build)


class SourceFinder:
    """
    Finds the modules of L{COMPILED_MODULES} as Python source, for when the
    compiled ones must not be used.
    """

    def __init__(self, every: bool) -> None:
        """
        @param every: load every one from source; otherwise only those whose
            build is stale.
        """
        self._every = every
        self._finder = FileFinder(_HERE, (SourceFileLoader, SOURCE_SUFFIXES))

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> ModuleSpec | None:
        if name not in COMPILED_MODULES:
            return None
        spec = self._finder.find_spec(name)
        if spec is None or spec.origin is None:
            return None
        if self._every or stale(name, spec.origin):
            return spec
        return None


def install(environ: Mapping[str, str]) -> None:
    """
    Put the L{SourceFinder} in front of Python's own finders, once.
    """
    if any(isinstance(finder, SourceFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, SourceFinder(every=not wants_extensions(environ)))


def compiled(module: object) -> bool:
    """
    Whether C{module} was loaded from a compiled extension.
    """
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(EXTENSION_SUFFIXES))
