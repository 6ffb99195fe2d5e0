"""
Processors: the built-ins, loading by name, dotted path or plugin, and
chains.
"""

from echoplus.processors.base import ProcessorFactory, Transform
from echoplus.processors.chain import ProcessorChain, ProcessorEntry, parse_chain
from echoplus.processors.loading import all_factories, find_factory

__all__ = [
    "ProcessorChain",
    "ProcessorEntry",
    "ProcessorFactory",
    "Transform",
    "all_factories",
    "find_factory",
    "parse_chain",
]
