"""The peer protocol against bad peers, with a real node: another cluster's
node, a stranger's id, garbage after the preamble.  Each is refused with
one log line and the node keeps serving clients."""

import os
import socket
import struct
import time

from twisted.trial.unittest import TestCase

from geocachedb.client import BlockingClient
from geocachedb.harness.processes import NodeProcess, admin_command, free_port
from geocachedb.node.listener import PEER_PREAMBLE
from geocachedb.wire import geocache_pb2 as pb


def hello(cluster_id, node_id, target_id):
    msg = pb.PeerMessage()
    msg.hello.cluster_id = cluster_id
    msg.hello.node_id = node_id
    msg.hello.target_id = target_id
    data = msg.SerializeToString()
    return struct.pack(">I", len(data)) + data


def read_frames_until_close(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        if not chunk:
            return data, True
        data += chunk


class BadPeerTests(TestCase):
    timeout = 60

    def setUp(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        # node1 believes in a node2 that is not running: the cluster cannot
        # elect a leader, but node1 must still refuse strangers properly.
        self.node = NodeProcess(
            "node1", free_port(), os.path.join(base, "node1"), os.path.join(base, "node1.log"),
            peers={"node2": "127.0.0.1:%d" % free_port()}, extra=["--cluster-id", "alpha"],
        )
        self.addCleanup(self.node.stop)
        self.node.start().wait_listening()

    def attempt(self, payload):
        s = socket.create_connection(("127.0.0.1", self.node.port), timeout=5)
        try:
            s.sendall(PEER_PREAMBLE + payload)
            return read_frames_until_close(s)
        finally:
            s.close()

    def wait_for_log(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while text not in self.node.read_log():
            if time.monotonic() > deadline:
                self.fail("%r not in the log:\n%s" % (text, self.node.read_log()[-3000:]))
            time.sleep(0.05)

    def test_wrong_cluster_id_is_refused(self):
        data, closed = self.attempt(hello("beta", "node2", "node1"))
        self.assertTrue(closed)
        self.assertIn(b"does not match", data)
        self.wait_for_log("cluster id 'beta' does not match ours ('alpha')")

    def test_stranger_id_is_refused(self):
        data, closed = self.attempt(hello("alpha", "mallory", "node1"))
        self.assertTrue(closed)
        self.wait_for_log("node id 'mallory' is not a member of this cluster")

    def test_hello_for_another_node_is_refused(self):
        _, closed = self.attempt(hello("alpha", "node2", "node7"))
        self.assertTrue(closed)
        self.wait_for_log("hello meant for 'node7' reached 'node1'")

    def test_garbage_and_oversized_frames_after_the_preamble(self):
        _, closed = self.attempt(b"\x00\x00\x00\x04\xff\xff\xff\xff")
        self.assertTrue(closed)
        _, closed = self.attempt(struct.pack(">I", 2**31))
        self.assertTrue(closed)
        raft_first = pb.PeerMessage()
        raft_first.raft.type = 1
        data = raft_first.SerializeToString()
        _, closed = self.attempt(struct.pack(">I", len(data)) + data)
        self.assertTrue(closed)
        self.wait_for_log("the first message must be a hello")
        self.assertTrue(self.node.alive())
        # Still serving: a serializable read needs no leader.
        with BlockingClient([self.node.address]) as c:
            self.assertIsNone(c.get(b"x", serializable=True))

    def test_admin_shell_of_a_real_node(self):
        out = admin_command(self.node, "status")
        self.assertIn("node1", out)
        self.assertIn("node2", out)  # the peer table
        admin_command(self.node, "loglevel error")
        admin_command(self.node, "status")
        # At level error the shell's per-command info lines are filtered out.
        self.assertNotIn("status", self.node.read_log().split("log level set to error")[-1])
        admin_command(self.node, "loglevel info")
        # Without --enable-fault-injection the failpoints stay shut.
        out = admin_command(self.node, "isolate node2")
        self.assertIn("start the node with --enable-fault-injection", out)
