"""
End nodes and their network-node server: registration, locates and route
requests through the server, failover to another network node.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from appnpy.errors import NoRoute, ResourceNotFound
from appnpy.interfaces import IKeywordSearchable
from appnpy.net.directory import (
    LocateRequest,
    RegisterResources,
    ResourceRecord,
    RouteRequest,
    newSearchID,
)
from appnpy.testing import resultOf
from tests.test_directory import DirectoryTestCase


class EndNodeTests(DirectoryTestCase):
    def build(self) -> Any:
        """
        E (end node) linked to N1 (first, its server) and N2; both linked to
        A.
        """
        lab = self.lab()
        n1, n2, a = lab.node("LAB.N1"), lab.node("LAB.N2"), lab.node("LAB.A")
        e = lab.node("LAB.E", role="end")
        lab.net.link(n1, a)
        lab.net.link(n2, a)
        l1 = lab.net.connect(e, n1)
        lab.net.connect(e, n2)
        return lab, e, n1, n2, a, l1

    def test_registersWithFirstNetworkNode(self) -> None:
        """
        The end node takes the first network node as its server, registers
        its resources there only, and the server tells its topology database
        the end node is attached.
        """
        lab, e, n1, n2, a, _ = self.build()
        e.directory.register("files:music")
        lab.net.flush()
        self.assertEqual(e.directory.serverNodeID, n1.nodeID)
        self.assertIn("files:music", n1.directory.asDict()["registered"])
        self.assertNotIn("files:music", n2.directory.asDict()["registered"])
        self.assertEqual(n1.topology.attachCalls[-1], [e.nodeID])
        self.assertEqual(n2.topology.attachCalls, [])
        result = resultOf(_run(lab, a.directory.locate("files:music")))
        self.assertEqual(result.owner, e.nodeID)

    def test_locateAndRouteThroughServer(self) -> None:
        """
        The end node's locate and route request go to its server, which
        answers with the owner's record and the route from the end node; the
        other network node sees no directory traffic from it.
        """
        lab, e, n1, n2, a, _ = self.build()
        a.directory.register("rpc:calc")
        result = resultOf(_run(lab, e.directory.locate("rpc:calc")))
        self.assertEqual(result.owner, a.nodeID)
        self.assertEqual(result.route, [e.nodeID, n1.nodeID, a.nodeID])
        route = resultOf(_run(lab, e.directory.requestRoute(a.nodeID, "interactive")))
        self.assertEqual(route, [e.nodeID, n1.nodeID, a.nodeID])
        self.assertEqual(n2.directory.stats["searches-processed"], 1)  # N1's broadcast only
        self.assertRaises(ResourceNotFound, resultOf, _run(lab, e.directory.locate("rpc:none")))
        unknown = "b" * 52
        self.assertRaises(NoRoute, resultOf, _run(lab, e.directory.requestRoute(unknown, "batch")))

    def test_endNodeRelaysNothing(self) -> None:
        """
        A broadcast reaching an end node is answered for itself only, never
        forwarded; and the end node's own resource is found through its
        server's registration, not by asking the end node.
        """
        lab, e, n1, n2, a, _ = self.build()
        e.directory.register("chat:lobby")
        lab.net.flush()
        resultOf(_run(lab, a.directory.locate("chat:lobby")))
        self.assertEqual(e.directory.stats["searches-processed"], 0)
        before = e.directory.stats["messages-sent"]
        cp = n2.links[e.nodeID]
        cp.send(LocateRequest(search_id=newSearchID(), origin=n2.nodeID, name="x:y", hops_left=9))
        lab.net.flush()
        self.assertEqual(e.directory.stats["messages-sent"], before + 1)

    def test_failoverToSecondNetworkNode(self) -> None:
        """
        When the server's link goes, the end node takes the other network
        node as server and registers there; the old server drops the
        registration; locates work again through the new server.
        """
        lab, e, n1, n2, a, l1 = self.build()
        e.directory.register("files:music")
        a.directory.register("rpc:calc")
        lab.net.flush()
        l1.cut()
        lab.net.flush()
        self.assertEqual(e.directory.serverNodeID, n2.nodeID)
        self.assertIn("files:music", n2.directory.asDict()["registered"])
        self.assertNotIn("files:music", n1.directory.asDict()["registered"])
        self.assertEqual(n1.topology.attachCalls[-1], [])
        self.assertEqual(n2.topology.attachCalls[-1], [e.nodeID])
        result = resultOf(_run(lab, e.directory.locate("rpc:calc")))
        self.assertEqual(result.route, [e.nodeID, n2.nodeID, a.nodeID])
        self.assertEqual(resultOf(_run(lab, a.directory.locate("files:music"))).owner, e.nodeID)

    def test_pendingRouteRequestResentAfterFailover(self) -> None:
        """
        A route request in flight when the server goes is sent again to the
        new server.
        """
        lab, e, n1, n2, a, l1 = self.build()
        n1.controlHandlers[RouteRequest] = lambda cp, msg: None  # N1 never answers
        d = _run(lab, e.directory.requestRoute(a.nodeID, "interactive"))
        self.assertFalse(d.called)
        l1.cut()
        lab.net.flush()
        self.assertEqual(resultOf(d), [e.nodeID, n2.nodeID, a.nodeID])

    def test_squattingRefused(self) -> None:
        """
        An end node cannot register a record signed by another node: the
        server keeps only records the end node itself signed.
        """
        lab, e, n1, n2, a, _ = self.build()
        other = ResourceRecord.create(a.identity, "chat:lobby", 1, 300)
        own = ResourceRecord.create(e.identity, "chat:mine", 1, 300)
        e.links[n1.nodeID].send(
            RegisterResources.create(e.identity, [other.toBlob(), own.toBlob()], 2**62)
        )
        lab.net.flush()
        registered = n1.directory.asDict()["registered"]
        self.assertNotIn("chat:lobby", registered)
        self.assertIn("chat:mine", registered)
        self.assertEqual(n1.directory.stats["squatting-refused"], 1)

    def test_keywordSearchFromEndNode(self) -> None:
        """
        An end node's keyword search goes through its server and reaches the
        other end nodes' plugins.
        """
        from appnpy_echo import Echo, SimplePlugin

        @implementer(IKeywordSearchable)
        class Files(SimplePlugin):
            def resources(self) -> list[str]:
                return ["files:share"]

            def search(self, keywords: list[str]) -> list[dict[str, Any]]:
                return [{"name": k} for k in keywords]

        lab, e, n1, n2, a, _ = self.build()
        e2 = lab.node("LAB.E2", role="end", plugins=[Files("files", Echo)])
        lab.net.link(e2, n2)
        lab.net.flush()
        results = resultOf(_run_d(lab, e.directory.search("files", ["song"], 5)))
        self.assertEqual(results, [{"name": "song", "node": e2.nodeID}])


def _run(lab: Any, coroutine: Any) -> Deferred[Any]:
    d = Deferred.fromCoroutine(coroutine)
    lab.net.flush()
    return d


def _run_d(lab: Any, d: Deferred[Any]) -> Deferred[Any]:
    lab.net.flush()
    return d


class EndNodeNamesTests(SynchronousTestCase):
    def test_openByCPName(self) -> None:
        """
        An end node, which has no topology database, opens a session to a
        non-adjacent node by its CP name: the name is located in the
        directory as the resource node:<CP name>.
        """
        from twisted.internet.protocol import Protocol

        from appnpy.testing import MemoryNetwork, resultOf

        class Greeter(Protocol):
            received = b""

            def connectionMade(self) -> None:
                self.transport.write(b"hello")

            def dataReceived(self, data: bytes) -> None:
                self.received += data

        net = MemoryNetwork(services=True)
        n1 = net.addNode("LAB.N1")
        n2 = net.addNode("LAB.N2")
        en = net.addNode("LAB.EN", role="end")
        net.link(n1, n2)
        net.link(en, n1)
        net.flush(advance=10)
        self.assertIn("node:LAB.N2", n2.directory.localResources())
        d = en.openSession("LAB.N2", "echo", lambda info: Greeter())
        net.flush(advance=5)
        greeter = resultOf(d)
        self.assertEqual(greeter.received, b"hello")
        self.assertEqual(greeter.transport.peerNodeID, n2.nodeID)
        d = en.openSession("LAB.NOBODY", "echo", lambda info: Greeter())
        net.flush(advance=30)
        from appnpy.errors import NoSuchNode

        self.assertRaises(NoSuchNode, resultOf, d)
