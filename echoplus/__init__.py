"""
echoplus: a Twisted framework and service for framed TCP/TLS/UNIX socket
servers that grow by adding processor components.

Importing this package imports nothing heavy and never the reactor.
"""

import os as _os

from echoplus import _extensions

# ECHOPLUS_NO_EXTENSIONS=1, or a compiled module older than its source: the
# Python source is imported instead (see echoplus._extensions).
_extensions.install(_os.environ)

__version__ = "0.1.0"
__all__ = ["__version__"]
