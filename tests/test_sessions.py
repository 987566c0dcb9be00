"""
Links, control points and sessions across nodes, through the public
in-memory harness: real TLS 1.3 and yamux over iosim pumps, one Clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from appnpy_echo import Echo, SimplePlugin
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from appnpy import PROTOCOL_VERSION_MAX
from appnpy.api import ISession, ISessionInfo, ISessionPlugin, SessionClosed, SessionRefused
from appnpy.cp.controlpoint import LinkState, negotiateLimits
from appnpy.cp.messages import LinkRefused, Message, SessionAccept, message, text
from appnpy.errors import NoSuchNode
from appnpy.testing import MemoryNetwork, resultOf


@message("TestOptionalNote", capability="test-note")
@attrs.frozen
class OptionalNote(Message):
    """
    An optional control message, for the capability tests.
    """

    note: str = attrs.field(validator=text(100))


class Recorder(Protocol):
    """
    Records what it receives and how its session ended.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(ISessionPlugin)
@attrs.define
class RecordingPlugin:
    """
    A plugin that keeps the protocols it builds; C{answer} may refuse.
    """

    name: str = "rec"
    version: str = "1"
    defaultCOS: str = "batch"
    sessionLimit: int = 8
    answer: Any = None
    built: list[Recorder] = attrs.Factory(list)
    infos: list[Any] = attrs.Factory(list)

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Any:
        self.infos.append(session)
        if self.answer is not None:
            return self.answer(session)
        p = Recorder()
        self.built.append(p)
        return p


