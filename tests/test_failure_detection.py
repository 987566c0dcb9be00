"""
Failure detection: a link that stops answering while something waits on it
is probed, suspected after a timeout derived from its RTT and declared dead
at three times it; an idle silent link is left to the slow keepalive; route
selection avoids a suspected link at once; a slow but answering link is
never suspected.

Links are silenced with L{MemoryLink.silence} (bytes dropped both ways,
nothing closed) and time is the harness's Clock, moved in small steps.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from appnpy.api import SessionClosed, SessionRefused
from appnpy.errors import LinkError
from appnpy.link.yamux import Multiplexer, MuxConfig
from appnpy.node import Node
from appnpy.testing import MemoryLink, MemoryNetwork, resultOf

#: Clock step of the tests: the times asserted are exact to within it.
STEP = 0.01


class Client(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class Harness(SynchronousTestCase):
    muxConfig: MuxConfig | None = None
    services = False

    def assertNear(self, got: float, expected: float) -> None:
        self.assertLessEqual(abs(got - expected), 2 * STEP, f"{got} is not {expected}")

    def setUp(self) -> None:
        self.net = MemoryNetwork(muxConfig=self.muxConfig, services=self.services)
        self.addCleanup(self.net.stop)

    def pair(self) -> tuple[Node, Node, MemoryLink, Multiplexer]:
        a, b = self.net.addNode("LAB.A"), self.net.addNode("LAB.B")
        link = self.net.connect(a, b)
        return a, b, link, a.links[b.nodeID].mux

    def session(self, a: Node, b: Node) -> Client:
        d = a.openSession(b.nodeID, "echo", lambda info: Client())
        self.net.flush()
        client: Client = resultOf(d)
        return client

    def runUntil(self, done: Any, limit: float) -> float:
        """
        Step the clock until C{done()} holds; return the time it took.
        """
        start = self.net.clock.seconds()
        while not done():
            if self.net.clock.seconds() - start > limit:
                self.fail(f"still not done after {limit} s")
            self.net.flush(advance=STEP)
        return self.net.clock.seconds() - start


class SilentLinkTests(Harness):
    def assertDeclaredDead(self, a: Node, b: Node, mux: Multiplexer, start: float) -> None:
        """
        C{mux} was waiting since C{start}: it is suspected after one
        suspicion timeout and dead after three, and not before either.
        """
        timeout = mux.suspectTimeout()
        suspectedAt = start + self.runUntil(lambda: mux.suspected, 10)
        self.assertNear(suspectedAt - start, timeout)
        self.assertIn(b.nodeID, a.links)
        deadAt = suspectedAt + self.runUntil(lambda: b.nodeID not in a.links, 10)
        self.assertNear(deadAt - start, 3 * timeout)

    def test_timeoutFromMeasuredRTT(self) -> None:
        """
        The link-up ping measured the RTT (0 on the harness's clock): the
        suspicion timeout is the 1 s floor, so a dead link is found in 3 s.
        """
        _, _, _, mux = self.pair()
        self.assertEqual(mux.srtt, 0.0)
        self.assertEqual(mux.suspectTimeout(), MuxConfig().suspectMinimum)
        self.assertEqual(MuxConfig().suspectMinimum, 1.0)
        self.assertEqual(MuxConfig().deadFactor, 3.0)

    def test_pendingWrite(self) -> None:
        """
        Data written into a silent link: probed at half the timeout,
        suspected at the timeout, declared dead at three times it; the
        session ends with link-failure and the reason names the detection.
        """
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        link.silence()
        start = self.net.clock.seconds()
        assert client.transport is not None
        client.transport.write(b"hello")
        self.assertDeclaredDead(a, b, mux, start)
        assert client.lost is not None
        self.assertIsInstance(client.lost.value, SessionClosed)
        self.assertEqual(client.lost.value.reason, "link-failure")
        self.assertIn("failure detection", client.lost.value.detail)

    def test_pendingBind(self) -> None:
        """
        A session being opened on a silent link fails with link-failure in
        three suspicion timeouts.
        """
        a, b, link, mux = self.pair()
        link.silence()
        start = self.net.clock.seconds()
        d = a.openSession(b.nodeID, "echo", lambda info: Client())
        failures: list[Failure] = []
        d.addErrback(failures.append)
        self.assertDeclaredDead(a, b, mux, start)
        [failure] = failures
        self.assertIsInstance(failure.value, (SessionRefused, SessionClosed))
        self.assertEqual(failure.value.reason, "link-failure")

    def test_pendingPing(self) -> None:
        """
        An unanswered ping: the link is dead in three suspicion timeouts
        and the ping fails with the reason.
        """
        a, b, link, mux = self.pair()
        link.silence()
        start = self.net.clock.seconds()
        d: Deferred[float] = mux.ping()
        self.assertDeclaredDead(a, b, mux, start)
        self.assertIsInstance(self.failureResultOf(d).value, LinkError)

    def test_answerClearsSuspicion(self) -> None:
        """
        A frame arriving from a suspected link (here: the held-back bytes of
        a link that went quiet, then resumed) clears the suspicion.
        """
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        # Stall delivery (kept, not dropped) by not pumping at all.
        assert client.transport is not None
        client.transport.write(b"x")
        timeout = mux.suspectTimeout()
        clock = self.net.clock
        # Timers only: no pump moves the bytes, so nothing is answered.
        for _ in range(int(timeout / STEP) + 2):
            clock.advance(STEP)
        self.assertTrue(mux.suspected)
        self.net.flush()
        self.assertFalse(mux.suspected)
        self.assertEqual(bytes(client.received), b"x")
        self.assertIn(b.nodeID, a.links)

    def test_stalledEventLoopKeepsLiveLink(self) -> None:
        """
        An event loop that stalls for a minute runs its timers before it
        reads the answers waiting in its sockets: the late probe gets its
        own time, so the live link is not declared dead.
        """
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        assert client.transport is not None
        client.transport.write(b"x")
        self.net.clock.advance(60)
        self.net.flush()
        self.assertIn(b.nodeID, a.links)
        self.assertFalse(mux.suspected)
        self.assertEqual(bytes(client.received), b"x")


class IdleLinkTests(Harness):
    muxConfig = MuxConfig(keepaliveInterval=15.0, keepaliveTimeout=60.0)

    def test_idleSilentLinkOnlyByKeepalive(self) -> None:
        """
        A silent link nothing waits on is never suspected: only the
        keepalive timeout (60 s without a byte) declares it dead.
        """
        a, b, link, mux = self.pair()
        link.silence()
        start = self.net.clock.seconds()
        took = self.runUntil(lambda: mux.suspected or b.nodeID not in a.links, 120)
        self.assertFalse(mux.suspected)
        self.assertNear(took, 60.0)
        self.assertGreater(self.net.clock.seconds() - start, 3 * mux.suspectTimeout())

    def test_disabled(self) -> None:
        """
        With suspectMinimum 0 a waited-on silent link is also left to the
        keepalive timeout.
        """
        self.net.muxConfig = MuxConfig(
            keepaliveInterval=15.0, keepaliveTimeout=60.0, suspectMinimum=0
        )
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        link.silence()
        assert client.transport is not None
        client.transport.write(b"x")
        took = self.runUntil(lambda: mux.suspected or b.nodeID not in a.links, 120)
        self.assertFalse(mux.suspected)
        self.assertNear(took, 60.0)


class SlowLinkTests(Harness):
    """
    A link with a 2 s round trip (each pump is a one-way trip of 1 s).
    """

    HOP = 1.0

    def slowly(self, link: MemoryLink, seconds: float) -> None:
        clock = self.net.clock
        for _ in range(int(seconds / self.HOP)):
            # Timers first, in small steps, then one hop of the bytes.
            for _ in range(int(self.HOP / 0.1)):
                clock.advance(0.1)
            link.pump.pump(advanceClock=False)

    def test_highRTTNoFalsePositive(self) -> None:
        """
        After measuring the 2 s RTT the suspicion timeout is 4 x (SRTT +
        RTTVAR), well above 2 s, and an echo session that answers every
        write after 2 s is never suspected (a fixed 1 s timeout would).
        """
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        for _ in range(20):
            mux.ping()
            self.slowly(link, 3)
        assert mux.srtt is not None
        self.assertGreater(mux.srtt, 1.5)
        timeout = mux.suspectTimeout()
        self.assertAlmostEqual(timeout, 4 * (mux.srtt + mux.rttvar))
        self.assertGreater(timeout, 4.0)
        assert client.transport is not None
        suspected = []
        for i in range(10):
            client.transport.write(b"%d" % i)
            for _ in range(3):
                self.slowly(link, self.HOP)
                suspected.append(mux.suspected)
        self.assertEqual(suspected, [False] * 30)
        self.assertEqual(bytes(client.received), b"0123456789")
        self.assertIn(b.nodeID, a.links)

    def test_highRTTSilentLinkTakesLonger(self) -> None:
        """
        The same slow link, silenced: suspected after its own, longer
        timeout, not after 1 s.
        """
        a, b, link, mux = self.pair()
        client = self.session(a, b)
        for _ in range(8):
            mux.ping()
            self.slowly(link, 3)
        timeout = mux.suspectTimeout()
        link.silence()
        assert client.transport is not None
        client.transport.write(b"x")
        took = self.runUntil(lambda: mux.suspected, 60)
        self.assertNear(took, timeout)


class RouteTests(Harness):
    """
    A-B, B-C, A-C and C-D: A reaches D over A-C-D until A-C is suspected.
    """

    services = True

    def setUp(self) -> None:
        super().setUp()
        self.a, self.b, self.c, self.d = (
            self.net.addNode(f"LAB.{n}") for n in ("A", "B", "C", "D")
        )
        self.links = {
            "ab": self.net.connect(self.a, self.b),
            "bc": self.net.connect(self.b, self.c),
            "ac": self.net.connect(self.a, self.c),
            "cd": self.net.connect(self.c, self.d),
        }
        for _ in range(4):
            self.net.flush(advance=6)

    def route(self) -> list[str]:
        assert self.a.topology is not None
        return list(self.a.topology.selectRoute(self.a.nodeID, self.d.nodeID).hops)

    def test_suspectedLinkAvoidedAtOnce(self) -> None:
        a, b, c, d = self.a, self.b, self.c, self.d
        self.assertEqual(self.route(), [a.nodeID, c.nodeID, d.nodeID])
        mux = a.links[c.nodeID].mux
        self.links["ac"].silence()
        mux.ping().addErrback(lambda f: None)
        self.runUntil(lambda: mux.suspected, 10)
        # Nothing was announced: this node's own suspicion is enough.
        self.assertEqual(self.route(), [a.nodeID, b.nodeID, c.nodeID, d.nodeID])
        assert a.topology is not None
        self.assertEqual(a.topology.suspectedLinks(), [(a.nodeID, c.nodeID)])
        explanation = a.topology.explainRoute(a.nodeID, d.nodeID)
        assert explanation.route is not None
        self.assertEqual(explanation.route.hops, [a.nodeID, b.nodeID, c.nodeID, d.nodeID])
        # A new session to D goes the long way and works.
        proto = resultOf(self.openTo(d))
        assert proto.transport is not None
        proto.transport.write(b"around")
        self.net.flush()
        self.assertEqual(bytes(proto.received), b"around")

    def openTo(self, node: Node) -> Deferred[Any]:
        d = self.a.openSession(node.nodeID, "echo", lambda info: Client())
        self.net.flush()
        return d

    def test_onlyRouteStillUsed(self) -> None:
        """
        A suspected link that is the only way is still chosen: it may answer
        yet, and refusing would fail the session for certain.
        """
        a, c, d = self.a, self.c, self.d
        self.links["ab"].cut()
        self.net.flush(advance=6)
        mux = a.links[c.nodeID].mux
        self.links["ac"].silence()
        mux.ping().addErrback(lambda f: None)
        self.runUntil(lambda: mux.suspected, 10)
        self.assertEqual(self.route(), [a.nodeID, c.nodeID, d.nodeID])

    def test_deadLinkWithdrawnAtOnce(self) -> None:
        """
        Once declared dead, the link is announced down without damping: B
        and D stop routing over A-C within the same second.
        """
        a, b, c, d = self.a, self.b, self.c, self.d
        mux = a.links[c.nodeID].mux
        self.links["ac"].silence()
        mux.ping().addErrback(lambda f: None)
        self.runUntil(lambda: c.nodeID not in a.links, 10)
        start = self.net.clock.seconds()
        assert d.topology is not None
        self.runUntil(
            lambda: (
                d.topology is not None
                and list(d.topology.selectRoute(d.nodeID, a.nodeID).hops)
                == [d.nodeID, c.nodeID, b.nodeID, a.nodeID]
            ),
            10,
        )
        self.assertLess(self.net.clock.seconds() - start, 0.1)
        record = d.topology.record("link", a.nodeID, c.nodeID)
        assert record is not None
        self.assertFalse(record.body["up"])


class PathQuietTests(Harness):
    """
    The kernel's view of the path (L{appnpy.link.tcpinfo}): while the
    peer's TCP acknowledges what was sent, a silent peer process is not a
    failed link.
    """

    def test_acknowledgedPathNeverDeclaredDead(self) -> None:
        a, b, link, mux = self.pair()
        mux.pathQuiet = lambda: 0.0
        link.silence()
        mux.ping().addErrback(lambda f: None)
        end = self.net.clock.seconds() + 30
        self.runUntil(lambda: self.net.clock.seconds() >= end, 40)
        self.assertFalse(mux.suspected)
        self.assertIn(b.nodeID, a.links)

    def test_quietPathAsWithout(self) -> None:
        """
        A path quiet since before the wait changes nothing: dead in three
        suspicion timeouts.
        """
        a, b, link, mux = self.pair()
        mux.pathQuiet = lambda: 1e9
        link.silence()
        mux.ping().addErrback(lambda f: None)
        took = self.runUntil(lambda: b.nodeID not in a.links, 10)
        self.assertNear(took, 3 * mux.suspectTimeout())

    def test_pathFallsSilentLater(self) -> None:
        """
        The path acknowledged for 5 s, then went quiet: the link is judged
        from its last acknowledgement, dead three timeouts after it.
        """
        a, b, link, mux = self.pair()
        clock = self.net.clock
        start = clock.seconds()
        lastAck = start + 5.0
        mux.pathQuiet = lambda: max(0.0, clock.seconds() - lastAck)
        link.silence()
        mux.ping().addErrback(lambda f: None)
        took = self.runUntil(lambda: b.nodeID not in a.links, 20)
        self.assertLessEqual(abs(took - (5.0 + 3 * mux.suspectTimeout())), 0.6)

    def test_realSocket(self) -> None:
        """
        On a real TCP connection (Linux), the function reads the kernel:
        nothing in flight once the peer has acknowledged.
        """
        import socket
        import sys

        from appnpy.link.tcpinfo import pathQuietFor

        if not sys.platform.startswith("linux"):
            raise SkipTest("TCP_INFO is Linux's")
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        self.addCleanup(server.close)
        self.addCleanup(client.close)
        self.addCleanup(peer.close)

        class Tcp:
            def getHandle(self) -> socket.socket:
                return client

        quiet = pathQuietFor(Tcp())
        assert quiet is not None
        client.sendall(b"x")
        self.assertEqual(peer.recv(1), b"x")
        # Loopback ACKs at once; poll briefly for it without sleeping long.
        for _ in range(1000):
            if quiet() == 0.0:
                break
        self.assertGreaterEqual(quiet(), 0.0)
        self.assertLess(quiet(), 5.0)
        self.assertIsNone(pathQuietFor(object()))


class ConfigTests(SynchronousTestCase):
    """
    The two timers of the config file reach every link's multiplexer.
    """

    def resolve(self, text: str) -> Any:
        from appnpy.ops.config import resolveConfig
        from tests.test_config import cli

        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return resolveConfig(cli(config=path), Clock())

    def test_defaultsAndKeys(self) -> None:
        from appnpy.link.identity import generateIdentity
        from appnpy.node import buildNode

        config = self.resolve("[node]\n")
        self.assertEqual((config.suspectMinimum, config.deadFactor), (1.0, 3.0))
        config = self.resolve("[node]\nsuspect-timeout-min = 2.5\nsuspect-dead-factor = 4\n")
        self.assertEqual((config.suspectMinimum, config.deadFactor), (2.5, 4.0))
        self.assertEqual(config.asDict()["node"]["suspect-timeout-min"], 2.5)
        node = buildNode(
            Clock(),
            attrs.evolve(config, dataDir=None, listen=(), api=None),
            generateIdentity(),
            [],
            None,
            services=False,
            managePeers=False,
        )
        self.assertEqual((node.muxConfig.suspectMinimum, node.muxConfig.deadFactor), (2.5, 4.0))

    def test_badValues(self) -> None:
        from appnpy.errors import ConfigurationError

        for text, words in [
            ("suspect-timeout-min = -1", "suspect-timeout-min"),
            ("suspect-timeout-min = 1e9", "suspect-timeout-min"),
            ("suspect-timeout-min = nan", "suspect-timeout-min"),
            ("suspect-dead-factor = 0.5", "suspect-dead-factor"),
            ("suspect-dead-factor = 'x'", "suspect-dead-factor must be a number"),
        ]:
            e = self.assertRaises(ConfigurationError, self.resolve, f"[node]\n{text}\n")
            self.assertIn(words, str(e))
