"""
Tests for L{appnpy.cp.messages}: framing, deterministic CBOR, strict decoding.
"""

from __future__ import annotations

import struct

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import (
    MAX_MESSAGE_SIZE,
    Hello,
    LinkRefused,
    MessageReader,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    SessionStarted,
    UnknownMessage,
    decodeBody,
    decodeCBOR,
    encodeBody,
    encodeMessage,
)
from appnpy.errors import ProtocolError

nodeIDs = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=52, max_size=52)
sessionIDs = st.text("0123456789abcdef", min_size=32, max_size=32)
tokens = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
texts = st.text(max_size=100)
plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

messages = st.one_of(
    st.builds(
        Hello,
        node_id=nodeIDs,
        public_key=st.binary(max_size=64),
        name=st.from_regex(r"[A-Z]{1,8}\.[A-Z]{1,8}", fullmatch=True),
        role=st.sampled_from(["network", "end"]),
        versions=st.tuples(st.integers(0, 10), st.integers(10, 20)).map(list),
        capabilities=st.lists(tokens, max_size=5),
        listen=st.lists(texts, max_size=3),
        plugins=st.dictionaries(tokens, st.integers(0, 1000), max_size=5),
        dial_serial=st.integers(0, 2**63 - 1),
        signature=st.binary(max_size=64),
    ),
    st.builds(LinkRefused, reason=tokens, detail=texts),
    st.builds(
        SessionOpen,
        session_id=sessionIDs,
        origin=nodeIDs,
        destination=nodeIDs,
        plugin=tokens,
        cos=tokens,
        window=st.integers(0, 2**32 - 1),
        parameters=st.dictionaries(st.text(max_size=8), plain, max_size=4),
        route=st.lists(nodeIDs, max_size=16),
        public_key=st.binary(max_size=64),
        timestamp=st.integers(0, 2**63 - 1),
        signature=st.binary(max_size=64),
    ),
    st.builds(SessionAccept, session_id=sessionIDs),
    st.builds(SessionStarted, session_id=sessionIDs),
    st.builds(SessionRefuse, session_id=sessionIDs, reason=tokens, detail=texts),
    st.builds(SessionClose, session_id=sessionIDs, reason=tokens, detail=texts),
)