class Harness(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork(services=False)

    def pair(self, **kw: Any) -> tuple[Any, Any]:
        from appnpy_echo import Echo, Pong, SimplePlugin

        kw.setdefault("plugins", [SimplePlugin("echo", Echo), SimplePlugin("ping", Pong)])
        a = self.net.addNode("LAB.A", **kw)
        b = self.net.addNode("LAB.B", **kw)
        self.net.link(a, b)
        return a, b

    def open(self, a: Any, b: Any, plugin: str = "echo", **kw: Any) -> Any:
        greeting = kw.pop("greeting", b"")
        d = a.openSession(b.nodeID, plugin, lambda info: Recorder(greeting), **kw)
        self.net.flush()
        return d

    def assertClean(self) -> None:
        """
        No sessions, pending BINDs or timers are left anywhere.
        """
        for node in self.net.nodes:
            self.assertEqual(node.sessions(), [])
            for cp in node.links.values():
                self.assertEqual(cp.outboundBinds, {})
                self.assertEqual(cp.pendingInbound, {})


class LinkTests(Harness):
    def test_linkUp(self) -> None:
        """
        Linking two nodes authenticates both, exchanges Hellos and
        negotiates the version and limits on both sides.
        """
        a, b = self.pair()
        cpa, cpb = a.links[b.nodeID], b.links[a.nodeID]
        self.assertEqual((cpa.state, cpb.state), (LinkState.ACTIVE, LinkState.ACTIVE))
        self.assertEqual((cpa.peerName, cpb.peerName), ("LAB.B", "LAB.A"))
        self.assertEqual(cpa.version, PROTOCOL_VERSION_MAX)
        self.assertEqual(cpa.limits, {"echo": 64, "ping": 64})
        self.assertTrue(cpa.isDialer)
        self.assertFalse(cpb.isDialer)

    def test_findNeighbour(self) -> None:
        """
        A neighbour is found by node ID, unique prefix or CP name (any
        case); an unknown or ambiguous one is NoSuchNode.
        """
        a, b = self.pair()
        cp = a.links[b.nodeID]
        self.assertIs(a.findNeighbour(b.nodeID), cp)
        self.assertIs(a.findNeighbour(b.nodeID[:6]), cp)
        self.assertIs(a.findNeighbour("lab.b"), cp)
        self.assertRaises(NoSuchNode, a.findNeighbour, "LAB.C")
        self.assertRaises(NoSuchNode, a.findNeighbour, "")

    def test_simultaneousDial(self) -> None:
        """
        When two nodes dial each other at once, exactly one link survives
        and both ends keep the same one: the one dialled by the lower ID.
        """
        a = self.net.addNode("LAB.A")
        b = self.net.addNode("LAB.B")
        self.net.connect(a, b)
        self.net.connect(b, a)
        self.net.flush()
        cpa, cpb = a.links[b.nodeID], b.links[a.nodeID]
        lower = min(a.nodeID, b.nodeID)
        self.assertEqual(cpa.isDialer, a.nodeID == lower)
        self.assertEqual(cpb.isDialer, b.nodeID == lower)
        self.assertIs(cpa.mux.transport.getHandle(), cpa.link.transport.getHandle())
        # The surviving link carries sessions.
        d = self.open(a, b, greeting=b"x")
        self.assertEqual(resultOf(d).received, b"x")
        # Exactly one connection is still open.
        alive = [link for link in self.net.links if not link.pump.clientIO.disconnected]
        self.assertEqual(len(alive), 1)

    def test_selfDial(self) -> None:
        """
        A node that dials its own address notices and drops the link.
        """
        a = self.net.addNode("LAB.A")
        self.net.connect(a, a, pin=False)
        self.assertEqual(a.links, {})
        self.assertTrue(self.net.links[0].pump.clientIO.disconnected)

    def test_incompatibleVersions(self) -> None:
        """
        Nodes with no protocol version in common refuse the link with reason
        incompatible-version, and both log it.
        """
        logged: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        a = self.net.addNode("LAB.A")
        b = self.net.addNode("LAB.B")
        b.protocolVersions = (3, 4)
        self.net.connect(a, b)
        self.assertEqual((a.links, b.links), ({}, {}))
        texts = [e.get("reason") for e in logged if "detail" in e]
        self.assertGreaterEqual(texts.count("incompatible-version"), 2)

    def test_forgedHello(self) -> None:
        """
        A Hello whose signature does not verify is refused with
        bad-signature; the link does not come up.
        """
        a = self.net.addNode("LAB.A")
        b = self.net.addNode("LAB.B")
        real = a.identity

        class Forger:
            nodeID = real.nodeID
            publicKeyBytes = real.publicKeyBytes

            def sign(self, data: bytes) -> bytes:
                return b"\x00" * 64

        a.identity = Forger()  # type: ignore[assignment]
        self.net.connect(a, b)
        self.assertEqual(b.links, {})

    def test_unknownControlMessage(self) -> None:
        """
        A control message the receiver does not expect closes the link with
        protocol-error; both nodes stay usable for new links.
        """
        a, b = self.pair()
        cp = a.links[b.nodeID]
        cp.send(SessionAccept(session_id="0" * 32))
        self.net.flush()
        self.assertEqual((a.links, b.links), ({}, {}))
        self.net.link(a, b)
        self.assertIn(b.nodeID, a.links)

    def test_optionalMessagesNeedCapability(self) -> None:
        """
        An optional control message is sent only to a neighbour that
        announced its capability in Hello, so a node without that service
        keeps its link instead of seeing an unknown message.
        """
        received: list[object] = []
        a = self.net.addNode("LAB.A")
        b = self.net.addNode("LAB.B")
        a.addControlHandler(OptionalNote, lambda cp, msg: received.append(msg))
        c = self.net.addNode("LAB.C")
        c.addControlHandler(OptionalNote, lambda cp, msg: received.append(msg))
        self.net.link(a, b)
        self.net.link(a, c)
        self.assertIn("test-note", a.links[c.nodeID].peerHello.capabilities)
        self.assertFalse(a.links[b.nodeID].send(OptionalNote(note="hi")))
        self.assertTrue(a.links[c.nodeID].send(OptionalNote(note="hi")))
        self.net.flush()
        self.assertEqual(received, [OptionalNote(note="hi")])
        self.assertIn(b.nodeID, a.links)

    def test_linkRefusedMessage(self) -> None:
        """
        A LinkRefused from the peer closes the link.
        """
        a, b = self.pair()
        a.links[b.nodeID].send(LinkRefused(reason="busy", detail="full"))
        self.net.flush()
        self.assertEqual(b.links, {})

    def test_silentStreamsLimited(self) -> None:
        """
        Streams the peer opens without sending a first message are capped
        and reset after a deadline; the link survives.
        """
        a, b = self.pair()
        cp = a.links[b.nodeID]
        streams = [cp.mux.openStream() for _ in range(70)]
        for s in streams:
            s.write(b"")  # SYN only
        self.net.flush()
        cpb = b.links[a.nodeID]
        self.assertLessEqual(len(cpb.pendingInbound), 64)
        # Armed once the read that opened them was done.
        self.assertNotIn(None, list(cpb.pendingInbound.values()))
        self.net.flush(advance=31)
        self.assertEqual(cpb.pendingInbound, {})
        self.assertEqual(cpb.state, LinkState.ACTIVE)

    def test_negotiateLimits(self) -> None:
        """
        CNOS: the lower limit wins; a plugin only one side has keeps that
        side's limit.
        """
        self.assertEqual(
            negotiateLimits({"echo": 5, "x": 1}, {"echo": 3, "y": 9}),
            {"echo": 3, "x": 1, "y": 9},
        )


class SessionTests(Harness):
    def test_sessionTransport(self) -> None:
        """
        The session handed to a plugin protocol provides ISession and tells
        it who the peer is.
        """
        a, b = self.pair()
        p = resultOf(self.open(a, b))
        verifyObject(ISession, p.transport)
        self.assertEqual(p.transport.peerNodeID, b.nodeID)
        self.assertEqual(p.transport.peerName, "LAB.B")
        self.assertEqual(p.transport.direction, "outbound")
        self.assertEqual(p.transport.getPeer().nodeID, b.nodeID)
        self.assertEqual(p.transport.cos, "interactive")
        self.assertEqual(len(p.transport.sessionID), 32)

    def test_echoBothDirections(self) -> None:
        """
        Either side opens a session; bytes arrive in order and intact.
        """
        a, b = self.pair()
        p1 = resultOf(self.open(a, b, greeting=b"from a"))
        p2 = resultOf(self.open(b, a, greeting=b"from b"))
        self.assertEqual(p1.received, b"from a")
        self.assertEqual(p2.received, b"from b")
        big = bytes(range(256)) * 8000
        p1.transport.write(big)
        self.net.flush()
        self.assertEqual(p1.received[6:], big)

    def test_parametersReachPlugin(self) -> None:
        """
        Plugin parameters and the COS in BIND reach the accepting plugin.
        """
        seen: list[ISessionInfo] = []
        plugin = RecordingPlugin(answer=lambda info: seen.append(info) or Recorder())
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        resultOf(self.open(a, b, plugin="rec", parameters={"k": [1, b"2"]}, cos="secure"))
        self.assertEqual(seen[0].parameters, {"k": [1, b"2"]})
        self.assertEqual(seen[0].cos, "secure")
        self.assertEqual(seen[0].direction, "inbound")
        self.assertEqual(seen[0].peerNodeID, a.nodeID)

    def test_defaultCOS(self) -> None:
        """
        With no COS named, the plugin's default COS is used.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        b = self.net.addNode("LAB.B", plugins=[RecordingPlugin()])
        self.net.link(a, b)
        self.assertEqual(resultOf(self.open(a, b, plugin="rec")).transport.cos, "batch")

    def test_unknownPlugin(self) -> None:
        """
        A BIND for a plugin the peer lacks is refused with unknown-plugin,
        both when the opener knows it from Hello and when it does not.
        """
        a, b = self.pair()
        e = self.assertRaises(SessionRefused, resultOf, self.open(a, b, plugin="nope"))
        self.assertEqual(e.reason, "unknown-plugin")
        cp = a.links[b.nodeID]  # make the opener believe the peer has it
        cp.peerHello = attrs.evolve(cp.peerHello, plugins={**cp.peerHello.plugins, "nope": 5})
        cp.limits["nope"] = 5
        e = self.assertRaises(SessionRefused, resultOf, self.open(a, b, plugin="nope"))
        self.assertEqual(e.reason, "unknown-plugin")
        self.assertClean()

    def test_refusedByPlugin(self) -> None:
        """
        A plugin refuses by returning None (refused-by-plugin) or by
        raising SessionRefused with its own reason; a plugin that crashes
        refuses with refused-by-plugin and the node stays up.
        """
        for answer, reason in [
            (lambda info: None, "refused-by-plugin"),
            (lambda info: (_ for _ in ()).throw(SessionRefused("busy", "try later")), "busy"),
            (lambda info: 1 / 0, "refused-by-plugin"),
        ]:
            net = self.net = MemoryNetwork(services=False)
            a = net.addNode("LAB.A", plugins=[RecordingPlugin()])
            b = net.addNode("LAB.B", plugins=[RecordingPlugin(answer=answer)])
            net.link(a, b)
            e = self.assertRaises(SessionRefused, resultOf, self.open(a, b, plugin="rec"))
            self.assertEqual(e.reason, reason)
            self.assertClean()
        self.flushLoggedErrors(ZeroDivisionError)

    def test_limitReached(self) -> None:
        """
        The negotiated limit (the lower of the two) is enforced: the opener
        fails fast, and a BIND over the limit is refused by the receiver.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin(sessionLimit=2)])
        b = self.net.addNode("LAB.B", plugins=[RecordingPlugin(sessionLimit=5)])
        self.net.link(a, b)
        self.assertEqual(b.links[a.nodeID].limits["rec"], 2)
        resultOf(self.open(a, b, plugin="rec"))
        resultOf(self.open(b, a, plugin="rec"))
        e = self.assertRaises(SessionRefused, resultOf, self.open(a, b, plugin="rec"))
        self.assertEqual(e.reason, "limit-reached")
        b.links[a.nodeID].limits["rec"] = 10  # b ignores the agreed limit
        e = self.assertRaises(SessionRefused, resultOf, self.open(b, a, plugin="rec"))
        self.assertEqual(e.reason, "limit-reached")

    def test_contentionWinner(self) -> None:
        """
        When both ends race for the last session slot, exactly one session
        is bound: the contention winner's (lower node ID).
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin(sessionLimit=1)])
        b = self.net.addNode("LAB.B", plugins=[RecordingPlugin(sessionLimit=1)])
        self.net.link(a, b)
        da = a.openSession(b.nodeID, "rec", lambda info: Recorder())
        db = b.openSession(a.nodeID, "rec", lambda info: Recorder())
        self.net.flush()
        results = []
        for d in (da, db):
            try:
                results.append(resultOf(d))
            except SessionRefused as e:
                results.append(e.reason)
        winnerIsA = a.nodeID < b.nodeID
        self.assertIsInstance(results[0 if winnerIsA else 1], Recorder)
        self.assertEqual(results[1 if winnerIsA else 0], "limit-reached")
        self.assertEqual(len(a.sessions()), 1)

    def test_closeReasons(self) -> None:
        """
        loseConnection sends UNBIND normal; loseConnectionWithReason carries
        its reason; abortConnection reports aborted.  The peer's protocol
        sees SessionClosed with that reason, and nothing is left behind.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        for close, reason, detail in [
            (lambda t: t.loseConnection(), "normal", ""),
            (lambda t: t.loseConnectionWithReason("timeout", "idle"), "timeout", "idle"),
            (lambda t: t.abortConnection(), "aborted", ""),
        ]:
            p = resultOf(self.open(a, b, plugin="rec"))
            close(p.transport)
            self.net.flush()
            remote = plugin.built[-1]
            self.assertIsInstance(remote.lost.value, SessionClosed)
            self.assertEqual((remote.lost.value.reason, remote.lost.value.detail), (reason, detail))
            self.assertIsInstance(p.lost.value, SessionClosed)
        self.assertClean()

    def test_dataBeforeCloseDelivered(self) -> None:
        """
        Data written just before loseConnection arrives before the peer
        sees the session end.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        p = resultOf(self.open(a, b, plugin="rec"))
        payload = b"z" * 3_000_000  # more than the initial window
        p.transport.write(payload)
        p.transport.loseConnection()
        self.net.flush()
        self.assertEqual(len(plugin.built[-1].received), len(payload))
        self.assertEqual(plugin.built[-1].lost.value.reason, "normal")

    def test_finOvertakesUnbind(self) -> None:
        """
        If the peer's FIN arrives before its UNBIND (they travel on
        different streams), the session waits briefly for the reason; with
        none it ends as normal.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        for late, expected in [(("timeout", "late"), "timeout"), (None, "normal")]:
            p = resultOf(self.open(a, b, plugin="rec"))
            session = p.transport
            session._stream.loseConnection()  # FIN with no UNBIND before it
            self.net.flush()
            remote = plugin.built[-1]
            self.assertIsNone(remote.lost)
            if late is not None:
                a.links[b.nodeID].sendUnbind(session.sessionID, *late)
                self.net.flush()
            else:
                self.net.flush(advance=3)
            self.assertEqual(remote.lost.value.reason, expected)
        graceTimers = [c for c in self.net.clock.getDelayedCalls() if "_finish" in repr(c)]
        self.assertEqual(graceTimers, [])

    def test_linkCutAfterUnbindIsNotNormal(self) -> None:
        """
        The UNBIND travels on the control stream and overtakes data still
        waiting for stream window; if the link then fails, the peer did not
        get all of it, and its plugin must not hear a normal end.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        p = resultOf(self.open(a, b, plugin="rec"))
        payload = b"z" * 3_000_000  # more than the stream's window
        p.transport.write(payload)
        p.transport.loseConnection()
        (far,) = b.sessions()
        link = self.net.links[0]
        while far._peerReason is None:
            self.net.clock.advance(0)
            link.pump.pump(advanceClock=False)
        remote = plugin.built[-1]
        self.assertLess(len(remote.received), len(payload))
        link.cut()
        self.net.flush(advance=5)
        self.assertEqual(remote.lost.value.reason, "link-failure")
        self.assertClean()

    def test_linkCut(self) -> None:
        """
        When the link fails, both ends' sessions end with link-failure and
        the nodes forget the link.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        p = resultOf(self.open(a, b, plugin="rec"))
        self.net.links[0].cut()
        self.net.flush()
        self.assertEqual(p.lost.value.reason, "link-failure")
        self.assertEqual(plugin.built[-1].lost.value.reason, "link-failure")
        self.assertEqual((a.links, b.links), ({}, {}))
        self.assertClean()

    def test_bitFlipOnTheWire(self) -> None:
        """
        A bit flipped in a TLS record in transit fails the record's
        integrity check: the link is dropped on both ends, the session ends
        with link-failure, no corrupted byte reaches the plugin, and the
        nodes link again afterwards.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        p = resultOf(self.open(a, b, plugin="rec"))
        clientIO = self.net.links[0].pump.clientIO
        original = clientIO.getOutBuffer

        def corruptOnce() -> bytes:
            data = original()
            if data:
                clientIO.getOutBuffer = original  # type: ignore[method-assign]
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
            return data

        clientIO.getOutBuffer = corruptOnce  # type: ignore[method-assign]
        p.transport.write(b"x" * 10000)
        self.net.flush()
        remote = plugin.built[-1]
        self.assertEqual(remote.received.strip(b"x"), b"")  # nothing altered arrived
        self.assertEqual(remote.lost.value.reason, "link-failure")
        self.assertEqual(p.lost.value.reason, "link-failure")
        self.assertEqual((a.links, b.links), ({}, {}))
        self.flushLoggedErrors()
        self.net.link(a, b)
        self.assertIn(b.nodeID, a.links)

    def test_shutdownReason(self) -> None:
        """
        A stopping node closes its sessions with reason shutting-down, which
        the peer's protocol sees; new BINDs to it are refused.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)
        p = resultOf(self.open(a, b, plugin="rec"))
        d = b.stopService()
        self.net.flush()
        resultOf(d)
        self.assertEqual(p.lost.value.reason, "shutting-down")
        self.assertEqual(a.links, {})
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def test_lineReceiverOverSession(self) -> None:
        """
        A stock LineReceiver (the ping plugin) runs over a session unchanged.
        """
        a, b = self.pair()

        class Client(LineReceiver):
            lines: list[bytes] = []

            def connectionMade(self) -> None:
                self.sendLine(b"PING 1")
                self.sendLine(b"junk")

            def lineReceived(self, line: bytes) -> None:
                self.lines.append(line)

        d = a.openSession(b.nodeID, "ping", lambda info: Client())
        self.net.flush()
        resultOf(d)
        self.assertEqual(Client.lines, [b"PONG 1", b"ERROR expected PING <token>"])

    def test_backpressure(self) -> None:
        """
        A reader that pauses its session stops the writer's push producer
        end to end; resuming delivers everything and resumes the writer.
        """
        a = self.net.addNode("LAB.A", plugins=[RecordingPlugin()])
        plugin = RecordingPlugin()
        b = self.net.addNode("LAB.B", plugins=[plugin])
        self.net.link(a, b)

        @implementer(IPushProducer)
        class Producer:
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False

            def stopProducing(self) -> None:
                pass

        p = resultOf(self.open(a, b, plugin="rec"))
        remote = plugin.built[-1]
        remote.transport.pauseProducing()
        producer = Producer()
        p.transport.registerProducer(producer, True)
        sent = 0
        while not producer.paused and sent < 64 * 2**20:
            p.transport.write(b"q" * 65536)
            sent += 65536
            self.net.flush()
        self.assertTrue(producer.paused)
        self.assertLess(sent, 2 * 2**20)  # window + high-water mark, not unbounded
        self.assertEqual(remote.received, b"")
        remote.transport.resumeProducing()
        self.net.flush()
        self.assertFalse(producer.paused)
        self.assertEqual(len(remote.received), sent)

    def test_openToUnknownNode(self) -> None:
        """
        Opening a session to a node with no link fails with NoSuchNode.
        """
        a = self.net.addNode("LAB.A")
        self.assertRaises(NoSuchNode, resultOf, a.openSession("LAB.Z", "echo", Recorder))


class PluginContractTests(SynchronousTestCase):
    def test_echoPluginsProvideInterface(self) -> None:
        """
        The shipped echo and ping plugin objects provide ISessionPlugin.
        """
        from appnpy_echo import echoPlugin, pingPlugin

        for p in (echoPlugin, pingPlugin):
            verifyObject(ISessionPlugin, p)

    def test_configure(self) -> None:
        """
        The echo plugin accepts session-limit and refuses unknown keys.
        """
        from appnpy.errors import ConfigurationError

        p = SimplePlugin("echo", Echo)
        p.configure({"session-limit": 3})
        self.assertEqual(p.sessionLimit, 3)
        self.assertRaises(ConfigurationError, p.configure, {"bogus": 1})
        self.assertRaises(ConfigurationError, p.configure, {"session-limit": "x"})
