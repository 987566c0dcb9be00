"""
The topology database across in-memory networks of network nodes: flooding,
convergence, failures, forged and replayed records, rate limiting, FRSN
resynchronisation, RSN persistence and aging.
"""

from __future__ import annotations

import os
import random
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.controlpoint import LinkState
from appnpy.errors import NoRoute
from appnpy.link.identity import nodeIDFromSPKI
from appnpy.link.yamux import MuxConfig
from appnpy.net.topology import (
    MAX_LINKS_PER_ORIGIN,
    MAX_RECORD_BYTES,
    TopologyDatabase,
    TopologyRecord,
    TopologySync,
    TopologyUpdate,
    installTopology,
)
from appnpy.node import Node
from appnpy.testing import MemoryLink, MemoryNetwork

DAMPING = 1.0


def databaseFor(node: Node, **options: Any) -> TopologyDatabase:
    """
    A topology database for C{node}, not installed (a restart's replacement).
    """
    return TopologyDatabase(node.reactor, node.identity, node.name, node, **options)


class Net:
    """
    A MemoryNetwork of network nodes, each with a topology database.
    """

    def __init__(self, n: int, **options: Any) -> None:
        # Keepalive pings on, as in a real node: idle links stay up.
        self.net = MemoryNetwork(muxConfig=MuxConfig(keepaliveInterval=10.0), services=False)
        self.options = {"damping": DAMPING, **options}
        self.nodes: list[Node] = []
        self.dbs: list[TopologyDatabase] = []
        self.cables: dict[tuple[int, int], MemoryLink] = {}
        for i in range(n):
            self.add(f"LAB.N{i}")

    def add(self, name: str, role: str = "network", **kw: Any) -> Node:
        node = self.net.addNode(name, role=role, **kw)
        self.nodes.append(node)
        # Only the topology database, installed as buildNode installs it.
        node.topology = db = installTopology(node, **self.options)
        if db is not None:
            self.dbs.append(db)
        return node

    def link(self, i: int, j: int) -> MemoryLink:
        cable = self.net.connect(self.nodes[i], self.nodes[j])
        self.cables[(i, j)] = cable
        return cable

    def cut(self, i: int, j: int) -> None:
        self.cables.pop((i, j)).cut()

    def settle(self, rounds: int = 4) -> None:
        for _ in range(rounds):
            self.net.flush(advance=DAMPING)

    def digests(self, dbs: list[TopologyDatabase] | None = None) -> set[str]:
        return {db.digest() for db in (dbs or self.dbs) if db.running}

    def id(self, i: int) -> str:
        return self.nodes[i].nodeID


def shape(kind: str, n: int) -> list[tuple[int, int]]:
    if kind == "line":
        return [(i, i + 1) for i in range(n - 1)]
    if kind == "ring":
        return [(i, (i + 1) % n) for i in range(n)]
    if kind == "star":
        return [(0, i) for i in range(1, n)]
    if kind == "mesh":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = random.Random(n)
    edges = {(i, rng.randrange(i)) for i in range(1, n)}  # a random tree...
    while len(edges) < 2 * n:  # ...plus chords: average degree ~4
        a, b = rng.sample(range(n), 2)
        if (a, b) not in edges and (b, a) not in edges:
            edges.add((a, b))
    return sorted(edges)


def build(kind: str, n: int, **options: Any) -> Net:
    t = Net(n, **options)
    for a, b in shape(kind, n):
        t.link(a, b)
    t.settle()
    return t


class FakeIdentity:
    """
    A bare Ed25519 key with the parts of Identity that records need.
    """

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.publicKeyBytes = self.key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.nodeID = nodeIDFromSPKI(self.publicKeyBytes)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def nodeBody(identity: Any, name: str = "LAB.X", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "role": "network",
        "public_key": identity.publicKeyBytes,
        "resistance": 0,
        "load": 0,
        "cds": False,
        "end_nodes": [],
        **extra,
    }


LINK_BODY = {"rtt_ms": 5, "throughput": 10**6, "cost": 0, "security": 128, "up": True}


def push(cp: Any, records: list[TopologyRecord | bytes]) -> None:
    raws = [r if isinstance(r, bytes) else r.raw for r in records]
    cp.send(TopologyUpdate(epoch="", frsn_from=0, frsn_to=0, records=raws))


