"""
What every kind of session promises its plugin's protocol (L{ISession}),
written once and run against each kind: an adjacent session (one stream on
one link) and routed sessions (TLS end to end through one and two relays).

Only the public surface is used: L{appnpy.testing.MemoryNetwork} with its
network services, C{Node.openSession}, and a small plugin of this module's
own.  A new kind of session gets these tests by subclassing
L{SessionConformanceMixin} and saying how to open one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from appnpy.api import ISession, ISessionInfo, ISessionPlugin, SessionClosed
from appnpy.node import Node
from appnpy.testing import MemoryNetwork, resultOf

PLUGIN = "conform"


class Peer(Protocol):
    """
    One end of a session: records what arrives and how the session ended.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


@implementer(ISessionPlugin)
@attrs.define
class ConformancePlugin:
    """
    Accepts every session with a L{Peer} and keeps them, newest last.
    """

    name: str = PLUGIN
    version: str = "1"
    defaultCOS: str = "interactive"
    sessionLimit: int = 8
    built: list[Peer] = attrs.Factory(list)

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Peer:
        peer = Peer()
        self.built.append(peer)
        return peer


@implementer(IPushProducer)
class Producer:
    """
    A push producer that only records what it was told.
    """

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1

    def stopProducing(self) -> None:
        self.stopped = True


if TYPE_CHECKING:
    _TestCase = SynchronousTestCase
else:
    _TestCase = object


class SessionConformanceMixin(_TestCase):
    """
    The L{ISession} contract.  A subclass (also a L{SynchronousTestCase})
    implements L{makeNodes}: the origin and the destination node, linked
    however that kind of session needs.
    """

    net: MemoryNetwork
    origin: Node
    destination: Node
    plugin: ConformancePlugin

    def makeNodes(self) -> tuple[Node, Node]:
        raise NotImplementedError

    def setUp(self) -> None:
        self.plugin = ConformancePlugin()
        self.origin, self.destination = self.makeNodes()
        self.addCleanup(self.stopNetwork)

    def stopNetwork(self) -> None:
        self.net.stop()
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def openPair(self, parameters: dict[str, Any] | None = None) -> tuple[Peer, Peer]:
        """
        Open a session; the origin's and the destination's protocols.
        """
        before = len(self.plugin.built)
        d = self.origin.openSession(
            self.destination.nodeID, PLUGIN, lambda info: Peer(), parameters=parameters
        )
        self.net.flush()
        near = resultOf(d)
        self.assertEqual(len(self.plugin.built), before + 1)
        return near, self.plugin.built[-1]

    def assertClosed(self, peer: Peer, reason: str, detail: str | None = None) -> None:
        self.assertIsNotNone(peer.lost)
        assert peer.lost is not None
        self.assertIsInstance(peer.lost.value, SessionClosed)
        self.assertEqual(peer.lost.value.reason, reason)
        if detail is not None:
            self.assertEqual(peer.lost.value.detail, detail)

    # -- the tests -----------------------------------------------------------

    def test_interfaces(self) -> None:
        """
        Both transports provide L{ISession}, and their L{ISessionInfo}
        fields agree: one session ID, the plugin, the class of service, the
        parameters, opposite directions and each other's node ID and name.
        """
        near, far = self.openPair(parameters={"size": 3, "tag": "x"})
        a, b = self.origin, self.destination
        for peer in (near, far):
            self.assertTrue(peer.made)
            verifyObject(ISession, peer.transport)
            verifyObject(ISessionInfo, peer.transport)
            self.assertEqual(peer.transport.plugin, PLUGIN)
            self.assertEqual(peer.transport.cos, "interactive")
            self.assertEqual(peer.transport.parameters, {"size": 3, "tag": "x"})
        self.assertRegex(near.transport.sessionID, re.compile(r"\A[0-9a-f]{32}\Z"))
        self.assertEqual(far.transport.sessionID, near.transport.sessionID)
        self.assertEqual(
            (near.transport.direction, far.transport.direction), ("outbound", "inbound")
        )
        self.assertEqual(
            (near.transport.localNodeID, near.transport.peerNodeID), (a.nodeID, b.nodeID)
        )
        self.assertEqual(
            (far.transport.localNodeID, far.transport.peerNodeID), (b.nodeID, a.nodeID)
        )
        self.assertEqual((near.transport.peerName, far.transport.peerName), (b.name, a.name))

    def test_getPeerAndHost(self) -> None:
        """
        C{getPeer} and C{getHost} name the other end's and this end's node.
        """
        near, far = self.openPair()
        a, b = self.origin, self.destination
        self.assertEqual(near.transport.getPeer().nodeID, b.nodeID)
        self.assertEqual(near.transport.getHost().nodeID, a.nodeID)
        self.assertEqual(far.transport.getPeer().nodeID, a.nodeID)
        self.assertEqual(far.transport.getHost().nodeID, b.nodeID)

    def test_dataBothWays(self) -> None:
        """
        Bytes written at either end arrive intact at the other.
        """
        near, far = self.openPair()
        near.transport.write(b"ping")
        far.transport.write(b"pong")
        self.net.flush()
        self.assertEqual((bytes(far.received), bytes(near.received)), (b"ping", b"pong"))
        big = bytes(range(256)) * 2048  # 512 KiB: several windows
        far.transport.write(big)
        self.net.flush()
        self.assertEqual(bytes(near.received), b"pong" + big)

    def test_writeSequenceOrdering(self) -> None:
        """
        C{write} and C{writeSequence} keep the order they were called in.
        """
        near, far = self.openPair()
        near.transport.write(b"a")
        near.transport.writeSequence([b"b", b"cd", b""])
        near.transport.write(b"e")
        near.transport.writeSequence([b"f" * 70000, b"g"])
        self.net.flush()
        self.assertEqual(bytes(far.received), b"abcde" + b"f" * 70000 + b"g")

    def test_loseConnection(self) -> None:
        """
        C{loseConnection} sends everything written first; then both ends
        see C{connectionLost} with L{SessionClosed} reason C{normal}.
        """
        near, far = self.openPair()
        data = b"z" * 300000
        near.transport.write(data)
        near.transport.loseConnection()
        self.net.flush()
        self.assertEqual(len(far.received), len(data))
        self.assertClosed(far, "normal")
        self.assertClosed(near, "normal")

    def test_loseConnectionWithReason(self) -> None:
        """
        C{loseConnectionWithReason} delivers what was written, and the peer
        sees the reason and the detail.
        """
        near, far = self.openPair()
        far.transport.write(b"last words")
        far.transport.loseConnectionWithReason("busy", "too many clients")
        self.net.flush()
        self.assertEqual(bytes(near.received), b"last words")
        self.assertClosed(near, "busy", "too many clients")
        self.assertIsNotNone(far.lost)

    def test_abortConnection(self) -> None:
        """
        C{abortConnection} ends the session at once: the peer sees reason
        C{aborted}, and the aborting end's protocol is told too.
        """
        near, far = self.openPair()
        near.transport.abortConnection()
        self.net.flush()
        self.assertClosed(far, "aborted")
        self.assertIsNotNone(near.lost)

    def test_pauseResumeProducing(self) -> None:
        """
        C{pauseProducing} stops delivery to C{dataReceived};
        C{resumeProducing} delivers what arrived meanwhile, in order.
        """
        near, far = self.openPair()
        near.transport.write(b"before ")
        self.net.flush()
        far.transport.pauseProducing()
        near.transport.write(b"while paused")
        self.net.flush()
        self.assertEqual(bytes(far.received), b"before ")
        far.transport.resumeProducing()
        self.net.flush()
        self.assertEqual(bytes(far.received), b"before while paused")

    def test_pushProducer(self) -> None:
        """
        A push producer registered at one end is paused when the other end
        stops reading (after a bounded amount of data), and resumed once it
        reads again; everything written arrives.
        """
        near, far = self.openPair()
        far.transport.pauseProducing()
        producer = Producer()
        near.transport.registerProducer(producer, True)
        sent = 0
        chunk = b"q" * 65536
        while not producer.paused and sent < 64 * 2**20:
            near.transport.write(chunk)
            sent += len(chunk)
            self.net.flush()
        self.assertTrue(producer.paused)
        self.assertLess(sent, 16 * 2**20)  # windows and buffers, not unbounded
        self.assertEqual(bytes(far.received), b"")
        far.transport.resumeProducing()
        self.net.flush()
        self.assertFalse(producer.paused)
        self.assertGreaterEqual(producer.resumes, 1)
        self.assertEqual(len(far.received), sent)
        near.transport.unregisterProducer()
        self.assertFalse(producer.stopped)


