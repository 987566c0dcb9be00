"""
Tests for the files protocol's framing and messages (appnpy_files.wire).
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from appnpy_files import wire
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

ids = st.integers(0, wire.MAX_ID)
shas = st.text("0123456789abcdef", min_size=64, max_size=64)
shareNames = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", fullmatch=True)
paths = st.text(max_size=64)
u63 = st.integers(0, wire.MAX_UINT63)

requests = st.one_of(
    st.builds(wire.Auth, ids, shareNames, st.text(max_size=50)),
    st.builds(wire.Shares, ids),
    st.builds(wire.List, ids, shareNames, paths, u63),
    st.builds(wire.Stat, ids, shareNames, paths.filter(bool)),
    st.builds(lambda i, h: wire.Stat(i, sha256=h), ids, shas),
    st.builds(wire.Chunks, ids, shas, u63, st.integers(0, wire.MAX_CHUNK_HASHES)),
    st.builds(wire.Read, ids, shas, u63),
    st.builds(
        wire.IndexSearch,
        ids,
        st.lists(st.text(min_size=1, max_size=64), max_size=16).map(tuple),
    ),
    st.builds(
        wire.IndexUpload,
        ids,
        st.lists(st.dictionaries(st.text(max_size=5), st.integers()), max_size=5).map(tuple),
        st.booleans(),
    ),
)

listEntries = st.one_of(
    st.builds(
        wire.ListEntry,
        st.text(min_size=1, max_size=30).filter(lambda n: "/" not in n and "\x00" not in n and n not in (".", "..")),
        st.just(False),
        u63,
        st.integers(-wire.MAX_UINT63, wire.MAX_UINT63),
        shas,
    ),
    st.builds(wire.ListEntry, st.just("sub"), st.just(True), st.just(0), st.integers(0, 2**40)),
)


def _fileInfo(share: str, path: str, size: int, mtime: int, sha: str) -> wire.FileInfo:
    return wire.FileInfo(share, path, size, mtime, sha, wire.CHUNK_SIZE, wire.chunkCount(size))


answers = st.one_of(
    st.tuples(
        st.sampled_from(sorted(wire.ANSWER_TYPES)),
        st.builds(
            wire.ErrorAnswer,
            ids,
            st.sampled_from(sorted(wire.ERROR_CODES)),
            st.text(max_size=40),
            st.none() | st.integers(0, 86400),
        ),
    ),
    st.tuples(st.just("auth"), st.builds(wire.OkAnswer, ids)),
    st.tuples(
        st.just("shares"),
        st.builds(
            wire.SharesAnswer,
            ids,
            st.lists(
                st.builds(wire.ShareInfo, shareNames, st.booleans(), st.none() | u63, st.none() | u63),
                max_size=5,
            ).map(tuple),
        ),
    ),
    st.tuples(
        st.just("list"),
        st.builds(wire.ListAnswer, ids, st.lists(listEntries, max_size=5).map(tuple), st.none() | u63),
    ),
    st.tuples(
        st.just("stat"),
        st.builds(
            wire.StatAnswer,
            ids,
            st.builds(_fileInfo, shareNames, paths.filter(bool), st.integers(0, 2**50), st.integers(-(2**40), 2**40), shas),
        ),
    ),
    st.tuples(
        st.just("chunks"),
        st.builds(wire.ChunksAnswer, ids, st.integers(0, 40).map(lambda n: bytes(range(32)) * n)),
    ),
    st.tuples(st.just("read"), st.builds(wire.DataAnswer, ids, u63, st.integers(0, wire.MAX_DATA))),
    st.tuples(
        st.just("index-search"),
        st.builds(wire.HitsAnswer, ids, st.lists(st.dictionaries(st.text(max_size=5), st.binary(max_size=8)), max_size=4).map(tuple)),
    ),
)

cborValues = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def frame(body: dict[str, Any]) -> bytes:
    return wire.encodeFrame(body)


class RequestTests(SynchronousTestCase):
    @given(requests)
    def test_roundTrip(self, request: wire.Request) -> None:
        """
        Every request survives encode, framing, decode and parse unchanged.
        """
        [received] = wire.FrameDecoder().feed(frame(request.toWire()))
        self.assertIsNone(received.payload)
        self.assertEqual(wire.parseRequest(received.message), request)

    @given(st.dictionaries(st.text(max_size=8), cborValues, max_size=6))
    def test_anyMapIsRequestOrClearError(self, message: dict[str, Any]) -> None:
        """
        Any map at all parses to a request, or raises BadRequest (with the
        id) or ProtocolError (no usable id): never anything else.
        """
        try:
            wire.parseRequest(message)
        except wire.BadRequest as e:
            self.assertEqual(e.requestID, message["id"])
        except wire.ProtocolError:
            pass

    @given(requests, st.sampled_from(["id", "share", "path", "sha256", "start", "count", "index", "password", "keywords", "hits", "final", "cursor"]), cborValues)
    def test_fieldReplacedIsCheckedOrKept(self, request: wire.Request, key: str, value: object) -> None:
        """
        Replacing one field by any CBOR value gives an equal-typed request
        or a clear error: the parsed request never holds a wrongly typed
        field.
        """
        d = request.toWire()
        d[key] = value
        try:
            parsed = wire.parseRequest(d)
        except (wire.BadRequest, wire.ProtocolError):
            return
        self.assertEqual(type(parsed), type(request))
        for field in attrs_fields(parsed):
            self.assertIsNot(type(getattr(parsed, field)), float)

    def test_unknownOp(self) -> None:
        """
        An unknown op is a bad-request with the id, so it can be answered.
        """
        e = self.assertRaises(wire.BadRequest, wire.parseRequest, {"id": 7, "op": "delete"})
        self.assertEqual(e.requestID, 7)
        self.assertIn("delete", e.message)

    def test_badIDs(self) -> None:
        """
        A missing, negative, too large, boolean or text id is a protocol
        error: there is nothing to answer to.
        """
        for bad in (None, -1, 2**32, True, "1", 1.0):
            self.assertRaises(wire.ProtocolError, wire.parseRequest, {"id": bad, "op": "shares"})
        self.assertRaises(wire.ProtocolError, wire.parseRequest, {"op": "shares"})

    def test_limits(self) -> None:
        """
        Counts over the limits, negative offsets, bad hashes and long texts
        are bad requests.
        """
        sha = "a" * 64
        for bad in (
            {"op": "chunks", "sha256": sha, "start": 0, "count": wire.MAX_CHUNK_HASHES + 1},
            {"op": "chunks", "sha256": sha, "start": -1, "count": 1},
            {"op": "read", "sha256": sha, "index": 2**63},
            {"op": "read", "sha256": "A" * 64, "index": 0},
            {"op": "read", "sha256": sha[:-1], "index": 0},
            {"op": "read", "sha256": sha, "index": True},
            {"op": "list", "share": "x", "path": "a" * (wire.MAX_PATH + 1)},
            {"op": "list", "share": "../x", "path": ""},
            {"op": "list", "share": "", "path": ""},
            {"op": "auth", "share": "x", "password": "p" * (wire.MAX_PASSWORD + 1)},
            {"op": "auth", "share": "x", "password": b"bytes"},
            {"op": "stat", "share": "x", "path": "a", "sha256": sha},
            {"op": "stat", "share": "x"},
            {"op": "index-search", "keywords": ["a"] * 17},
            {"op": "index-search", "keywords": [""]},
            {"op": "index-upload", "hits": [1], "final": True},
        ):
            self.assertRaises(wire.BadRequest, wire.parseRequest, {"id": 1, **bad})

    def test_passwordNotInRepr(self) -> None:
        """
        An auth request's repr (what a log line would show) has no password.
        """
        self.assertNotIn("s3cret", repr(wire.Auth(1, "docs", "s3cret")))

    def test_unknownFieldsIgnored(self) -> None:
        """
        A newer peer's extra fields are ignored.
        """
        self.assertEqual(
            wire.parseRequest({"id": 3, "op": "shares", "future": [1, 2]}), wire.Shares(3)
        )


def attrs_fields(obj: object) -> list[str]:
    import attrs

    return [f.name for f in attrs.fields(type(obj))]


class AnswerTests(SynchronousTestCase):
    @given(answers)
    def test_roundTrip(self, pair: tuple[str, wire.Answer]) -> None:
        """
        Every answer survives encode and parse unchanged.
        """
        op, answer = pair
        body = answer.toWire()
        self.assertEqual(wire.parseAnswer(op, wire.decodeBody(wire.encodeBody(body))), answer)

    @given(st.sampled_from(sorted(wire.ANSWER_TYPES)), st.dictionaries(st.text(max_size=8), cborValues, max_size=6))
    def test_anyMapIsAnswerOrProtocolError(self, op: str, message: dict[str, Any]) -> None:
        """
        Any map parses to an answer or raises ProtocolError: a hostile
        server cannot make the client's parser fail otherwise.
        """
        try:
            wire.parseAnswer(op, message)
        except wire.ProtocolError:
            pass

    def test_hostileAnswers(self) -> None:
        """
        A hostile server's lies are refused: hashes not a multiple of 32,
        a chunk count that does not match the size, an entry name with a
        slash, a chunk size other than 1 MiB, a data length over 1 MiB.
        """
        sha = "b" * 64
        info = {"share": "s", "path": "p", "size": 5, "mtime": 0, "sha256": sha, "chunk_size": wire.CHUNK_SIZE, "chunk_count": 1}
        for op, bad in (
            ("chunks", {"hashes": b"x" * 33}),
            ("stat", {"file": {**info, "chunk_count": 2}}),
            ("stat", {"file": {**info, "chunk_size": 1}}),
            ("list", {"entries": [{"name": "../x", "dir": True, "size": 0, "mtime": 0}], "next": None}),
            ("list", {"entries": [{"name": "f", "dir": False, "size": 0, "mtime": 0}], "next": None}),
            ("read", {"data": 0, "length": wire.MAX_DATA + 1}),
            ("auth", {"ok": False}),
            ("shares", {"shares": [{"name": "s", "protected": 1, "files": None, "bytes": None}]}),
        ):
            self.assertRaises(wire.ProtocolError, wire.parseAnswer, op, {"id": 1, **bad})


class FrameDecoderTests(SynchronousTestCase):
    @given(st.lists(requests, min_size=1, max_size=6), st.data())
    def test_splitAnywhere(self, reqs: list[wire.Request], data: st.DataObject) -> None:
        """
        The stream cut at arbitrary byte boundaries gives the same messages
        as the stream in one piece.
        """
        stream = b"".join(frame(r.toWire()) for r in reqs)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
        decoder = wire.FrameDecoder()
        got: list[wire.Received] = []
        last = 0
        for cut in [*cuts, len(stream)]:
            got.extend(decoder.feed(stream[last:cut]))
            last = cut
        self.assertEqual([wire.parseRequest(r.message) for r in got], reqs)
        self.assertEqual(decoder.buffered(), 0)

    @settings(max_examples=30)
    @given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.data())
    def test_dataPayloadsSplitAnywhere(self, payloads: list[bytes], data: st.DataObject) -> None:
        """
        On the client side, data answers and their raw bytes come out whole
        however the stream is cut, also mixed with other answers.
        """
        stream = b""
        for i, p in enumerate(payloads):
            stream += frame(wire.DataAnswer(i, i, len(p)).toWire()) + p
            stream += frame(wire.OkAnswer(100 + i).toWire())
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        decoder = wire.FrameDecoder(rawAfterData=True)
        got: list[wire.Received] = []
        last = 0
        for cut in [*cuts, len(stream)]:
            got.extend(decoder.feed(stream[last:cut]))
            last = cut
        self.assertEqual([r.payload for r in got[0::2]], payloads)
        self.assertEqual([r.payload for r in got[1::2]], [None] * len(payloads))

    def test_byteByByte(self) -> None:
        """
        Fed one byte at a time, a data answer with its bytes comes out once.
        """
        stream = frame(wire.DataAnswer(1, 0, 5).toWire()) + b"hello"
        decoder = wire.FrameDecoder(rawAfterData=True)
        got = [r for i in range(len(stream)) for r in decoder.feed(stream[i : i + 1])]
        self.assertEqual([r.payload for r in got], [b"hello"])

    def test_oversizedLengthRefusedBeforeBody(self) -> None:
        """
        A length over 1 MiB (MAX+1, 2**31-1, 2**32-1) is refused from its
        four bytes alone, before any body is buffered.
        """
        for length in (wire.MAX_FRAME + 1, 2**31 - 1, 2**32 - 1):
            decoder = wire.FrameDecoder()
            self.assertRaises(wire.ProtocolError, decoder.feed, struct.pack(">I", length))

    def test_zeroLengthFrame(self) -> None:
        """
        A zero-length frame holds no map: protocol error.
        """
        self.assertRaises(wire.ProtocolError, wire.FrameDecoder().feed, b"\0\0\0\0")

    def test_truncatedWaits(self) -> None:
        """
        A truncated frame yields nothing and holds its bytes.
        """
        decoder = wire.FrameDecoder()
        data = frame({"id": 1, "op": "shares"})
        self.assertEqual(decoder.feed(data[:-1]), [])
        self.assertEqual(decoder.buffered(), len(data) - 1)

    def test_strictCBOR(self) -> None:
        """
        Not a map, non-text keys, tags, indefinite lengths, duplicate keys,
        non-canonical encodings, trailing garbage and deep nesting are all
        protocol errors.
        """
        nested: object = 1
        for _ in range(10):
            nested = [nested]
        bodies = [
            cbor2.dumps([1, 2]),
            cbor2.dumps({1: 2}),
            cbor2.dumps({"id": cbor2.CBORTag(1, 0)}),
            b"\xbf\x62id\x01\xff",  # indefinite map
            b"\xa2\x62id\x01\x62id\x02",  # duplicate key
            b"\xa1\x62id\x18\x01",  # 1 encoded in two bytes
            cbor2.dumps({"id": 1}) + b"\x00",
            cbor2.dumps({"id": nested}, canonical=True),
            b"\xa1\x62id\x7f",  # truncated
            b"\xa1\x62\xff\xfe\x01",  # invalid UTF-8 key
        ]
        for body in bodies:
            self.assertRaises(
                wire.ProtocolError, wire.FrameDecoder().feed, struct.pack(">I", len(body)) + body
            )

    def test_badDataLength(self) -> None:
        """
        A data header with no, negative or oversized length is a protocol
        error on the client side; an error answer with a data key is not
        followed by bytes.
        """
        for length in (None, -1, wire.MAX_DATA + 1, "5"):
            decoder = wire.FrameDecoder(rawAfterData=True)
            self.assertRaises(wire.ProtocolError, decoder.feed, frame({"id": 1, "data": 0, "length": length}))
        decoder = wire.FrameDecoder(rawAfterData=True)
        [r] = decoder.feed(frame({"id": 1, "data": 0, "error": "internal", "message": ""}))
        self.assertIsNone(r.payload)

    @given(st.binary(max_size=200))
    def test_garbageNeverCrashes(self, garbage: bytes) -> None:
        """
        Any bytes at all give messages or ProtocolError, nothing else.
        """
        for side in (False, True):
            try:
                wire.FrameDecoder(rawAfterData=side).feed(garbage)
            except wire.ProtocolError:
                pass

    def test_encodeFrameTooBig(self) -> None:
        """
        Encoding a body over 1 MiB is refused (the server bounds every answer).
        """
        self.assertRaises(ValueError, wire.encodeFrame, {"x": b"a" * wire.MAX_FRAME})

    def test_biggestChunksAnswerFits(self) -> None:
        """
        The biggest chunks answer (16384 hashes) fits in one frame.
        """
        wire.encodeFrame(wire.ChunksAnswer(wire.MAX_ID, b"x" * 32 * wire.MAX_CHUNK_HASHES).toWire())

    def test_chunkCount(self) -> None:
        """
        0 bytes is 0 chunks; 1 byte to 1 MiB is one; one more byte is two;
        a 5 GiB file has 5120.
        """
        self.assertEqual(
            [wire.chunkCount(n) for n in (0, 1, wire.CHUNK_SIZE, wire.CHUNK_SIZE + 1, 5 * 2**30)],
            [0, 1, 1, 2, 5120],
        )


class ProtocolDocTests(SynchronousTestCase):
    def test_section18Examples(self) -> None:
        """
        The hex examples of docs/protocol.md section 18 are exactly what the
        code encodes.
        """
        import os
        import re

        doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("## 18. The files plugin protocol") :]
        section = section[: section.find("\n## ", 1)] if "\n## " in section else section
        blocks = [b.replace("\n", "") for b in re.findall(r"```hex\n(.*?)```", section, re.DOTALL)]
        empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        expected = [
            frame(wire.Shares(1).toWire()),
            frame(wire.Read(7, empty, 0).toWire()),
            frame(wire.DataAnswer(7, 0, 5).toWire()) + b"hello",
            frame(wire.ErrorAnswer(8, wire.SLOW_DOWN, "wait", 4).toWire()),
        ]
        self.assertEqual([bytes.fromhex(b) for b in blocks], expected)

    def test_section18ErrorCodes(self) -> None:
        """
        The error table of section 18 lists exactly the code's error codes.
        """
        import os
        import re

        doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")
        with open(doc, encoding="utf-8") as f:
            section = f.read().split("## 18. The files plugin protocol")[1]
        table = section.split("### 18.5 Errors")[1].split("###")[0]
        self.assertEqual(set(re.findall(r"^\| `([a-z-]+)` \|", table, re.MULTILINE)), wire.ERROR_CODES)