class ConvergenceTests(SynchronousTestCase):
    def check(self, kind: str, n: int) -> Net:
        t = build(kind, n)
        self.assertEqual(len(t.digests()), 1, f"{kind} of {n} did not converge")
        edges = shape(kind, n)
        self.assertEqual(len(t.dbs[0]), n + 2 * len(edges))
        self.assertEqual(len(list(t.dbs[-1].graph().links())), len(edges))
        return t

    def test_line(self) -> None:
        """
        A line of 8 network nodes converges to one digest; the route from
        end to end is the whole line.
        """
        t = self.check("line", 8)
        route = t.dbs[3].selectRoute(t.id(0), t.id(7), "interactive")
        self.assertEqual(route.hops, [t.id(i) for i in range(8)])
        self.assertEqual(len(route.hopWeights), 7)

    def test_ring(self) -> None:
        """
        A ring of 10 converges; flooding around the cycle ends.
        """
        t = self.check("ring", 10)
        self.assertEqual(len(t.net.clock.getDelayedCalls()) > 0, True)
        before = sum(db.stats["sent"] for db in t.dbs)
        t.settle()
        self.assertLessEqual(sum(db.stats["sent"] for db in t.dbs), before)

    def test_star(self) -> None:
        """
        A star of 12 converges; every route between leaves crosses the hub.
        """
        t = self.check("star", 12)
        self.assertEqual(t.dbs[5].selectRoute(t.id(3), t.id(9)).hops, [t.id(3), t.id(0), t.id(9)])

    def test_mesh(self) -> None:
        """
        A full mesh of 6 converges; each record is forwarded at most once
        per link by each node.
        """
        t = self.check("mesh", 6)
        for db in t.dbs:
            self.assertLessEqual(db.stats["forwarded"], len(db) * 5)

    def test_random50(self) -> None:
        """
        50 network nodes in a random connected graph of average degree 4
        converge to one digest.
        """
        self.check("random", 50)

    def test_partitionThenMerge(self) -> None:
        """
        Two halves of 3 change on both sides while apart; once joined,
        every node holds the same database again.
        """
        t = build("ring", 6)
        t.cut(2, 3)
        t.cut(5, 0)
        t.settle()
        t.dbs[0].setNodeCharacteristics(load=40)
        t.dbs[4].setNodeCharacteristics(resistance=90)
        t.settle()
        self.assertEqual(len(t.digests(t.dbs[:3])), 1)
        self.assertEqual(len(t.digests(t.dbs[3:])), 1)
        self.assertNotEqual(t.digests(t.dbs[:3]), t.digests(t.dbs[3:]))
        with self.assertRaises(NoRoute):
            t.dbs[0].selectRoute(t.id(0), t.id(4))
        # Out of reach, but not gone: its links are still announced.
        self.assertFalse(t.dbs[0].isReachable(t.id(4)))
        self.assertTrue(t.dbs[0].isAnnounced(t.id(4)))
        t.link(2, 3)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        self.assertEqual(t.dbs[1].record("node", t.id(4)).body["resistance"], 90)
        self.assertEqual(t.dbs[5].record("node", t.id(0)).body["load"], 40)
        self.assertEqual(len(t.dbs[0].selectRoute(t.id(0), t.id(4)).hops), 5)


