"""
Testing an echoplus server with FrameHarness: runs under trial and pytest.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoplus.interfaces import IProcessor
from echoplus.testing import FrameHarness


@implementer(IProcessor)
class Later:
    """
    An asynchronous processor: each reply waits until the test fires it.
    """

    def __init__(self):
        self.pending = []

    def process(self, message, context):
        deferred = Deferred()
        self.pending.append(deferred)
        return deferred


class MyServerTests(SynchronousTestCase):
    def test_chain_over_netstring(self):
        """
        upper then reverse, over netstrings.
        """
        harness = FrameHarness("netstring", ["upper", "reverse"])
        harness.send(b"hello")
        self.assertEqual(harness.replies(), [b"OLLEH"])
        self.assertEqual(harness.written, b"5:OLLEH,")

    def test_async_replies_keep_request_order(self):
        """
        Replies released out of order still come back in request order.
        """
        later = Later()
        harness = FrameHarness("line", [later])
        harness.send(b"first", b"second")
        later.pending[1].callback(b"second done")
        self.assertEqual(harness.replies(), [])
        later.pending[0].callback(b"first done")
        self.assertEqual(harness.replies(), [b"first done", b"second done"])

    def test_idle_timeout(self):
        """
        An idle connection is closed once the clock passes idle_timeout.
        """
        harness = FrameHarness("line", ["echo"], idle_timeout=30)
        harness.clock.advance(29)
        self.assertFalse(harness.disconnected)
        harness.clock.advance(10)
        [reply] = harness.replies()
        self.assertTrue(reply.startswith(b"ERROR timeout: "))
        self.assertTrue(harness.disconnected)

    def test_oversize_frame(self):
        """
        A frame over max_frame is answered with frame-too-long, then closed.
        """
        harness = FrameHarness("line", ["echo"], max_frame=16)
        harness.send(b"x" * 17)
        [reply] = harness.replies()
        self.assertTrue(reply.startswith(b"ERROR frame-too-long: "))
        self.assertTrue(harness.disconnected)
