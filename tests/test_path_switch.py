"""
Non-disruptive path switch of routed sessions (docs/protocol.md 15.8), in
memory: a 64 MiB stream keeps going, complete and in order, when its relay's
link is cut or the relay stops mid-transfer; re-BINDs that are forged,
replayed or for another session are refused and the real session is
untouched; no route for the switch timeout ends the session with no-route;
both ends fail over several times; nothing is left behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from appnpy.cp.messages import SessionOpen, SessionRefuse, encodeMessage
from appnpy.cp.bindreader import BindReader
from appnpy.errors import NoRoute
from appnpy.interfaces import ISessionInfo, ISessionPlugin
from appnpy.link.identity import generateIdentity
from appnpy.net.relay import installRelay
from appnpy.node import Node
from appnpy.session.bind import signBind
from appnpy.session.pathswitch import ResumableStream, orderAlternatives
from appnpy.session.routed import installRoutedSessions
from appnpy.testing import MemoryLink, MemoryNetwork, resultOf

MiB = 1024 * 1024


def pattern(n: int) -> bytes:
    """
    C{n} bytes no two 8-byte blocks of which are the same (a repeated or
    reordered block changes the hash).
    """
    return b"".join(i.to_bytes(8, "big") for i in range(n // 8))


class Sink(Protocol):
    """
    Hashes what arrives; remembers whether its session ended.
    """

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(IPushProducer)
class Source(Protocol):
    """
    Writes C{data} in 32 KiB writes as a push producer; hashes what comes back.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        self.paused = False
        self.sink = Sink()
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def start(self) -> None:
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.offset < len(self.data):
            chunk = self.data[self.offset : self.offset + 32768]
            self.offset += len(chunk)
            self.transport.write(chunk)
        if self.offset >= len(self.data) and self.transport is not None and not self.paused:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.sink.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(ISessionPlugin)
@attrs.define
class SinkPlugin:
    name: str = "sink"
    version: str = "1"
    defaultCOS: str = "batch"
    sessionLimit: int = 8
    built: list[Any] = attrs.Factory(list)
    reply: bytes = b""

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Any:
        p: Any = Source(self.reply) if self.reply else Sink()
        self.built.append(p)
        return p


class StaticRoutes:
    """
    A route source that answers what the test says (the topology's own
    answers are tested in L{TopologyRoutesTests}).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.routes: list[list[str]] = []
        self.asked = 0

    def routeTo(self, destination: str, cos: str | None = None) -> Deferred[list[str]]:
        return succeed(self.routes[0]) if self.routes else fail(NoRoute("none"))

    def alternativeRoutes(
        self, destination: str, cos: str | None, k: int
    ) -> Deferred[list[list[str]]]:
        self.asked += 1
        if not self.routes:
            return fail(NoRoute("no route"))
        return succeed([list(r) for r in self.routes])

    def nodeName(self, nodeID: str) -> str:
        return self.node.nodeName(nodeID)


class SwitchHarness(SynchronousTestCase):
    """
    A origin, B destination, relays R1 and R2: paths A-R1-B and A-R2-B.
    """

    def setUp(self) -> None:
        self.net = MemoryNetwork(services=False)
        self.plugin = SinkPlugin()
        self.a = self.addNode("LAB.A")
        self.r1 = self.addNode("LAB.R1")
        self.r2 = self.addNode("LAB.R2")
        self.b = self.addNode("LAB.B", plugins=[self.plugin])
        self.links: dict[str, MemoryLink] = {}
        for x, y in [("a", "r1"), ("r1", "b"), ("a", "r2"), ("r2", "b")]:
            self.links[x + y] = self.net.connect(getattr(self, x), getattr(self, y))
        self.routes = StaticRoutes(self.a)
        self.a.routedSessions.routes = self.routes
        self.routes.routes = [self.path(self.r1), self.path(self.r2)]
        self.addCleanup(self.checkClean)

    def addNode(self, name: str, **kw: Any) -> Node:
        node = self.net.addNode(name, **kw)
        node.relay = installRelay(node)
        node.routedSessions = installRoutedSessions(node)
        return node

    def path(self, *relays: Node) -> list[str]:
        return [self.a.nodeID, *(r.nodeID for r in relays), self.b.nodeID]

    def checkClean(self) -> None:
        self.net.stop()
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def open(self, protocol: Any, route: list[str] | None = None) -> Any:
        d = self.a.routedSessions.open(
            self.b.nodeID, "sink", lambda info: protocol, route=route or self.path(self.r1)
        )
        self.net.flush()
        return resultOf(d)

    def pumpUntil(self, condition: Any, limit: int = 1000000) -> None:
        """
        Move the network one step at a time until C{condition()}.
        """
        for _ in range(limit):
            if condition():
                return
            self.net.clock.advance(0)
            for link in self.net.links:
                link.pump.pump(advanceClock=False)
        raise AssertionError("the condition never came true")

    def settle(self, seconds: float = 0.0, steps: int = 1) -> None:
        for _ in range(steps):
            self.net.flush(seconds)

    def assertNothingLeft(self) -> None:
        for node in self.net.nodes:
            if node.relay is not None:
                self.assertEqual(node.relay.table, {}, node.name)
                self.assertEqual(node.relay.bufferReserved, 0, node.name)
            self.assertEqual(node.routedSessions.sessions, {}, node.name)
            self.assertEqual(node.routedSessions.handshaking, {}, node.name)
            self.assertEqual(node.sessions(), [], node.name)


class PathSwitchTests(SwitchHarness):
    def transfer(self, size: int, cut: Any) -> tuple[Source, Sink]:
        data = pattern(size)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.pumpUntil(lambda: sink.count >= size // 3)
        cut()
        self.settle()
        self.pumpUntil(lambda: sink.count >= size or source.lost is not None)
        self.settle(1)
        self.assertIsNone(source.lost)
        self.assertIsNone(sink.lost)
        self.assertEqual(sink.count, size)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        return source, sink

    def test_relayLinkCut(self) -> None:
        """
        The link from the relay to the destination is cut mid-transfer of
        64 MiB: every byte arrives once, in order, over the other relay,
        and neither plugin sees its session end.
        """
        source, sink = self.transfer(64 * MiB, self.links["r1b"].cut)
        session = source.transport
        self.assertEqual(session.route, self.path(self.r2))
        self.assertEqual(session.switch.switches, 1)
        self.assertEqual(self.r1.relay.table, {})
        self.assertIn(session.sessionID, self.r2.relay.table)
        session.loseConnection()
        self.settle(1)
        self.assertEqual(sink.lost.value.reason, "normal")
        self.assertNothingLeft()

    def test_relayStopped(self) -> None:
        """
        The relay stops (gracefully: it tells both ends) mid-transfer: the
        session carries on over the other relay.
        """
        source, sink = self.transfer(64 * MiB, lambda: self.r1.stopService())
        self.assertEqual(source.transport.route, self.path(self.r2))
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()
