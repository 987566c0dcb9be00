"""
The numbered stream (L{appnpy.session.resumable.ResumableStream}) alone,
on fake streams and a L{Clock}: a plugin that does not read
(docs/protocol.md 15.8).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.session.resumable import ResumableStream
from tests.test_path_switch import FakeOwner, FakeStream


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