class FramingTests(SynchronousTestCase):
    @given(messages)
    def test_roundTrip(self, msg: object) -> None:
        """
        Every message decodes to an equal message after encoding.
        """
        wire = encodeMessage(msg)  # type: ignore[arg-type]
        self.assertEqual(MessageReader().feed(wire), [msg])

    @settings(max_examples=30)
    @given(st.lists(messages, min_size=1, max_size=4), st.data())
    def test_anySplit(self, msgs: list[object], data: st.DataObject) -> None:
        """
        A stream of messages split at arbitrary points decodes to the same
        messages as the unsplit stream.
        """
        wire = b"".join(encodeMessage(m) for m in msgs)  # type: ignore[arg-type]
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
        reader = MessageReader()
        out = []
        last = 0
        for cut in cuts + [len(wire)]:
            out.extend(reader.feed(wire[last:cut]))
            last = cut
        self.assertEqual(out, msgs)

    @settings(max_examples=50)
    @given(
        st.lists(messages, min_size=1, max_size=3),
        st.binary(max_size=64),
        st.data(),
    )
    def test_maxMessagesLeavesTheRest(
        self, msgs: list[object], after: bytes, data: st.DataObject
    ) -> None:
        """
        Fed with C{maxMessages}, split at arbitrary points, the reader
        returns that many messages and leaves everything after them intact
        in C{leftover()}, whatever those bytes are (a length prefix over the
        limit included): they belong to whoever reads the stream next.
        """
        wanted = data.draw(st.integers(1, len(msgs)))
        encoded = [encodeMessage(m) for m in msgs]  # type: ignore[arg-type]
        wire = b"".join(encoded) + after
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
        reader = MessageReader()
        out: list[object] = []
        last = 0
        for cut in cuts + [len(wire)]:
            out.extend(reader.feed(wire[last:cut], maxMessages=wanted - len(out)))
            last = cut
            if len(out) == wanted:
                break
        self.assertEqual(out, msgs[:wanted])
        self.assertEqual(reader.leftover() + wire[last:], b"".join(encoded[wanted:]) + after)

    def test_overLimitHeaderAfterMaxMessagesIsLeftOver(self) -> None:
        """
        The bytes after the one message asked for are not checked as a
        length prefix, however large they would read as one.
        """
        msg = SessionAccept(session_id="ab" * 16)
        after = struct.pack(">I", MAX_MESSAGE_SIZE + 1) + b"raw"
        reader = MessageReader()
        self.assertEqual(reader.feed(encodeMessage(msg) + after, maxMessages=1), [msg])
        self.assertEqual(reader.leftover(), after)

    def test_everyByteBoundary(self) -> None:
        """
        Feeding a message one byte at a time yields it exactly once, at the
        last byte.
        """
        msg = SessionClose(session_id="ab" * 16, reason="normal", detail="bye")
        wire = encodeMessage(msg)
        reader = MessageReader()
        for i, byte in enumerate(wire):
            got = reader.feed(bytes([byte]))
            self.assertEqual(got, [msg] if i == len(wire) - 1 else [])

    @given(messages, st.data())
    def test_truncated(self, msg: object, data: st.DataObject) -> None:
        """
        A truncated body is refused with ProtocolError, never anything else.
        """
        body = encodeBody(msg.toWire())  # type: ignore[attr-defined]
        cut = data.draw(st.integers(0, len(body) - 1))
        self.assertRaises(ProtocolError, decodeBody, body[:cut])

    @given(st.binary(max_size=300))
    def test_garbage(self, junk: bytes) -> None:
        """
        Arbitrary bytes either decode to a message or raise ProtocolError.
        """
        try:
            MessageReader().feed(junk)
        except ProtocolError:
            pass

    def test_oversizedLengthRefusedBeforeBuffering(self) -> None:
        """
        A length prefix over the limit is refused as soon as the 4 bytes
        arrive, before any of the body is buffered.
        """
        for length in (MAX_MESSAGE_SIZE + 1, 2**31 - 1, 2**32 - 1):
            reader = MessageReader()
            with self.assertRaises(ProtocolError) as e:
                reader.feed(struct.pack(">I", length))
            self.assertIn("limit", str(e.exception))

    def test_unknownType(self) -> None:
        """
        An unknown message type is an UnknownMessage error naming it.
        """
        e = self.assertRaises(UnknownMessage, decodeBody, cbor2.dumps({"type": "Frobnicate"}))
        self.assertIn("Frobnicate", str(e))

    def test_unknownFieldIgnored(self) -> None:
        """
        Fields a newer version adds are ignored (forward compatibility).
        """
        body = encodeBody({"type": "SessionAccept", "session_id": "0" * 32, "zzz": 1})
        self.assertEqual(decodeBody(body), SessionAccept(session_id="0" * 32))

    def test_missingField(self) -> None:
        """
        A missing required field is a ProtocolError.
        """
        self.assertRaises(ProtocolError, decodeBody, encodeBody({"type": "SessionAccept"}))

    def test_wrongTypes(self) -> None:
        """
        Fields of the wrong type, booleans posing as integers, malformed IDs
        and over-long text are refused.
        """
        base = {
            "type": "SessionOpen",
            "session_id": "0" * 32,
            "origin": "a" * 52,
            "destination": "b" * 52,
            "plugin": "echo",
            "cos": "interactive",
            "window": 1,
            "parameters": {},
        }
        decodeBody(encodeBody(base))
        for key, bad in [
            ("window", True),
            ("window", -1),
            ("window", 2**40),
            ("session_id", "Z" * 32),
            ("origin", "a" * 51),
            ("plugin", "Echo"),
            ("plugin", "x" * 33),
            ("parameters", []),
            ("parameters", {1: 2}),
        ]:
            self.assertRaises(ProtocolError, decodeBody, encodeBody({**base, key: bad}))

    def test_deepNestingRefused(self) -> None:
        """
        Plugin parameters nested deeper than the limit are refused.
        """
        value: object = 1
        for _ in range(20):
            value = [value]
        body = encodeBody(
            {
                "type": "SessionOpen",
                "session_id": "0" * 32,
                "origin": "a" * 52,
                "destination": "b" * 52,
                "plugin": "echo",
                "cos": "interactive",
                "window": 1,
                "parameters": {"x": value},
            }
        )
        self.assertRaises(ProtocolError, decodeBody, body)

    def test_nonDeterministicRefused(self) -> None:
        """
        Non-deterministic encodings (unsorted keys, long-form integers),
        duplicate keys, tags and trailing bytes are refused.
        """
        good = encodeBody({"type": "SessionAccept", "session_id": "0" * 32})
        unsorted = cbor2.dumps({"session_id": "0" * 32, "type": "SessionAccept"})
        self.assertNotEqual(unsorted, good)
        self.assertRaises(ProtocolError, decodeBody, unsorted)
        self.assertRaises(ProtocolError, decodeBody, good + b"\x00")
        tagged = cbor2.dumps(cbor2.CBORTag(1, {"type": "SessionAccept"}))
        self.assertRaises(ProtocolError, decodeBody, tagged)
        # {"a": 1, "a": 2} with text keys, duplicate.
        self.assertRaises(ProtocolError, decodeBody, b"\xa2\x61a\x01\x61a\x02")
        # The integer 1 encoded in 8 bytes instead of 1.
        bind = encodeBody(
            SessionOpen(
                session_id="0" * 32,
                origin="a" * 52,
                destination="b" * 52,
                plugin="echo",
                cos="batch",
                window=1,
            ).toWire()
        )
        self.assertIn(b"fwindow\x01", bind)
        longInt = bind.replace(b"fwindow\x01", b"fwindow\x1b" + b"\x00" * 7 + b"\x01")
        self.assertRaises(ProtocolError, decodeBody, longInt)

    def test_invalidUTF8(self) -> None:
        """
        Invalid UTF-8 in a text string is a ProtocolError.
        """
        body = b"\xa1dtype\x62\xff\xfe"
        self.assertRaises(ProtocolError, decodeBody, body)

    def test_helloSignedBytesExcludeSignature(self) -> None:
        """
        The bytes a Hello's signature covers do not depend on the signature.
        """
        h = Hello(
            node_id="a" * 52,
            public_key=b"k",
            name="LAB.A",
            role="network",
            versions=[2, 2],
            capabilities=[],
            listen=[],
            plugins={},
            dial_serial=0,
        )
        import attrs

        self.assertEqual(h.signedBytes(), attrs.evolve(h, signature=b"sig").signedBytes())

    def test_helloVersionsOrdered(self) -> None:
        """
        A Hello whose version range is reversed is refused.
        """
        self.assertRaises(
            ProtocolError,
            Hello,
            node_id="a" * 52,
            public_key=b"k",
            name="LAB.A",
            role="network",
            versions=[2, 1],
            capabilities=[],
            listen=[],
            plugins={},
            dial_serial=0,
        )


