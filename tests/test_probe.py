"""
The interop probe against a real node on loopback, and against things that
are not appnpy nodes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from appnpy.cp._interfaces import NodeObserver
from appnpy.link.identity import generateIdentity
from appnpy.node import buildProber
from appnpy.ops.probe import ProbeRequest, probe
from appnpy.testing import MemoryNetwork, resultOf
from tests.test_management import makeNode, nodeAddress


class NotAppn(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        self.transport.loseConnection()


class ProbeTests(unittest.TestCase):
    async def _allPass(self) -> None:
        node = makeNode(self, "LAB.TARGET")
        address = await nodeAddress(node)
        steps = await probe(reactor, buildProber(reactor, timeout=10), address, timeout=10)
        self.assertEqual(
            [s.name for s in steps],
            ["tls", "hello", "ping", "echo-outbound", "echo-inbound", "refusal"],
        )
        for s in steps:
            self.assertTrue(s.ok, f"{s.name}: {s.detail}")
        self.assertIn("TLSv1.3", steps[0].detail)
        self.assertIn(node.nodeID, steps[0].detail)
        self.assertIn("LAB.TARGET", steps[1].detail)
        self.assertIn("unknown-plugin", steps[5].detail)
        self.assertEqual(node.links, {}, "the prober's link is closed afterwards")

    def test_allPass(self) -> Deferred[None]:
        """
        Against an appnpy node every step passes.
        """
        return Deferred.fromCoroutine(self._allPass())

    def test_noPluginNeeded(self) -> Deferred[None]:
        """
        The prober carries its own echo: it passes with no plugin
        distribution importable.
        """
        import sys

        import appnpy_echo

        sys.modules["appnpy_echo"] = None  # type: ignore[assignment]  # makes the import fail
        self.addCleanup(sys.modules.__setitem__, "appnpy_echo", appnpy_echo)
        return Deferred.fromCoroutine(self._allPass())

    async def _notAppn(self) -> None:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(NotAppn)
        )
        self.addCleanup(port.stopListening)
        steps = await probe(
            reactor, buildProber(reactor, timeout=10), f"127.0.0.1:{port.getHost().port}", timeout=5
        )
        self.assertEqual(len(steps), 1)
        self.assertEqual(steps[0].name, "tls")
        self.assertFalse(steps[0].ok)
        self.assertIn("no link to", steps[0].detail)
        self.flushLoggedErrors()

    def test_notAppn(self) -> Deferred[None]:
        """
        Against a TCP server that is not an appnpy node the TLS step fails
        with the reason, and no further step runs.
        """
        return Deferred.fromCoroutine(self._notAppn())

    async def _refused(self) -> None:
        steps = await probe(reactor, buildProber(reactor, timeout=10), "127.0.0.1:1", timeout=5)
        self.assertEqual([(s.name, s.ok) for s in steps], [("tls", False)])
        self.assertIn("refused", steps[0].detail)

    def test_connectionRefused(self) -> Deferred[None]:
        """
        Nobody listening: the TLS step fails saying the connection was refused.
        """
        return Deferred.fromCoroutine(self._refused())

    async def _badAddress(self) -> None:
        steps = await probe(reactor, buildProber(reactor, timeout=10), "not an address", timeout=5)
        self.assertEqual([(s.name, s.ok) for s in steps], [("address", False)])

    def test_badAddress(self) -> Deferred[None]:
        """
        An invalid address is reported as a failed step, not an exception.
        """
        return Deferred.fromCoroutine(self._badAddress())


class ResponderTests(unittest.TestCase):
    def test_responder(self) -> None:
        """
        A node receiving ProbeRequest opens an echo session back with the
        nonce as its probe parameter, and closes it normally once echoed.
        """
        net = MemoryNetwork()
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        cp = net.link(a, b)
        seen: list[Any] = []

        class Watch(NodeObserver):
            def sessionStarted(self, s: Any) -> None:
                seen.append(("start", s.info.direction, s.info.parameters))

            def sessionEnded(self, s: Any, why: Any) -> None:
                seen.append(("end", why.reason))

        a.addObserver(Watch())
        cp.send(ProbeRequest(nonce="abc123"))
        net.flush()
        self.assertEqual(seen, [("start", "inbound", {"probe": "abc123"}), ("end", "normal")])
        self.assertEqual(b.sessions(), [])
        net.stop()

    def test_installedByDefault(self) -> None:
        """
        Every node answers ProbeRequest.
        """
        net = MemoryNetwork()
        a = net.addNode("LAB.A")
        self.assertIn(ProbeRequest, a.controlHandlers)
        net.stop()

    def test_proberLeavesNoRecord(self) -> None:
        """
        The prober's throwaway node is an end node without services: linked
        to a network node, it appears in no topology database, not even as
        an attached end node, and registers nothing.
        """
        net = MemoryNetwork()
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        net.link(a, b)
        net.flush(advance=5)
        prober = buildProber(net.clock, identity=generateIdentity())
        prober.startService()
        net.connect(prober, a)
        net.flush(advance=5)
        self.assertIn(a.nodeID, prober.links)
        for node in (a, b):
            assert node.topology is not None
            self.assertNotIn(prober.nodeID, node.topology.networkNodes())
            self.assertNotIn(prober.nodeID, str(node.topology.asDict()))
            assert node.directory is not None
            self.assertNotIn(prober.nodeID, str(node.directory.asDict()))
        stopped = prober.stopService()
        net.flush(advance=10)
        resultOf(stopped)
        net.stop()
