"""
The client side of the files protocol against a hostile or broken server:
answers out of order, unasked, malformed or oversized close the session
with protocol-error and fail what was outstanding; slow-down is honoured;
at most 16 requests are in flight.
"""

from __future__ import annotations

import struct
from typing import Any

from appnpy_files import wire
from appnpy_files.client import FilesClient, RemoteError, SourceGone
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase


class FakeSession:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed: tuple[str, str] | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def loseConnectionWithReason(self, reason: str, detail: str = "") -> None:
        self.closed = (reason, detail)

    def loseConnection(self) -> None:
        self.closed = ("normal", "")


def sent(session: FakeSession) -> list[dict[str, Any]]:
    decoder = wire.FrameDecoder()
    out = []
    for chunk in session.written:
        out.extend(r.message for r in decoder.feed(chunk))
    return out


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FilesClient(self.clock, "n" * 52)
        self.session = FakeSession()
        self.client.makeConnection(self.session)  # type: ignore[arg-type]

    def answer(self, body: dict[str, Any], raw: bytes = b"") -> None:
        self.client.dataReceived(wire.encodeFrame(body) + raw)

    def test_read_with_raw_bytes(self) -> None:
        """A data answer's raw bytes are the chunk, even split one byte at a time."""
        d = self.client.read("a" * 64, 3)
        frame = wire.encodeFrame({"id": 0, "data": 3, "length": 5}) + b"hello"
        for i in range(len(frame)):
            self.client.dataReceived(frame[i : i + 1])
        self.assertEqual(self.successResultOf(d), b"hello")

    def test_wrong_id_is_protocol_error(self) -> None:
        """An answer carrying another id closes the session; the request fails."""
        d = self.client.shares()
        self.answer({"id": 7, "shares": []})
        self.failureResultOf(d, SourceGone)
        assert self.session.closed is not None
        self.assertEqual(self.session.closed[0], "protocol-error")

    def test_unasked_answer(self) -> None:
        """An answer to no request is a protocol error."""
        self.answer({"id": 0, "ok": True})
        assert self.session.closed is not None
        self.assertEqual(self.session.closed[0], "protocol-error")

    def test_oversized_frame(self) -> None:
        """A length prefix over 1 MiB closes at once, before buffering."""
        d = self.client.shares()
        self.client.dataReceived(struct.pack(">I", wire.MAX_FRAME + 1) + b"x" * 10)
        self.failureResultOf(d, SourceGone)
        self.assertEqual(self.session.closed[0], "protocol-error")  # type: ignore[index]

    def test_oversized_data(self) -> None:
        """A data answer announcing more than one chunk is refused."""
        d = self.client.read("a" * 64, 0)
        self.answer({"id": 0, "data": 0, "length": wire.MAX_DATA + 1})
        self.failureResultOf(d, SourceGone)

    def test_wrong_chunk_index(self) -> None:
        """Bytes for another chunk than asked are refused."""
        d = self.client.read("a" * 64, 1)
        self.answer({"id": 0, "data": 2, "length": 1}, b"x")
        self.failureResultOf(d, SourceGone)

    def test_short_chunk_list(self) -> None:
        """A chunk list shorter than asked is refused."""
        d = self.client.chunkHashes("a" * 64, 0, 2)
        self.answer({"id": 0, "hashes": b"x" * 32})
        self.failureResultOf(d, SourceGone)

    def test_error_answer(self) -> None:
        """An error answer fails the request with its code; the session goes on."""
        d = self.client.stat(sha256="b" * 64)
        self.answer({"id": 0, "error": "no-such-file", "message": "none"})
        f = self.failureResultOf(d, RemoteError)
        self.assertEqual(f.value.code, "no-such-file")
        self.assertIsNone(self.session.closed)

    def test_slow_down_retried(self) -> None:
        """A read answered slow-down is asked again after the delay the server gave."""
        d = self.client.read("a" * 64, 0)
        self.answer({"id": 0, "error": "slow-down", "message": "", "retry_after": 2})
        self.assertNoResult(d)
        self.assertEqual(len(sent(self.session)), 1)
        self.clock.advance(2)
        self.assertEqual(len(sent(self.session)), 2)
        self.answer({"id": 1, "data": 0, "length": 2}, b"ok")
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_at_most_16_outstanding(self) -> None:
        """Requests beyond 16 wait until answers come."""
        ds = [self.client.read("a" * 64, i) for i in range(20)]
        self.assertEqual(len(sent(self.session)), 16)
        self.answer({"id": 0, "data": 0, "length": 0})
        self.assertEqual(len(sent(self.session)), 17)
        self.assertEqual(self.successResultOf(ds[0]), b"")

    def test_lost_fails_outstanding(self) -> None:
        """The session ending fails every outstanding request."""
        from twisted.python.failure import Failure

        ds = [self.client.read("a" * 64, i) for i in range(3)]
        self.client.connectionLost(Failure(ConnectionError("gone")))
        for d in ds:
            self.failureResultOf(d, SourceGone)
        self.failureResultOf(self.client.shares(), SourceGone)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400))
    def test_any_bytes(self, data: bytes) -> None:
        """Any bytes from the server either answer or close the session: never an exception."""
        client = FilesClient(self.clock, "n" * 52)
        session = FakeSession()
        client.makeConnection(session)  # type: ignore[arg-type]
        ds = [client.read("a" * 64, 0), client.shares()]
        for d in ds:
            d.addErrback(lambda f: None)
        client.dataReceived(data)
