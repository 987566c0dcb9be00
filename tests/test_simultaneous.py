"""
Simultaneous dial (docs/protocol.md section 7.4): two nodes that dial each
other at once keep exactly one link, the same one at both ends, whatever
order the two handshakes interleave in; sessions opened on the losing link
while both were coming up run to their end on it.

The in-memory pump here moves a random slice of one direction of one
connection at a time, so the two TLS handshakes and Hello exchanges really
are in flight together (the harness's own flush completes one connection's
pending data before the other's).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp._interfaces import NodeObserver
from appnpy.cp.controlpoint import ControlPoint, LinkState
from appnpy.cp.linkmachine import DRAIN_TIMEOUT, preferredLink
from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.link.identity import generateIdentity
from appnpy.node import Node
from appnpy.testing import EchoPlugin, MemoryLink, MemoryNetwork, resultOf
from tests.test_robustness import NodeFaultTestCase, withTimeout

DUPLICATE = "duplicate-link"
#: Interleavings tried; each is a different seed of the pump's choices.
SEEDS = 80
#: Simultaneous dials over real sockets.
ROUNDS = 8


class Greeter(Protocol):
    """
    Writes a greeting and records what comes back (the echo plugin).
    """

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.received = b""
        self.lost: Failure | None = None
        #: Fires once the whole greeting has come back.
        self.echoed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == self.greeting and not self.echoed.called:
            self.echoed.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


def stepOne(rng: random.Random, link: MemoryLink, clientToServer: bool) -> bool:
    """
    Move a random prefix of what one end of C{link} has written to the
    other end; the rest stays queued.  Returns whether anything moved.
    """
    pump = link.pump
    src, dst = (pump.clientIO, pump.serverIO) if clientToServer else (pump.serverIO, pump.clientIO)
    data = src.getOutBuffer()
    src._checkProducer()
    if not data:
        return False
    cut = rng.randint(1, len(data))
    if cut < len(data):
        src.stream.insert(0, data[cut:])
    dst.bufferReceived(data[:cut])
    return True


def protocolOf(conn: MemoryLink) -> LinkProtocol:
    """
    The dialler's link protocol of an in-memory connection (under its TLS).
    """
    return conn.pump.clientIO.protocol.wrappedProtocol


def linkOf(node: Node, peer: Node) -> ControlPoint:
    return node.links[peer.nodeID]


class SimultaneousDialTests(SynchronousTestCase):
    """
    Both dials in flight at once, with BINDs in flight too, over many
    interleavings.
    """

    identities = (generateIdentity(), generateIdentity())

    def race(self, seed: int) -> None:
        rng = random.Random(seed)
        net = MemoryNetwork()
        first, second = self.identities if seed % 2 else self.identities[::-1]
        a = net.addNode("LAB.A", identity=first)
        b = net.addNode("LAB.B", identity=second)
        order = [(a, b), (b, a)]
        rng.shuffle(order)
        conns = [net.connect(dialler, listener, flush=False) for dialler, listener in order]
        # What each dialler's connect() waits on.
        dials = [
            (dialler, Deferred.fromCoroutine(dialler.whenLinkActive(protocolOf(c))))
            for (dialler, _), c in zip(order, conns, strict=True)
        ]
        opened: list[tuple[Any, bytes]] = []
        for _step in range(20000):
            # Open a session from whichever end has a link up, now and then:
            # its BIND may go out on the link that loses.
            for node, peer in ((a, b), (b, a)):
                if peer.nodeID in node.links and len(opened) < 6 and rng.random() < 0.05:
                    greeting = f"{seed}-{len(opened)}".encode()
                    d = node.openSession(peer.nodeID, "echo", lambda info, g=greeting: Greeter(g))
                    opened.append((d, greeting))
            net.clock.advance(0)
            moved = False
            for _ in range(4):
                moved |= stepOne(rng, rng.choice(conns), rng.random() < 0.5)
            if not moved and not any(
                stepOne(rng, c, toServer) for c in conns for toServer in (True, False)
            ):
                break
        net.flush()
        self.assertKeptOne(net, a, b, conns, seed)
        # Both connects succeed: with the surviving link, or with the other
        # one if it was up (and the only one) when they fired.
        for dialler, d in dials:
            peer = b if dialler is a else a
            cp = resultOf(d)
            self.assertEqual(cp.peerNodeID, peer.nodeID, f"seed {seed}")
            if cp is not linkOf(dialler, peer):
                assert cp.closeReason is not None
                self.assertEqual(cp.closeReason[0], DUPLICATE, f"seed {seed}")
        # Every session opened during the race was bound and echoes.
        for d, greeting in opened:
            protocol = resultOf(d)
            self.assertEqual(protocol.received, greeting, f"seed {seed}")
            protocol.transport.loseConnection()
        net.flush(advance=3)
        self.assertKeptOne(net, a, b, conns, seed)
        alive = [c for c in conns if not c.pump.clientIO.disconnected]
        self.assertEqual(len(alive), 1, f"seed {seed}")
        for node in (a, b):
            self.assertEqual(node.drainingLinks, set(), f"seed {seed}")
            self.assertEqual(node.sessions(), [], f"seed {seed}")
        net.stop()

    def assertKeptOne(
        self, net: MemoryNetwork, a: Node, b: Node, conns: list[MemoryLink], seed: int
    ) -> None:
        """
        Each node has one active link to the other, over the same
        connection, and it is the one the rule keeps.
        """
        self.assertEqual(set(a.links), {b.nodeID}, f"seed {seed}")
        self.assertEqual(set(b.links), {a.nodeID}, f"seed {seed}")
        cpa, cpb = linkOf(a, b), linkOf(b, a)
        self.assertIs(cpa.state, LinkState.ACTIVE)
        self.assertIs(cpb.state, LinkState.ACTIVE)
        ends = {
            frozenset(
                (c.pump.clientIO.protocol.wrappedProtocol, c.pump.serverIO.protocol.wrappedProtocol)
            )
            for c in conns
        }
        self.assertIn(frozenset((cpa.link, cpb.link)), ends, f"seed {seed}")
        lower = min(a.nodeID, b.nodeID)
        self.assertEqual(cpa.isDialer, a.nodeID == lower, f"seed {seed}")

    def test_manyInterleavings(self) -> None:
        """
        Over many interleavings of two dials (and BINDs opened as soon as
        either link is up), exactly one link remains at both ends, always
        the same connection, and every session opened during the race ends
        normally, the losing link's included.
        """
        for seed in range(SEEDS):
            self.race(seed)

    def test_drainTimeout(self) -> None:
        """
        A session that keeps the losing link busy is UNBOUND with
        duplicate-link after DRAIN_TIMEOUT, and the link then closes.
        """
        net = MemoryNetwork()
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        net.connect(a, b)
        d = a.openSession(b.nodeID, "echo", lambda info: Greeter(b"x"))
        net.flush()
        protocol = resultOf(d)
        old = linkOf(a, b)
        # A second link that wins at both ends: fake a later dial by the
        # same dialler (a re-dial), which the rule prefers.
        net.connect(a, b)
        self.assertIsNot(linkOf(a, b), old)
        self.assertIs(old.state, LinkState.DRAINING)
        self.assertIsNone(protocol.lost)
        net.flush(advance=DRAIN_TIMEOUT + 1)
        assert protocol.lost is not None
        self.assertEqual(protocol.lost.value.reason, "duplicate-link")
        net.flush(advance=10)
        self.assertIs(old.state, LinkState.CLOSED)
        self.assertEqual(a.drainingLinks, set())
        self.assertEqual(len([c for c in net.links if not c.pump.clientIO.disconnected]), 1)


class PreferredLinkTests(SynchronousTestCase):
    """
    The rule itself: a pure function of (dialler ID, dial serial).
    """

    def fake(self, dialler: str, serial: int) -> Any:
        class Fake:
            def tieBreakKey(self) -> tuple[str, int]:
                return dialler, serial

        return Fake()

    def test_rule(self) -> None:
        """
        The lower dialler wins; the same dialler: the higher serial; equal
        keys keep the first argument; the order of the arguments does not
        matter otherwise.
        """
        low, high = self.fake("a", 1), self.fake("b", 99)
        self.assertIs(preferredLink(low, high), low)
        self.assertIs(preferredLink(high, low), low)
        old, new = self.fake("a", 1), self.fake("a", 2)
        self.assertIs(preferredLink(old, new), new)
        self.assertIs(preferredLink(new, old), new)
        x, y = self.fake("a", 1), self.fake("a", 1)
        self.assertIs(preferredLink(x, y), x)


class OpenOnLinkUp(NodeObserver):
    """
    Opens an echo session on every link as soon as it is up at this node:
    on a simultaneous dial, its BIND may go out on the link that loses.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.opened: list[tuple[Deferred[Any], bytes]] = []

    def linkActive(self, cp: ControlPoint) -> None:
        greeting = f"{self.node.name} {len(self.opened)}".encode()
        d = cp.openSession("echo", lambda info: Greeter(greeting))
        self.opened.append((d, greeting))