class FailureTests(SynchronousTestCase):
    def test_linkCut(self) -> None:
        """
        A cut link is withdrawn everywhere and new routes avoid it.
        """
        t = build("ring", 6)
        self.assertEqual(t.dbs[4].selectRoute(t.id(0), t.id(2)).hops, [t.id(0), t.id(1), t.id(2)])
        t.cut(1, 2)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        for db in t.dbs:
            self.assertNotIn(t.id(2), db.graph().neighbours(t.id(1)))
        route = t.dbs[4].selectRoute(t.id(0), t.id(2))
        self.assertEqual(route.hops, [t.id(i) for i in (0, 5, 4, 3, 2)])

    def test_nodeStopped(self) -> None:
        """
        A stopped node's links are withdrawn by its neighbours and routes go
        around it.
        """
        t = build("ring", 6)
        t.nodes[1].stopService()
        t.settle()
        alive = t.dbs[:1] + t.dbs[2:]
        self.assertEqual(len(t.digests(alive)), 1)
        route = t.dbs[3].selectRoute(t.id(0), t.id(2))
        self.assertNotIn(t.id(1), route.hops)
        with self.assertRaises(NoRoute):
            t.dbs[3].selectRoute(t.id(0), t.id(1))
        # Gone: no link of it is announced any more.
        for db in alive:
            self.assertFalse(db.isAnnounced(t.id(1)))
            self.assertTrue(db.isAnnounced(t.id(2)))

    def test_agingRemovesSilentOwner(self) -> None:
        """
        Records of an owner that stops refreshing age out after max-age
        (local receive time); live owners' refreshes keep theirs.
        """
        t = Net(3, refreshInterval=100.0, maxAge=250.0)
        # The fourth stays linked but does not refresh in time, so nothing
        # withdraws it: only aging removes its records.
        t.options["refreshInterval"] = 10_000.0
        t.add("LAB.N3")
        for a, b in shape("line", 4):
            t.link(a, b)
        t.settle()
        gone = t.id(3)
        self.assertIsNotNone(t.dbs[0].record("node", gone))
        for _ in range(16):
            t.net.flush(advance=50)
        for db in t.dbs[:3]:
            self.assertIsNone(db.record("node", gone))
            self.assertFalse([r for r in db.records() if r.owner == gone])
            self.assertGreater(db.stats["aged_out"], 0)
            self.assertIsNotNone(db.record("node", t.id(0)))
        self.assertEqual(len(t.digests(t.dbs[:3])), 1)
        self.assertEqual(t.dbs[0].networkNodes(), sorted(t.id(i) for i in range(3)))

    def test_flappingLinkDamped(self) -> None:
        """
        A link cut and re-made every 0.1 s for 5 s: the owners' updates are
        damped (at most about one per damping period), not one per flap.
        """
        t = build("line", 3, damping=1.0)
        before = t.dbs[0].stats["originated"]
        for _ in range(50):
            t.cut(0, 1)
            t.net.flush(advance=0.05)
            t.link(0, 1)
            t.net.flush(advance=0.05)
        t.settle()
        # Per announcement: the link record and (the first link after
        # none) the node record.
        self.assertLessEqual(t.dbs[0].stats["originated"] - before, 12)
        self.assertEqual(len(t.digests()), 1)
        self.assertIn(t.id(1), t.dbs[2].graph().neighbours(t.id(0)))

    def test_rttChangeReannounced(self) -> None:
        """
        A significant RTT change (from the keepalive pings) is re-announced
        and reaches the other nodes; a small one is not.
        """
        t = build("line", 3, measureInterval=0)
        cp = t.nodes[0].links[t.id(1)]
        cp.mux.rtt = 0.101
        t.dbs[0].measureLinks()
        t.settle()
        rsn = t.dbs[2].record("link", t.id(0), t.id(1)).rsn
        cp.mux.rtt = 0.400
        t.dbs[0].measureLinks()
        t.settle()
        record = t.dbs[2].record("link", t.id(0), t.id(1))
        self.assertGreater(record.rsn, rsn)
        self.assertEqual(record.body["rtt_ms"], 400)
        cp.mux.rtt = 0.402
        t.dbs[0].measureLinks()
        t.settle()
        self.assertEqual(t.dbs[2].record("link", t.id(0), t.id(1)).rsn, record.rsn)
        # The graph takes the worse of the two ends' announcements.
        g = t.dbs[2].graph()
        self.assertEqual(g.adjacency[t.id(0)][t.id(1)].rtt_ms, 400)


