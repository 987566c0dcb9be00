"""
The multiplexer's memory bounds against a peer that writes and never reads,
floods a paused link with pings or SYNs, or opens streams on many links:
each costs a bounded, documented number of bytes (docs/protocol.md, "Limits
and byte bounds").
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.errors import StreamLimitExceeded
from appnpy.link.yamux import (
    FLAG_ACK,
    FLAG_RST,
    FLAG_SYN,
    SEND_HIGH_WATER,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    MuxBudget,
    MuxConfig,
    encodeHeader,
    withNodeBudget,
)
from appnpy.testing import MemoryNetwork, resultOf
from tests.test_yamux import NO_KEEPALIVE, Echo, Pair, Recorder, data, listener, parseFrames

KiB = 1024
MiB = 1024 * KiB


class Silent(Protocol):
    """
    A session end that never reads: it pauses its transport at once.
    """

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


class WriteNeverReadTests(SynchronousTestCase):
    def test_echoWithoutProducerBounded(self) -> None:
        """
        A peer writes 8 MiB into an echo stream (no producer registered) and
        reads none of the answer: the echo end holds at most its high-water
        mark plus one receive window, then grants no more window.  Once the
        peer reads, all 8 MiB come back.
        """
        pair = Pair(serverFactory=Echo)
        stream = pair.client.mux.openStream()
        recorder = Recorder()
        stream.attachProtocol(recorder)
        stream.pauseProducing()
        for _ in range(128):
            stream.write(b"e" * 64 * KiB)
            pair.pump()
        [accepted] = pair.server.accepted
        budget = pair.server.mux._budget
        self.assertLessEqual(budget.peakBuffered, SEND_HIGH_WATER + accepted._recvMax)
        self.assertLessEqual(budget.peakBuffered, 1 * MiB)
        # The rest waits at the writer, which chose to write it.
        self.assertGreater(len(stream._sendBuf), 7 * MiB)
        stream.resumeProducing()
        pair.pump()
        self.assertEqual(len(recorder.received), 8 * MiB)
        self.assertEqual(budget.buffered, 0)

    def test_writerThatReadsIsNotStalled(self) -> None:
        """
        A writer that queues 8 MiB at once into an echo and reads as it goes
        gets everything back: only the stream's accepting end withholds
        window, so two ends that both buffer cannot stall each other.
        """
        pair = Pair(serverFactory=Echo)
        stream = pair.client.mux.openStream()
        recorder = Recorder()
        stream.attachProtocol(recorder)
        stream.write(b"w" * 8 * MiB)
        pair.pump()
        self.assertEqual(len(recorder.received), 8 * MiB)

    def test_echoSessionOverNodes(self) -> None:
        """
        The same through the real echo plugin and a session between two
        nodes: the echoing node's buffers stay bounded.
        """
        net = MemoryNetwork(services=False)
        a = net.addNode("LAB.A")
        b = net.addNode("LAB.B")
        net.link(a, b)
        d = a.openSession(b.nodeID, "echo", lambda info: Silent())
        net.flush()
        silent = resultOf(d)
        for _ in range(128):
            silent.transport.write(b"s" * 64 * KiB)
            net.flush()
        budget = b.muxConfig.budget
        assert budget is not None
        self.assertLessEqual(budget.peakBuffered, SEND_HIGH_WATER + 512 * KiB)
        net.stop()


class PausedLinkTests(SynchronousTestCase):
    def test_pingFloodWhilePausedCoalesced(self) -> None:
        """
        100,000 pings to a paused link queue nothing; on resume the latest
        one is answered.
        """
        side = listener()
        side.mux.pauseProducing()
        side.transport.clear()
        side.mux.dataReceived(
            b"".join(encodeHeader(TYPE_PING, FLAG_SYN, 0, i) for i in range(1, 100001))
        )
        self.assertEqual(side.transport.value(), b"")
        side.mux.resumeProducing()
        self.assertEqual(
            parseFrames(side.transport.value()), [(TYPE_PING, FLAG_ACK, 0, 100000, b"")]
        )

    def test_synFloodWhilePausedStopsReading(self) -> None:
        """
        SYNs (each reset by the peer right after) to a paused link cost one
        ACK each until maxControlBacklog bytes of replies wait; then the
        multiplexer stops reading the link, and reads again once resumed.
        """
        config = MuxConfig(maxControlBacklog=1200, keepaliveInterval=0, keepaliveTimeout=0)
        side = listener(config)
        side.mux.pauseProducing()
        side.transport.clear()
        sid = 1
        while side.transport.producerState == "producing" and sid < 100000:
            side.mux.dataReceived(
                encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
                + encodeHeader(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
            )
            sid += 2
        self.assertEqual(side.transport.producerState, "paused")
        self.assertLessEqual(len(side.transport.value()), 1200 + 12)
        side.mux.resumeProducing()
        self.assertEqual(side.transport.producerState, "producing")

    def test_backlogResetOnResume(self) -> None:
        """
        Replies written while the link can send do not count.
        """
        config = MuxConfig(maxControlBacklog=120, keepaliveInterval=0, keepaliveTimeout=0)
        side = listener(config)
        for sid in range(1, 401, 2):
            side.mux.dataReceived(
                encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
                + encodeHeader(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
            )
        self.assertEqual(side.transport.producerState, "producing")


class FrameFloodTests(SynchronousTestCase):
    config = MuxConfig(maxFrameRate=1000, keepaliveInterval=0, keepaliveTimeout=0)

    def oneByteFrames(self, n: int) -> bytes:
        return b"".join(data(1, b"x") for _ in range(n))

    def test_floodOfTinyFramesPausesReading(self) -> None:
        """
        More than maxFrameRate frames a second (one-byte Data frames here)
        stop the multiplexer reading the link until the excess is paid for;
        then it reads again.  Every frame read is still delivered.
        """
        side = listener(self.config)
        clock = side.mux._reactor
        side.mux.dataReceived(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        for _ in range(11):
            side.mux.dataReceived(self.oneByteFrames(100))
        self.assertEqual(side.transport.producerState, "paused")
        [stream] = side.accepted
        self.assertEqual(len(stream.protocol.received), 1100)
        clock.advance(0.05)
        self.assertEqual(side.transport.producerState, "paused")
        clock.advance(0.1)
        self.assertEqual(side.transport.producerState, "producing")

    def test_repeatedPausesLogOneLine(self) -> None:
        """
        A peer that keeps flooding pauses the link again and again: one log
        line (with the peer's address), not one per pause.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        side = listener(self.config)
        clock = side.mux._reactor
        side.mux.dataReceived(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        for _ in range(20):
            side.mux.dataReceived(self.oneByteFrames(1200))
            clock.advance(1.5)
        self.assertEqual(side.mux._readPauses, 20)
        lines = [e for e in events if "paused reading" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertIn("frames a second", formatEvent(lines[0]))
        self.assertIn("192.168.1.1:", formatEvent(lines[0]))

    def test_steadyTrafficUnderTheRateIsNotPaused(self) -> None:
        side = listener(self.config)
        clock = side.mux._reactor
        side.mux.dataReceived(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        for _ in range(50):
            side.mux.dataReceived(self.oneByteFrames(90))
            clock.advance(0.1)
        self.assertEqual(side.transport.producerState, "producing")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_floodTimerCancelledOnClose(self) -> None:
        side = listener(self.config)
        side.mux.dataReceived(
            self.oneByteFrames(0) + encodeHeader(TYPE_PING, FLAG_SYN, 0, 1) * 2000
        )
        self.assertEqual(len(side.mux._reactor.getDelayedCalls()), 1)
        side.mux.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(side.mux._reactor.getDelayedCalls(), [])


class NodeBudgetTests(SynchronousTestCase):
    def sharedPairs(self, budget: MuxBudget, n: int = 2, ownStreams: int = 0) -> list[Pair]:
        config = MuxConfig(
            budget=budget, ownStreams=ownStreams, keepaliveInterval=0, keepaliveTimeout=0
        )
        return [Pair(NO_KEEPALIVE, serverConfig=config) for _ in range(n)]

    def test_inboundStreamsShareOneBudget(self) -> None:
        """
        Links sharing a budget accept streams until their initial windows
        fill it; the next SYN on any of them is reset; closing one frees
        room.
        """
        budget = MuxBudget(maxWindow=3 * 256 * KiB)
        first, second = self.sharedPairs(budget)
        streams = [first.client.mux.openStream(), first.client.mux.openStream()]
        first.pump()
        streams.append(second.client.mux.openStream())
        second.pump()
        self.assertEqual(budget.windowInUse, 3 * 256 * KiB)
        refused = second.client.mux.openStream()
        refused.attachProtocol(Recorder())
        second.pump()
        self.assertIsNotNone(refused.protocol.lost)
        self.assertEqual(len(second.server.mux.streams), 1)
        streams[0].abortConnection()
        first.pump()
        self.assertEqual(budget.windowInUse, 2 * 256 * KiB)
        second.client.mux.openStream()
        second.pump()
        self.assertEqual(len(second.server.mux.streams), 2)

    def test_everyLinkHasStreamsOfItsOwn(self) -> None:
        """
        A link's first ownStreams streams do not draw on the node budget: a
        peer that fills the budget on one link does not stop another link
        from opening its control streams.
        """
        budget = MuxBudget(maxWindow=2 * 256 * KiB)
        hostile, honest = self.sharedPairs(budget, ownStreams=2)
        for _ in range(6):
            hostile.client.mux.openStream()
        hostile.pump()
        self.assertEqual(len(hostile.server.mux.streams), 4)
        self.assertEqual(budget.windowInUse, budget.maxWindow)
        honest.server.mux.openStream()
        honest.client.mux.openStream()
        honest.pump()
        self.assertEqual(len(honest.server.mux.streams), 2)
        self.assertRaises(StreamLimitExceeded, honest.server.mux.openStream)
        for stream in list(hostile.server.mux.streams.values()):
            stream.abortConnection()
        self.assertEqual(budget.windowInUse, 0)

    def test_openStreamRefusedWhenBudgetUsed(self) -> None:
        budget = MuxBudget(maxWindow=256 * KiB)
        [pair] = self.sharedPairs(budget, 1)
        pair.server.mux.openStream()
        self.assertRaises(StreamLimitExceeded, pair.server.mux.openStream)

    def test_autoTuningStaysInsideBudget(self) -> None:
        """
        Auto-tuning grows windows only while the growth leaves the tuning
        reserve free for new streams.
        """
        budget = MuxBudget(maxWindow=2 * MiB, tuningReserve=1 * MiB)
        [pair] = self.sharedPairs(budget, 1)
        pair.server.mux.rtt = 0.1
        stream = pair.client.mux.openStream()
        pair.pump()
        for _ in range(64):
            stream.write(b"t" * 128 * KiB)
            pair.pump()
        [accepted] = pair.server.accepted
        self.assertEqual(accepted._recvMax, 1 * MiB)
        self.assertLessEqual(budget.windowInUse, budget.maxWindow - budget.tuningReserve)

    def test_everyNodeHasItsOwnBudget(self) -> None:
        """
        Each node's links share one budget; two nodes do not share.
        """
        net = MemoryNetwork(services=False)
        a, b, c = (net.addNode(f"LAB.{x}") for x in "ABC")
        net.link(a, b)
        net.link(c, b)
        budgets: set[int] = set()
        for cp in b.links.values():
            budgets.add(id(cp.mux._budget))
        self.assertEqual(budgets, {id(b.muxConfig.budget)})
        self.assertIsNot(a.muxConfig.budget, b.muxConfig.budget)
        net.stop()

    def test_withNodeBudgetKeepsAGivenOne(self) -> None:
        budget = MuxBudget()
        config = MuxConfig(budget=budget)
        self.assertIs(withNodeBudget(config), config)
        self.assertIsNotNone(withNodeBudget(MuxConfig()).budget)

    def test_budgetRejectsNonsense(self) -> None:
        self.assertRaises(ValueError, MuxBudget, 0)


class DefaultsTests(SynchronousTestCase):
    def test_maxStreams(self) -> None:
        """
        maxStreams follows the libp2p DoS-mitigation advice (512), not 16,384.
        """
        self.assertEqual(MuxConfig().maxStreams, 512)

    def test_streamsAtInitialWindowFitTheBudget(self) -> None:
        """
        The default node budget admits a full link of streams at the initial
        window, twice over.
        """
        config: Any = MuxConfig()
        self.assertGreaterEqual(MuxBudget().maxWindow, 2 * config.maxStreams * config.initialWindow)