class HelloForwardCompatibility(SynchronousTestCase):
    def test_unknownFieldSigned(self) -> None:
        """
        A Hello from a newer peer, with a field this version does not know,
        still verifies: the signature covers the map as received.
        """
        from appnpy.link.identity import generateIdentity, verifySignature

        ident = generateIdentity()
        body = {
            "type": "Hello",
            "node_id": ident.nodeID,
            "public_key": ident.publicKeyBytes,
            "name": "LAB.NEW",
            "role": "network",
            "versions": [1, 2],
            "capabilities": [],
            "listen": [],
            "plugins": {},
            "dial_serial": 0,
            "zz_future": {"x": 1},
        }
        body["signature"] = ident.sign(encodeBody(body))
        hello = decodeBody(encodeBody(body))
        self.assertIsInstance(hello, Hello)
        self.assertTrue(verifySignature(hello.public_key, hello.signature, hello.signedBytes()))
        self.assertNotIn("received", hello.toWire())


class TagTests(SynchronousTestCase):
    def test_everyTagRefused(self) -> None:
        """
        No CBOR tag decodes, including the ones cbor2 handles itself without
        asking a tag hook (dates, bignums, sets, shared references...): a
        peer cannot slip a datetime, a set or a second spelling of an int
        into a message.
        """
        payloads = [1, b"\x01", [1, 2], "2020-01-01T00:00:00Z"]
        for tag in range(70000):
            for payload in payloads if tag < 300 or tag in (1004, 43000, 55799) else payloads[:1]:
                data = cbor2.dumps(cbor2.CBORTag(tag, payload))
                self.assertRaises(ProtocolError, decodeCBOR, data, 8)
