"""
echoplus: a Twisted framework and service for framed TCP/TLS/UNIX socket
servers that grow by adding processor components.

Importing this package imports nothing heavy and never the reactor.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
