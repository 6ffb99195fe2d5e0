"""
Which build of echoplus's compiled modules is in use: the Cython-compiled
ones, or the pure-Python sources they are compiled from.

Two sources are compiled (see C{setup.py}): C{_codecs.py} into
C{_codecs_c} (the framing's decoders and encoders) and C{_readpath.py} into
C{_readpath_c} (the protocol's per-read path).  Both builds are used, or
neither: L{MODULES} maps each source's name to the module in use, decided
once, at import.  C{ECHOPLUS_NO_EXTENSIONS=1} forces the sources; so does a
compiled module that is missing (installed without a C compiler) or older
than its source in a checkout.
"""

from __future__ import annotations

import importlib
import os
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import Mapping

__all__ = ["ACCELERATED", "MODULES", "NO_EXTENSIONS_VARIABLE"]

#: Set to C{1} (any non-empty value but C{0}) to use the pure-Python
#: sources even when the compiled modules are installed.
NO_EXTENSIONS_VARIABLE = "ECHOPLUS_NO_EXTENSIONS"

#: Each compiled source and the name of its compiled module.
COMPILED = {"_codecs": "_codecs_c", "_readpath": "_readpath_c"}

_HERE = os.path.dirname(os.path.abspath(__file__))


def _wants_extensions(environ: Mapping[str, str]) -> bool:
    """
    Whether the environment allows the compiled modules.
    """
    return environ.get(NO_EXTENSIONS_VARIABLE, "") in ("", "0")


def _stale_build() -> bool:
    """
    Whether this is a source checkout (C{setup.py} beside the package) with
    a source edited after its in-place build: then the build is not used,
    so an edit is never hidden by an old build.  (An install's file times
    say nothing of which was built from which: only a checkout is checked.)
    """
    if not os.path.exists(os.path.join(os.path.dirname(_HERE), "setup.py")):
        return False
    for source, compiled in COMPILED.items():
        written = os.path.getmtime(os.path.join(_HERE, source + ".py"))
        for suffix in EXTENSION_SUFFIXES:
            built = os.path.join(_HERE, compiled + suffix)
            if os.path.exists(built) and os.path.getmtime(built) < written:
                return True
    return False


def _load(environ: Mapping[str, str]) -> dict[str, ModuleType]:
    """
    Import the compiled modules if they may and can be used, else the
    sources.
    """
    if _wants_extensions(environ) and not _stale_build():
        try:
            return {
                source: importlib.import_module(f"echoplus.{compiled}")
                for source, compiled in COMPILED.items()
            }
        except ImportError:  # not built: installed without a C compiler
            pass
    return {
        source: importlib.import_module(f"echoplus.{source}") for source in COMPILED
    }


#: The module in use for each compiled source, by the source's name.
MODULES: dict[str, ModuleType] = _load(os.environ)

#: Whether the compiled modules are in use.
ACCELERATED: bool = MODULES["_codecs"].__name__ != "echoplus._codecs"
