"""HOST:PORT parsing and TCP_NODELAY (`geocachedb.net`), which the node, the
peers, the admin shell, the clients and the benchmark share."""

import socket

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from geocachedb import net


class ParseAddressTests(SynchronousTestCase):
    def test_host_and_port(self):
        self.assertEqual(net.parse_address("127.0.0.1:50051"), ("127.0.0.1", 50051))
        self.assertEqual(net.parse_address("localhost:1"), ("localhost", 1))
        self.assertEqual(net.parse_address(" node.example:65535 "), ("node.example", 65535))

    def test_ipv6_host_is_written_in_brackets(self):
        self.assertEqual(net.parse_address("[::1]:50051"), ("::1", 50051))
        self.assertEqual(net.parse_address("[fe80::1%eth0]:7"), ("fe80::1%eth0", 7))

    def test_anything_else_is_a_value_error_naming_the_address(self):
        for bad in ("", "50051", "host", "host:", ":50051", "host:port", "host:-1", "host:0",
                    "host:65536", "::1:50051", "[::1]", "[]:5", "[::1:5", "a]:5"):
            with self.assertRaises(ValueError, msg=bad) as caught:
                net.parse_address(bad)
            self.assertIn("is not HOST:PORT", str(caught.exception))

    def test_format_is_the_inverse_of_parse(self):
        for text in ("127.0.0.1:50051", "[::1]:50051", "localhost:1"):
            self.assertEqual(net.format_address(*net.parse_address(text)), text)


class NoDelayTests(SynchronousTestCase):
    def test_twisted_transport_gets_tcp_nodelay(self):
        calls = []

        class TCPTransport(StringTransport):
            def setTcpNoDelay(self, enabled):
                calls.append(enabled)

        net.set_no_delay(TCPTransport())
        self.assertEqual(calls, [True])

    def test_a_transport_without_tcp_options_is_left_alone(self):
        net.set_no_delay(StringTransport())  # no setTcpNoDelay: no error

    def test_socket_gets_tcp_nodelay(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sock = socket.create_connection(listener.getsockname())
        self.addCleanup(sock.close)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        net.set_socket_no_delay(sock)
        self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        net.set_socket_no_delay(None)


class DescribePeerTests(SynchronousTestCase):
    def test_tcp_addresses_as_host_port_and_others_as_text(self):
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        self.assertEqual(net.describe_peer(IPv4Address("TCP", "10.0.0.1", 5)), "10.0.0.1:5")
        self.assertEqual(net.describe_peer(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertIn("/tmp/s", net.describe_peer(UNIXAddress("/tmp/s")))
        self.assertEqual(net.describe_peer(None), "None")
