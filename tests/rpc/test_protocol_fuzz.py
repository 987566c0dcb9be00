"""
Property tests of the session protocol itself: any sequence of frames a
peer sends (well-formed or not) leaves an RPCProtocol consistent: no
exception escapes, every call it serves is answered or cancelled, and its
in-flight count goes back to zero.
"""

from __future__ import annotations

from typing import Any

from appnpy_rpc.accounting import Limits, PeerCounter
from appnpy_rpc.errors import RPCError
from appnpy_rpc.examples import Calculator
from appnpy_rpc.protocol import RPCProtocol
from appnpy_rpc.service import inspectService
from appnpy_rpc.wire import FrameReader, decodeBody, frame
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase


class FakeSession:
    peerNodeID = "peer"
    peerName = "LAB.PEER"

    def __init__(self) -> None:
        self.written = b""
        self.writes = 0
        self.closed = False
        self.reason = ""

    def write(self, data: bytes) -> None:
        self.written += data
        self.writes += 1

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def loseConnection(self) -> None:
        self.closed = True

    def loseConnectionWithReason(self, reason: str, detail: str = "") -> None:
        self.closed = True
        self.reason = reason


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.text(max_size=8),
    lambda i: st.lists(i, max_size=3),
    max_leaves=6,
)
services = st.sampled_from(["calc", "nope", "x" * 64])
methods = st.sampled_from(["add", "div", "stats", "missing", "__init__"])
callFrames = st.builds(
    lambda i, s, m, a, d, t: frame([0, i, s, m, a, {}, d, t]),
    st.integers(0, 20),
    services,
    methods,
    st.lists(values, max_size=3),
    st.integers(0, 12),
    st.integers(1, 10000),
)
otherFrames = st.one_of(
    st.builds(lambda i: frame([3, i]), st.integers(0, 20)),
    st.builds(lambda i, s: frame([4, i, s]), st.integers(0, 20), st.none() | services),
    st.builds(lambda i, v: frame([1, i, v]), st.integers(0, 3), values),
    st.binary(max_size=12).map(lambda b: len(b).to_bytes(4, "big") + b),
)
streams = st.lists(st.one_of(callFrames, otherFrames), max_size=20)


class ProtocolFuzz(SynchronousTestCase):
    @given(streams, st.integers(1, 64))
    @settings(max_examples=300)
    def test_anyFramesLeaveItConsistent(self, frames: list[bytes], chunk: int) -> None:
        clock = Clock()
        counter = PeerCounter()
        calc = inspectService(Calculator())
        proto = RPCProtocol(
            clock, Limits(maxInFlight=4, maxDepth=8), {"calc": calc}.get, None, counter
        )
        session = FakeSession()
        proto.makeConnection(session)  # type: ignore[arg-type]
        stream = b"".join(frames)
        for i in range(0, len(stream), chunk):
            proto.dataReceived(stream[i : i + chunk])
        # Whatever it wrote is valid framing with valid messages.
        for body in FrameReader().feed(session.written):
            message = decodeBody(body)
            self.assertIn(message[0], (1, 2))
        clock.advance(400)
        proto.connectionLost()
        self.assertEqual(counter.inFlight, {})
        self.assertEqual(proto.serving(), 0)
        self.flushLoggedErrors()


class BatchingTests(SynchronousTestCase):
    def test_answersToOneReadGoOutInOneWrite(self) -> None:
        """
        The answers to every call a read delivered, and calls made from
        their callbacks, leave in one write.
        """
        calc = inspectService(Calculator())
        proto = RPCProtocol(Clock(), Limits(), {"calc": calc}.get)
        session = FakeSession()
        proto.makeConnection(session)  # type: ignore[arg-type]
        proto.dataReceived(
            b"".join(frame([0, i, "calc", "add", [i, 1], {}, 1, 1000]) for i in range(10))
        )
        self.assertEqual(session.writes, 1)
        answers = [decodeBody(b) for b in FrameReader().feed(session.written)]
        self.assertEqual(answers, [[1, i, i + 1] for i in range(10)])
        # A call made while handling an answer joins the same write.
        d = proto.callRemote("calc", "add", [1, 2], {})
        self.assertEqual(session.writes, 2)
        d.addCallback(lambda _: proto.callRemote("calc", "add", [3, 4], {}))
        d.addErrback(lambda f: f.trap(RPCError))  # session-closed at the end
        proto.dataReceived(frame([1, 0, 3]) + frame([0, 99, "calc", "add", [5, 5], {}, 1, 1000]))
        self.assertEqual(session.writes, 3)
        tail = [decodeBody(b) for b in FrameReader().feed(session.written)][-2:]
        self.assertEqual([m[0] for m in tail], [0, 1])
        proto.connectionLost()
        self.flushLoggedErrors()
