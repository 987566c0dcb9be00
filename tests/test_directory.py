"""
Directory services over the in-memory network: locate (local, cache,
directed, CDS, broadcast), signed records, expiry, rate limits and keyword
search.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from appnpy_echo import Echo, SimplePlugin
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from appnpy.cp.messages import MessageReader, encodeMessage
from appnpy.errors import NoRoute, ResourceNotFound
from appnpy.interfaces import IKeywordSearchable, INode, IPluginLifecycle, IResourceDirectory
from appnpy.net.directory import (
    InvalidRecord,
    LocateReply,
    LocateRequest,
    RegisterResources,
    ResourceRecord,
    SearchReply,
    SearchRequest,
    installDirectory,
    newSearchID,
)
from appnpy.net.topology import IRouteQueries
from appnpy.node import Node
from appnpy.testing import MemoryNetwork, resultOf


@attrs.frozen
class FakeRoute:
    hops: list[str]
    weight: float = 0.0


@implementer(IRouteQueries)
class FakeTopology:
    """
    Stands in for engineer T's TopologyDatabase (same methods): shortest hop
    count over the live links between network nodes of the harness; an end
    node is reached through the network node that declared it attached.
    """

    def __init__(self, net: MemoryNetwork, node: Node, attached: dict[str, str]) -> None:
        self.net = net
        self.node = node
        self.attached = attached
        self.attachCalls: list[list[str]] = []

    def _byID(self) -> dict[str, Node]:
        return {n.nodeID: n for n in self.net.nodes}

    def nodeName(self, nodeID: str) -> str | None:
        n = self._byID().get(nodeID)
        return n.name if n else None

    def networkNodes(self) -> list[str]:
        return [n.nodeID for n in self.net.nodes if n.role == "network" and n.running]

    def servingNode(self, endNodeID: str) -> str | None:
        return self.attached.get(endNodeID)

    def setAttachedEndNodes(self, ids: list[str]) -> None:
        self.attachCalls.append(list(ids))
        for en in [e for e, s in self.attached.items() if s == self.node.nodeID]:
            del self.attached[en]
        for en in ids:
            self.attached[en] = self.node.nodeID

    def selectRoute(self, origin: str, destination: str, cos: str) -> FakeRoute:
        nodes = self._byID()
        prefix, suffix = [], []
        if origin in nodes and nodes[origin].role == "end":
            prefix, origin = [origin], self.attached.get(origin, "")
        if destination in nodes and nodes[destination].role == "end":
            suffix, destination = [destination], self.attached.get(destination, "")
        if origin not in nodes or destination not in nodes:
            raise NoRoute(destination)
        previous: dict[str, str | None] = {origin: None}
        queue = deque([origin])
        while queue:
            here = queue.popleft()
            for peer, cp in nodes[here].links.items():
                if peer not in previous and cp.peerHello and cp.peerHello.role == "network":
                    previous[peer] = here
                    queue.append(peer)
        if destination not in previous:
            raise NoRoute(destination)
        path: list[str] = []
        at: str | None = destination
        while at is not None:
            path.append(at)
            at = previous[at]
        return FakeRoute(prefix + path[::-1] + suffix)


@implementer(IPluginLifecycle)
class Offering(SimplePlugin):
    """
    A plugin whose resources change at run time; it tells its node.
    """

    def __init__(self, name: str, offered: list[str]) -> None:
        super().__init__(name, Echo)
        self.offered = list(offered)
        self.node: INode | None = None

    def attach(self, node: INode) -> None:
        self.node = node

    def detach(self) -> None:
        self.node = None

    def resources(self) -> list[str]:
        return list(self.offered)

    def offer(self, names: list[str]) -> None:
        self.offered = list(names)
        if IResourceDirectory.providedBy(self.node):
            IResourceDirectory(self.node).resourcesChanged(self)


class Lab:
    """
    A MemoryNetwork whose nodes have a fake topology (network nodes) and the
    directory installed before they are linked.
    """

    def __init__(self, **options: Any) -> None:
        self.net = MemoryNetwork(services=False)
        self.attached: dict[str, str] = {}
        self.options = options

    def node(self, name: str, role: str = "network", plugins: Any = (), **options: Any) -> Node:
        n = self.net.addNode(name, role=role, plugins=plugins)
        if role == "network":
            n.topology = FakeTopology(self.net, n, self.attached)
        n.directory = installDirectory(n, **{**self.options, **options})
        return n

    def line(self, count: int, **options: Any) -> list[Node]:
        nodes = [self.node(f"LAB.N{i}", **options) for i in range(count)]
        for a, b in zip(nodes, nodes[1:], strict=False):
            self.net.link(a, b)
        return nodes

    def sent(self) -> int:
        return sum(n.directory.stats["messages-sent"] for n in self.net.nodes)

    def locate(self, node: Node, name: str) -> Any:
        d = Deferred.fromCoroutine(node.directory.locate(name))
        self.net.flush()
        return resultOf(d)

    def stop(self) -> None:
        self.net.stop()


class DirectoryTestCase(TestCase):
    def lab(self, **options: Any) -> Lab:
        lab = Lab(**options)
        self.addCleanup(self.assertNoTimers, lab)
        return lab

    def assertNoTimers(self, lab: Lab) -> None:
        lab.stop()
        self.assertEqual(lab.net.clock.getDelayedCalls(), [])


class RecordTests(TestCase):
    def test_roundTripAndForgery(self) -> None:
        """
        A record verifies; a changed field, a swapped owner or a
        non-canonical encoding does not.
        """
        from appnpy.link.identity import generateIdentity

        alice, bob = generateIdentity(), generateIdentity()
        record = ResourceRecord.create(alice, "chat:lobby", 1, 300)
        self.assertEqual(ResourceRecord.fromBlob(record.toBlob()), record)
        for forged in [
            attrs.evolve(record, name="chat:other"),
            attrs.evolve(record, owner=bob.nodeID),
            attrs.evolve(record, ttl=301),
        ]:
            self.assertRaises(InvalidRecord, ResourceRecord.fromBlob, forged.toBlob())
        # Squatting: Bob signs a record naming Alice as owner.
        squat = attrs.evolve(record, public_key=bob.publicKeyBytes)
        squat = attrs.evolve(squat, signature=bob.sign(squat.signedBytes()))
        self.assertRaises(InvalidRecord, ResourceRecord.fromBlob, squat.toBlob())
        self.assertRaises(InvalidRecord, ResourceRecord.fromBlob, b"\xa0")
        self.assertRaises(InvalidRecord, ResourceRecord.fromBlob, b"\xff" * 600)

    def test_messagesRoundTrip(self) -> None:
        """
        The directory's messages survive the strict framing and decoding.
        """
        nid = "a" * 52
        for msg in [
            RegisterResources(
                records=[b"x"], origin=nid, seq=1, public_key=b"k", target=nid, signature=b"s"
            ),
            LocateRequest(search_id=newSearchID(), origin=nid, name="files:music", hops_left=3),
            LocateReply(search_id=newSearchID(), records=[b"r"], final=False, route=[nid]),
            SearchRequest(
                search_id=newSearchID(), origin=nid, kind="files", keywords=["a"], hops_left=2
            ),
            SearchReply(search_id=newSearchID(), results=[{"name": "x", "size": 3}]),
        ]:
            self.assertEqual(MessageReader().feed(encodeMessage(msg)), [msg])


class LocateTests(DirectoryTestCase):
    def test_lineBroadcastThenCache(self) -> None:
        """
        In a line, a locate for the far node's resource is found by broadcast;
        the second locate comes from the cache with no message sent.
        """
        lab = self.lab()
        a, b, c, d = lab.line(4)
        d.directory.register("chat:lobby")
        result = lab.locate(a, "chat:lobby")
        self.assertEqual(result.owner, d.nodeID)
        self.assertEqual(result.record["name"], "chat:lobby")
        self.assertEqual(a.directory.stats["found-broadcast"], 1)
        before = lab.sent()
        self.assertEqual(lab.locate(a, "chat:lobby").owner, d.nodeID)
        self.assertEqual(lab.sent(), before)
        self.assertEqual(a.directory.stats["found-cache"], 1)

    def test_star(self) -> None:
        """
        In a star, a leaf finds another leaf's echo resource through the hub.
        """
        lab = self.lab()
        hub = lab.node("LAB.HUB")
        leaves = [lab.node(f"LAB.L{i}") for i in range(4)]
        for leaf in leaves:
            lab.net.link(leaf, hub)
        self.assertIn("echo:LAB.L3", leaves[3].directory.localResources())
        self.assertEqual(lab.locate(leaves[0], "echo:LAB.L3").owner, leaves[3].nodeID)
        self.assertEqual(lab.locate(leaves[0], "echo:LAB.HUB").owner, hub.nodeID)

    def test_forgedRecordRejectedAtRequester(self) -> None:
        """
        A node that answers with a record it forged (naming another owner, or
        with a broken signature) is not believed: the first honest node on
        the way back (here the intermediate node) drops it, so the requester
        never sees it.
        """
        lab = self.lab()
        a, b, c = lab.line(3)
        real = ResourceRecord.create(b.identity, "rpc:calc", 1, 300)
        forged = [
            attrs.evolve(real, public_key=c.identity.publicKeyBytes),
            attrs.evolve(real, signature=b"\x00" * 64),
        ]
        c.directory._authoritative = lambda name: forged  # type: ignore[method-assign]
        self.assertRaises(ResourceNotFound, lab.locate, a, "rpc:calc")
        self.assertEqual(b.directory.stats["forged-records"], 2)

    def test_negativeCache(self) -> None:
        """
        A miss is remembered briefly: a second locate answers at once with
        no message; after negativeTTL the network is searched again.
        """
        lab = self.lab(negativeTTL=10)
        a, b, c = lab.line(3)
        self.assertRaises(ResourceNotFound, lab.locate, a, "files:none")
        before = lab.sent()
        self.assertRaises(ResourceNotFound, lab.locate, a, "files:none")
        self.assertEqual(lab.sent(), before)
        self.assertEqual(a.directory.stats["found-negative-cache"], 1)
        lab.net.flush(advance=11)
        c.directory.register("files:none")
        self.assertEqual(lab.locate(a, "files:none").owner, c.nodeID)

    def test_directedSearchUsesCachedOwner(self) -> None:
        """
        Once the cached answer is no longer fresh, the locate verifies it by
        a directed search along the route to the cached owner: nodes off that
        route see nothing.
        """
        lab = self.lab(cacheFresh=5, cacheTTL=600)
        a, b, c, d = lab.line(4)
        side = lab.node("LAB.SIDE")
        lab.net.link(side, b)
        d.directory.register("chat:lobby")
        lab.locate(a, "chat:lobby")
        processed = {n.name: n.directory.stats["searches-processed"] for n in lab.net.nodes}
        lab.net.flush(advance=6)
        self.assertEqual(lab.locate(a, "chat:lobby").owner, d.nodeID)
        self.assertEqual(a.directory.stats["found-directed"], 1)
        self.assertEqual(a.directory.stats["broadcast-searches"], 1)
        after = {n.name: n.directory.stats["searches-processed"] for n in lab.net.nodes}
        self.assertEqual(after["LAB.SIDE"], processed["LAB.SIDE"])
        for name in ("LAB.N1", "LAB.N2", "LAB.N3"):
            self.assertEqual(after[name], processed[name] + 1)

    def test_directedSearchFailsOverToBroadcast(self) -> None:
        """
        When the cached owner no longer has the resource, the directed search
        comes back empty and a broadcast finds the new owner.
        """
        lab = self.lab(cacheFresh=5)
        a, b = lab.node("LAB.N0"), lab.node("LAB.N1")
        lobby = Offering("chat", ["chat:lobby"])
        c = lab.node("LAB.N2", plugins=[lobby])
        lab.net.link(a, b)
        lab.net.link(b, c)
        lobby.attach(c)
        lab.locate(a, "chat:lobby")
        lobby.offer([])
        b.directory.register("chat:lobby")
        lab.net.flush(advance=6)
        self.assertEqual(lab.locate(a, "chat:lobby").owner, b.nodeID)
        self.assertEqual(a.directory.stats["broadcast-searches"], 2)

    def test_cdsAskedFirst(self) -> None:
        """
        With a central directory server, network nodes push their resources
        to it and a locate asks it (directed, hop by hop) before any
        broadcast.
        """
        lab = self.lab()
        cds = lab.node("LAB.CDS", cds=True)
        a = lab.node("LAB.A", cdsNode=cds.nodeID)
        b = lab.node("LAB.B", cdsNode=cds.nodeID)
        d = lab.node("LAB.D", cdsNode=cds.nodeID)
        lab.net.link(a, b)
        lab.net.link(b, cds)
        lab.net.link(cds, d)
        d.directory.register("rpc:calc")
        lab.net.flush()
        self.assertIn("rpc:calc", cds.directory.asDict()["registered"])
        result = lab.locate(a, "rpc:calc")
        self.assertEqual(result.owner, d.nodeID)
        self.assertEqual(a.directory.stats["found-cds"], 1)
        self.assertEqual(a.directory.stats["broadcast-searches"], 0)
        self.assertEqual(d.directory.stats["searches-processed"], 0)

    def test_ownerGoneEntriesExpire(self) -> None:
        """
        When an owner disappears, its records at the CDS and the cached
        answers elsewhere age out; locates then fail instead of naming the
        dead node.
        """
        lab = self.lab(recordTTL=60, cacheFresh=30, cacheTTL=60)
        cds = lab.node("LAB.CDS", cds=True)
        a = lab.node("LAB.A", cdsNode=cds.nodeID)
        d = lab.node("LAB.D", cdsNode=cds.nodeID)
        lab.net.link(a, cds)
        link = lab.net.connect(d, cds)
        d.directory.register("rpc:calc")
        lab.net.flush()
        self.assertEqual(lab.locate(a, "rpc:calc").owner, d.nodeID)
        link.cut()
        lab.net.flush()
        d.stopService()
        for _ in range(4):
            lab.net.flush(advance=20)
        registered = cds.directory.asDict()["registered"]
        self.assertNotIn("rpc:calc", registered)
        self.assertNotIn("echo:LAB.D", registered)
        self.assertIn("echo:LAB.A", registered)  # refreshed by its live owner
        self.assertEqual(a.directory.asDict()["cache"], {})
        self.assertRaises(ResourceNotFound, lab.locate, a, "rpc:calc")
        self.assertGreater(cds.directory.stats["records-expired"], 0)

    def test_broadcastDedup(self) -> None:
        """
        In a full mesh, each node handles a broadcast search once (the copies
        get an immediate empty answer), and a miss completes without waiting
        for the timeout.
        """
        lab = self.lab()
        nodes = [lab.node(f"LAB.M{i}") for i in range(5)]
        for i, x in enumerate(nodes):
            for y in nodes[i + 1 :]:
                lab.net.link(x, y)
        d = Deferred.fromCoroutine(nodes[0].directory.locate("files:nothing"))
        lab.net.flush()  # no clock advance: completion, not timeout
        self.assertRaises(ResourceNotFound, resultOf, d)
        for n in nodes[1:]:
            self.assertEqual(n.directory.stats["searches-processed"], 1)
        self.assertGreater(sum(n.directory.stats["duplicate-searches"] for n in nodes), 0)
        self.assertEqual(nodes[0].directory.stats["search-timeouts"], 0)

    def test_hopBudget(self) -> None:
        """
        A broadcast goes no further than its hop budget.
        """
        lab = self.lab()
        nodes = lab.line(5)
        nodes[4].directory.register("chat:far")
        nodes[0].directory.maxHops = 3
        self.assertRaises(ResourceNotFound, lab.locate, nodes[0], "chat:far")
        self.assertEqual(nodes[4].directory.stats["searches-processed"], 0)
        nodes[0].directory.maxHops = 4
        nodes[0].directory.cache.negative.clear()
        self.assertEqual(lab.locate(nodes[0], "chat:far").owner, nodes[4].nodeID)

    def test_locateStormRateLimited(self) -> None:
        """
        A neighbour flooding locates is limited (counted, one log line per
        burst) while other neighbours' locates and sessions carry on.
        """
        lab = self.lab(neighbourRate=10, neighbourBurst=20)
        a, b, c = lab.node("LAB.A"), lab.node("LAB.B"), lab.node("LAB.C")
        lab.net.link(b, a)
        lab.net.link(c, a)
        a.directory.register("chat:lobby")
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "storm" in event.get("log_format", ""):
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        cp = b.links[a.nodeID]
        for _ in range(500):
            cp.send(
                LocateRequest(search_id=newSearchID(), origin=b.nodeID, name="files:x", hops_left=5)
            )
        lab.net.flush()
        stats = a.directory.stats
        self.assertEqual(stats["searches-processed"], 20)
        self.assertEqual(stats["requests-limited"], 480)
        self.assertEqual(len(events), 1)
        self.assertEqual(lab.locate(c, "chat:lobby").owner, a.nodeID)
        from twisted.internet.protocol import Protocol

        got = []

        class Client(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"ping")

            def dataReceived(self, data: bytes) -> None:
                got.append(data)

        resultOf(_flushed(lab, b.openSession(a.nodeID, "echo", lambda info: Client())))
        self.assertEqual(b"".join(got), b"ping")


def _flushed(lab: Lab, d: Deferred[Any]) -> Deferred[Any]:
    lab.net.flush()
    return d


class SearchTests(DirectoryTestCase):
    def test_keywordSearchCapped(self) -> None:
        """
        A keyword search asks the plugins offering the kind on every node and
        returns at most maxResults results, each naming its node; plugins of
        other kinds are not asked.
        """
        from appnpy_echo import Echo, SimplePlugin

        asked: list[str] = []

        @implementer(IKeywordSearchable)
        class Files(SimplePlugin):
            def resources(self) -> list[str]:
                return ["files:share"]

            def search(self, keywords: list[str]) -> list[dict[str, Any]]:
                asked.append(self.name)
                return [{"name": f"{' '.join(keywords)} {i}", "size": i} for i in range(50)]

        class Other(Files):
            def resources(self) -> list[str]:
                return ["chat:room"]

        lab = self.lab()
        nodes = [
            lab.node(f"LAB.S{i}", plugins=[Files("files", Echo), Other("chat", Echo)])
            for i in range(4)
        ]
        for x, y in zip(nodes, nodes[1:], strict=False):
            lab.net.link(x, y)
        d = nodes[0].directory.search("files", ["blue", "song"], maxResults=120)
        lab.net.flush()
        results = resultOf(d)
        self.assertEqual(len(results), 120)
        self.assertEqual(set(asked), {"files"})
        self.assertTrue(all(r["name"].startswith("blue song") for r in results))
        self.assertLessEqual(len({r["node"] for r in results}), 4)
        self.assertGreater(len({r["node"] for r in results}), 1)
        d = nodes[0].directory.search("files", ["x"], maxResults=10)
        self.assertEqual(len(resultOf(d)), 10)  # enough locally


class PluginHookTests(DirectoryTestCase):
    def test_resourcesChangedAtRunTime(self) -> None:
        """
        A plugin on an end node whose resources change tells its node
        (IResourceDirectory, reached through IPluginLifecycle.attach); the
        directory registers the new set with the server, so another node
        locates the new resource, and no longer the withdrawn one.
        """
        lab = self.lab(negativeTTL=1)
        n0, n1 = lab.node("LAB.N0"), lab.node("LAB.N1")
        files = Offering("files", ["files:old"])
        e = lab.node("LAB.E", role="end", plugins=[files])
        lab.net.link(n0, n1)
        lab.net.connect(e, n1)
        lab.net.flush()
        files.attach(e)
        self.assertEqual(lab.locate(n0, "files:old").owner, e.nodeID)
        self.assertRaises(ResourceNotFound, lab.locate, n0, "files:new")
        files.offer(["files:new"])
        lab.net.flush(advance=2)
        self.assertEqual(lab.locate(n0, "files:new").owner, e.nodeID)
        self.assertNotIn("files:old", n1.directory.asDict()["registered"])
        self.assertEqual(sorted(n1.directory.asDict()["registered"]), ["files:new", "node:LAB.E"])

    def test_keywordSearchAsksOnlySearchablePlugins(self) -> None:
        """
        A keyword search from another node is answered by a plugin that
        provides IKeywordSearchable; a plugin of the same kind with a
        C{search} method but without the interface is not asked.
        """
        asked: list[str] = []

        class Undeclared(SimplePlugin):
            def resources(self) -> list[str]:
                return ["files:private"]

            def search(self, keywords: list[str]) -> list[dict[str, Any]]:
                asked.append(self.name)
                return [{"name": "private"}]

        @implementer(IKeywordSearchable)
        class Declared(Undeclared):
            def resources(self) -> list[str]:
                return ["files:public"]

            def search(self, keywords: list[str]) -> list[dict[str, Any]]:
                asked.append(self.name)
                return [{"name": k} for k in keywords]

        lab = self.lab()
        a = lab.node("LAB.A")
        b = lab.node("LAB.B", plugins=[Declared("files", Echo), Undeclared("files2", Echo)])
        lab.net.link(a, b)
        d = a.directory.search("files", ["song"], maxResults=10)
        lab.net.flush()
        self.assertEqual(resultOf(d), [{"name": "song", "node": b.nodeID}])
        self.assertEqual(asked, ["files"])
