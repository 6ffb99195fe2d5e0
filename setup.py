"""
The optional compiled path; everything else about the package is in
setup.cfg.

Two sources are compiled by Cython in pure-Python mode, each with the C
types of the .pxd named after its module: C{echoplus/_codecs.py} (the
framing's decoders and encoders) into C{echoplus._codecs_c}, and
C{echoplus/_readpath.py} (the protocol's per-read path) into
C{echoplus._readpath_c}.
Without Cython or a C compiler, or when a compile fails, the install goes
on as pure Python and says so in one line, unless
C{ECHOPLUS_REQUIRE_EXTENSIONS=1}, which makes that an error (for CI).
C{ECHOPLUS_NO_EXTENSIONS=1} at build time skips the compile.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("ECHOPLUS_REQUIRE_EXTENSIONS", "") not in ("", "0")
SKIP = os.environ.get("ECHOPLUS_NO_EXTENSIONS", "") not in ("", "0")
BUILD_DIR = os.path.join("build", "cython")
#: The sources compiled, each with the name of its module (and .pxd).
COMPILED = (("_codecs", "_codecs_c"), ("_readpath", "_readpath_c"))
FALLBACK = "echoplus: building without the compiled codecs (pure Python): {}"


def _give_up(why):
    if REQUIRE:
        sys.exit(f"echoplus: ECHOPLUS_REQUIRE_EXTENSIONS is set, but {why}")
    print(FALLBACK.format(why), file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """
    Build the extension if possible; otherwise install pure Python.
    """

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler at all, broken toolchain
            _give_up(f"the compile failed ({error})")

    failed = False

    def build_extension(self, ext):
        # Both modules or neither (echoplus uses the compiled ones together):
        # after one failed compile, say so once and build no more.
        if self.failed:
            return
        try:
            super().build_extension(ext)
        except Exception as error:
            self.failed = True
            _give_up(f"the compile failed ({error})")


def extensions():
    """
    The extension modules to build, or none.
    """
    if SKIP and not REQUIRE:
        print(FALLBACK.format("ECHOPLUS_NO_EXTENSIONS is set"), file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _give_up("Cython is not installed")
        return []
    # Each source is compiled under the name of the .pxd of C types beside
    # it; Cython tracks the source but not a .pxd of another name, so a
    # newer .pxd forces the compile.
    modules = []
    force = False
    for source, compiled in COMPILED:
        generated = os.path.join(BUILD_DIR, "echoplus", source + ".c")
        force = force or (
            os.path.exists(generated)
            and os.path.getmtime(f"echoplus/{compiled}.pxd")
            > os.path.getmtime(generated)
        )
        modules.append(Extension(f"echoplus.{compiled}", [f"echoplus/{source}.py"]))
    try:
        return cythonize(
            modules,
            build_dir=BUILD_DIR,
            force=force,
            # The types are in the .pxd; the annotations are for readers.
            compiler_directives={"language_level": 3, "annotation_typing": False},
            quiet=True,
        )
    except Exception as error:  # Cython refused the source
        _give_up(f"Cython failed ({error})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