class BadRecordTests(SynchronousTestCase):
    """
    Line 0 - 1 - 2: node 0 plays the bad neighbour; node 2 shows what 1
    forwarded.
    """

    def setUp(self) -> None:
        self.t = build("line", 3)
        self.cp = self.t.nodes[0].links[self.t.id(1)]
        self.victim, self.far = self.t.dbs[1], self.t.dbs[2]

    def farReceived(self) -> int:
        return self.far.stats["received"]

    def test_replayAndOlder(self) -> None:
        """
        Replaying the current record is dropped as a duplicate; an older one
        is answered with the newer copy; neither is forwarded.
        """
        t = self.t
        old = t.dbs[0].record("node", t.id(0))
        t.dbs[0].setNodeCharacteristics(load=10)
        t.settle()
        current = t.dbs[0].record("node", t.id(0))
        far = self.farReceived()
        digest = self.victim.digest()
        sentBefore = self.victim.stats["sent"]
        push(self.cp, [current])
        t.net.flush()
        self.assertEqual(self.victim.stats["duplicate"] >= 1, True)
        push(self.cp, [old])
        t.net.flush()
        self.assertEqual(self.victim.stats["older"], 1)
        self.assertEqual(self.victim.stats["sent"], sentBefore + 1)  # the newer copy, back
        self.assertEqual(self.farReceived(), far)
        self.assertEqual(self.victim.digest(), digest)

    def test_forged(self) -> None:
        """
        Records signed with the wrong key, re-signed by a neighbour, or with
        a key that is not their owner's are rejected and not forwarded.
        """
        t = self.t
        mallory = t.nodes[0].identity
        target = t.dbs[2].record("node", t.id(2))
        link = t.dbs[2].record("link", t.id(2), t.id(1))
        far = self.farReceived()
        # A neighbour re-signs node 2's records with a higher RSN.
        body = dict(target.body, load=255)
        sig = mallory.sign(TopologyRecord.signedBytes("node", t.id(2), "", target.rsn + 2, body))
        forgedNode = _raw("node", t.id(2), "", target.rsn + 2, body, sig)
        linkBody = dict(link.body, up=False)
        sig = mallory.sign(
            TopologyRecord.signedBytes("link", t.id(2), t.id(1), link.rsn + 2, linkBody)
        )
        forgedLink = _raw("link", t.id(2), t.id(1), link.rsn + 2, linkBody, sig)
        # A node record carrying another node's key.
        other = FakeIdentity()
        wrongKey = TopologyRecord.create(other, "node", "", 2, nodeBody(mallory))
        # Unsigned.
        unsigned = _raw("node", other.nodeID, "", 2, nodeBody(other), b"")
        push(self.cp, [forgedNode, forgedLink, wrongKey, unsigned])
        t.net.flush()
        self.assertEqual(self.victim.stats["bad_signature"], 4)
        self.assertEqual(self.victim.record("node", t.id(2)).rsn, target.rsn)
        self.assertTrue(self.victim.record("link", t.id(2), t.id(1)).body["up"])
        self.assertEqual(self.farReceived(), far)

    def test_unknownOwnerOversizedMalformed(self) -> None:
        """
        A link record whose owner has no node record is held (not applied,
        not forwarded); an oversized record and garbage are each dropped
        and counted, without closing the link.
        """
        t = self.t
        stranger = FakeIdentity()
        orphan = TopologyRecord.create(stranger, "link", t.id(1), 2, LINK_BODY)
        big = TopologyRecord.create(stranger, "node", "", 2, nodeBody(stranger, pad=b"x" * 5000))
        self.assertGreater(len(big.raw), MAX_RECORD_BYTES)
        far = self.farReceived()
        push(self.cp, [orphan, big, b"\xff\x00garbage"])
        t.net.flush()
        self.assertEqual(self.victim.stats["held"], 1)
        self.assertIsNone(self.victim.record("link", stranger.nodeID, t.id(1)))
        self.assertEqual(self.victim.stats["oversized"], 1)
        self.assertEqual(self.victim.stats["malformed"], 1)
        self.assertEqual(self.farReceived(), far)
        self.assertIs(self.cp.state, LinkState.ACTIVE)

    def test_originCap(self) -> None:
        """
        One origin announcing thousands of links keeps at most 256.
        """
        t = self.t
        me = t.nodes[0].identity
        fakes = [FakeIdentity().nodeID for _ in range(300)]
        rsn = t.dbs[0].ownRSN.value + 1000
        records = [TopologyRecord.create(me, "link", f, rsn, LINK_BODY) for f in fakes]
        for i in range(0, 300, 100):
            push(self.cp, records[i : i + 100])
        t.net.flush()
        owned = [r for r in self.victim.records() if r.owner == t.id(0) and r.kind == "link"]
        self.assertEqual(len(owned), MAX_LINKS_PER_ORIGIN)
        self.assertGreater(self.victim.stats["origin_cap"], 0)

    def test_floodRateLimited(self) -> None:
        """
        A neighbour pushing 10,000 updates at once is rate-limited: most are
        dropped and counted, memory stays flat, and an honest change from
        elsewhere still reaches every node.
        """
        t = self.t
        for _ in range(12):  # past the initial-exchange allowance
            t.net.flush(advance=10)
        size = len(self.victim)
        me = t.nodes[0].identity
        rsn = t.dbs[0].ownRSN.value + 10
        fakes = [FakeIdentity().nodeID for _ in range(50)]
        records = []
        for i in range(10_000):
            if i % 2:
                records.append(
                    TopologyRecord.create(me, "node", "", rsn + 2 * i, nodeBody(me, "LAB.N0"))
                )
            else:
                records.append(
                    TopologyRecord.create(me, "link", fakes[i % 50], rsn + 2 * i, LINK_BODY)
                )
        for i in range(0, 10_000, 200):
            push(self.cp, records[i : i + 200])
        t.net.flush()
        stats = self.victim.stats
        self.assertGreater(stats["rate_limited"], 7000)
        self.assertLessEqual(len(self.victim), size + 50)
        self.assertIs(self.cp.state, LinkState.ACTIVE)
        t.dbs[2].setNodeCharacteristics(load=77)
        t.settle()
        self.assertEqual(t.dbs[1].record("node", t.id(2)).body["load"], 77)

    def test_persistentAbuseClosesLink(self) -> None:
        """
        A neighbour that keeps flooding past the abuse limit is disconnected
        with reason rate-limited.
        """
        t = Net(2, burst=50.0, rate=10.0, abuseLimit=500, syncCredit=0.0)
        t.link(0, 1)
        t.settle()
        cp = t.nodes[0].links[t.id(1)]
        me = t.nodes[0].identity
        rsn = t.dbs[0].ownRSN.value + 10
        for batch in range(6):
            push(
                cp,
                [
                    TopologyRecord.create(
                        me, "node", "", rsn + 200 * batch + i, nodeBody(me, "LAB.N0")
                    )
                    for i in range(0, 200, 2)
                ],
            )
        t.net.flush()
        self.assertEqual(t.dbs[1].stats["links_closed_for_abuse"], 1)
        self.assertNotIn(t.id(0), t.nodes[1].links)


