"""
Admission control under slowloris (docs/architecture.md, "Admission"):
idle or slow connections held open never keep an honest peer out, because a
new connection beyond the cap drops the oldest one still in its handshake;
connections over the accept rate are refused with a line the dialler logs.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.errors import SessionClosed
from appnpy.link.refusal import MAX_REFUSAL_LINE, REFUSAL_PREFIX, parseRefusalLine, refusalLine
from appnpy.link.tls import LinkAddress
from appnpy.net.admission import REFUSAL_LINGER, AdmissionControl
from appnpy.testing import MemoryNetwork
from tests.test_robustness import NodeFaultTestCase, PlainClient, whenSome, withTimeout

#: Idle and slow connections held open against the node.
HELD = 300
#: Connections opened at once over real sockets.
BATCH = 30


class FakeLink(LinkProtocol):
    """
    A link that only waits for its handshake, and records being dropped.
    """

    def __init__(self) -> None:
        self.waiting: list[Deferred[None]] = []
        self.lostWaiting: list[Deferred[None]] = []
        self.evicted = False

    def whenAuthenticatedOrLost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def whenLost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.lostWaiting.append(d)
        return d

    def evict(self) -> None:
        self.evicted = True


class FakeWrapper(ProtocolWrapper):
    wrappedProtocol: FakeLink

    def __init__(self, link: FakeLink) -> None:
        self.wrappedProtocol = link


class FakeFactory:
    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: Any) -> FakeWrapper:
        return FakeWrapper(FakeLink())


class HalfClosingTransport(StringTransport):
    """
    Records a half-close and an abort.
    """

    writeClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class AdmissionUnitTests(SynchronousTestCase):
    def test_rateLimited(self) -> None:
        """
        Beyond the burst, connections are refused until tokens refill at the
        configured rate; a refused connection gets the refusal line (reason
        busy) and is closed.
        """
        clock = Clock()
        admission = AdmissionControl(clock, rate=10, burst=5, maxUnauthenticated=100)
        factory = admission.wrap(FakeFactory())  # type: ignore[arg-type]
        results = [factory.buildProtocol(None) for _ in range(8)]
        self.assertEqual(sum(isinstance(r, FakeWrapper) for r in results), 5)
        refusal = results[-1]
        assert refusal is not None
        transport = HalfClosingTransport()
        refusal.makeConnection(transport)
        self.assertEqual(parseRefusalLine(transport.value())[0], "busy")
        # FIN after the line, then it reads (and drops) the ClientHello for
        # a moment, so that closing does not reset the line away.
        self.assertTrue(transport.writeClosed)
        refusal.dataReceived(b"\x16\x03\x01 a ClientHello")
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        results = [factory.buildProtocol(None) for _ in range(3)]
        self.assertEqual(sum(isinstance(r, FakeWrapper) for r in results), 2)
        clock.advance(REFUSAL_LINGER)
        self.assertTrue(transport.aborted)

    def test_oldestDropped(self) -> None:
        """
        Beyond the cap, each new connection drops the oldest one still in
        its handshake; one that authenticated no longer counts.
        """
        clock = Clock()
        admission = AdmissionControl(clock, rate=1000, burst=1000, maxUnauthenticated=2)
        factory = admission.wrap(FakeFactory())  # type: ignore[arg-type]
        first, second = factory.buildProtocol(None), factory.buildProtocol(None)
        assert isinstance(first, FakeWrapper) and isinstance(second, FakeWrapper)
        third = factory.buildProtocol(None)
        assert isinstance(third, FakeWrapper)
        self.assertEqual(
            [p.wrappedProtocol.evicted for p in (first, second, third)], [True, False, False]
        )
        second.wrappedProtocol.waiting[0].callback(None)
        fourth = factory.buildProtocol(None)
        assert isinstance(fourth, FakeWrapper)
        self.assertFalse(third.wrappedProtocol.evicted)
        self.assertEqual(admission.unauthenticated, 2)

    def test_connectionBudget(self) -> None:
        """
        At C{maxConnections} open connections (counting those still
        closing) a newcomer is closed at once, and the oldest one still in
        its handshake is dropped to make room for the next; when every open
        one is authenticated, running out is logged once for the episode,
        and once more when a connection closes.
        """
        clock = Clock()
        admission = AdmissionControl(clock, rate=1000, burst=1000, maxConnections=2)
        factory = admission.wrap(FakeFactory())  # type: ignore[arg-type]
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        first, second = factory.buildProtocol(None), factory.buildProtocol(None)
        assert isinstance(first, FakeWrapper) and isinstance(second, FakeWrapper)
        self.assertIsNone(factory.buildProtocol(None))
        self.assertTrue(first.wrappedProtocol.evicted)
        # Still counted until its connection is gone.
        self.assertIsNone(factory.buildProtocol(None))
        first.wrappedProtocol.lostWaiting[0].callback(None)
        third = factory.buildProtocol(None)
        assert isinstance(third, FakeWrapper)
        for p in (second, third):
            p.wrappedProtocol.waiting[0].callback(None)  # authenticated
        self.assertEqual([factory.buildProtocol(None) for _ in range(5)], [None] * 5)
        out = [e for e in events if "out of file descriptors" in e.get("log_format", "")]
        self.assertEqual(len(out), 1)
        second.wrappedProtocol.lostWaiting[0].callback(None)
        again = [e for e in events if "again" in e.get("log_format", "")]
        self.assertEqual([e["count"] for e in again], [5])
        self.assertIsInstance(factory.buildProtocol(None), FakeWrapper)

    def test_oneSummaryPerInterval(self) -> None:
        """
        Many refusals and drops produce one summary line per interval.
        """
        clock = Clock()
        admission = AdmissionControl(clock, rate=1, burst=1, maxUnauthenticated=100)
        factory = admission.wrap(FakeFactory())  # type: ignore[arg-type]
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _ in range(50):
            factory.buildProtocol(None)
        clock.advance(1)
        lines = [e for e in events if e.get("log_namespace", "").endswith("AdmissionControl")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["count"], 49)
        self.assertEqual(clock.getDelayedCalls(), [])

    @given(st.binary(max_size=1000))
    def test_refusalLineAnyBytes(self, data: bytes) -> None:
        """
        Whatever follows the prefix, parsing gives a printable one-line
        reason and detail, and never fails.
        """
        reason, detail = parseRefusalLine(REFUSAL_PREFIX + data)
        for text in (reason, detail):
            self.assertTrue(all(32 <= ord(c) < 127 for c in text))
        self.assertTrue(reason)
        self.assertLessEqual(len(reason) + len(detail), MAX_REFUSAL_LINE)

    @given(st.from_regex(r"[a-z][a-z-]{0,30}", fullmatch=True), st.text(max_size=700))
    def test_refusalLineRoundTrip(self, reason: str, detail: str) -> None:
        """
        A refusal line is one line of at most MAX_REFUSAL_LINE bytes that
        parses back to its reason.
        """
        line = refusalLine(reason, detail)
        self.assertLessEqual(len(line), MAX_REFUSAL_LINE)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(parseRefusalLine(line)[0], reason)

    def test_refusalLine(self) -> None:
        """
        The refusal line round-trips a reason and a detail, and carries only
        printable ASCII whatever it is given.
        """
        self.assertEqual(parseRefusalLine(refusalLine("busy", "try later")), ("busy", "try later"))
        line = refusalLine("busy", "caf\u00e9\n\x00")
        self.assertTrue(line.endswith(b"\r\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(parseRefusalLine(line), ("busy", "caf???"))


class RefusalSniffingTests(SynchronousTestCase):
    """
    A dialled connection tells a refusal line from TLS by its first byte,
    however the line is split across reads.
    """

    def setUp(self) -> None:
        self.node = MemoryNetwork(services=False).addNode("LAB.D")

    def dial(self) -> tuple[Any, FakeTransport]:
        client = self.node.clientFactory(LinkAddress("127.0.0.1", 7)).buildProtocol(None)
        transport = FakeTransport(client, isServer=False)
        client.makeConnection(transport)
        return client, transport

    @settings(max_examples=40)
    @given(st.lists(st.integers(1, 40), min_size=1, max_size=20), st.text(max_size=200))
    def test_splitRefusal(self, cuts: list[int], detail: str) -> None:
        """
        A refusal line arriving in pieces is read whole: the link protocol
        has the reason and detail, and the connection is closed.
        """
        client, transport = self.dial()
        data = refusalLine("busy", detail)
        offset = 0
        for cut in cuts:
            client.dataReceived(data[offset : offset + cut])
            offset += cut
        client.dataReceived(data[offset:])
        self.assertEqual(client.wrappedProtocol.refusal, parseRefusalLine(data))
        self.assertTrue(transport.disconnecting)

    @settings(max_examples=40)
    @given(st.binary(min_size=1, max_size=200))
    def test_notARefusal(self, data: bytes) -> None:
        """
        Bytes that do not start the refusal prefix go to TLS (which may fail
        the handshake, but never reads them as a refusal).
        """
        if REFUSAL_PREFIX.startswith(data[: len(REFUSAL_PREFIX)]):
            return
        client, transport = self.dial()
        client.dataReceived(data)
        self.assertIsNone(client.wrappedProtocol.refusal)


class MemorySlowlorisTests(SynchronousTestCase):
    """
    Over the in-memory harness: HELD connections that never finish the
    handshake (idle, or stopped partway through a ClientHello), then an
    honest node.
    """

    def accept(self, net: MemoryNetwork, node: Any, port: int) -> tuple[Any, FakeTransport]:
        addr = IPv4Address("TCP", "127.0.0.1", port)
        server = node.admission.wrap(node.serverFactory()).buildProtocol(addr)
        transport = FakeTransport(server, isServer=True, peerAddress=addr)
        server.makeConnection(transport)
        return server, transport

    def test_honestPeerLinksPastHeldConnections(self) -> None:
        net = MemoryNetwork()
        node = net.addNode("LAB.SEED")
        honest = net.addNode("LAB.HONEST")
        assert node.admission is not None
        cap = node.admission.maxUnauthenticated
        # A real ClientHello's first bytes, for the slow ones.
        probe = honest.clientFactory(LinkAddress("127.0.0.1", 1)).buildProtocol(None)
        probeIO = FakeTransport(probe, isServer=False)
        probe.makeConnection(probeIO)
        clientHello = b"".join(probeIO.stream)
        held = []
        for i in range(HELD):
            server, transport = self.accept(net, node, 50000 + i)
            if i % 3 == 0:
                server.dataReceived(clientHello[: 1 + i % 40])
            held.append(transport)
            # Arriving within the accept rate: none is refused, each beyond
            # the cap drops the oldest.
            net.clock.advance(0.02)
        self.assertEqual(node.admission.unauthenticated, cap)
        dropped = [t for t in held if t.disconnecting]
        self.assertEqual(len(dropped), HELD - cap)
        self.assertEqual(held[:-cap], dropped)

        # The honest node's connection goes through the same admission.
        addr = IPv4Address("TCP", "127.0.0.1", 40000)
        server = node.admission.wrap(node.serverFactory()).buildProtocol(addr)
        client = honest.clientFactory(LinkAddress("127.0.0.1", 7, node.nodeID)).buildProtocol(addr)
        serverIO = FakeTransport(server, isServer=True, peerAddress=addr)
        clientIO = FakeTransport(client, isServer=False, hostAddress=addr)
        pump = connect(server, serverIO, client, clientIO, greet=False, clock=net.clock)
        for _ in range(200):
            if not pump.pump():
                break
        self.assertIn(node.nodeID, honest.links)
        self.assertIn(honest.nodeID, node.links)
        self.assertEqual(node.admission.unauthenticated, cap - 1)
        self.assertEqual(len([t for t in held if t.disconnecting]), HELD - cap + 1)

    def test_refusedDiallerLogsReason(self) -> None:
        """
        A dialler refused over the accept rate logs the listener's reason
        and its connect fails with it (not a TLS error).
        """
        net = MemoryNetwork()
        node = net.addNode("LAB.SEED")
        dialler = net.addNode("LAB.D")
        assert node.admission is not None
        node.admission = AdmissionControl(net.clock, rate=1, burst=0)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        addr = IPv4Address("TCP", "127.0.0.1", 40000)
        server = node.admission.wrap(node.serverFactory()).buildProtocol(addr)
        client = dialler.clientFactory(LinkAddress("127.0.0.1", 7, node.nodeID)).buildProtocol(addr)
        serverIO = FakeTransport(server, isServer=True, peerAddress=addr)
        clientIO = FakeTransport(client, isServer=False, hostAddress=addr)
        pump = connect(server, serverIO, client, clientIO, greet=False, clock=net.clock)
        d = Deferred.fromCoroutine(dialler.whenLinkActive(client.wrappedProtocol))
        for _ in range(50):
            if not pump.pump():
                break
        failure = self.failureResultOf(d, SessionClosed)
        self.assertEqual(failure.value.reason, "busy")
        [line] = [e for e in events if "before TLS" in e.get("log_format", "")]
        self.assertEqual(line["reason"], "busy")
        self.assertIn("retry", line["detail"])
        node.admission.stop()


class RealSocketSlowlorisTests(NodeFaultTestCase):
    def whenAccepted(self, node: Any, count: int) -> Deferred[None]:
        """
        Fires once C{node} has accepted C{count} connections.
        """
        admission = node.admission
        original = admission.admit
        d: Deferred[None] = Deferred()
        seen = [0]

        def admit(factory: Any, addr: Any) -> Any:
            protocol = original(factory, addr)
            seen[0] += 1
            if seen[0] == count:
                admission.admit = original
                d.callback(None)
            return protocol

        admission.admit = admit
        return withTimeout(d)

    async def test_honestPeerLinksPastHeldConnections(self) -> None:
        """
        With HELD idle TCP connections held open against a node, an honest
        node still links; the idle ones beyond the cap were dropped, oldest
        first, with one summary line rather than one line each.
        """
        node = await self.startNode(rate=10000.0, burst=HELD + 10)
        honest = await self.startNode()
        cap = node.admission.maxUnauthenticated
        mark = len(self.events)
        clients = [PlainClient() for _ in range(HELD)]
        # In batches the listen backlog (50) holds, each accepted before the next.
        for start in range(0, HELD, BATCH):
            batch = clients[start : start + BATCH]
            accepted = self.whenAccepted(node, len(batch))
            await gatherResults([Deferred.fromCoroutine(self.connectPlain(node, c)) for c in batch])
            await accepted
        # All were accepted, in some order: all but the newest cap dropped.
        self.assertEqual(node.admission.unauthenticated, cap)
        await withTimeout(whenSome([c.lost for c in clients], HELD - cap))
        await self.link(honest, node)
        await self.assertLinkWorks(node, honest)
        self.assertEqual(sum(1 for c in clients if c.lost.called), HELD - cap + 1)
        closing = len(self.events)
        for c in clients:
            if not c.lost.called:
                c.transport.loseConnection()
        await withTimeout(gatherResults([c.lost for c in clients]))
        await self.whenProtocolsLost(node, keep={honest.nodeID})
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)
        # Summarised (a line a second at most), not logged one by one.
        summaries = [
            e for e in self.events[mark:] if "dropped {dropped}" in e.get("log_format", "")
        ]
        self.assertEqual(sum(e["dropped"] for e in summaries), HELD - cap + 1)
        self.assertLess(len(summaries), 10)
        early = [e for e in self.events[mark:closing] if e in self.warnings(mark)]
        self.assertEqual([w for w in early if w not in summaries], [])