class RealSocketSimultaneousDialTests(NodeFaultTestCase):
    """
    The same over loopback TCP: both connects issued in the same reactor
    turn, so the kernel carries both handshakes at once.
    """

    async def test_simultaneousDialWithSessions(self) -> None:
        """
        Each round, two nodes dial each other at once and open a session on
        each link as soon as it is up; both connects answer the same
        surviving link, one TCP connection remains, the same at both ends,
        and every session echoes.
        """
        for round in range(ROUNDS):
            a = await self.startNode()
            b = await self.startNode()
            watchers = []
            for node in (a, b):
                node.addSessionPlugin(EchoPlugin())
                watcher = OpenOnLinkUp(node)
                node.addLinkObserver(watcher)
                watchers.append(watcher)
            results = await withTimeout(
                gatherResults(
                    [a.connect(b.advertisedAddresses()[0]), b.connect(a.advertisedAddresses()[0])]
                )
            )
            cpa, cpb = a.links[b.nodeID], b.links[a.nodeID]
            self.assertEqual(results, [cpa, cpb], f"round {round}")
            self.assertEqual(cpa.link.transport.getHost().port, cpb.link.transport.getPeer().port)
            self.assertEqual(cpa.isDialer, a.nodeID == min(a.nodeID, b.nodeID))
            for watcher in watchers:
                for d, greeting in watcher.opened:
                    protocol = await withTimeout(d)
                    await withTimeout(protocol.echoed)
                    self.assertEqual(protocol.received, greeting)
                    protocol.transport.loseConnection()
            await self.whenProtocolsLost(a, keep={b.nodeID})
            await self.whenProtocolsLost(b, keep={a.nodeID})
            self.assertEqual((a.drainingLinks, b.drainingLinks), (set(), set()))
            await self.assertLinkWorks(a, b)
            await self.stopAndCheck(a, b)