class ResyncTests(SynchronousTestCase):
    def test_frsnSendsOnlyChanges(self) -> None:
        """
        After a reconnect, neighbours exchange only the records that changed
        while apart, not the whole database.
        """
        t = build("random", 12)
        a, b = next(iter(t.cables))
        dbA, dbB = t.dbs[a], t.dbs[b]
        t.cut(a, b)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        far = next(i for i in range(12) if i not in (a, b))
        t.dbs[far].setNodeCharacteristics(load=33)
        t.settle()
        sentA, sentB = dbA.stats["sync_records_sent"], dbB.stats["sync_records_sent"]
        t.link(a, b)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        total = len(dbA)
        resent = (dbA.stats["sync_records_sent"] - sentA) + (dbB.stats["sync_records_sent"] - sentB)
        # The two link records that went down, the far change: a handful,
        # not two full databases (2 x total).
        self.assertLessEqual(resent, 8)
        self.assertGreater(total, 40)

    def test_newEpochSendsEverything(self) -> None:
        """
        A neighbour that restarted (new epoch, empty database) gets the
        whole database and converges.
        """
        t = build("line", 4)
        node = t.nodes[3]
        old = t.dbs[3]
        old.disownServiceParent()
        node.topology = None
        fresh = databaseFor(node, damping=DAMPING)
        fresh.setServiceParent(node)
        node.addObserver(fresh)
        t.dbs[3] = fresh
        t.cut(2, 3)
        t.link(2, 3)
        t.settle()
        self.assertEqual(len(t.digests()), 1)
        self.assertGreaterEqual(t.dbs[2].stats["sync_records_sent"], len(fresh) - 2)


