"""
The interfaces that echoplus components provide.

A processor is any object providing L{IProcessor}; it is made by an
L{IProcessorFactory}, which is also what a plugin or a dotted path names.  A
processor that also provides L{IConnectionObserver} hears about every
connection of its listener.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IBatchProcessor",
    "IBroker",
    "IConnectionObserver",
    "IProcessor",
    "IProcessorFactory",
]


class IProcessor(Interface):
    """
    Processing logic: one message in, zero or more replies out.
    """

    def process(message, context):  # type: ignore[no-untyped-def]
        """
        Process one decoded message.

        @param message: the payload of one frame, as L{bytes}.
        @param context: the L{echoplus.context.ConnectionContext} of the
            connection the message arrived on: C{peer}, C{listener}, C{id}
            and C{send(payload)}.
        @return: the reply: L{bytes} (one frame), L{None} (no reply), a list
            or tuple of L{bytes} (several frames), or a L{Deferred} or
            coroutine that produces one of those.  In a chain, each output
            becomes the next processor's message.
        @raise echoplus.errors.RequestError: to answer
            C{ERROR bad-request: <its message>}.  Any other exception answers
            C{ERROR processor-failed: <processor name>}.
        """


class IProcessorFactory(Interface):
    """
    Makes processors; what a processor name, dotted path or plugin refers to.

    Two more attributes are optional, so that they are not required by
    C{verifyObject} (L{echoplus.processors.ProcessorFactory} has both):

      - C{options}: a mapping of option name to a one-line description,
        shown by C{echoplus processors} (default: none listed);
      - C{per_connection}: true when every connection needs its own
        processor instance (per-connection state); false (the default) for
        one instance per listener, shared by its connections.
    """

    name = Attribute("The processor's name, as given to --processor (str).")
    description = Attribute("One line describing what the processor does (str).")

    def __call__(**options):  # type: ignore[no-untyped-def]
        """
        Make a processor.

        @param options: the processor's options, as strings from the command
            line or as TOML values from a config file.
        @return: an L{IProcessor} provider.
        @raise ValueError: for an unknown option or a bad option value; the
            message names it.
        """


class IBatchProcessor(IProcessor):
    """
    Optionally provided by a stateless processor that can transform all the
    messages of one read in a single call.

    When every processor of a chain provides it and no reply is pending,
    the chain costs one call per processor per read instead of one per
    message.  Whenever C{process_batch} raises or returns anything but a
    list of exactly one L{bytes} reply per message, the same messages are
    processed again one by one with C{process} (which then reports errors
    per request as usual); so C{process_batch} must be a pure function of
    its messages, with no side effects.
    """

    def process_batch(messages, context):  # type: ignore[no-untyped-def]
        """
        Process several messages, as C{process} would one after the other.

        @param messages: the payloads of several frames, a L{list} of
            L{bytes}.
        @param context: the connection's context, as for C{process}.
        @return: a L{list} with exactly one L{bytes} reply per message, in
            order.
        """


class IConnectionObserver(Interface):
    """
    Optionally provided by a processor that keeps state across connections
    (chat rooms, pub/sub, game lobbies).
    """

    def connection_made(context):  # type: ignore[no-untyped-def]
        """
        A connection of the processor's listener was opened.

        @param context: the new connection's
            L{echoplus.context.ConnectionContext}.
        """

    def connection_lost(context, reason):  # type: ignore[no-untyped-def]
        """
        A connection of the processor's listener was closed.

        @param context: the closed connection's
            L{echoplus.context.ConnectionContext}; its C{send} is a no-op now.
        @param reason: a L{twisted.python.failure.Failure} saying why.
        """


class IBroker(Interface):
    """
    Topics shared by every listener of a process and, with a broker such as
    Redis, by every process and host on that broker: what C{pubsub},
    C{broadcast} and any room or lobby processor publish through.

    A topic is a non-empty L{bytes} name.  A subscriber is a local
    connection (its L{echoplus.context.ConnectionContext}); what it receives
    is pushed to it with C{send_shared}, in its own framing.  Every
    subscriber of a topic, on every node, receives the topic's frames in one
    order, each exactly once.  When a node cannot prove that a subscriber
    missed nothing (its link to the broker was down for longer than the
    topic's history covers), the subscriber receives its C{gap} frame
    instead of the frames that were lost, and then the stream goes on.

    Available from any processor as C{context.broker}; a processor written
    against this interface is cluster-wide as soon as the operator sets
    C{--broker}, with nothing engine-specific imported.
    """

    name = Attribute(
        "The engine's name as given to --broker, without credentials (str)."
    )

    def publish(topic, frame, sender=None):  # type: ignore[no-untyped-def]
        """
        Send C{frame} to every subscriber of C{topic} on every node.

        @param topic: the topic, L{bytes}.
        @param frame: the payload every subscriber receives, L{bytes}.
        @param sender: a L{echoplus.context.ConnectionContext} that must not
            receive it even when subscribed (C{broadcast}: everyone
            I{else}), or L{None}.
        @return: a L{Deferred} firing with the number of subscribers it goes
            to, counted on every live node; or failing with
            L{echoplus.errors.Unavailable} when the broker cannot take it
            (the frame then goes to nobody).
        """

    def subscribe(topic, context, gap=None):  # type: ignore[no-untyped-def]
        """
        Subscribe a local connection to C{topic}.  Subscribing twice is the
        same as once.  A closed connection must be unsubscribed (see
        L{unsubscribe_all}).

        @param topic: the topic, L{bytes}.
        @param context: the connection's
            L{echoplus.context.ConnectionContext}.
        @param gap: the frame this subscriber receives when frames of the
            topic may have been lost (C{GAP <topic>} for C{pubsub}), or
            L{None} to receive nothing then (the loss is still logged and
            counted).
        @return: a L{Deferred} firing with L{None} once frames published
            from now on, on any node, reach the subscriber.  While the
            broker is unreachable it fires at once: the subscription is
            restored with the link.
        """

    def unsubscribe(topic, context):  # type: ignore[no-untyped-def]
        """
        Unsubscribe a local connection from C{topic}; nothing happens when
        it is not subscribed.

        @param topic: the topic, L{bytes}.
        @param context: the connection's context.
        """

    def unsubscribe_all(context):  # type: ignore[no-untyped-def]
        """
        Unsubscribe a local connection from every topic (call it from
        C{connection_lost}).

        @param context: the connection's context.
        """

    def subscribers(topic):  # type: ignore[no-untyped-def]
        """
        Count the subscribers of C{topic} on every live node.

        @param topic: the topic, L{bytes}.
        @return: a L{Deferred} firing with an L{int}, or failing with
            L{echoplus.errors.Unavailable}.
        """

    def status():  # type: ignore[no-untyped-def]
        """
        The broker's state for C{/healthz} and logs.

        @return: C{"memory"} for the in-process engine; C{"connected"} or
            C{"disconnected"} for an engine with a link to a broker.
        """
