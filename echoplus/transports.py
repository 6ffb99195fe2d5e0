"""
What echoplus knows about Twisted's transports: the direct send.

Twisted's socket transports never write at once.  C{transport.write(data)}
appends to a buffer and asks the reactor to watch the socket for
writability; the bytes leave on the next reactor turn, which costs two
C{epoll_ctl} calls and a loop iteration per batch (twisted/twisted#5303,
open since 2011).  asyncio, Netty and tokio instead send at once when
nothing is queued, and so does echoplus on the transports below.

L{choose_writer} is called once per connection (in C{connectionMade}) and
returns the function the protocol writes through:

  - on a plain TCP or UNIX server transport (exactly
    C{twisted.internet.tcp.Server} or C{twisted.internet.unix.Server}, not a
    subclass, a TLS layer, a C{ProtocolWrapper} such as C{haproxy:}, a
    C{StringTransport} or anything else), a I{direct writer}: when the
    transport has nothing buffered, is not closing, has no TLS started and
    no producer other than the protocol itself, it calls C{socket.send} and
    hands only the unsent rest to C{transport.write};
  - everywhere else, C{transport.write} itself.

Why this is safe: with nothing buffered, Twisted's own C{doWrite} would
make the very same C{send} call one reactor turn later, so sending now
changes when the bytes leave, never their order.  Whatever is not sent
(a partial send, C{EAGAIN}) goes through C{transport.write}, after which the
buffer is no longer empty and every later write queues behind it.  A socket
error (the peer has gone: C{EPIPE}, C{ECONNRESET}) is not raised: the data
is handed to C{transport.write}, whose next C{doWrite} meets the same error
and closes the connection the usual Twisted way.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp, unix

from echoplus._extensions import MODULES

__all__ = ["DIRECT_SEND_TYPES", "can_send_directly", "choose_writer"]

#: The transport classes the direct send is proven against.  Exact types:
#: a subclass may override C{write} or keep state of its own.
DIRECT_SEND_TYPES: frozenset[type] = frozenset({tcp.Server, unix.Server})


def can_send_directly(transport: object) -> bool:
    """
    Whether C{transport} is one whose socket echoplus may write to itself.

    @param transport: a connection's transport.
    @return: C{True} only for a plain TCP or UNIX server transport with a
        socket and without TLS.
    """
    return (
        type(transport) in DIRECT_SEND_TYPES
        and getattr(transport, "socket", None) is not None
        and not getattr(transport, "TLS", False)
    )


def choose_writer(transport: Any, producer: object) -> Callable[[bytes], None]:
    """
    Return the function a protocol should write its bytes through.

    @param transport: the connection's transport.
    @param producer: the producer the protocol registered with the
        transport (the protocol itself); any other registered producer
        turns the direct send off for that write.
    @return: a direct writer (see the module docstring) where the transport
        allows it, otherwise C{transport.write}.
    """
    if not can_send_directly(transport):
        return transport.write  # type: ignore[no-any-return]
    # The read path's DirectWriter: compiled with it when echoplus is.
    return MODULES["_readpath"].DirectWriter(transport, producer)  # type: ignore[no-any-return]
