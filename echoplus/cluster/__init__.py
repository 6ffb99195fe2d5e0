"""
Shared state across listeners, processes and hosts: the engines of
L{echoplus.interfaces.IBroker}.

  - L{echoplus.cluster.memory}: in-process topics, the default
    (C{--broker memory}); every listener of the process shares them.
  - L{echoplus.cluster.redis}: topics on a Redis 7 server shared by every
    node with the same C{--broker} and C{--broker-prefix}; per-topic
    history with epochs and offsets, so a node whose link was down fills
    its gap, or tells its subscribers C{GAP <topic>} when it cannot.

Around them: L{local} (a node's own subscribers, shared by both engines),
L{url} (the C{--broker} value, parsed without importing any client),
L{envelope} and L{recovery} (the sans-IO wire record and per-topic cursor
of the Redis engine), L{link} (the Redis connections, on txredisapi and
Twisted's C{ClientService}), L{scripts} (its Lua), L{metrics},
L{service} (building the engine the settings name, and its lifetime) and
L{publish} (the C{echoplus publish} command).

This package imports from C{echoplus.context}, C{echoplus.errors} and
C{echoplus.interfaces} only; nothing below it imports it, and the Redis
client is imported only when a C{redis} broker is configured.
"""
