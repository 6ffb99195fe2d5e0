"""
Tests for L{echoplus.access}: C{--allow}/C{--deny} on the real client
address, and refusal without a byte.
"""

from __future__ import annotations

from attrs import evolve
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionAborted
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoplus.access import AccessPolicy, peer_ip
from tests.test_policies import Listener, lines


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 1234)


def v6(host: str) -> IPv6Address:
    return IPv6Address("TCP", host, 1234)


class AccessPolicyTests(SynchronousTestCase):
    """
    The allow/deny rule.
    """

    def test_empty_policy_allows_all(self) -> None:
        """
        With no networks every client is accepted.
        """
        policy = AccessPolicy()
        self.assertTrue(policy.open)
        self.assertTrue(policy.permits(v4("203.0.113.9")))
        self.assertTrue(policy.permits(v6("2001:db8::9")))

    def test_allow_list(self) -> None:
        """
        A non-empty allow list accepts only its networks, IPv4 and IPv6.
        """
        policy = AccessPolicy(allow=("10.0.0.0/8", "2001:db8::/32"))
        self.assertFalse(policy.open)
        self.assertTrue(policy.permits(v4("10.1.2.3")))
        self.assertTrue(policy.permits(v6("2001:db8:1::5")))
        self.assertFalse(policy.permits(v4("192.0.2.1")))
        self.assertFalse(policy.permits(v6("2001:db9::1")))

    def test_deny_wins(self) -> None:
        """
        An address both allowed and denied is refused.
        """
        policy = AccessPolicy(allow=("10.0.0.0/8",), deny=("10.9.0.0/16",))
        self.assertTrue(policy.permits(v4("10.8.0.1")))
        self.assertFalse(policy.permits(v4("10.9.0.1")))

    def test_deny_only(self) -> None:
        """
        With only a deny list, everything else is accepted.
        """
        policy = AccessPolicy(deny=("192.0.2.0/24", "::1/128"))
        self.assertFalse(policy.permits(v4("192.0.2.200")))
        self.assertFalse(policy.permits(v6("::1")))
        self.assertTrue(policy.permits(v4("198.51.100.1")))

    def test_ipv4_mapped_matches_ipv4_networks(self) -> None:
        """
        A dual-stack socket's IPv4-mapped address is matched as IPv4.
        """
        policy = AccessPolicy(deny=("192.0.2.0/24",))
        self.assertFalse(policy.permits(v6("::ffff:192.0.2.1")))
        allowed = AccessPolicy(allow=("192.0.2.0/24",))
        self.assertTrue(allowed.permits(v6("::ffff:192.0.2.1")))

    def test_zone_is_ignored(self) -> None:
        """
        A link-local address with a zone matches by its address.
        """
        policy = AccessPolicy(deny=("fe80::/10",))
        self.assertFalse(policy.permits(v6("fe80::1%eth0")))

    def test_unix_peers_allowed(self) -> None:
        """
        UNIX-socket peers have no IP address and are always accepted.
        """
        policy = AccessPolicy(allow=("10.0.0.0/8",))
        self.assertTrue(policy.permits(UNIXAddress(None)))
        self.assertTrue(policy.permits(UNIXAddress(b"/run/x.sock")))
        self.assertIsNone(peer_ip(UNIXAddress(None)))

    def test_host_bits_refused(self) -> None:
        """
        A network with host bits set (C{10.1.2.3/8}) is a ValueError, not
        silently widened to C{10.0.0.0/8}; a bare address is one host.
        """
        self.assertRaises(ValueError, AccessPolicy, allow=("10.1.2.3/8",))
        self.assertRaises(ValueError, AccessPolicy, deny=("fe80::1/64",))
        policy = AccessPolicy(allow=("10.1.2.3",))
        self.assertTrue(policy.permits(v4("10.1.2.3")))
        self.assertFalse(policy.permits(v4("10.1.2.4")))


class RefusalTests(SynchronousTestCase):
    """
    A refused client is closed without a byte, logged, and leaves no trace.
    """

    def test_denied_client_gets_nothing(self) -> None:
        """
        A denied client's transport is aborted with nothing written; the
        listener does not count it and later input is ignored.
        """
        listener = Listener(deny=("192.0.2.0/24",))
        with capturedLogs() as events:
            protocol, transport = listener.connect("192.0.2.5")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)
        self.assertIsNone(transport.producer)
        self.assertEqual(listener.factory.connections, {})
        self.assertTrue(
            any("refused by --allow/--deny" in str(e.get("log_format")) for e in events)
        )
        protocol.dataReceived(b"hello\n")
        protocol.readConnectionLost()
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(listener.clock.getDelayedCalls(), [])

    def test_allowed_client_served(self) -> None:
        """
        A client inside the allow list is served normally.
        """
        listener = Listener(allow=("192.0.2.0/24",))
        protocol, transport = listener.connect("192.0.2.5")
        protocol.dataReceived(b"hello\n")
        self.assertEqual(lines(transport), [b"hello"])

    def test_outside_allow_list_refused(self) -> None:
        """
        A client outside a non-empty allow list is refused.
        """
        listener = Listener(allow=("192.0.2.0/24",))
        _, transport = listener.connect("198.51.100.5")
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_denied_before_connection_limits(self) -> None:
        """
        A denied client does not use up a connection slot.
        """
        listener = Listener(deny=("198.51.100.0/24",), max_connections=1)
        for _ in range(3):
            listener.connect("198.51.100.5")
        protocol, transport = listener.connect("192.0.2.5")
        protocol.dataReceived(b"in\n")
        self.assertEqual(lines(transport), [b"in"])

    def test_reload_applies_to_new_connections(self) -> None:
        """
        A reload with a new deny list refuses new clients from it; the
        policy is rebuilt only when the networks change.
        """
        listener = Listener()
        factory = listener.factory
        policy = factory.policies.access
        factory.configure(factory.settings)
        self.assertIs(factory.policies.access, policy)

        factory.configure(evolve(factory.settings, deny=("192.0.2.0/24",)))
        _, transport = listener.connect("192.0.2.5")
        self.assertTrue(transport.disconnected)
