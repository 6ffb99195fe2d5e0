"""
WebSocket as a wire format: C{--framing websocket}.

The protocol itself (handshake, frames, fragmentation, masking, ping and
close handling, permessage-deflate) is the C{websockets} library's Sans-I/O
layer (C{websockets.server.ServerProtocol} and C{ClientProtocol}); this
package adapts it to echoplus' codec contract and nothing more:

  - L{echoplus.websocket.origins}: the origin policy (no imports beyond
    the standard library);
  - L{echoplus.websocket.closing}: which close code and reason each error
    gets;
  - L{echoplus.websocket.server} and L{echoplus.websocket.client}: sans-IO
    codecs over C{websockets} (no Twisted);
  - L{echoplus.websocket.protocol}: the thin Twisted protocol, a
    L{echoplus.protocols.FramedProtocol} subclass.

Importing this package imports nothing; C{websockets} is imported only by
the modules that need it, and only when a C{websocket} listener (or
client) is configured.  Install it with C{pip install 'echoplus[websocket]'}.
"""
