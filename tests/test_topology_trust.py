"""
The topology database against hostile network nodes: end-node hijack,
floods by many identities, odd and replayed RSNs, dead nodes, and the
bookkeeping bounds.  Every hostile node is a real node of the harness
(L{tests.hostile.topology}) with real keys and real signatures.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.controlpoint import LinkState
from appnpy.net.topology import TopologyRecord
from appnpy.net.topology.flooding import MAX_NEIGHBOURS
from appnpy.testing import MemoryNetwork, resultOf
from tests.hostile.topology import (
    FreshIdentity,
    HostileTopologyNode,
    identityBelow,
    nodeBody,
)
from tests.test_topology import Net, build, push


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")


class EndNodeHijackTests(SynchronousTestCase):
    def lab(self) -> Any:
        """
        B - A - E (A serves the end node E), and H linked to B: a hostile
        network node whose node ID is lower than A's.
        """
        net = MemoryNetwork(services=True)
        a = net.addNode("LAB.A")
        b = net.addNode("LAB.B")
        e = net.addNode("LAB.E", role="end")
        hostile = HostileTopologyNode(net, identity=identityBelow(a.nodeID))
        net.link(b, a)
        net.link(hostile.node, b)
        net.link(e, a)
        net.flush(advance=10)
        self.addCleanup(net.stop)
        return net, a, b, e, hostile

    def test_lowerIDClaimGetsNoSessions(self) -> None:
        """
        A lower-ID network node that lists another's end node in its own
        (genuinely signed) node record does not become its server: routes
        and routed sessions to the end node still go through the node the
        end node named in its end record.
        """
        net, a, b, e, hostile = self.lab()
        hostile.claimEndNode(e.nodeID)
        net.flush(advance=10)
        listed = {n["node_id"]: n["end_nodes"] for n in b.topology.asDict()["nodes"]}
        self.assertEqual(listed[hostile.nodeID], [e.nodeID])
        self.assertLess(hostile.nodeID, a.nodeID)
        self.assertEqual(b.topology.servingNode(e.nodeID), a.nodeID)
        self.assertEqual(b.topology.selectRoute(b.nodeID, e.nodeID).hops[-2], a.nodeID)
        d = b.routedSessions.open(e.nodeID, "echo", lambda info: Greeter())
        net.flush(advance=5)
        session = resultOf(d)
        self.assertEqual(session.transport.peerNodeID, e.nodeID)
        self.assertEqual(len(a.relay.table), 1)
        self.assertEqual(hostile.node.relay.table, {})

    def test_listingAloneCountsForNothing(self) -> None:
        """
        An end node that named no server has none, whoever lists it; and a
        forged end record (signed by another key than the end node's)
        is refused.
        """
        net, a, b, e, hostile = self.lab()
        stranger = FreshIdentity()
        hostile.claimEndNode(stranger.nodeID)
        net.flush(advance=10)
        self.assertIsNone(b.topology.servingNode(stranger.nodeID))
        # The hostile node signs an end record in E's name, naming itself.
        forged = _forgedEnd(hostile, e, 10**9)
        hostile.push(b, [forged])
        net.flush()
        self.assertGreaterEqual(b.topology.stats["bad_signature"], 1)
        self.assertEqual(b.topology.servingNode(e.nodeID), a.nodeID)

    def test_endNodeSpeaksOnlyForItself(self) -> None:
        """
        Over its link, an end node's end record counts only when it names
        the network node it sends it to; other records from it are ignored.
        """
        net, a, b, e, hostile = self.lab()
        before = a.topology.stats["not_network"]
        body = {"name": "LAB.E", "public_key": e.identity.publicKeyBytes}
        elsewhere = TopologyRecord.create(e.identity, "end", hostile.nodeID, 10**9, body)
        stranger = FreshIdentity()
        node = TopologyRecord.create(stranger, "node", "", 2, nodeBody(stranger))
        push(e.links[a.nodeID], [elsewhere, node])
        net.flush()
        self.assertEqual(a.topology.stats["not_network"], before + 2)
        self.assertEqual(b.topology.servingNode(e.nodeID), a.nodeID)
        self.assertIsNone(a.topology.record("node", stranger.nodeID))

    def test_endRecordFollowsFailover(self) -> None:
        """
        When the end node's server goes, it names its other network node,
        and routes follow it.
        """
        net = MemoryNetwork(services=True)
        self.addCleanup(net.stop)
        a, b, c = net.addNode("LAB.A"), net.addNode("LAB.B"), net.addNode("LAB.C")
        e = net.addNode("LAB.E", role="end")
        net.link(a, c)
        net.link(b, c)
        first = net.connect(e, a)
        net.connect(e, b)
        net.flush(advance=10)
        self.assertEqual(c.topology.servingNode(e.nodeID), a.nodeID)
        first.cut()
        net.flush(advance=10)
        self.assertEqual(c.topology.servingNode(e.nodeID), b.nodeID)
        self.assertEqual(e.directory.serverNodeID, b.nodeID)
        self.assertEqual(
            c.topology.selectRoute(c.nodeID, e.nodeID).hops, [c.nodeID, b.nodeID, e.nodeID]
        )


def _forgedEnd(hostile: HostileTopologyNode, e: Any, rsn: int) -> bytes:
    from appnpy.cp.messages import encodeBody

    body = {"name": "LAB.E", "public_key": e.identity.publicKeyBytes}
    sig = hostile.node.identity.sign(
        TopologyRecord.signedBytes("end", e.nodeID, hostile.nodeID, rsn, body)
    )
    return encodeBody(
        {
            "kind": "end",
            "owner": e.nodeID,
            "subject": hostile.nodeID,
            "rsn": rsn,
            "body": body,
            "sig": sig,
        }
    )


class SybilFloodTests(SynchronousTestCase):
    """
    H1 - V1 - F - D and H2 - V2 - F, V1 - V2: two hostile neighbours push
    valid node records of thousands of fresh identities; F forwards what
    both V1 and V2 pass on.
    """

    options = {
        "burst": 200.0,
        "rate": 10.0,
        "syncCredit": 0.0,
        "abuseLimit": 100,
        "maxBytes": 100_000,
    }

    def lab(self) -> tuple[Net, list[HostileTopologyNode]]:
        t = Net(4, **self.options)  # V1, V2, F, D
        for a, b in ((0, 2), (1, 2), (2, 3), (0, 1)):
            t.link(a, b)
        hostiles = [HostileTopologyNode(t.net, f"LAB.H{i}") for i in (1, 2)]
        for h, victim in zip(hostiles, t.nodes[:2], strict=True):
            t.net.connect(h.node, victim)
        t.settle()
        return t, hostiles

    def assertHonestWhole(self, t: Net, honest: list[int]) -> None:
        for db in t.dbs:
            for i in honest:
                self.assertIsNotNone(db.record("node", t.id(i)), f"{db.name} lost {i}")
            graph = db.graph()
            for a, b in t.cables:
                if a in honest and b in honest:
                    self.assertIn(t.id(b), graph.neighbours(t.id(a)))

    def test_manyIdentitiesBounded(self) -> None:
        """
        The honest nodes stay within their byte budget, keep every honest
        node's records and links, and F (forwarding the flood) stays linked;
        a node joining afterwards is admitted everywhere.
        """
        t, hostiles = self.lab()
        for _ in range(3):
            for h, victim in zip(hostiles, t.nodes[:2], strict=True):
                h.push(victim, list(h.sybilRecords(h.mint(400))))
            t.net.flush(advance=1)
        t.settle()
        maxBytes = self.options["maxBytes"]
        for db in t.dbs:
            self.assertLessEqual(db.store.bytes, maxBytes, db.name)
        self.assertGreater(sum(db.stats["db_full"] for db in t.dbs), 300)
        # D had to drop part of what F forwarded, but charged its owners.
        self.assertGreater(t.dbs[3].stats["rate_limited"], self.options["abuseLimit"])
        self.assertHonestWhole(t, [0, 1, 2, 3])
        self.assertIn(t.id(2), t.nodes[3].links)
        self.assertEqual(t.dbs[3].stats["links_closed_for_abuse"], 0)
        self.assertIs(t.nodes[3].links[t.id(2)].state, LinkState.ACTIVE)
        # A real joiner, linked to D, gets into every full database.
        t.add("LAB.J")
        t.link(4, 3)
        # (its own first sync is rate-limited too; it asks again later)
        for _ in range(8):
            t.net.flush(advance=5)
        self.assertHonestWhole(t, [0, 1, 2, 3, 4])

    def test_paddedRecordsRefused(self) -> None:
        """
        A node body with a key outside its fixed set is refused; the largest
        allowed body (a 2 KiB certificate) is accepted.
        """
        t = build("line", 2)
        cp = t.nodes[0].links[t.id(1)]
        fake = FreshIdentity()
        padded = TopologyRecord.create(fake, "node", "", 2, nodeBody(fake, pad=b"x" * 100))
        cert = TopologyRecord.create(fake, "node", "", 4, nodeBody(fake, cert=b"x" * 2048))
        tooBig = TopologyRecord.create(fake, "node", "", 6, nodeBody(fake, cert=b"x" * 2049))
        push(cp, [padded, tooBig])
        t.net.flush()
        self.assertEqual(t.dbs[1].stats["malformed"], 2)
        self.assertIsNone(t.dbs[1].record("node", fake.nodeID))
        push(cp, [cert])
        t.net.flush()
        self.assertIsNotNone(t.dbs[1].record("node", fake.nodeID))


class RSNRuleTests(SynchronousTestCase):
    def test_oddRSNRefused(self) -> None:
        """
        RSNs are even: an odd one is refused however well signed.
        """
        t = build("line", 2)
        cp = t.nodes[0].links[t.id(1)]
        me = t.nodes[0].identity
        current = t.dbs[1].record("node", t.id(0))
        odd = TopologyRecord.create(me, "node", "", current.rsn + 1, nodeBody(me, "LAB.N0"))
        push(cp, [odd])
        t.net.flush()
        self.assertEqual(t.dbs[1].stats["odd_rsn"], 1)
        self.assertEqual(t.dbs[1].record("node", t.id(0)).rsn, current.rsn)

    def test_agedOutNotReplayed(self) -> None:
        """
        A record that aged out cannot be brought back by replaying it: its
        RSN is tombstoned.
        """
        t = build("line", 3, refreshInterval=100.0, maxAge=250.0)
        hostile = HostileTopologyNode(t.net)
        t.net.connect(hostile.node, t.nodes[0])
        t.settle()
        stranger = FreshIdentity()
        old = TopologyRecord.create(stranger, "node", "", 2, nodeBody(stranger, "LAB.OLD"))
        hostile.push(t.nodes[0], [old])
        t.net.flush()
        self.assertIsNotNone(t.dbs[2].record("node", stranger.nodeID))
        for _ in range(8):
            t.net.flush(advance=50)
        self.assertIsNone(t.dbs[0].record("node", stranger.nodeID))
        hostile.push(t.nodes[0], [old])
        t.net.flush()
        self.assertEqual(t.dbs[0].stats["replayed"], 1)
        self.assertIsNone(t.dbs[0].record("node", stranger.nodeID))
        newer = TopologyRecord.create(stranger, "node", "", 4, nodeBody(stranger, "LAB.OLD"))
        hostile.push(t.nodes[0], [newer])
        t.net.flush()
        self.assertIsNotNone(t.dbs[0].record("node", stranger.nodeID))

    def test_deadNodeWithdrawnPromptly(self) -> None:
        """
        When a node's last link goes down, every node withdraws its records
        at once (not after max-age); an old copy replayed is refused; when it
        links again it is back everywhere.
        """
        t = build("ring", 4)
        t.add("LAB.LEAF")
        t.link(4, 2)
        t.settle()
        leaf = t.id(4)
        old = t.dbs[0].record("node", leaf)
        t.cut(4, 2)
        t.settle(2)
        for db in t.dbs[:4]:
            self.assertIsNone(db.record("node", leaf), db.name)
            self.assertFalse([r for r in db.records() if r.owner == leaf])
            self.assertGreater(db.stats["withdrawn"], 0)
        self.assertEqual(len(t.digests(t.dbs[:4])), 1)
        push(t.nodes[1].links[t.id(0)], [old])
        t.net.flush()
        self.assertEqual(t.dbs[0].stats["replayed"], 1)
        t.link(4, 0)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        self.assertIn(leaf, t.dbs[2].graph().neighbours(t.id(0)))


class BookkeepingTests(SynchronousTestCase):
    def test_neighbourTablePruned(self) -> None:
        """
        Per-neighbour state of neighbours gone for max-age is forgotten, and
        the table never holds more than MAX_NEIGHBOURS.
        """
        t = build("line", 2, refreshInterval=100.0, maxAge=250.0)
        db = t.dbs[0]
        for i in range(MAX_NEIGHBOURS + 50):
            ns = db.flooder.neighbour(f"peer{i}", t.net.clock.seconds())
            ns.linked = False
        db.ageOut()
        self.assertLessEqual(len(db.flooder.neighbours), MAX_NEIGHBOURS)
        self.assertIn(t.id(1), db.flooder.neighbours)
        t.cut(0, 1)
        for _ in range(8):
            t.net.flush(advance=50)
        self.assertEqual(db.flooder.neighbours, {})
