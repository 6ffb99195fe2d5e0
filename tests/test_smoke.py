"""
The smallest end-to-end check: the default launch answers over a socket.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd, receive_lines


class DefaultLaunchTests(SynchronousTestCase):
    def test_line_echo(self) -> None:
        """
        twistd -n echoplus on a loopback port echoes lines back in order.
        """
        server = Twistd(["--listen", "tcp:0:interface=127.0.0.1"])
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"hello\nworld\n")
            self.assertEqual(receive_lines(sock, 2), [b"hello", b"world"])
