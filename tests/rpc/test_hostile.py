"""
A hostile peer speaking the real framing over a real RPC session: bad and
huge frames, lies about call ids, floods.  Each time the node answers with
one clear refusal (an ERROR, or closing the session with protocol-error)
and goes on serving everyone else.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from appnpy_rpc.wire import FrameReader, decodeBody
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from appnpy.testing import resultOf
from tests.rpc.helpers import Line


def frameOf(message: Any, canonical: bool = True) -> bytes:
    body = cbor2.dumps(message, canonical=canonical)
    return struct.pack(">I", len(body)) + body


class Raw(Protocol):
    """
    Writes what the test says; collects decoded answers and how it ended.
    """

    def __init__(self, info: Any = None) -> None:
        self.reader = FrameReader()
        self.answers: list[list[Any]] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        for body in self.reader.feed(data):
            self.answers.append(decodeBody(body))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


class HostileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.line = Line(maxInFlight=8)

    def raw(self) -> Raw:
        d = self.line.a.openSession(self.line.c.nodeID, "rpc", Raw, {"version": 1})
        self.line.net.flush()
        proto: Raw = resultOf(d)
        return proto

    def assertClosed(self, raw: Raw, says: str) -> None:
        self.line.net.flush()
        self.assertIsNotNone(raw.lost, "the session should have been closed")
        assert raw.lost is not None
        self.assertEqual(getattr(raw.lost.value, "reason", None), "protocol-error")
        self.assertIn(says, getattr(raw.lost.value, "detail", ""))
        self.assertStillServes()

    def assertStillServes(self) -> None:
        calc = self.line.connect("rpc:calc")
        self.assertEqual(self.line.result(calc.call("add", 1, 1)), 2)
        calc.close()
        self.line.net.flush()
        self.assertEqual(self.line.plugins[2].counter.inFlight, {})

    def test_hugeLengthRefusedBeforeBuffering(self) -> None:
        """
        A length prefix over 1 MiB (and 2**32-1) closes the session at
        once, after 4 bytes, without waiting for the body.
        """
        for length in (1024 * 1024 + 1, 2**32 - 1):
            raw = self.raw()
            raw.transport.write(struct.pack(">I", length) + b"\x00" * 10)  # type: ignore[union-attr]
            self.assertClosed(raw, "over the 1048576-byte limit")

    def test_wholeHugeFrame(self) -> None:
        raw = self.raw()
        raw.transport.write(frameOf([0, 1, "calc", "add", [b"x" * (1024 * 1024)], {}, 1, 1000]))  # type: ignore[union-attr]
        self.assertClosed(raw, "limit")

    def test_badFrames(self) -> None:
        """
        Garbage, truncation inside a frame, non-canonical encoding, tags,
        indefinite lengths, wrong shapes, unknown types: each closes the
        session with a reason saying what was wrong.
        """
        cases = [
            (struct.pack(">I", 3) + b"\xff\xff\xff", "undecodable"),
            (struct.pack(">I", 2) + b"\x01\x02", "deterministic"),  # trailing byte
            (frameOf({"type": "call"}), "non-empty CBOR array"),
            (frameOf([]), "non-empty CBOR array"),
            (frameOf([9, 1]), "unknown message type"),
            (frameOf(["call", 1]), "unknown message type"),
            (frameOf([0, 1, "calc"]), "CALL has 3 elements"),
            (frameOf([0, -1, "calc", "add", [], {}, 1, 1000]), "call id"),
            (frameOf([0, 2**63, "calc", "add", [], {}, 1, 1000]), "call id"),
            (frameOf([0, 1, "", "add", [], {}, 1, 1000]), "service name"),
            (frameOf([0, 1, "c" * 65, "add", [], {}, 1, 1000]), "service name"),
            (frameOf([0, 1, "calc", "add", {}, {}, 1, 1000]), "arguments must be an array"),
            (frameOf([0, 1, "calc", "add", [], {1: 2}, 1, 1000]), "map key"),
            (frameOf([0, 1, "calc", "add", [], {}, 256, 1000]), "depth"),
            (frameOf([0, 1, "calc", "add", [], {}, 1, 0]), "timeout"),
            (frameOf([2, 0, "BAD CODE", ""]), "ERROR code"),
            (frameOf([1, 5, 1]), "never made"),
            # Non-canonical: a 1 encoded in 2 bytes.
            (struct.pack(">I", 4) + b"\x82\x03\x18\x01", "deterministic"),
            # A tag (an epoch date).
            (struct.pack(">I", 5) + b"\x83\x03\x01\xc1\x00", "tags"),
            # Indefinite-length array.
            (struct.pack(">I", 4) + b"\x9f\x03\x01\xff", "undecodable"),
            # An array claiming 2**32 elements in a 9-byte frame.
            (struct.pack(">I", 9) + b"\x9b" + struct.pack(">Q", 2**32), "undecodable"),
            # Nesting 100000 deep.
            (struct.pack(">I", 100000) + b"\x81" * 100000, "undecodable"),
        ]
        for data, says in cases:
            raw = self.raw()
            raw.transport.write(data)  # type: ignore[union-attr]
            self.assertClosed(raw, says)
        self.assertEqual(self.line.plugins[2].stats.protocolErrors, len(cases))
        self.assertEqual(self.line.plugins[2].sessions, set())

    def test_oneErrorPerSession(self) -> None:
        """
        After the first bad frame nothing more the peer sends is read: one
        protocol error, one log line, however much garbage follows.
        """
        raw = self.raw()
        valid = frameOf([0, 1, "calc", "add", [1, 2], {}, 1, 1000])
        raw.transport.write(frameOf([9]) + valid + b"\xff" * 1000)  # type: ignore[union-attr]
        raw.transport.write(valid + b"\x00\x10\x00\x00" * 100)  # type: ignore[union-attr]
        self.line.net.flush()
        self.assertEqual(self.line.plugins[2].stats.protocolErrors, 1)
        self.assertEqual(raw.answers, [])
        # The framing of the whole chunk is checked first: the length of
        # 0xffffffff is what was refused.
        self.assertClosed(raw, "over the 1048576-byte limit")

    def test_duplicateCallID(self) -> None:
        raw = self.raw()
        call = frameOf([0, 7, "slow", "wait", ["x"], {}, 1, 60000])
        raw.transport.write(call + call)  # type: ignore[union-attr]
        self.assertClosed(raw, "already in use")
        # The first call's handler was cancelled with the session.
        self.assertEqual(self.line.slow.cancelled, ["x"])

    def test_flood(self) -> None:
        """
        A peer over its in-flight limit gets too-many-calls for the excess;
        its running calls are not disturbed and others still get in.
        """
        raw = self.raw()
        raw.transport.write(  # type: ignore[union-attr]
            b"".join(frameOf([0, i, "slow", "wait", [f"t{i}"], {}, 1, 60000]) for i in range(50))
        )
        self.line.net.flush()
        self.assertEqual(len(self.line.slow.waiting), 8)
        refused = [m for m in raw.answers if m[0] == 2]
        self.assertEqual(len(refused), 42)
        self.assertEqual({m[2] for m in refused}, {"too-many-calls"})
        self.assertIsNone(raw.lost)
        # Another peer (B) still gets in.
        other = self.line.result(self.line.plugins[1].client().connect("rpc:calc"))
        self.assertEqual(self.line.result(other.call("add", 1, 2)), 3)

    def test_cancelUnknownIsIgnored(self) -> None:
        raw = self.raw()
        raw.transport.write(frameOf([3, 12345]))  # type: ignore[union-attr]
        self.line.net.flush()
        self.assertIsNone(raw.lost)
        self.assertEqual(raw.answers, [])

    def test_splitAtEveryByte(self) -> None:
        """
        A call written one byte at a time is answered as if written whole.
        """
        raw = self.raw()
        data = frameOf([0, 1, "calc", "add", [20, 22], {}, 1, 1000]) + frameOf([4, 2, "calc"])
        for i in range(len(data)):
            raw.transport.write(data[i : i + 1])  # type: ignore[union-attr]
            self.line.net.flush()
        self.assertEqual(raw.answers[0], [1, 1, 42])
        self.assertEqual(raw.answers[1][0], 1)
        self.assertEqual(raw.answers[1][2]["service"], "calc")

    def test_extraElementsIgnored(self) -> None:
        """
        Elements after the known ones are ignored (how later minor versions
        add fields).
        """
        raw = self.raw()
        raw.transport.write(frameOf([0, 1, "calc", "add", [1, 2], {}, 1, 1000, "future"]))  # type: ignore[union-attr]
        self.line.net.flush()
        self.assertEqual(raw.answers, [[1, 1, 3]])

    def test_describeAll(self) -> None:
        raw = self.raw()
        raw.transport.write(frameOf([4, 1, None]))  # type: ignore[union-attr]
        self.line.net.flush()
        names = sorted(s["service"] for s in raw.answers[0][2]["services"])
        self.assertEqual(names, ["bounce", "calc", "faulty", "kv", "slow"])

    def test_wrongVersionRefusedAtBind(self) -> None:
        d = self.line.a.openSession(self.line.c.nodeID, "rpc", Raw, {"version": 2})
        self.line.net.flush()
        e = self.failureResultOf(d).value
        self.assertEqual(getattr(e, "reason", None), "refused-by-plugin")

    def test_peerNeverReadsAnswers(self) -> None:
        """
        A peer that sends calls but never reads the answers cannot make the
        node buffer without bound: once the session's write buffer is full,
        calls wait unrun (counted in the in-flight limit), the excess is
        refused, and once the peer reads again every call is answered.
        """
        self.line.plugins[1].limits.maxInFlight = 8
        self.line.plugins[1].expose(_Echo())
        d = self.line.a.openSession(self.line.b.nodeID, "rpc", Raw, {"version": 1})
        self.line.net.flush()
        raw = resultOf(d)
        raw.transport.pauseProducing()
        big = "x" * 60000
        for i in range(100):
            raw.transport.write(frameOf([0, i, "echo", "echo", [big], {}, 1, 60000]))
            self.line.net.flush()
        (served,) = self.line.plugins[1].sessions
        self.assertTrue(served._paused)
        self.assertLessEqual(served.serving(), 8)
        self.assertLessEqual(sum(self.line.plugins[1].counter.inFlight.values()), 8)
        raw.transport.resumeProducing()
        self.line.net.flush()
        self.assertEqual(sorted(m[1] for m in raw.answers), list(range(100)))
        self.assertIsNone(raw.lost)
        self.assertEqual(self.line.plugins[1].counter.inFlight, {})


from appnpy_rpc import Service, exported  # noqa: E402


class _Echo(Service):
    name = "echo"

    @exported
    def echo(self, text: str) -> str:
        return text
