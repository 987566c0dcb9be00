"""
What the node offers a plugin through L{appnpy.api.INode}: its reactor and
key, a private data directory, signatures other nodes verify, a streaming
keyword search, locate with every owner, and its neighbours.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from appnpy.api import (
    IKeywordSearchable,
    INode,
    ISessionPlugin,
    ResourceNotFound,
    implementer,
    verifyNodeSignature,
)
from appnpy.link.identity import generateIdentity, verifySignature
from appnpy.net.topology.records import TopologyRecord
from appnpy.testing import EchoPlugin, MemoryNetwork, resultOf


@implementer(ISessionPlugin, IKeywordSearchable)
class Words:
    """
    Offers C{words:<name>} and answers a search with one result per keyword
    it knows.
    """

    version = "1"
    defaultCOS = "interactive"
    sessionLimit = 4

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = "words"
        self.offered = name
        self.known = known

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return [f"words:{self.offered}"]

    def buildProtocol(self, session: Any) -> Protocol:
        return Protocol()

    def search(self, keywords: list[str]) -> list[dict[str, object]]:
        return [{"word": k} for k in keywords if k in self.known]


class NodeForPluginsTests(SynchronousTestCase):
    def test_providesINode(self) -> None:
        """
        A node built as every node is provides the whole of L{INode}.
        """
        net = MemoryNetwork()
        node = net.addNode("LAB.A")
        self.assertTrue(verifyObject(INode, node))
        self.assertIs(node.reactor, net.clock)

    def test_dataDirectory(self) -> None:
        """
        A node with a data directory gives each of its plugins a private
        directory (mode 0700) below it; a node without one gives None; a name
        that is not one of its plugins is refused.
        """
        base = self.mktemp()
        os.makedirs(base)
        net = MemoryNetwork()
        node = net.addNode("LAB.A", plugins=[EchoPlugin()], dataDir=base)
        path = node.dataDirectory("echo")
        self.assertEqual(path, os.path.join(base, "plugins", "echo"))
        assert path is not None
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)
        self.assertRaises(ValueError, node.dataDirectory, "../echo")
        self.assertIsNone(net.addNode("LAB.B").dataDirectory("echo"))

    def test_neighboursAndNames(self) -> None:
        net = MemoryNetwork()
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        net.link(a, b)
        net.flush()
        self.assertEqual(a.neighbours(), [b.nodeID])
        self.assertEqual(a.resolveNode("LAB.B"), b.nodeID)
        self.assertEqual(a.nodeName(b.nodeID), "LAB.B")
        self.assertIsNone(a.centralDirectory)


class SignatureTests(SynchronousTestCase):
    def setUp(self) -> None:
        net = MemoryNetwork()
        self.node = net.addNode("LAB.A")
        self.other = net.addNode("LAB.B")

    def test_verifies(self) -> None:
        sig = self.node.sign("test-v1", b"hello")
        self.assertTrue(
            verifyNodeSignature(self.node.nodeID, self.node.publicKey, "test-v1", b"hello", sig)
        )

    def test_refusesEveryAlteration(self) -> None:
        """
        Other data, another context, another node's ID or another node's key
        (a liar that signs with its own key and claims another's ID): none
        verifies, and nothing malformed raises.
        """
        n, k = self.node.nodeID, self.node.publicKey
        sig = self.node.sign("test-v1", b"hello")
        self.assertFalse(verifyNodeSignature(n, k, "test-v1", b"hellO", sig))
        self.assertFalse(verifyNodeSignature(n, k, "test-v2", b"hello", sig))
        self.assertFalse(verifyNodeSignature(self.other.nodeID, k, "test-v1", b"hello", sig))
        liar = self.other.sign("test-v1", b"hello")
        self.assertFalse(verifyNodeSignature(n, self.other.publicKey, "test-v1", b"hello", liar))
        self.assertFalse(verifyNodeSignature(n, k, "test-v1", b"hello", liar))
        self.assertFalse(verifyNodeSignature(n, b"junk", "test-v1", b"hello", sig))
        self.assertFalse(verifyNodeSignature(n, k, "test-v1", b"hello", b"\x00" * 64))
        self.assertFalse(verifyNodeSignature(n, k, "", b"hello", sig))
        self.assertFalse(verifyNodeSignature(n, k, "test-v1", "hello", sig))  # type: ignore[arg-type]

    def test_contextChecked(self) -> None:
        self.assertRaises(ValueError, self.node.sign, "", b"x")
        self.assertRaises(ValueError, self.node.sign, "a\x00b", b"x")
        self.assertRaises(ValueError, self.node.sign, "x" * 65, b"x")

    def test_neverAProtocolSignature(self) -> None:
        """
        A plugin makes its node sign bytes of its choosing; those signatures
        never verify as the protocol's own, even for the exact bytes of a
        topology record.
        """
        identity = generateIdentity()
        record = TopologyRecord.create(identity, "node", identity.nodeID, 2, {"name": "LAB.X"})
        signed = TopologyRecord.signedBytes(
            record.kind, record.owner, record.subject, record.rsn, dict(record.body)
        )
        net = MemoryNetwork()
        node = net.addNode("LAB.X", identity=identity)
        sig = node.sign("topology", signed)
        self.assertFalse(verifySignature(node.publicKey, sig, signed))
        self.assertTrue(verifySignature(node.publicKey, record.signature, signed))


class SearchAndLocateTests(SynchronousTestCase):
    def test_resultsStreamAsTheyArrive(self) -> None:
        """
        C{onResults} hears this node's own results at once and each remote
        node's as its reply arrives, before the Deferred fires with all of
        them.
        """
        net = MemoryNetwork()
        a = net.addNode("LAB.A", plugins=[Words("a", ["song"])])
        b = net.addNode("LAB.B", plugins=[Words("b", ["song"])])
        c = net.addNode("LAB.C", plugins=[Words("c", ["song", "tune"])])
        net.link(a, b)
        net.link(b, c)
        net.flush()
        batches: list[list[dict[str, Any]]] = []
        d = a.search("words", ["song", "tune"], onResults=batches.append)
        self.assertEqual(batches, [[{"word": "song", "node": a.nodeID}]])
        self.assertNoResult(d)
        net.flush()
        everything = resultOf(d)
        self.assertEqual(sum(batches, []), everything)
        self.assertEqual(len(batches), 3)
        self.assertEqual(
            sorted((r["node"], r["word"]) for r in everything),
            sorted(
                [
                    (a.nodeID, "song"),
                    (b.nodeID, "song"),
                    (c.nodeID, "song"),
                    (c.nodeID, "tune"),
                ]
            ),
        )

    def test_callbackThatRaisesSpoilsNothing(self) -> None:
        net = MemoryNetwork()
        a = net.addNode("LAB.A", plugins=[Words("a", [])])
        b = net.addNode("LAB.B", plugins=[Words("b", ["song"])])
        net.link(a, b)
        net.flush()

        def broken(batch: list[dict[str, Any]]) -> None:
            raise RuntimeError("plugin bug")

        d = a.search("words", ["song"], onResults=broken)
        net.flush()
        self.assertEqual(resultOf(d), [{"word": "song", "node": b.nodeID}])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_locateGivesEveryOwner(self) -> None:
        """
        A resource several nodes offer (a replicated chat room, say) is
        located with all of them, where opening by its name would be refused
        as ambiguous.
        """
        net = MemoryNetwork()
        a = net.addNode("LAB.A", plugins=[Words("x", [])])
        b = net.addNode("LAB.B", plugins=[Words("room", [])])
        c = net.addNode("LAB.C", plugins=[Words("room", [])])
        net.link(a, b)
        net.link(a, c)
        net.flush()
        d = a.locate("words:room")
        net.flush()
        self.assertEqual(sorted(resultOf(d)), sorted([b.nodeID, c.nodeID]))
        d = a.locate("words:nowhere")
        net.flush(advance=30)
        self.assertRaises(ResourceNotFound, resultOf, d)


class StrictCBORTests(SynchronousTestCase):
    def test_sameChecksAsTheProtocol(self) -> None:
        """
        L{appnpy.api.decodeCBOR} decodes plain data and refuses what the
        protocol's own decoder refuses (tags cbor2 would decode itself,
        duplicate keys, depth), as a ValueError saying why.
        """
        import cbor2

        from appnpy.api import decodeCBOR

        self.assertEqual(decodeCBOR(cbor2.dumps({"a": [1, b"x"]}), 4), {"a": [1, b"x"]})
        for bad in (
            cbor2.dumps(cbor2.CBORTag(258, [1, 2])),
            cbor2.dumps(cbor2.CBORTag(2, b"\x01")),
            b"\xa2\x61a\x01\x61a\x02",
            cbor2.dumps([[[[1]]]]),
        ):
            self.assertRaises(ValueError, decodeCBOR, bad, 3)
