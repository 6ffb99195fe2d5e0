"""
The optional compiled codecs; everything else about the package is in
setup.cfg.

C{echoplus/_codecs.py} is compiled by Cython (pure-Python mode, with the C
types of C{echoplus/_codecs_c.pxd}) into the extension C{echoplus._codecs_c}.
Without Cython or a C compiler, or when the compile fails, the install goes
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

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
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
    # Cython tracks _codecs.py but not the .pxd of another name beside it.
    generated = os.path.join(BUILD_DIR, "echoplus", "_codecs.c")
    stale = os.path.exists(generated) and os.path.getmtime(
        "echoplus/_codecs_c.pxd"
    ) > os.path.getmtime(generated)
    try:
        return cythonize(
            [Extension("echoplus._codecs_c", ["echoplus/_codecs.py"])],
            build_dir=BUILD_DIR,
            force=stale,
            # The types are in the .pxd; the annotations are for readers.
            compiler_directives={"language_level": 3, "annotation_typing": False},
            quiet=True,
        )
    except Exception as error:  # Cython refused the source
        _give_up(f"Cython failed ({error})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
