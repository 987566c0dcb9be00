"""
The RPC frame decoder and the plain-data checks, with property tests: any
bytes give a message or one WireError, never another exception; every valid
message survives framing split anywhere; nothing over the limits is held.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
import cbor2
from appnpy_rpc import data, wire
from appnpy_rpc.wire import (
    _SEMANTIC_TAGS,
    MAX_FRAME,
    FrameReader,
    WireError,
    decodeBody,
    frame,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)
ids = st.integers(0, 2**63 - 1)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50)
)
plain = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
codes = st.from_regex(r"[a-z][a-z0-9-]{0,63}", fullmatch=True)
messages = (
    st.tuples(
        st.just(0),
        ids,
        names,
        names,
        st.lists(plain, max_size=5),
        st.dictionaries(st.text(max_size=10), plain, max_size=3),
        st.integers(0, 255),
        st.integers(1, 86_400_000),
    )
    | st.tuples(st.just(1), ids, plain)
    | st.tuples(st.just(2), ids, codes, st.text(max_size=200))
    | st.tuples(st.just(3), ids)
    | st.tuples(st.just(4), ids, st.none() | names)
).map(list)


class DecoderProperties(SynchronousTestCase):
    @given(st.binary(max_size=300))
    @settings(max_examples=500)
    def test_anyBytesMessageOrWireError(self, body: bytes) -> None:
        try:
            message = decodeBody(body)
        except WireError:
            return
        self.assertIsInstance(message, list)
        self.assertEqual(frame(message)[4:], body)

    @given(st.lists(plain, max_size=4))
    def test_fastEncodingIsTheCanonicalOne(self, value: list[Any]) -> None:
        """
        The shortcut encoder (cbor2's default where no float or map can
        occur) gives exactly the deterministic encoding.
        """
        self.assertEqual(wire._canonical(value), cbor2.dumps(value, canonical=True))

    @given(messages)
    def test_roundTrip(self, message: list[Any]) -> None:
        self.assertEqual(decodeBody(frame(message)[4:]), message)

    @given(st.lists(messages, min_size=1, max_size=5), st.integers(1, 50))
    def test_splitAnywhere(self, batch: list[list[Any]], chunk: int) -> None:
        """
        The stream cut into pieces of any size gives the same frames.
        """
        stream = b"".join(frame(m) for m in batch)
        reader = FrameReader()
        got = []
        for i in range(0, len(stream), chunk):
            got += [decodeBody(b) for b in reader.feed(stream[i : i + chunk])]
        self.assertEqual(got, batch)
        self.assertEqual(reader.buffered, 0)

    @given(messages, st.binary(min_size=1, max_size=8))
    def test_trailingBytesRefused(self, message: list[Any], extra: bytes) -> None:
        body = frame(message)[4:] + extra
        with self.assertRaises(WireError):
            decodeBody(body)

    @given(st.integers(MAX_FRAME + 1, 2**32 - 1))
    def test_overLongRefusedAtItsLength(self, length: int) -> None:
        reader = FrameReader()
        with self.assertRaises(WireError):
            reader.feed(struct.pack(">I", length))
        self.assertEqual(reader.buffered, 0)

    def test_everyBuiltInTagRefused(self) -> None:
        """
        cbor2 decodes some tags itself, bypassing tag_hook; every tag it
        knows is in the refused list (checked over tags 0..70000).
        """
        marker = object()
        known = set()
        for tag in range(70000):
            encoded = cbor2.dumps(cbor2.CBORTag(tag, 0))[:-1]
            for payload in (b"\x00", b"\x40", b"\x60", b"\x80", b"\xa0"):
                try:
                    value = cbor2.loads(encoded + payload, tag_hook=lambda d, t: marker)
                except Exception:
                    known.add(tag)
                    break
                if value is not marker:
                    known.add(tag)
                    break
        self.assertEqual(known - {55799} - set(_SEMANTIC_TAGS), set())
        for tag in sorted(known) + [55799, 7, 2**40]:
            body = cbor2.dumps([3, cbor2.CBORTag(tag, 0)])
            with self.assertRaises(WireError) as e:
                decodeBody(body)
            self.assertIn("tag", str(e.exception))

    def test_frameTooLargeToSend(self) -> None:
        with self.assertRaises(WireError):
            frame([1, 1, b"x" * MAX_FRAME])


class PlainDataProperties(SynchronousTestCase):
    @given(plain)
    def test_plainIsPlain(self, value: Any) -> None:
        data.checkPlain(value)
        self.assertEqual(data.toWire(value), value)
        self.assertEqual(data.compile("any")(value, ""), value)

    @given(plain)
    def test_checkersNeverCrash(self, value: Any) -> None:
        """
        Checking any data against any descriptor answers or raises Mismatch.
        """
        for desc in (
            "int",
            "float",
            "str",
            "bytes",
            "bool",
            "none",
            {"list": "int"},
            {"dict": {"union": ["str", "none"]}},
            {"record": "P", "fields": [["x", "int"], ["y", {"list": "any"}]]},
        ):
            try:
                data.compile(desc)(value, "v")
            except data.Mismatch:
                pass

    @given(
        st.recursive(
            st.text(max_size=8) | st.integers() | st.none(),
            lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i, max_size=3),
            max_leaves=20,
        )
    )
    def test_parseDescriptorNeverCrashes(self, value: Any) -> None:
        try:
            desc = data.parseDescriptor(value)
        except data.Mismatch:
            return
        data.compile(desc)
        data.formatType(desc)

    def test_notPlain(self) -> None:
        for value, says in [
            ({1, 2}, "set"),
            ({1: 2}, "map keys must be str"),
            ([object()], "[0]: object"),
            (2**64, "64-bit"),
            (-(2**64) - 1, "64-bit"),
        ]:
            with self.assertRaises(data.Mismatch) as e:
                data.toWire(value)
            self.assertIn(says, str(e.exception))

    def test_deepNestingRefused(self) -> None:
        value: Any = 1
        for _ in range(40):
            value = [value]
        with self.assertRaises(data.Mismatch):
            data.toWire(value)

    def test_floatTakesInt(self) -> None:
        self.assertEqual(data.compile("float")(3, ""), 3)
        with self.assertRaises(data.Mismatch):
            data.compile("int")(3.0, "")
        with self.assertRaises(data.Mismatch):
            data.compile("int")(True, "")


@attrs.frozen
class Point:
    x: int
    y: int


class AnnotationTests(SynchronousTestCase):
    def test_unsupportedAnnotations(self) -> None:
        from appnpy_rpc import Service, exported
        from appnpy_rpc.service import inspectService

        class NoAnnotation(Service):
            name = "x"

            @exported
            def f(self, a):  # type: ignore[no-untyped-def]
                return a

        class SetArg(Service):
            name = "x"

            @exported
            def f(self, a: set[int]) -> None:
                pass

        class IntKeys(Service):
            name = "x"

            @exported
            def f(self, a: dict[int, int]) -> None:
                pass

        class VarArgs(Service):
            name = "x"

            @exported
            def f(self, *a: int) -> None:
                pass

        class Nothing(Service):
            name = "x"

        class BadName(Service):
            name = "Bad Name"

            @exported
            def f(self) -> None:
                pass

        for cls, says in [
            (NoAnnotation, "no annotation"),
            (SetArg, "not plain data"),
            (IntKeys, "map keys must be str"),
            (VarArgs, "ordinary"),
            (Nothing, "exports no method"),
            (BadName, "service name"),
        ]:
            with self.assertRaises(ValueError) as e:
                inspectService(cls())
            self.assertIn(says, str(e.exception), cls)

    def test_recordsBuiltForTheCallee(self) -> None:
        from appnpy_rpc import Service, exported
        from appnpy_rpc.service import inspectService

        got = []

        class Geo(Service):
            name = "geo"

            @exported
            def move(self, p: Point, by: int = 1) -> Point:
                got.append(p)
                return Point(p.x + by, p.y + by)

        spec = inspectService(Geo()).methods["move"].spec
        self.assertEqual(
            spec.format(), "move(p: Point{x: int, y: int}, by: int = ...) -> Point{x: int, y: int}"
        )
        args, kwargs = spec.checkArguments([{"x": 1, "y": 2}], {})
        self.assertEqual(args, [Point(1, 2)])
        from appnpy_rpc.errors import RPCError

        for bad in ({"x": 1}, {"x": 1, "y": 2, "z": 3}, {"x": "1", "y": 2}, [1, 2]):
            with self.assertRaises(RPCError):
                spec.checkArguments([bad], {})
