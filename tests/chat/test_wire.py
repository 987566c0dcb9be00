"""
The chat wire forms: frames decode strictly, messages check their fields,
signatures cover every field that is shown.
"""

from __future__ import annotations

import attrs
import cbor2
from appnpy_chat.wire import (
    MAX_FRAME,
    SIGNING_CONTEXT,
    ChatMessage,
    MemberInfo,
    ProtocolError,
    decodeFrame,
    encodeFrame,
    signedBytes,
)
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.testing import MemoryNetwork

cborValues = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


class _Signer:
    """
    A node's signing key, taken from a real (in-memory) node.
    """

    def __init__(self) -> None:
        self.node = MemoryNetwork(services=False).addNode()

    def message(self, text: str = "hi", room: str = "r", seq: int = 1) -> ChatMessage:
        sender = self.node.nodeID
        data = signedBytes(room, sender, seq, 1.5, "nick", text)
        sig = self.node.sign(SIGNING_CONTEXT, data)
        return ChatMessage(room, sender, seq, 1.5, "nick", text, self.node.publicKey, sig)


class FrameTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A frame encodes and decodes to the same fields.
        """
        body = encodeFrame("state", nick="a", presence="away")
        self.assertEqual(decodeFrame(body), {"t": "state", "nick": "a", "presence": "away"})

    def test_refused(self) -> None:
        """
        Tags, non-maps, text-less types, duplicate keys and oversize frames
        are refused.
        """
        for bad in (
            cbor2.dumps(cbor2.CBORTag(35, "a+b")),
            cbor2.dumps([1, 2]),
            cbor2.dumps({"x": 1}),
            cbor2.dumps({"t": 1}),
            cbor2.dumps({1: "x", "t": "msg"}),
            b"\xa2\x61t\x61a\x61t\x61b",
            b"\x9f\xff",
            b"",
            b"\x00" * (MAX_FRAME + 1),
        ):
            with self.assertRaises(ProtocolError):
                decodeFrame(bad)

    @given(st.binary(max_size=300))
    def test_anyBytes(self, data: bytes) -> None:
        """
        Any bytes decode to a frame or raise ProtocolError, nothing else.
        """
        try:
            frame = decodeFrame(data)
        except ProtocolError:
            return
        self.assertIsInstance(frame["t"], str)

    @given(cborValues)
    def test_anyMessageShape(self, value: object) -> None:
        """
        Any CBOR value as a message or member is a message or ProtocolError.
        """
        for decode in (ChatMessage.fromWire, MemberInfo.fromWire):
            try:
                decode(value)
            except ProtocolError:
                pass


class MessageTests(SynchronousTestCase):
    def test_verifies(self) -> None:
        """
        A message signed by its sender verifies after a round trip; changing
        any signed field, or claiming another sender, breaks it.
        """
        signer, other = _Signer(), _Signer()
        msg = signer.message()
        back = ChatMessage.fromWire(cbor2.loads(cbor2.dumps(msg.toWire())))
        self.assertEqual(back, msg)
        self.assertTrue(back.verify())
        for change in (
            {"text": "ho"},
            {"room": "s"},
            {"seq": 2},
            {"time": 2.5},
            {"nick": "other"},
            {"sender": other.node.nodeID},
            {"key": other.node.publicKey},
            {"sig": msg.sig[:-1] + bytes([msg.sig[-1] ^ 1])},
        ):
            self.assertFalse(attrs.evolve(msg, **change).verify(), change)

    def test_otherContext(self) -> None:
        """
        A signature the node made for another purpose is not a chat message.
        """
        signer = _Signer()
        msg = signer.message()
        sig = signer.node.sign("appnpy-files-hit-v1", msg.signedBytes())
        self.assertFalse(attrs.evolve(msg, sig=sig).verify())

    def test_fieldChecks(self) -> None:
        """
        Wrong types and out-of-range values are refused.
        """
        good = _Signer().message().toWire()
        for change in (
            {"seq": 0},
            {"seq": True},
            {"seq": 2**63},
            {"time": -1},
            {"room": "Bad Room"},
            {"room": "@notanode"},
            {"sender": "x"},
            {"nick": ""},
            {"text": ""},
            {"text": "x" * 5000},
            {"key": "text"},
            {"sig": b"x" * 300},
        ):
            with self.assertRaises(ProtocolError, msg=str(change)):
                ChatMessage.fromWire({**good, **change})
