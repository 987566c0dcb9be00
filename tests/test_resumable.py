"""
The numbered stream (L{appnpy.session.resumable.ResumableStream}) alone,
on fake streams and a L{Clock}: a plugin that does not read, and the
end-to-end progress check (docs/protocol.md 15.8).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.session.resumable import (
    ACK_REPEAT,
    FRAME_ROOM,
    MAX_DATA_FRAME,
    PROGRESS_GRACE,
    PROGRESS_RTT_FACTOR,
    PROGRESS_TIMEOUT,
    SWITCH_WINDOW,
    ResumableStream,
)
from tests.test_path_switch import FakeOwner, FakeStream, Source, SwitchHarness


class PausableStream(FakeStream):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


class Owner(FakeOwner):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def farEndFinished(self) -> None:
        self.events.append("fin")

    def streamLost(self, reason: Failure) -> None:
        super().streamLost(reason)
        self.events.append("lost")


def data(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def ack(position: int) -> bytes:
    return b"\x01" + position.to_bytes(8, "big")


def resume(position: int) -> bytes:
    return b"\x02" + position.to_bytes(8, "big")


class Harness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.owner = Owner()
        self.got: list[bytes] = []

    def layer(self, window: int = 1 << 20, **kw: Any) -> tuple[ResumableStream, PausableStream]:
        layer = ResumableStream(self.clock, self.owner, window=window, **kw)

        def deliver(payload: bytes) -> None:
            self.owner.events.append("data")
            self.got.append(payload)

        layer.deliver = deliver
        stream = PausableStream()
        layer.attach(stream, awaitingResume=False)  # type: ignore[arg-type]
        return layer, stream

    def acks(self, stream: FakeStream) -> list[bytes]:
        return [w for w in stream.written if w[:1] == b"\x01"]


def splitAt(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


class ParseTests(Harness):
    """
    Frames split anywhere over the stream's reads, which may be bytes or
    memoryview slices of the link's reads (a routed session's TLS layer
    takes views).
    """

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
        st.lists(st.integers(0, 4000), max_size=12),
        st.booleans(),
        st.booleans(),
    )
    def test_payloadArrivesWhole(
        self, payloads: list[bytes], cuts: list[int], views: bool, paused: bool
    ) -> None:
        self.got = []
        layer, stream = self.layer()
        layer.takesViews = views
        layer.attach(stream, awaitingResume=False)  # type: ignore[arg-type]
        self.assertIs(getattr(stream, "takesViews", None), views)
        layer.write(b"x" * 10)
        wire = b"".join(data(p) + ack(min(i, 10)) for i, p in enumerate(payloads))
        if paused:
            layer.pauseProducing()
        for piece in splitAt(wire, cuts):
            stream.protocol.dataReceived(memoryview(piece) if views else piece)
            # What the layer keeps past a read is its own.
            self.assertIs(type(layer._head), bytes)
            for held in layer._held:
                self.assertIs(type(held), bytes)
        if paused:
            self.assertEqual(self.got, [])
            layer.resumeProducing()
        self.assertEqual(b"".join(bytes(g) for g in self.got), b"".join(payloads))
        self.assertEqual(layer.received, sum(map(len, payloads)))
        self.assertEqual(layer.acked, min(len(payloads) - 1, 10))
        self.assertEqual(self.owner.failed, [])

    def test_viewsOnlyWhenAsked(self) -> None:
        # A plugin that reads the stream itself (an adjacent session's)
        # gets bytes: its stream hands the layer copies.
        layer, stream = self.layer()
        self.assertIs(getattr(stream, "takesViews", None), False)


def parseData(wire: bytes) -> bytes:
    """
    The payload of the DATA frames in C{wire} (which holds no others).
    """
    out, pos = [], 0
    while pos < len(wire):
        assert wire[pos] == 0
        n = int.from_bytes(wire[pos + 1 : pos + 5], "big")
        out.append(wire[pos + 5 : pos + 5 + n])
        pos += 5 + n
    return b"".join(out)


class WriteFrameTests(Harness):
    """
    L{ResumableStream.writeFrame}: frames whose room the layer fills in,
    kept for retransmission as views, alongside plain writes.
    """

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.tuples(st.binary(min_size=1, max_size=200), st.booleans()), max_size=10),
        st.integers(0, 3000),
    )
    def test_retransmitsWhatIsUnacknowledged(
        self, writes: list[tuple[bytes, bool]], ackAt: int
    ) -> None:
        layer, stream = self.layer()
        sent = b""
        for payload, framed in writes:
            if framed:
                frame = bytearray(FRAME_ROOM + len(payload))
                frame[FRAME_ROOM:] = payload
                layer.writeFrame(memoryview(frame))
            else:
                layer.write(payload)
            sent += payload
        self.assertEqual(parseData(b"".join(bytes(w) for w in stream.written)), sent)
        position = ackAt % (len(sent) + 1)
        stream.protocol.dataReceived(ack(position))
        self.assertEqual(layer.buffered, len(sent) - position)
        # A new path: the far end says it has `position` bytes.
        layer.detach()
        fresh = PausableStream()
        layer.attach(fresh, awaitingResume=True)  # type: ignore[arg-type]
        fresh.protocol.dataReceived(resume(position))
        self.assertEqual(parseData(b"".join(bytes(w) for w in fresh.written)), sent[position:])
        self.assertEqual(self.owner.failed, [])

    def test_tooLargeRefused(self) -> None:
        layer, stream = self.layer()
        with self.assertRaises(ValueError):
            layer.writeFrame(memoryview(bytearray(FRAME_ROOM + MAX_DATA_FRAME + 1)))
        self.assertEqual((layer.sent, stream.written), (0, []))

    def test_emptyIgnored(self) -> None:
        layer, stream = self.layer()
        layer.writeFrame(memoryview(bytearray(FRAME_ROOM)))
        self.assertEqual((layer.sent, stream.written), (0, []))


class AckTests(Harness):
    def test_quarterWindow(self) -> None:
        """
        An end acknowledges after a quarter of its window (of the default
        window, at most), not before (until the ACK delay).
        """
        for window, every in ((SWITCH_WINDOW, SWITCH_WINDOW // 4), (1 << 20, 1 << 18)):
            layer, stream = self.layer(window=window)
            self.assertEqual(layer.ackEvery, every)
            frame = data(b"x" * (64 * 1024))
            for _ in range(every // (64 * 1024) - 1):
                stream.protocol.dataReceived(frame)
            self.assertEqual(self.acks(stream), [])
            stream.protocol.dataReceived(frame)
            self.assertEqual(self.acks(stream), [ack(every)])
            layer.end()


class NotReadingTests(Harness):
    def test_acksAreReadWhileThePluginDoesNotRead(self) -> None:
        """
        A plugin that has paused reading holds DATA back, unacknowledged;
        the ACK behind it still frees this end's window.
        """
        layer, stream = self.layer()
        layer.write(b"y" * 1000)
        layer.pauseProducing()
        layer.dataReceived(data(b"x" * 500) + ack(1000))
        self.assertFalse(stream.paused)
        self.assertEqual(layer.buffered, 0)
        self.assertEqual(self.got, [])
        self.assertEqual(layer.received, 0)
        self.clock.advance(1)
        self.assertNotIn(ack(500), stream.written)
        layer.resumeProducing()
        self.assertEqual(self.got, [b"x" * 500])
        self.assertEqual(layer.received, 500)
        self.clock.advance(1)
        self.assertIn(ack(500), stream.written)

    def test_resumeOnNewPathIsReadWhilePaused(self) -> None:
        """
        The origin's plugin does not read while its session switches: the
        RESUME on the new path is read all the same.
        """
        layer, old = self.layer()
        layer.write(b"y" * 1000)
        layer.pauseProducing()
        layer.detach()
        new = PausableStream()
        layer.attach(new, awaitingResume=True)  # type: ignore[arg-type]
        self.assertFalse(new.paused)
        layer.dataReceived(resume(400) + data(b"z" * 10))
        self.assertEqual(self.owner.resumedCount, 1)
        self.assertEqual(new.written, [data(b"y" * 600)])
        self.assertEqual(self.got, [])
        layer.resumeProducing()
        self.assertEqual(self.got, [b"z" * 10])

    def test_heldBytesAreDroppedWithThePath(self) -> None:
        """
        Bytes held (never acknowledged) when the path fails are not kept:
        the far end resends them from the position given on the new path.
        """
        layer, _ = self.layer()
        layer.pauseProducing()
        layer.dataReceived(data(b"x" * 100))
        layer.detach()
        layer.resumeProducing()
        self.assertEqual(self.got, [])
        self.assertEqual(layer.received, 0)

    def test_pausedAgainInsideADelivery(self) -> None:
        """
        A plugin that pauses again while it is given what was held gets
        no more until it resumes; what arrives meanwhile queues behind.
        """
        layer, _ = self.layer()

        def deliver(payload: bytes) -> None:
            self.got.append(payload)
            layer.pauseProducing()

        layer.deliver = deliver
        layer.pauseProducing()
        layer.dataReceived(data(b"a"))
        layer.dataReceived(data(b"b"))
        layer.resumeProducing()
        self.assertEqual(self.got, [b"a"])
        layer.dataReceived(data(b"c"))
        layer.resumeProducing()
        layer.resumeProducing()
        layer.resumeProducing()
        self.assertEqual(self.got, [b"a", b"b", b"c"])

    def test_finWaitsBehindHeldBytes(self) -> None:
        layer, stream = self.layer()
        layer.pauseProducing()
        layer.dataReceived(data(b"x"))
        stream.protocol.readConnectionLost()
        self.assertEqual(self.owner.events, [])
        layer.resumeProducing()
        self.assertEqual(self.owner.events, ["data", "fin"])

    def test_cleanCloseWaitsBehindHeldBytes(self) -> None:
        layer, stream = self.layer()
        layer.pauseProducing()
        layer.dataReceived(data(b"x"))
        stream.protocol.readConnectionLost()
        stream.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.owner.events, [])
        layer.resumeProducing()
        self.assertEqual(self.owner.events, ["data", "fin", "lost"])

    def test_resetIsToldAtOnce(self) -> None:
        """
        A reset (the path failed) is no end of the far end's data: the
        session hears it at once, to switch.
        """
        layer, stream = self.layer()
        layer.pauseProducing()
        layer.dataReceived(data(b"x"))
        stream.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.owner.events, ["lost"])

    def test_moreThanAWindowPausesTheStream(self) -> None:
        """
        A far end that writes past its window: beyond a window held, the
        stream itself is paused; it reads again once the plugin has read.
        """
        layer, stream = self.layer(window=1000)
        layer.pauseProducing()
        layer.dataReceived(data(b"x" * 1000))
        self.assertFalse(stream.paused)
        layer.dataReceived(data(b"x"))
        self.assertTrue(stream.paused)
        layer.resumeProducing()
        self.assertFalse(stream.paused)
        self.assertEqual(layer.received, 1001)


class ProgressTests(Harness):
    def test_noAckIsAPathFailure(self) -> None:
        """
        Bytes outstanding and no ACK for the progress timeout: the stream
        is reset and reported lost, as when its link fails.
        """
        layer, stream = self.layer()
        layer.write(b"x" * 100)
        self.clock.advance(PROGRESS_TIMEOUT)
        self.clock.advance(PROGRESS_GRACE - 0.1)
        self.assertEqual(self.owner.lost, [])
        self.clock.advance(0.1)
        (reason,) = self.owner.lost
        self.assertIn("no ACK for 6 s", reason.getErrorMessage())
        self.assertTrue(stream.aborted)
        self.assertFalse(layer.attached)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateTimerReadsFirst(self) -> None:
        """
        A timer that runs long after its time (the process was busy, or a
        test's clock jumped) gives the ACK that arrived meanwhile, not yet
        read, its chance.
        """
        layer, _ = self.layer()
        layer.write(b"x" * 100)
        self.clock.advance(10 * PROGRESS_TIMEOUT)
        layer.dataReceived(ack(50))
        self.clock.advance(10 * PROGRESS_TIMEOUT)
        layer.dataReceived(ack(100))
        self.clock.advance(10 * PROGRESS_TIMEOUT)
        self.assertEqual(self.owner.lost, [])

    def test_acksThatAdvanceKeepItQuiet(self) -> None:
        layer, stream = self.layer()
        for i in range(1, 10):
            layer.write(b"x" * 100)
            self.clock.advance(PROGRESS_TIMEOUT - 1)
            layer.dataReceived(ack(100 * i))
        self.assertEqual(self.owner.lost, [])

    def test_nothingOutstandingNothingToWaitFor(self) -> None:
        layer, _ = self.layer()
        layer.write(b"x" * 100)
        layer.dataReceived(ack(100))
        self.clock.advance(10 * PROGRESS_TIMEOUT)
        self.assertEqual(self.owner.lost, [])
        # A write after a long quiet starts its own wait.
        layer.write(b"x")
        self.clock.advance(PROGRESS_TIMEOUT - 0.5)
        self.assertEqual(self.owner.lost, [])

    def test_holdingEndRepeatsItsAck(self) -> None:
        """
        An end whose plugin does not read repeats its ACK while it holds
        bytes, and the far end takes a repeated ACK for progress.
        """
        receiver, back = self.layer()
        receiver.pauseProducing()
        receiver.dataReceived(data(b"x" * 10))
        self.clock.pump([ACK_REPEAT] * 3)
        self.assertEqual(self.acks(back), [ack(0)] * 3)
        receiver.resumeProducing()
        self.clock.pump([ACK_REPEAT] * 3)
        self.assertEqual(self.acks(back), [ack(0)] * 3 + [ack(10)])

        sender, _ = self.layer()
        sender.write(b"x" * 10)
        for _ in range(10):
            self.clock.advance(ACK_REPEAT)
            sender.dataReceived(ack(0))
        self.assertEqual(self.owner.lost, [])

    def test_notWhileItsOwnBytesWait(self) -> None:
        """
        While the stream holds this end's writes back (the next hop's
        window is full) the wait does not count.
        """
        layer, stream = self.layer()
        layer.write(b"x" * 100)
        stream.producer.pauseProducing()
        self.clock.advance(3 * PROGRESS_TIMEOUT)
        self.assertEqual(self.owner.lost, [])
        stream.producer.resumeProducing()
        self.clock.pump([PROGRESS_TIMEOUT, PROGRESS_GRACE])
        self.assertEqual(len(self.owner.lost), 1)

    def test_notWhileWaitingForResume(self) -> None:
        layer, _ = self.layer()
        layer.write(b"x" * 100)
        layer.detach()
        layer.attach(PausableStream(), awaitingResume=True)  # type: ignore[arg-type]
        self.clock.advance(3 * PROGRESS_TIMEOUT)
        self.assertEqual(self.owner.lost, [])
        layer.dataReceived(resume(0))
        self.clock.pump([PROGRESS_TIMEOUT, PROGRESS_GRACE])
        self.assertEqual(len(self.owner.lost), 1)

    def test_notOnceTheFarEndFinished(self) -> None:
        """
        After its FIN the far end can send no ACK (an adjacent session's
        half-close): bytes written since are not waited for.
        """
        layer, stream = self.layer()
        stream.protocol.readConnectionLost()
        layer.write(b"x" * 100)
        self.clock.advance(3 * PROGRESS_TIMEOUT)
        self.assertEqual(self.owner.lost, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowPathStretchesTheTimeout(self) -> None:
        """
        The deadline is the larger of the configured timeout and a multiple
        of the round-trip time measured from a write to its ACK.
        """
        layer, _ = self.layer(progressTimeout=2.0)
        self.assertEqual(layer.progressDeadline(), 2.0)
        layer.write(b"x" * 100)
        self.clock.advance(1.5)
        layer.dataReceived(ack(100))
        self.assertEqual(layer.rtt, 1.5)
        self.assertEqual(layer.progressDeadline(), PROGRESS_RTT_FACTOR * 1.5)
        layer.write(b"x" * 100)
        self.clock.advance(PROGRESS_RTT_FACTOR * 1.5 - 0.1)
        self.assertEqual(self.owner.lost, [])
        self.clock.pump([0.1, PROGRESS_GRACE])
        self.assertEqual(len(self.owner.lost), 1)

    def test_endedLeavesNoTimer(self) -> None:
        layer, _ = self.layer()
        layer.write(b"x" * 100)
        layer.pauseProducing()
        layer.dataReceived(data(b"x"))
        layer.end()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SettingTests(SwitchHarness):
    def test_sessionsTakeTheNodesTimeout(self) -> None:
        """
        A routed session's numbered stream waits for ACKs as long as its
        node says (path-switch-progress-timeout).
        """
        self.a.routedSessions.progressTimeout = 7.0
        self.b.routedSessions.progressTimeout = 0
        source = Source(b"")
        self.open(source)
        (far,) = self.b.routedSessions.sessions.values()
        self.assertEqual(source.transport.layer.progressTimeout, 7.0)
        self.assertEqual(far.layer.progressTimeout, 0)
        source.transport.loseConnection()
        self.settle(1)
