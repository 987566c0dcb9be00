"""
Link faults the TLS layer must absorb (robustness checklist B): a bit flipped
on the wire fails the TLS record's MAC, so the link is dropped at both ends
with one line each, nothing corrupted is delivered, nothing is left behind,
and the nodes link again.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from appnpy.testing import MemoryNetwork, resultOf


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class BitFlipTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_flippedBitDropsTheLinkCleanly(self) -> None:
        net = MemoryNetwork(services=False)
        a = net.addNode("LAB.A")
        b = net.addNode("LAB.B")
        link = net.connect(a, b)
        d = a.openSession(b.nodeID, "echo", lambda info: Recorder())
        net.flush()
        session = resultOf(d)
        session.transport.write(b"before")
        net.flush()
        self.assertEqual(session.received, b"before")
        mark = len(self.events)
        session.transport.write(b"A" * 4000)
        # TLS gathers the writes of one reactor turn into records.
        net.clock.advance(0)
        # The dialler's next TLS record is on its way: flip one bit in it.
        stream = link.pump.clientIO.stream
        self.assertTrue(stream)
        chunk = bytearray(stream[-1])
        chunk[len(chunk) // 2] ^= 0x10
        stream[-1] = bytes(chunk)
        net.flush()
        self.assertEqual(session.received, b"before")
        self.assertTrue(session.lost)
        self.assertEqual(a.links, {})
        self.assertEqual(b.links, {})
        later = self.events[mark:]
        self.assertEqual([e for e in later if "log_failure" in e], [])
        downs = [e for e in later if e.get("log_format", "").startswith("link down with")]
        self.assertEqual(sorted(e["log_source"] is a for e in downs), [False, True])
        # Nothing is stuck: the two nodes link again and carry a session.
        net.connect(a, b)
        d = a.openSession(b.nodeID, "echo", lambda info: Recorder())
        net.flush()
        again = resultOf(d)
        again.transport.write(b"after")
        net.flush()
        self.assertEqual(again.received, b"after")
        net.stop()