class AdjacentSessionConformance(SessionConformanceMixin, SynchronousTestCase):
    """
    A session between two neighbours.
    """

    def makeNodes(self) -> tuple[Node, Node]:
        self.net = MemoryNetwork()
        a = self.net.addNode("LAB.A", plugins=[ConformancePlugin(name="other")])
        b = self.net.addNode("LAB.B", plugins=[self.plugin])
        self.net.link(a, b)
        return a, b


class RoutedSessionConformance(SessionConformanceMixin, SynchronousTestCase):
    """
    A session between the ends of a line of network nodes, relayed by the
    nodes between them and located through the topology database.
    """

    relays = 1

    def makeNodes(self) -> tuple[Node, Node]:
        self.net = MemoryNetwork(services=True)
        n = self.relays + 2
        nodes = [
            self.net.addNode(
                f"LAB.N{i}",
                plugins=[self.plugin if i == n - 1 else ConformancePlugin(name="other")],
            )
            for i in range(n)
        ]
        for left, right in zip(nodes, nodes[1:], strict=False):
            self.net.connect(left, right)
        self.net.flush(advance=10)  # the topology database floods
        origin, destination = nodes[0], nodes[-1]
        self.assertNotIn(destination.nodeID, origin.links)  # relayed, not adjacent
        return origin, destination


class TwoRelaySessionConformance(RoutedSessionConformance):
    """
    A routed session through two relays.
    """

    relays = 2
