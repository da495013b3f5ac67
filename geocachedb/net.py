"""Addresses and socket options: the one place either is spelled out.

Node addresses travel as ``HOST:PORT`` text: on the command line
(``--peers``, ``--join``, ``--advertise``), in the replicated membership, in
``NOT_LEADER`` hints and in every client's address list.  The node, its peer
network, the admin shell, the clients and the benchmark all parse them here,
so they agree on what is valid; an IPv6 host is written in brackets
(``[::1]:50051``), as in a URL.

This module imports nothing of geocachedb and nothing of Twisted, so server
and client code can both depend on it.
"""

import socket


def parse_address(address):
    """``"127.0.0.1:50051"`` -> ``("127.0.0.1", 50051)``;
    ``"[::1]:50051"`` -> ``("::1", 50051)``.

    Raises ValueError, naming the address, for anything else: no port, a
    port outside 1-65535, an empty host, or an IPv6 host without brackets
    (``::1:50051`` cannot be split safely).
    """
    text = str(address).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("address %r is not HOST:PORT" % (address,))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError("address %r is not HOST:PORT" % (address,))
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(
            "address %r is not HOST:PORT (write an IPv6 host in brackets: [::1]:50051)" % (address,)
        )
    return host, int(port)


def format_address(host, port):
    """The inverse of `parse_address`: ``("::1", 50051)`` -> ``"[::1]:50051"``."""
    host = str(host)
    if ":" in host:
        host = "[%s]" % host
    return "%s:%d" % (host, int(port))


def describe_peer(address):
    """``HOST:PORT`` of a connection's address (a Twisted ``IPv4Address``
    or ``IPv6Address``) for log lines; any other address as ``str``."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return format_address(host, port)
    return str(address)


def set_no_delay(transport):
    """Turn off Nagle's algorithm on a Twisted TCP transport (others, such as
    test transports, are left alone).

    Requests, responses and Raft messages are small and latency-bound:
    Nagle's algorithm together with delayed ACKs would hold a small write
    back for up to ~40 ms waiting for the previous one's acknowledgement.
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        try:
            setter(True)
        except OSError:
            pass


def set_socket_no_delay(sock):
    """`set_no_delay` for a plain socket (asyncio transports expose theirs
    as ``get_extra_info("socket")``); a non-TCP socket is left alone."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
