"""
Tests for L{appnpy.link.bulktls}: the TLS layer of links and of routed
sessions' end-to-end TLS, which encrypts a whole write at once and hands up
the records of one read joined; and for the relay path it speeds up (bytes
through one and two relays complete and in order, whatever the writes).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from OpenSSL.SSL import WantReadError
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from appnpy.link import bulktls
from appnpy.link.identity import generateIdentity
from appnpy.link.tls import LinkContextFactory, TrustPolicy
from appnpy.link.yamux import HEADER_SIZE, TYPE_DATA, decodeHeader
from tests.test_routed import RoutedHarness
from tests.test_sessions import Recorder, RecordingPlugin

KiB = 1024


def pattern(size: int, seed: int) -> bytes:
    """
    C{size} bytes in which every 4-byte word says where it is, so a lost,
    repeated or reordered piece cannot go unnoticed.
    """
    words = (size + 3) // 4
    return struct.pack(f">{words}I", *((seed << 24 | i) & 0xFFFFFFFF for i in range(words)))[:size]


class _BulkProtocol(bulktls.BulkTLS, TLSMemoryBIOProtocol):
    pass


class _BulkFactory(TLSMemoryBIOFactory):
    protocol = _BulkProtocol


class _ViewsProtocol(bulktls.BulkTLS, TLSMemoryBIOProtocol):
    def _deliversViews(self) -> bool:
        return True


class _TakesViewsProtocol(bulktls.BulkTLS, TLSMemoryBIOProtocol):
    # Given memoryviews, as a routed session's numbered stream hands them
    # over, from the handshake on.
    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(memoryview(data))  # type: ignore[arg-type]


class _Collector(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class BulkPair:
    """
    Two L{BulkTLS} protocols over an in-memory connection, with link
    contexts; C{wire} records every write of the client's TLS layer to its
    transport.
    """

    def __init__(
        self, server: _Collector | None = None, views: bool = False, viewsIn: bool = False
    ) -> None:
        self.clock = Clock()
        self.server = server or _Collector()
        self.client = _Collector()
        sctx = LinkContextFactory(generateIdentity(), TrustPolicy.open())
        cctx = LinkContextFactory(generateIdentity(), TrustPolicy.open())
        sf = _BulkFactory(sctx, False, Factory.forProtocol(lambda: self.server), clock=self.clock)
        if views:
            sf.protocol = _ViewsProtocol
        if viewsIn:
            sf.protocol = _TakesViewsProtocol
        cf = _BulkFactory(cctx, True, Factory.forProtocol(lambda: self.client), clock=self.clock)
        a = IPv4Address("TCP", "127.0.0.1", 1)
        b = IPv4Address("TCP", "127.0.0.1", 2)
        self.serverTLS = sf.buildProtocol(a)
        self.clientTLS = cf.buildProtocol(b)
        sio = FakeTransport(self.serverTLS, isServer=True, hostAddress=a, peerAddress=b)
        cio = FakeTransport(self.clientTLS, isServer=False, hostAddress=b, peerAddress=a)
        self.pump = connect(self.serverTLS, sio, self.clientTLS, cio, greet=False, clock=self.clock)
        self.flush()
        self.wire: list[int] = []
        self.serverWire: list[int] = []
        for io, lengths in ((cio, self.wire), (sio, self.serverWire)):
            self._record(io, lengths)

    @staticmethod
    def _record(io: FakeTransport, lengths: list[int]) -> None:
        write = io.write

        def recording(data: bytes) -> None:
            lengths.append(len(data))
            write(data)

        io.write = recording  # type: ignore[method-assign]

    def flush(self) -> None:
        while self.pump.pump(advanceClock=False):
            pass


class BulkTLSTests(SynchronousTestCase):
    """
    L{BulkTLS} delivers exactly what was written, with fewer calls.
    """

    def setUp(self) -> None:
        self.pair = BulkPair()

    def assertWritesArrive(self, sizes: list[int]) -> None:
        """
        Writes of C{sizes} from the client arrive at the server, complete
        and in order.
        """
        pair = self.pair
        pair.server.received.clear()
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        for chunk in data:
            pair.clientTLS.write(chunk)
        pair.flush()
        self.assertEqual(b"".join(pair.server.received), b"".join(data))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(1, 600 * KiB), min_size=1, max_size=8), st.booleans())
    # More than the shared read buffer (512 KiB) in one read, both ways.
    @example([600 * KiB, 300 * KiB, 1], False)
    @example([600 * KiB, 300 * KiB, 1], True)
    def test_writesArriveInOrder(self, sizes: list[int], public: bool) -> None:
        """
        Writes of any sizes arrive complete and in order, through either way
        of reading records (SSL_read into the shared buffer, or pyOpenSSL's
        recv).
        """
        if public:
            self.patch(bulktls, "_readRecords", bulktls._readRecordsPublic)
        self.assertWritesArrive(sizes)

    @settings(max_examples=20, deadline=None)
    @given(st.lists(st.integers(1, 600 * KiB), min_size=1, max_size=6))
    @example([600 * KiB, 1])
    def test_publicSendPath(self, sizes: list[int]) -> None:
        """
        Without the shared send buffer and direct C{SSL_write} and
        C{BIO_write} (a pyOpenSSL without the pieces they need), records go
        through pyOpenSSL's C{send}, C{bio_read} and C{bio_write}, complete
        and in order.
        """
        self.patch(bulktls, "_SEND_BUFFER", None)
        self.patch(bulktls, "_SSL_write", None)
        self.patch(bulktls, "_BIO_write", None)
        self.assertWritesArrive(sizes)

    @settings(max_examples=20, deadline=None)
    @given(st.lists(st.integers(1, 300 * KiB), min_size=1, max_size=6))
    def test_viewsIn(self, sizes: list[int]) -> None:
        """
        A layer handed memoryviews (handshake, then records) delivers what
        was written, both ways.
        """
        pair = BulkPair(viewsIn=True)
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        for chunk in data:
            pair.clientTLS.write(chunk)
            pair.serverTLS.write(chunk)
        pair.flush()
        self.assertEqual(b"".join(pair.server.received), b"".join(data))
        self.assertEqual(b"".join(pair.client.received), b"".join(data))

    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(st.integers(1, 300 * KiB), min_size=1, max_size=5),
        st.integers(0, 16),
        st.integers(1, 300 * KiB),
    )
    def test_sendFramed(self, sizes: list[int], head: int, limit: int) -> None:
        """
        L{bulktls.sendFramed} takes every record out of the send BIO, in
        fresh writable buffers of at most C{limit} records after C{head}
        bytes of room, which the receiving end reads as sent.
        """
        self.assertTrue(bulktls.framedSendAvailable())
        pair = self.pair
        pair.server.received.clear()
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        frames: list[memoryview] = []
        conn = pair.clientTLS._tlsConnection
        for chunk in data:
            conn.send(chunk)
            bulktls.sendFramed(conn, head, limit, frames.append)
        self.assertRaises(WantReadError, conn.bio_read, 1)  # all taken out
        for frame in frames:
            self.assertFalse(frame.readonly)
            self.assertLessEqual(len(frame), head + limit)
            self.assertGreater(len(frame), head)
            frame[:head] = b"\xff" * head  # the room is the caller's
        for frame in frames:
            pair.serverTLS.dataReceived(bytes(frame[head:]))
        pair.flush()
        self.assertEqual(b"".join(pair.server.received), b"".join(data))

    def test_directSendInUse(self) -> None:
        """
        With this pyOpenSSL the send BIO is read straight into the shared
        send buffer, and a flush of an empty BIO writes nothing.
        """
        self.assertIsNotNone(bulktls._SEND_BUFFER)
        pair = self.pair
        pair.wire.clear()
        pair.clientTLS._flushSendBIO()
        self.assertEqual(pair.wire, [])

    def test_directReadInUse(self) -> None:
        """
        With this pyOpenSSL the records are read straight into the shared
        buffer (the public path is only the fallback).
        """
        self.assertIs(bulktls._readRecords, bulktls._readRecordsDirect)

    def test_oneTransportWritePerWrite(self) -> None:
        """
        A 200 KiB write is encrypted at once: its 13 records leave in one
        transport write, not one per record.
        """
        pair = self.pair
        pair.wire.clear()
        pair.clientTLS.write(b"x" * 200 * KiB)
        self.assertEqual(len(pair.wire), 1)
        records = -(-200 * KiB // (16 * KiB))
        self.assertEqual(pair.wire[0], 200 * KiB + records * 22)

    def test_oneDeliveryPerRead(self) -> None:
        """
        The records that arrive in one read of the transport are handed to
        the protocol in one call.
        """
        pair = self.pair
        pair.server.received.clear()
        pair.clientTLS.write(b"y" * 100 * KiB)
        pair.flush()
        self.assertEqual([len(d) for d in pair.server.received], [100 * KiB])

    def test_dataBeforeCloseNotify(self) -> None:
        """
        Data followed by the peer's close_notify in the same read is
        delivered, then the connection ends cleanly.
        """
        pair = self.pair
        pair.server.received.clear()
        pair.clientTLS.write(b"last words")
        pair.clientTLS.loseConnection()
        pair.flush()
        self.assertEqual(b"".join(pair.server.received), b"last words")
        self.assertIsNotNone(pair.server.lost)

    def test_tamperedRecord(self) -> None:
        """
        A record that does not authenticate ends the connection with the
        TLS error; the records before it in the same read are delivered.
        """
        pair = self.pair
        pair.server.received.clear()
        tls = pair.clientTLS._tlsConnection
        pair.clientTLS.write(b"a" * 16 * KiB)
        good = pair.pump.clientIO.stream  # what the client has sent, not yet pumped
        pair.pump.clientIO.stream = b""
        tls.send(b"b" * 100)
        bad = bytearray(tls.bio_read(4096))
        bad[-1] ^= 1
        pair.serverTLS.dataReceived(b"".join(good) + bytes(bad))
        self.assertEqual(b"".join(pair.server.received), b"a" * 16 * KiB)
        pair.flush()
        self.assertIsNotNone(pair.server.lost)
        assert pair.server.lost is not None
        self.assertTrue(pair.server.lost.check(bulktls.Error))


class _Answerer(_Collector):
    """
    Writes C{answers} for every delivery (as an origin writes its next
    data for every acknowledgement a read brings).
    """

    answers: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        for answer in self.answers:
            self.transport.write(answer)


class ViewDeliveryTests(SynchronousTestCase):
    """
    A protocol that takes views gets each read's records as a memoryview
    over a buffer of their own, never written again.
    """

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(1, 600 * KiB), min_size=1, max_size=6), st.integers(1, 70 * KiB))
    @example([600 * KiB, 300 * KiB, 1], 64 * KiB)
    def test_viewsKeepTheirBytes(self, sizes: list[int], readSize: int) -> None:
        """
        Whatever the writes, and however the transport cuts them into reads
        (records split across reads too), the views delivered hold exactly
        what was written, in order, even after every later read.
        """
        pair = BulkPair(views=True)
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        for chunk in data:
            pair.clientTLS.write(chunk)
        wire = b"".join(pair.pump.clientIO.stream)
        pair.pump.clientIO.stream = []
        for i in range(0, len(wire), readSize):
            pair.serverTLS.dataReceived(wire[i : i + readSize])
        received = pair.server.received
        self.assertTrue(all(type(piece) is memoryview for piece in received))
        self.assertEqual(b"".join(received), b"".join(data))


class HoldBackTests(SynchronousTestCase):
    """
    What a protocol writes while it handles a read leaves when it is done,
    in one transport write up to L{bulktls._HOLD_LIMIT}, and in order.
    """

    def setUp(self) -> None:
        self.answerer = _Answerer()
        self.pair = BulkPair(self.answerer)

    def test_writesDuringDeliveryGoTogether(self) -> None:
        """
        Three 64 KiB writes made while handling one read leave in one
        transport write, after the protocol returns.
        """
        self.answerer.answers = [pattern(64 * KiB, i) for i in range(3)]
        pair = self.pair
        pair.serverWire.clear()
        pair.clientTLS.write(b"ack")
        pair.flush()
        self.assertEqual(len(pair.serverWire), 1)
        self.assertEqual(b"".join(pair.client.received), b"".join(self.answerer.answers))

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(1, 200 * KiB), min_size=1, max_size=8))
    def test_boundedAndInOrder(self, sizes: list[int]) -> None:
        """
        Whatever the writes made while handling a read, they arrive
        complete and in order, and no transport write carries more than the
        bound's worth of writes (plus the one that crossed it).
        """
        answers = [pattern(n, i) for i, n in enumerate(sizes)]
        self.answerer.answers = answers
        pair = self.pair
        pair.client.received.clear()
        pair.serverWire.clear()
        pair.clientTLS.write(b"ack")
        pair.flush()
        self.assertEqual(b"".join(pair.client.received), b"".join(answers))
        largest = bulktls._HOLD_LIMIT + max(sizes)
        self.assertLessEqual(max(pair.serverWire), largest + (largest >> 14) * 22 + 1024)
        if sum(sizes) < bulktls._HOLD_LIMIT:
            self.assertEqual(len(pair.serverWire), 1)

    def test_outsideDeliveryAtOnce(self) -> None:
        """
        A write made outside the delivery of a read leaves at once.
        """
        pair = self.pair
        pair.serverWire.clear()
        pair.serverTLS.write(b"x" * KiB)
        self.assertEqual(len(pair.serverWire), 1)


def _dataFrames(writes: list[bytes], streamID: int) -> list[int]:
    """
    The payload lengths of the Data frames of C{streamID} among C{writes}
    (each write one or more whole frames, as the multiplexer writes them).
    """
    lengths = []
    for w in writes:
        pos = 0
        while pos < len(w):
            type, _, sid, length = decodeHeader(w[pos : pos + HEADER_SIZE])
            pos += HEADER_SIZE
            if type == TYPE_DATA:
                pos += length
                if sid == streamID:
                    lengths.append(length)
    return lengths


class RelayBulkTests(RoutedHarness):
    """
    Bytes through relays arrive complete and in order for any writes, and a
    64 KiB write leaves the origin as one frame.
    """

    def setUp(self) -> None:
        super().setUp()
        self.plugin = RecordingPlugin()
        self.nodes, _ = self.line(4, plugins=[self.plugin])

    def _session(self, hops: int) -> tuple[Any, Recorder]:
        route = self.nodes[: hops + 2] if hops == 1 else self.nodes
        before = len(self.plugin.built)
        p = self.successResultOf(self.open(route))
        self.net.flush()
        return p, self.plugin.built[before]

    @settings(max_examples=12, deadline=None)
    @given(
        st.lists(st.integers(1, 300 * KiB), min_size=1, max_size=8),
        st.lists(st.integers(1, 70 * KiB), min_size=0, max_size=4),
        st.sampled_from([1, 2]),
        st.booleans(),
    )
    def test_anyWrites(self, sizes: list[int], back: list[int], hops: int, flushEach: bool) -> None:
        """
        Through one or two relays, writes of every size (at once, or each
        moved through the network before the next) arrive complete and in
        order, both ways.
        """
        p, far = self._session(hops)
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        for chunk in data:
            p.transport.write(chunk)
            if flushEach:
                self.net.flush()
        answer = [pattern(n, 100 + i) for i, n in enumerate(back)]
        for chunk in answer:
            far.transport.write(chunk)
        self.net.flush()
        self.assertEqual(bytes(far.received), b"".join(data))
        self.assertEqual(bytes(p.received), b"".join(answer))
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(self.nodes)

    @settings(max_examples=10, deadline=None)
    @given(st.lists(st.integers(1, 300 * KiB), min_size=1, max_size=6), st.sampled_from([1, 2]))
    def test_closeRightAfterWrites(self, sizes: list[int], hops: int) -> None:
        """
        Writes followed at once by the end of the session (UNBIND, TLS
        close_notify and FIN in the same reads as the data at every relay)
        arrive complete before the far end sees the session end.
        """
        p, far = self._session(hops)
        data = b"".join(pattern(n, i) for i, n in enumerate(sizes))
        seen: list[int] = []
        lost = far.connectionLost

        def ended(reason: Failure) -> None:
            seen.append(len(far.received))
            lost(reason)

        far.connectionLost = ended  # type: ignore[method-assign]
        p.transport.write(data)
        p.transport.loseConnection()
        self.net.flush()
        self.assertEqual(seen, [len(data)])
        self.assertEqual(bytes(far.received), data)
        self.assertEmpty(self.nodes)

    def test_64KiBWriteIsOneFrame(self) -> None:
        """
        A 64 KiB write into a routed session leaves the origin as one yamux
        Data frame: the end-to-end TLS records of the write (65,624 bytes) in
        one numbered-stream frame (5 bytes more), so the relay has one frame
        to forward, not pieces.
        """
        p, far = self._session(1)
        a = self.nodes[0]
        mux = a.links[self.nodes[1].nodeID].mux
        writes: list[bytes] = []
        write = mux.transport.write

        def recording(data: bytes) -> None:
            writes.append(data)
            write(data)

        self.patch(mux.transport, "write", recording)
        session = p.transport
        streamID = session.layer._live.streamID
        p.transport.write(b"z" * 64 * KiB)
        self.assertEqual(_dataFrames(writes, streamID), [5 + 64 * KiB + 4 * 22])
        self.net.flush()
        self.assertEqual(bytes(far.received), b"z" * 64 * KiB)
        p.transport.loseConnection()
        self.net.flush()
