"""ReadIndex (thesis §6.4): a read is served at the leader's commit index once
a quorum confirms, after the read was registered, that the leader is still
leader; a new leader first commits an entry of its term; followers ask the
leader."""

from twisted.trial.unittest import SynchronousTestCase

from tests.raft_helpers import Message, Network, drain, new_core, t


def states(net, node_id):
    return [(rs.index, rs.context, rs.rejected) for rs in net.read_states[node_id]]


class LeaderReadIndexTests(SynchronousTestCase):
    def test_read_on_leader_is_released_after_a_quorum_acknowledges_a_heartbeat_round(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        held = net.hold(lambda m: m.type == t.HEARTBEAT_RESP)
        self.assertTrue(net.read_index("a", b"r1"))
        beats = [m for m in net.sent if m.type == t.HEARTBEAT and m.context]
        self.assertEqual(sorted(m.to for m in beats), ["b", "c"])
        self.assertEqual(states(net, "a"), [])
        net.hook = None
        net.send(held[0])  # one follower + the leader = quorum of 3
        self.assertEqual(states(net, "a"), [(a.log.committed, b"r1", False)])

    def test_read_is_not_released_by_an_acknowledgement_older_than_the_read(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.read_index("a", b"r1")
        held = net.hold(lambda m: m.type == t.HEARTBEAT_RESP)
        net.read_index("a", b"r2")
        self.assertEqual([s[1] for s in states(net, "a")], [b"r1"])
        # a replay of the answers to the first round confirms nothing new
        old = [m for m in net.delivered if m.type == t.HEARTBEAT_RESP]
        net.hook = lambda m: m.type != t.HEARTBEAT_RESP or m in old
        net.send(*old)
        self.assertEqual([s[1] for s in states(net, "a")], [b"r1"])
        net.hook = None
        net.send(*held)
        self.assertEqual([s[1] for s in states(net, "a")], [b"r1", b"r2"])

    def test_many_reads_in_one_turn_share_one_heartbeat_round(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        for i in range(10):
            a.read_index(b"r%d" % i)
        net.sent.clear()
        net.flush("a")
        self.assertEqual(len([m for m in net.sent if m.type == t.HEARTBEAT]), 2)
        self.assertEqual(len(states(net, "a")), 10)

    def test_isolated_leader_cannot_confirm_a_read_and_rejects_it_when_stepping_down(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.isolate("a")
        net.read_index("a", b"r1")
        net.tick("a", 5)
        self.assertEqual(states(net, "a"), [])
        net.tick("a", 20)  # check-quorum: steps down
        self.assertEqual(a.role, t.FOLLOWER)
        self.assertEqual(states(net, "a"), [(0, b"r1", True)])

    def test_new_leader_defers_reads_until_an_entry_of_its_term_is_committed(self):
        net = Network(["a", "b", "c"])
        net.drop(lambda m: m.type == t.APP_RESP)
        a = net.elect("a")
        self.assertNotEqual(a.log.term(a.log.committed), a.term)
        net.read_index("a", b"r1")
        self.assertEqual(states(net, "a"), [])
        net.hook = None
        net.tick("a")  # heartbeat answers -> appends resent -> commit -> read round
        self.assertEqual(a.log.term(a.log.committed), a.term)
        self.assertEqual(states(net, "a"), [(a.log.committed, b"r1", False)])

    def test_single_voter_confirms_reads_without_messages(self):
        core = new_core("solo", ["solo"])
        core.tick()
        drain(core)
        self.assertTrue(core.read_index(b"r"))
        rd = core.ready()
        self.assertEqual([(rs.index, rs.context) for rs in rd.read_states], [(1, b"r")])
        self.assertEqual(rd.messages + rd.messages_before_sync, [])


class FollowerReadIndexTests(SynchronousTestCase):
    def test_follower_gets_read_index_from_the_leader(self):
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        net.propose("a", b"x")
        self.assertTrue(net.read_index("b", b"f1"))
        self.assertEqual(states(net, "b"), [(a.log.committed, b"f1", False)])

    def test_follower_reads_of_one_turn_share_one_request(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        b = net.cores["b"]
        for i in range(5):
            b.read_index(b"f%d" % i)
        net.sent.clear()
        net.flush("b")
        self.assertEqual(len([m for m in net.sent if m.type == t.READ_INDEX]), 1)
        self.assertEqual(len(states(net, "b")), 5)

    def test_follower_without_leader_refuses_read(self):
        core = new_core("b", ["a", "b", "c"])
        self.assertFalse(core.read_index(b"f"))

    def test_non_leader_rejects_forwarded_read_index(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        c = net.cores["c"]
        c.step(Message(t.READ_INDEX, "c", "b", 1, context=b"x"))
        [resp] = drain(c)
        self.assertEqual((resp.type, resp.reject, resp.context), (t.READ_INDEX_RESP, True, b"x"))

    def test_forwarded_reads_are_rejected_when_the_follower_sees_a_new_leader(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.drop(lambda m: m.type == t.READ_INDEX)
        net.read_index("b", b"f1")
        net.hook = None
        net.isolate("a")
        for _ in range(30):
            net.tick("b")
            net.tick("c")
        self.assertEqual(len([i for i in net.leader() if i != "a"]), 1)
        self.assertEqual(states(net, "b"), [(0, b"f1", True)])

    def test_unanswered_forwarded_reads_expire_after_an_election_timeout(self):
        net = Network(["a", "b", "c"])
        net.elect("a")
        net.drop(lambda m: m.type == t.READ_INDEX)
        net.read_index("b", b"f1")
        net.hook = None
        for _ in range(10):
            net.tick("a")
            net.tick("b")
        self.assertEqual(states(net, "b"), [(0, b"f1", True)])

    def test_delayed_answer_to_a_previous_incarnation_does_not_release_a_new_read(self):
        # Found by fuzzing: request ids restarted at 1 after a restart, so a
        # late READ_INDEX_RESP for the old request released the new read
        # with an older index (a stale read).
        net = Network(["a", "b", "c"])
        a = net.elect("a")
        held = net.hold(lambda m: m.type == t.READ_INDEX_RESP)
        net.read_index("b", b"old")
        self.assertEqual(len(held), 1)
        net.hook = None
        net.cores["b"] = new_core("b", net.ids, net.cores["b"].log.storage, seed=99)
        net.tick("a")  # b learns the leader again
        net.propose("a", b"newer write")
        net.drop(lambda m: m.type == t.READ_INDEX)
        net.read_index("b", b"new")
        net.hook = None
        net.send(*held)
        self.assertEqual(states(net, "b"), [])
        self.assertLess(held[0].index, a.log.committed)
