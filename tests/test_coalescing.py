"""
The frames one read makes the multiplexer write (ACKs, window updates,
replies its protocols write at once) leave in one transport write; bulk
frames and writes outside a read are not held back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from appnpy.link.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_SYN,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Multiplexer,
    MuxConfig,
    Stream,
)
from tests.test_yamux import data, frame, parseFrames

CONFIG = MuxConfig(keepaliveInterval=0, keepaliveTimeout=0, suspectMinimum=0)


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def side(protocol: Any = Echo) -> tuple[Multiplexer, CountingTransport, list[Stream]]:
    transport = CountingTransport()
    accepted: list[Stream] = []

    def accept(stream: Stream) -> None:
        accepted.append(stream)
        stream.attachProtocol(protocol())

    mux = Multiplexer(transport, False, accept, Clock(), CONFIG)
    return mux, transport, accepted


class CoalescingTests(SynchronousTestCase):
    def test_oneWritePerRead(self) -> None:
        """
        Two streams opened, echoed and finished, and a ping, in one read:
        every answer in one write, in order.
        """
        mux, transport, _ = side()
        mux.dataReceived(
            frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0)
            + data(1, b"one")
            + frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 3, 0)
            + data(3, b"three", FLAG_FIN)
            + frame(TYPE_PING, FLAG_SYN, 0, 7)
        )
        self.assertEqual(len(transport.writes), 1)
        frames = [(t, f, s, payload) for t, f, s, _, payload in parseFrames(transport.value())]
        self.assertEqual(
            frames,
            [
                (TYPE_WINDOW_UPDATE, FLAG_ACK, 1, b""),
                (0, 0, 1, b"one"),
                (TYPE_WINDOW_UPDATE, FLAG_ACK, 3, b""),
                (0, 0, 3, b"three"),
                (TYPE_PING, FLAG_ACK, 0, b""),
            ],
        )

    def test_bulkNotHeldBack(self) -> None:
        """
        A large frame written during a read goes out at once, after what
        was collected before it, and is not copied into a joined write.
        """
        big = b"x" * 32 * 1024

        class Big(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"small")
                self.transport.write(big)
                self.transport.write(b"after")

        mux, transport, _ = side(Big)
        mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) + data(1, b"go"))
        self.assertEqual(len(transport.writes), 3)
        payloads = [p for t, _, _, _, p in parseFrames(transport.value()) if t == 0]
        self.assertEqual(payloads, [b"small", big, b"after"])

    def test_outsideReadAtOnce(self) -> None:
        """
        Writes outside a read are written as they come.
        """
        mux, transport, accepted = side(Protocol)
        mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        before = len(transport.writes)
        accepted[0].write(b"a")
        accepted[0].write(b"b")
        self.assertEqual(len(transport.writes), before + 2)

    def test_protocolErrorFlushesFirst(self) -> None:
        """
        A read that ends in a protocol error still sends what it produced
        before, then the GoAway.
        """
        mux, transport, _ = side()
        mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) + data(1, b"hi") + b"\x09" * 12)
        types = [(t, f) for t, f, _, _, _ in parseFrames(transport.value())]
        self.assertEqual(types[:2], [(TYPE_WINDOW_UPDATE, FLAG_ACK), (0, 0)])
        self.assertEqual(types[-1][0], 3)


class AfterReadTests(SynchronousTestCase):
    def test_afterRead(self) -> None:
        """
        C{callAfterRead} runs its calls once the read is done, in order,
        after the collected frames are written; at once outside a read; a
        failing call is logged and the others still run.
        """
        calls: list[str] = []
        mux: Multiplexer | None = None

        class Asks(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert mux is not None
                self.transport.write(b"reply")
                mux.callAfterRead(lambda: calls.append(f"first {len(transport.writes)}"))
                mux.callAfterRead(lambda: 1 / 0)  # type: ignore[func-returns-value]
                mux.callAfterRead(lambda: calls.append("second"))

        mux, transport, _ = side(Asks)
        mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) + data(1, b"x"))
        self.assertEqual(calls, ["first 1", "second"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        mux.callAfterRead(lambda: calls.append("now"))
        self.assertEqual(calls[-1], "now")