class RSNTests(SynchronousTestCase):
    def test_persistedAcrossRestart(self) -> None:
        """
        The own RSN continues above everything used before a restart.
        """
        state = self.mktemp()
        t = Net(2, stateDir=state)
        t.link(0, 1)
        t.settle()
        db = t.dbs[0]
        for i in range(5):
            db.setNodeCharacteristics(load=i)
            t.settle()
        used = db.ownRSN.value
        self.assertTrue(os.path.exists(os.path.join(state, "topology.json")))
        db.stopService()
        again = databaseFor(t.nodes[0], stateDir=state)
        self.assertGreater(again.ownRSN.value, used)
        self.assertEqual(again.ownRSN.value % 2, 0)

    def test_lostStateRecovers(self) -> None:
        """
        A node that restarts without its RSN state learns its old RSN from
        the neighbours' newer copies and re-issues above it: no lock-out.
        """
        t = build("line", 3)
        node = t.nodes[0]
        for i in range(3):
            t.dbs[0].setNodeCharacteristics(load=i + 1)
            t.settle()
        high = t.dbs[2].record("node", t.id(0)).rsn
        t.dbs[0].disownServiceParent()
        fresh = databaseFor(node, damping=DAMPING)
        fresh.ownRSN.value = 0  # as if the clock and state were both lost
        fresh.setServiceParent(node)
        node.addObserver(fresh)
        node.topology = fresh
        fresh.setNodeCharacteristics(load=99)
        t.cut(0, 1)
        t.link(0, 1)
        t.settle(8)
        self.assertGreater(fresh.stats["own_rsn_bumped"], 0)
        rec = t.dbs[2].record("node", t.id(0))
        self.assertGreater(rec.rsn, high)
        self.assertEqual(rec.body["load"], 99)


class ServiceTests(SynchronousTestCase):
    def test_endNodes(self) -> None:
        """
        End nodes get no database; the network node that serves an end node
        announces it, and routes to it end with that hop.
        """
        t = build("line", 3)
        en = t.add("LAB.EN", role="end")
        self.assertIsNone(en.topology)
        t.net.connect(en, t.nodes[2])
        t.settle()
        self.assertEqual(len(t.dbs[2].records()), len(t.dbs[0].records()))
        t.dbs[2].setAttachedEndNodes([en.nodeID])
        t.settle()
        self.assertEqual(t.dbs[0].servingNode(en.nodeID), t.id(2))
        route = t.dbs[0].selectRoute(t.id(0), en.nodeID, "interactive")
        self.assertEqual(route.hops, [t.id(0), t.id(1), t.id(2), en.nodeID])
        self.assertEqual(len(route.hopWeights), 3)
        self.assertEqual(sum(route.hopWeights), route.weight)
        back = t.dbs[2].selectRoute(en.nodeID, t.id(0), "batch")
        self.assertEqual(back.hops[0], en.nodeID)
        self.assertEqual(t.dbs[0].nodeName(t.id(2)), "LAB.N2")
        self.assertEqual(t.dbs[0].networkNodes(), sorted(t.id(i) for i in range(3)))
        explanation = t.dbs[0].explainRoute(t.id(0), en.nodeID, "secure").asDict()
        self.assertEqual(explanation["route"]["hops"][-1], en.nodeID)

    def test_observersAndAsDict(self) -> None:
        """
        Observers are called after changes; asDict is JSON-able; a stopped
        network leaves no timers behind.
        """
        import json

        t = build("line", 2)
        calls: list[int] = []
        t.dbs[0].addObserver(lambda: calls.append(1))
        t.dbs[1].setNodeCharacteristics(load=5)
        t.settle()
        self.assertTrue(calls)
        d = t.dbs[0].asDict()
        json.dumps(d)
        self.assertEqual(d["records"], 4)
        self.assertEqual(len([link for link in d["links"] if link["routable"]]), 2)
        t.net.stop()
        self.assertEqual(t.net.clock.getDelayedCalls(), [])

    def test_unknownCOS(self) -> None:
        """
        An unknown class of service name is a NoRoute with the reason.
        """
        t = build("line", 2)
        with self.assertRaises(NoRoute):
            t.dbs[0].selectRoute(t.id(0), t.id(1), "nonesuch")

    def test_syncMessageFromEndNodeIgnored(self) -> None:
        """
        Topology messages on a link to an end node are ignored and counted.
        """
        t = build("line", 2)
        en = t.add("LAB.EN", role="end")
        t.net.connect(en, t.nodes[0])
        cp = en.links[t.id(0)]
        cp.send(TopologySync(epoch="", frsn=0))
        push(cp, [t.dbs[1].record("node", t.id(1))])
        t.net.flush()
        self.assertEqual(t.dbs[0].stats["not_network"], 2)
        self.assertEqual(t.dbs[0].stats["sync_requests"], 1)


def _raw(kind: str, owner: str, subject: str, rsn: int, body: dict[str, Any], sig: bytes) -> bytes:
    from appnpy.cp.messages import encodeBody

    return encodeBody(
        {"kind": kind, "owner": owner, "subject": subject, "rsn": rsn, "body": body, "sig": sig}
    )


attrs  # noqa: B018 - keep the import for readers of the fixtures
