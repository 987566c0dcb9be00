"""
Tests for L{appnpy.link.yamux}: the codec, the parser, flow control, fairness,
limits, keepalive and GoAway, mostly with two multiplexers joined in memory.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from appnpy.errors import GoAwayReceived, LinkError, ProtocolError, StreamLimitExceeded
from appnpy.link.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GOAWAY_PROTOCOL_ERROR,
    HEADER_SIZE,
    SEND_HIGH_WATER,
    SEND_LOW_WATER,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Multiplexer,
    MuxBudget,
    MuxConfig,
    Stream,
    decodeHeader,
    encodeHeader,
)

KiB = 1024
NO_KEEPALIVE = MuxConfig(keepaliveInterval=0, keepaliveTimeout=0)


def frame(type: int, flags: int, streamID: int, length: int, payload: bytes = b"") -> bytes:
    return encodeHeader(type, flags, streamID, length) + payload


def data(streamID: int, payload: bytes, flags: int = 0) -> bytes:
    return frame(TYPE_DATA, flags, streamID, len(payload), payload)


def parseFrames(raw: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """
    Split raw wire bytes into (type, flags, streamID, length, payload).
    """
    frames = []
    pos = 0
    while pos < len(raw):
        type, flags, sid, length = decodeHeader(raw[pos : pos + 12])
        pos += 12
        payload = b""
        if type == TYPE_DATA:
            payload = raw[pos : pos + length]
            pos += length
        frames.append((type, flags, sid, length, payload))
    return frames


class Recorder(Protocol):
    """
    Records what a stream delivers.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lost: Failure | None = None
        self.lostCount = 0

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason
        self.lostCount += 1


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    """
    A half-closeable recorder.
    """

    readLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        pass


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


@implementer(IPushProducer)
class Producer:
    """
    Writes C{chunk} to a stream each time C{produce} is called, unless paused.
    """

    def __init__(self, stream: Stream, chunk: int = 16 * KiB) -> None:
        self.stream = stream
        self.chunk = b"x" * chunk
        self.paused = False
        self.stopped = False
        self.pauses = 0
        self.written = 0

    def produce(self, limit: int) -> None:
        while not self.paused and self.written < limit:
            self.written += len(self.chunk)
            self.stream.write(self.chunk)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class Side:
    """
    One multiplexer with its transport and what it accepted.
    """

    def __init__(self, isClient: bool, clock: Clock, config: MuxConfig, factory: Any) -> None:
        self.transport = StringTransport()
        self.accepted: list[Stream] = []
        self.closed: list[Failure] = []
        self.factory = factory

        def accept(stream: Stream) -> None:
            self.accepted.append(stream)
            if self.factory is not None:
                stream.attachProtocol(self.factory())

        self.mux = Multiplexer(self.transport, isClient, accept, clock, config, self.closed.append)


class Pair:
    """
    Two multiplexers back to back in memory: a dialer and a listener.
    """

    def __init__(
        self,
        config: MuxConfig = NO_KEEPALIVE,
        serverConfig: MuxConfig | None = None,
        clientFactory: Any = Recorder,
        serverFactory: Any = Recorder,
    ) -> None:
        self.clock = Clock()
        self.client = Side(True, self.clock, config, clientFactory)
        self.server = Side(False, self.clock, serverConfig or config, serverFactory)

    def pump(self) -> None:
        """
        Move bytes both ways until both sides are quiet.
        """
        a, b = self.client, self.server
        while True:
            toServer = a.transport.value()
            a.transport.clear()
            toClient = b.transport.value()
            b.transport.clear()
            if not toServer and not toClient:
                return
            if toServer:
                b.mux.dataReceived(toServer)
            if toClient:
                a.mux.dataReceived(toClient)


def listener(config: MuxConfig = NO_KEEPALIVE, factory: Any = Recorder) -> Side:
    return Side(False, Clock(), config, factory)


# A valid byte stream from a dialer: two streams opened, data on both,
# a ping, one FIN.  Expected delivery per stream below.
STREAM1 = b"hello, " * 50 + b"world"
STREAM3 = bytes(range(256)) * 3
VALID_INPUT = b"".join(
    [
        frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0),
        data(1, STREAM1[:100]),
        frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 3, 4096),
        data(3, STREAM3[:500]),
        frame(TYPE_PING, FLAG_SYN, 0, 42),
        data(1, STREAM1[100:]),
        data(3, b""),
        data(3, STREAM3[500:], FLAG_FIN),
    ]
)


def feedChunks(chunks: list[bytes]) -> Side:
    side = listener()
    for chunk in chunks:
        side.mux.dataReceived(chunk)
    return side


class CodecTests(SynchronousTestCase):
    @given(
        st.integers(0, 3),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
    )
    def test_roundTrip(self, type: int, flags: int, sid: int, length: int) -> None:
        """
        decodeHeader inverts encodeHeader for every valid field combination.
        """
        raw = encodeHeader(type, flags, sid, length)
        self.assertEqual(len(raw), 12)
        self.assertEqual(decodeHeader(raw), (type, flags, sid, length))

    @given(st.binary(min_size=12, max_size=12))
    def test_anyTwelveBytes(self, raw: bytes) -> None:
        """
        Any 12 bytes decode, or raise ProtocolError exactly when the version
        or type is invalid.
        """
        try:
            decoded = decodeHeader(raw)
        except ProtocolError:
            self.assertTrue(raw[0] != 0 or raw[1] > 3)
        else:
            self.assertTrue(raw[0] == 0 and raw[1] <= 3)
            self.assertEqual(encodeHeader(*decoded), raw)

    def test_wrongSize(self) -> None:
        """
        A header that is not 12 bytes is a ProtocolError.
        """
        self.assertRaises(ProtocolError, decodeHeader, b"\x00" * 11)


class ParserTests(SynchronousTestCase):
    def assertDeliveredAsExpected(self, side: Side) -> None:
        self.assertEqual(side.closed, [])
        self.assertEqual([s.streamID for s in side.accepted], [1, 3])
        one, three = (s.protocol for s in side.accepted)
        self.assertEqual(one.received, STREAM1)
        self.assertEqual(three.received, STREAM3)
        self.assertTrue(side.accepted[1].remoteClosed)
        self.assertIn(frame(TYPE_PING, FLAG_ACK, 0, 42), side.transport.value())

    def test_wholeInput(self) -> None:
        """
        A valid multi-frame byte stream in one piece is delivered per stream.
        """
        self.assertDeliveredAsExpected(feedChunks([VALID_INPUT]))

    def test_splitAtEveryBoundary(self) -> None:
        """
        Splitting the byte stream in two at every byte boundary delivers the
        same data per stream.
        """
        for i in range(len(VALID_INPUT) + 1):
            self.assertDeliveredAsExpected(feedChunks([VALID_INPUT[:i], VALID_INPUT[i:]]))

    def test_byteAtATime(self) -> None:
        """
        One byte per read still parses.
        """
        self.assertDeliveredAsExpected(feedChunks([bytes([b]) for b in VALID_INPUT]))

    @given(st.lists(st.integers(0, len(VALID_INPUT)), max_size=30))
    def test_randomChunkings(self, cuts: list[int]) -> None:
        """
        Any chunking of the byte stream delivers the same data per stream.
        """
        points = [0, *sorted(cuts), len(VALID_INPUT)]
        chunks = [VALID_INPUT[a:b] for a, b in zip(points, points[1:], strict=False)]
        self.assertDeliveredAsExpected(feedChunks(chunks))

    @given(st.lists(st.integers(0, len(VALID_INPUT)), max_size=30))
    def test_memoryviewChunkings(self, cuts: list[int]) -> None:
        """
        Reads handed over as memoryviews (as a link's TLS layer does) parse
        as bytes do, for any chunking, and streams that do not take views
        get bytes.
        """
        points = [0, *sorted(cuts), len(VALID_INPUT)]
        chunks = [VALID_INPUT[a:b] for a, b in zip(points, points[1:], strict=False)]
        side = listener()
        for chunk in chunks:
            side.mux.dataReceived(memoryview(bytearray(chunk)))  # type: ignore[arg-type]
        self.assertDeliveredAsExpected(side)
        for stream in side.accepted:
            for piece in stream.protocol.chunks:
                self.assertIs(type(piece), bytes)

    @settings(max_examples=300)
    @given(st.lists(st.binary(max_size=64), max_size=8))
    def test_garbageNeverRaises(self, chunks: list[bytes]) -> None:
        """
        Garbage never raises out of dataReceived; when it breaks the
        protocol the link is aborted and onClose gets a ProtocolError.
        """
        side = feedChunks(chunks)
        for reason in side.closed:
            self.assertTrue(reason.check(ProtocolError))
            self.assertTrue(side.transport.disconnected)

    @given(st.binary(min_size=12, max_size=40))
    def test_garbageAfterValidFrames(self, garbage: bytes) -> None:
        """
        Garbage after valid traffic never raises out of dataReceived.
        """
        side = feedChunks([VALID_INPUT[:200], garbage])
        for reason in side.closed:
            self.assertTrue(reason.check(ProtocolError))

    def test_badVersionAborts(self) -> None:
        """
        A frame with version 1 aborts the link: GoAway(protocol error) is
        sent, the transport aborted, onClose gets a ProtocolError and the
        open streams' protocols get it too.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        protocol = side.accepted[0].protocol
        side.transport.clear()
        side.mux.dataReceived(b"\x01" + frame(TYPE_DATA, 0, 1, 0)[1:])
        self.assertEqual(
            parseFrames(side.transport.value()),
            [(TYPE_GO_AWAY, 0, 0, GOAWAY_PROTOCOL_ERROR, b"")],
        )
        self.assertTrue(side.transport.disconnected)
        [reason] = side.closed
        reason.trap(ProtocolError)
        protocol.lost.trap(ProtocolError)
        self.assertEqual(side.mux.streams, {})
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_unknownTypeAborts(self) -> None:
        """
        An unknown frame type is a protocol error.
        """
        side = listener()
        side.mux.dataReceived(encodeHeader(0, 0, 0, 0)[:1] + b"\x07" + b"\x00" * 10)
        side.closed[0].trap(ProtocolError)

    def test_cutThroughPieces(self) -> None:
        """
        A 64 KiB frame arriving in four 16 KiB reads is handed to the
        protocol in pieces as it arrives, not held until complete.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        protocol = side.accepted[0].protocol
        payload = bytes(range(256)) * 256
        raw = data(1, payload)
        side.mux.dataReceived(raw[: 16 * KiB])
        self.assertEqual(len(protocol.received), 16 * KiB - 12)
        for i in range(1, 5):
            side.mux.dataReceived(raw[i * 16 * KiB : (i + 1) * 16 * KiB])
        self.assertEqual(protocol.received, payload)
        self.assertEqual(len(protocol.chunks), 5)
        self.assertTrue(all(type(c) is bytes for c in protocol.chunks))

    def test_wholeFramesOneCallEach(self) -> None:
        """
        Several complete frames in one read are delivered with one
        dataReceived call per frame.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        protocol = side.accepted[0].protocol
        side.mux.dataReceived(b"".join(data(1, bytes([i]) * 1000) for i in range(10)))
        self.assertEqual(len(protocol.chunks), 10)
        self.assertEqual(side.mux.bytesReceived, 10000)

    def test_unknownStreamIgnored(self) -> None:
        """
        Frames for a stream that is not open are ignored (their payload is
        skipped) and later frames still parse.
        """
        side = listener()
        side.mux.dataReceived(
            data(9, b"z" * 100)
            + frame(TYPE_WINDOW_UPDATE, 0, 9, 100)
            + frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0)
            + data(1, b"ok")
        )
        self.assertEqual(side.closed, [])
        self.assertEqual(side.accepted[0].protocol.received, b"ok")

    def test_wrongParitySyn(self) -> None:
        """
        A SYN from a dialer with an even stream ID is a protocol error.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0))
        side.closed[0].trap(ProtocolError)

    def test_reusedSyn(self) -> None:
        """
        A SYN for a stream ID already used (even if since closed) is a
        protocol error.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_RST, 1, 0))
        self.assertEqual(side.mux.streams, {})
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        side.closed[0].trap(ProtocolError)

    def test_duplicateOpenSyn(self) -> None:
        """
        A second SYN for an open stream is a protocol error.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) * 2)
        side.closed[0].trap(ProtocolError)

    def test_slightlyReorderedSyns(self) -> None:
        """
        SYNs slightly out of order (as go-yamux can send them) are accepted.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 5, 0))
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 3, 0))
        self.assertEqual(side.closed, [])
        self.assertEqual(sorted(side.mux.streams), [3, 5])


class SendPathTests(SynchronousTestCase):
    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(0, 200 * KiB), st.booleans()), min_size=1, max_size=8),
        st.integers(0, 400 * KiB),
        st.booleans(),
        st.booleans(),
    )
    def test_writeWithRoomIsWrite(
        self, writes: list[tuple[int, bool]], window: int, paused: bool, buffers: bool
    ) -> None:
        """
        L{Stream.writeWithRoom} puts the same bytes on the link as L{write}
        of its payload, whether the frame goes as it is (the header in its
        room) or the window, a paused link or a size over the frame limit
        sends it the long way; and it leaves the same stream state.
        """
        wires = []
        for useRoom in (False, True):
            side = listener()
            if buffers:
                # A transport that takes buffers, as the link's TLS does (it
                # uses them at once: a copy stands for that here).
                write = side.transport.write
                side.transport.takesBuffers = True  # type: ignore[attr-defined]
                side.transport.write = lambda data, w=write: w(bytes(data))  # type: ignore[method-assign, misc]
            side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, window))
            stream = side.accepted[0]
            if paused:
                side.mux.pauseProducing()
            side.transport.clear()
            for i, (size, inRead) in enumerate(writes):
                payload = bytes([i % 251]) * size
                room = memoryview(bytearray(HEADER_SIZE) + payload)

                def send(
                    payload: bytes = payload,
                    room: memoryview = room,
                    stream: Stream = stream,
                    useRoom: bool = useRoom,
                ) -> None:
                    if useRoom:
                        stream.writeWithRoom(room)
                    else:
                        stream.write(payload)

                if inRead:
                    # From inside a read: collected with what the read makes.
                    side.mux.callAfterRead(send)
                    side.mux.dataReceived(frame(TYPE_PING, FLAG_SYN, 0, i))
                else:
                    send()
            if paused:
                side.mux.resumeProducing()
            wires.append((side.transport.value(), stream.bytesSent, stream._sendWindow))
        self.assertEqual(wires[0], wires[1])

    def test_oneWritePerFrame(self) -> None:
        """
        A write that fits the window goes out as one transport write holding
        header and payload.
        """
        side = listener()
        writes: list[bytes] = []
        side.transport.write = writes.append  # type: ignore[method-assign]
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        writes.clear()
        size = MuxConfig().maxFramePayload
        stream.write(b"a" * size)
        self.assertEqual(writes, [encodeHeader(TYPE_DATA, 0, 1, size) + b"a" * size])
        self.assertEqual(len(writes[0]), 66 * KiB)  # a 64 KiB write and its TLS overhead fit
        self.assertEqual(stream.bytesSent, size)
        self.assertEqual(side.mux.bytesSent, size)

    def test_largeWriteSplitIntoMaxFrames(self) -> None:
        """
        A write larger than maxFramePayload goes out in max-size frames.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        side.transport.clear()
        side.accepted[0].write(b"b" * 150 * KiB)
        lengths = [f[3] for f in parseFrames(side.transport.value())]
        size = MuxConfig().maxFramePayload
        self.assertEqual(lengths, [size, size, 150 * KiB - 2 * size])

    def test_streamInterfaces(self) -> None:
        """
        Streams provide ITransport, IPushProducer and IConsumer; the
        multiplexer provides IPushProducer and registers as a streaming
        producer on the link.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        for iface in (ITransport, IPushProducer, IConsumer):
            verifyObject(iface, stream)
        verifyObject(IPushProducer, side.mux)
        self.assertIs(side.transport.producer, side.mux)
        self.assertTrue(side.transport.streaming)
        self.assertEqual(stream.getPeer(), side.transport.getPeer())
        self.assertEqual(stream.getHost(), side.transport.getHost())

    def test_idleStreamsAreSmall(self) -> None:
        """
        Streams use __slots__ and allocate no buffers while idle: 10,000
        idle streams cost well under 2 KiB each.
        """
        self.assertFalse(hasattr(Stream(listener().mux, 2, True), "__dict__"))
        mux = Multiplexer(
            StringTransport(),
            True,
            lambda s: None,
            Clock(),
            MuxConfig(
                maxPendingOutbound=20000,
                maxStreams=20000,
                budget=MuxBudget(maxWindow=20000 * 256 * KiB),
                keepaliveInterval=0,
                keepaliveTimeout=0,
            ),
        )
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(10000):
                mux.openStream()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        perStream = (after - before) / 10000
        self.assertLess(perStream, 2 * KiB, perStream)


class TwoEndedTests(SynchronousTestCase):
    def test_openFromBothSides(self) -> None:
        """
        The dialer opens odd stream IDs from 1, the listener even ones from
        2; each side accepts the other's streams and both see them ACKed.
        """
        pair = Pair()
        c1, c2 = pair.client.mux.openStream(), pair.client.mux.openStream()
        s1 = pair.server.mux.openStream()
        self.assertEqual((c1.streamID, c2.streamID, s1.streamID), (1, 3, 2))
        pair.pump()
        self.assertEqual([s.streamID for s in pair.server.accepted], [1, 3])
        self.assertEqual([s.streamID for s in pair.client.accepted], [2])
        self.assertEqual(pair.client.mux._unacked, 0)
        self.assertEqual(pair.server.mux._unacked, 0)

    def test_echo(self) -> None:
        """
        Data written on a stream arrives at the peer's protocol, and its
        echo comes back.
        """
        pair = Pair(serverFactory=Echo)
        stream = pair.client.mux.openStream()
        client = Recorder()
        stream.attachProtocol(client)
        stream.write(b"ping")
        stream.writeSequence([b" ", b"pong"])
        pair.pump()
        self.assertEqual(client.received, b"ping pong")
        self.assertEqual(stream.bytesReceived, 9)

    def test_bufferedUntilAttached(self) -> None:
        """
        Data arriving before a protocol is attached (and a FIN) is kept and
        delivered on attach, in order.
        """
        pair = Pair(serverFactory=None)
        stream = pair.client.mux.openStream()
        stream.write(b"early ")
        stream.write(b"bird")
        stream.loseConnection()
        pair.pump()
        [accepted] = pair.server.accepted
        protocol = HalfCloser()
        accepted.attachProtocol(protocol)
        self.assertEqual(protocol.received, b"early bird")
        self.assertTrue(protocol.readLost)
        self.assertIsNone(protocol.lost)

    def test_halfClose(self) -> None:
        """
        loseConnection is a half-close: the peer's half-closeable protocol
        gets readConnectionLost and can still reply; when both have FIN'd,
        both protocols get ConnectionDone once and the streams are freed.
        """
        pair = Pair(serverFactory=HalfCloser)
        stream = pair.client.mux.openStream()
        client = Recorder()
        stream.attachProtocol(client)
        stream.write(b"request")
        stream.loseConnection()
        stream.write(b"dropped")
        pair.pump()
        [accepted] = pair.server.accepted
        server = accepted.protocol
        self.assertEqual(server.received, b"request")
        self.assertTrue(server.readLost)
        self.assertTrue(stream.localClosed and accepted.remoteClosed)
        self.assertIsNone(server.lost)
        accepted.write(b"response")
        accepted.loseConnection()
        pair.pump()
        self.assertEqual(client.received, b"response")
        client.lost.trap(ConnectionDone)
        server.lost.trap(ConnectionDone)
        self.assertEqual((client.lostCount, server.lostCount), (1, 1))
        self.assertEqual(pair.client.mux.streams, {})
        self.assertEqual(pair.server.mux.streams, {})

    def test_finAfterBufferedData(self) -> None:
        """
        loseConnection with data still waiting for window sends the FIN only
        after that data.
        """
        pair = Pair()
        stream = pair.client.mux.openStream()
        payload = b"q" * 600 * KiB
        stream.write(payload)
        stream.loseConnection()
        self.assertFalse(stream.localClosed)
        pair.pump()
        [accepted] = pair.server.accepted
        self.assertEqual(accepted.protocol.received, payload)
        self.assertTrue(stream.localClosed)
        self.assertTrue(accepted.remoteClosed)

    def test_reset(self) -> None:
        """
        abortConnection resets the stream: our protocol gets
        ConnectionAborted, the peer's ConnectionLost, both streams are freed.
        """
        pair = Pair()
        stream = pair.client.mux.openStream()
        client = Recorder()
        stream.attachProtocol(client)
        stream.write(b"x")
        pair.pump()
        stream.abortConnection()
        client.lost.trap(ConnectionAborted)
        pair.pump()
        pair.server.accepted[0].protocol.lost.trap(ConnectionLost)
        self.assertEqual(pair.client.mux.streams, {})
        self.assertEqual(pair.server.mux.streams, {})
        self.assertEqual(client.lostCount, 1)

    def test_linkLostPropagates(self) -> None:
        """
        connectionLost of the link reaches every open stream's protocol
        with the link's reason, and onClose is called once.
        """
        pair = Pair()
        protocols = []
        for _ in range(3):
            stream = pair.client.mux.openStream()
            protocols.append(Recorder())
            stream.attachProtocol(protocols[-1])
        pair.pump()
        reason = Failure(ConnectionLost("cable cut"))
        pair.client.mux.connectionLost(reason)
        pair.client.mux.connectionLost(reason)
        for p in protocols:
            self.assertIs(p.lost, reason)
            self.assertEqual(p.lostCount, 1)
        self.assertEqual(pair.client.closed, [reason])
        self.assertEqual(pair.client.mux.streams, {})
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def test_protocolExceptionResetsStream(self) -> None:
        """
        A stream protocol raising in dataReceived resets only that stream.
        """

        class Broken(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise ValueError("boom")

        pair = Pair(serverFactory=Broken)
        stream = pair.client.mux.openStream()
        client = Recorder()
        stream.attachProtocol(client)
        stream.write(b"x")
        pair.pump()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        client.lost.trap(ConnectionLost)
        self.assertEqual(pair.client.closed, [])


class FlowControlTests(SynchronousTestCase):
    def test_sendWindowRespected(self) -> None:
        """
        Never more than the peer's window is sent; the rest waits for a
        window update.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        side.transport.clear()
        stream.write(b"w" * 300 * KiB)
        sent = sum(f[3] for f in parseFrames(side.transport.value()))
        self.assertEqual(sent, 256 * KiB)
        side.transport.clear()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, 0, 1, 10 * KiB))
        self.assertEqual([f[3] for f in parseFrames(side.transport.value())], [10 * KiB])
        side.transport.clear()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, 0, 1, 100 * KiB))
        self.assertEqual([f[3] for f in parseFrames(side.transport.value())], [34 * KiB])

    def test_windowViolationAborts(self) -> None:
        """
        A peer sending more than the window we granted is a protocol error,
        detected from the header before any payload is buffered.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        side.accepted[0].pauseProducing()
        side.mux.dataReceived(data(1, b"a" * 200 * KiB))
        self.assertEqual(side.closed, [])
        side.mux.dataReceived(encodeHeader(TYPE_DATA, 0, 1, 57 * KiB))
        side.closed[0].trap(ProtocolError)
        self.assertTrue(side.transport.disconnected)
        self.assertIn(frame(TYPE_GO_AWAY, 0, 0, GOAWAY_PROTOCOL_ERROR), side.transport.value())

    def test_windowViolatingPeerTwoEnded(self) -> None:
        """
        A peer that ignores our window is aborted; its streams and ours are
        closed with the protocol error.
        """
        pair = Pair()
        stream = pair.client.mux.openStream()
        pair.pump()
        pair.server.accepted[0].pauseProducing()
        stream._sendWindow = 10 * 1024 * KiB  # a misbehaving sender
        stream.write(b"v" * 512 * KiB)
        pair.pump()
        pair.server.closed[0].trap(ProtocolError)
        self.assertEqual(pair.client.mux.goAwayCode, GOAWAY_PROTOCOL_ERROR)

    def test_windowUpdateAtHalf(self) -> None:
        """
        A window update goes out once half the window has been consumed, not
        per frame.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        side.transport.clear()
        for _ in range(7):
            side.mux.dataReceived(data(1, b"c" * 16 * KiB))
        self.assertEqual(side.transport.value(), b"")
        side.mux.dataReceived(data(1, b"c" * 16 * KiB))
        updates = [f for f in parseFrames(side.transport.value()) if f[0] == TYPE_WINDOW_UPDATE]
        self.assertEqual(len(updates), 1)
        self.assertGreaterEqual(updates[0][3], 128 * KiB)

    def test_pausedReceiverBackpressure(self) -> None:
        """
        A receiver that pauses buffers at most the window and sends no
        updates; the sender buffers at most its high-water mark plus one
        write, and its producer is paused.  Resuming lets everything through.
        """
        pair = Pair()
        stream = pair.client.mux.openStream()
        producer = Producer(stream)
        stream.registerProducer(producer, True)
        pair.pump()
        [accepted] = pair.server.accepted
        accepted.pauseProducing()
        for _ in range(10):
            producer.produce(2048 * KiB)
            pair.pump()
        self.assertTrue(producer.paused)
        self.assertLessEqual(len(accepted._recvBuf), 256 * KiB)
        self.assertEqual(accepted.protocol.received, b"")
        self.assertLessEqual(len(stream._sendBuf), SEND_HIGH_WATER + 16 * KiB)
        accepted.resumeProducing()
        while producer.written < 2048 * KiB or stream._sendBuf:
            producer.produce(2048 * KiB)
            pair.pump()
        self.assertEqual(len(accepted.protocol.received), producer.written)

    def test_pausedReceiveDefersClose(self) -> None:
        """
        A clean close while paused waits behind the buffered data: data,
        then connectionLost, on resume.
        """
        pair = Pair()
        stream = pair.client.mux.openStream()
        pair.pump()
        [accepted] = pair.server.accepted
        accepted.pauseProducing()
        stream.write(b"tail")
        stream.loseConnection()
        accepted.loseConnection()
        pair.pump()
        protocol = accepted.protocol
        self.assertIsNone(protocol.lost)
        self.assertEqual(pair.server.mux.streams, {})
        accepted.resumeProducing()
        self.assertEqual(protocol.received, b"tail")
        protocol.lost.trap(ConnectionDone)

    def test_autoTuningGrowth(self) -> None:
        """
        When window updates follow each other within twice the RTT, the
        receive window doubles up to maxStreamWindow, and the link's extra
        grants are accounted (and released when the stream closes).
        """
        config = MuxConfig(maxStreamWindow=2048 * KiB, keepaliveInterval=0, keepaliveTimeout=0)
        pair = Pair(config)
        pair.server.mux.rtt = 0.1
        stream = pair.client.mux.openStream()
        pair.pump()
        [accepted] = pair.server.accepted
        for _ in range(64):
            stream.write(b"g" * 128 * KiB)
            pair.pump()
        self.assertEqual(accepted._recvMax, 2048 * KiB)
        self.assertEqual(pair.server.mux._extraGranted, 1792 * KiB)
        self.assertEqual(len(accepted.protocol.received), 8192 * KiB)
        stream.loseConnection()
        accepted.loseConnection()
        pair.pump()
        self.assertEqual(pair.server.mux._extraGranted, 0)

    def test_noGrowthWhenUpdatesSlow(self) -> None:
        """
        Updates further apart than twice the RTT do not grow the window.
        """
        pair = Pair()
        pair.server.mux.rtt = 0.01
        stream = pair.client.mux.openStream()
        pair.pump()
        [accepted] = pair.server.accepted
        for _ in range(16):
            pair.clock.advance(1)
            stream.write(b"s" * 64 * KiB)
            pair.pump()
        self.assertEqual(accepted._recvMax, 256 * KiB)
        self.assertEqual(len(accepted.protocol.received), 1024 * KiB)

    def test_linkBudgetCapsGrowth(self) -> None:
        """
        Growth stops when the extra windows across streams would exceed
        maxLinkReceiveBuffer.
        """
        config = MuxConfig(maxLinkReceiveBuffer=256 * KiB, keepaliveInterval=0, keepaliveTimeout=0)
        pair = Pair(config)
        pair.server.mux.rtt = 0.1
        first, second = pair.client.mux.openStream(), pair.client.mux.openStream()
        pair.pump()
        for _ in range(16):
            first.write(b"1" * 128 * KiB)
            pair.pump()
        for _ in range(16):
            second.write(b"2" * 128 * KiB)
            pair.pump()
        a, b = pair.server.accepted
        self.assertEqual(a._recvMax, 512 * KiB)
        self.assertEqual(b._recvMax, 256 * KiB)
        self.assertEqual(pair.server.mux._extraGranted, 256 * KiB)


class ThrottledTransport(StringTransport):
    """
    Pauses its producer once C{budget} bytes were written since the last
    C{drain}.
    """

    budget = 10 * KiB

    def __init__(self) -> None:
        super().__init__()
        self.sinceDrain = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.sinceDrain += len(data)
        if self.sinceDrain >= self.budget and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.sinceDrain = 0
        self.producer.resumeProducing()


class FairnessTests(SynchronousTestCase):
    def test_hundredStreamsEqualProgress(self) -> None:
        """
        With 100 streams all waiting on a congested link, successive resumes
        send one frame per stream in a rotating order: every stream makes
        nearly the same progress, and all finish.
        """
        transport = ThrottledTransport()
        config = MuxConfig(
            maxFramePayload=1 * KiB, maxPendingOutbound=200, keepaliveInterval=0, keepaliveTimeout=0
        )
        mux = Multiplexer(transport, True, lambda s: None, Clock(), config)
        mux.pauseProducing()
        streams = [mux.openStream() for _ in range(100)]
        for s in streams:
            s.write(b"f" * 20 * KiB)
        transport.clear()
        sent: dict[int, int] = {s.streamID: 0 for s in streams}
        for round in range(1, 300):
            transport.drain()
            for type, _flags, sid, length, _payload in parseFrames(transport.value()):
                self.assertEqual(type, TYPE_DATA)
                sent[sid] += length
            transport.clear()
            if round % 10 == 0:
                progress = sent.values()
                self.assertLessEqual(max(progress) - min(progress), 1 * KiB, round)
            if not mux._ready:
                break
        self.assertEqual(set(sent.values()), {20 * KiB})

    def test_resumeRotatesFirstStream(self) -> None:
        """
        Each resume starts with a different stream.
        """
        transport = ThrottledTransport()
        transport.budget = 1
        config = MuxConfig(maxFramePayload=1 * KiB, keepaliveInterval=0, keepaliveTimeout=0)
        mux = Multiplexer(transport, True, lambda s: None, Clock(), config)
        mux.pauseProducing()
        streams = [mux.openStream() for _ in range(3)]
        for s in streams:
            s.write(b"r" * 10 * KiB)
        transport.clear()
        firsts = []
        for _ in range(6):
            transport.drain()
            firsts.append(parseFrames(transport.value())[0][2])
            transport.clear()
        self.assertEqual(len(set(firsts[:3])), 3)


class LimitTests(SynchronousTestCase):
    def test_inboundStreamLimit(self) -> None:
        """
        An inbound SYN beyond maxStreams is reset; the opener's protocol sees
        the reset.
        """
        pair = Pair(serverConfig=MuxConfig(maxStreams=2, keepaliveInterval=0, keepaliveTimeout=0))
        streams = [pair.client.mux.openStream() for _ in range(3)]
        protocols = [Recorder() for _ in streams]
        for s, p in zip(streams, protocols, strict=False):
            s.attachProtocol(p)
        pair.pump()
        self.assertEqual(len(pair.server.accepted), 2)
        protocols[2].lost.trap(ConnectionLost)
        self.assertIsNone(protocols[0].lost)
        self.assertEqual(sorted(pair.client.mux.streams), [1, 3])
        self.assertEqual(pair.client.mux._unacked, 0)

    def test_outboundStreamLimit(self) -> None:
        """
        openStream raises StreamLimitExceeded at maxStreams open streams.
        """
        pair = Pair(MuxConfig(maxStreams=2, keepaliveInterval=0, keepaliveTimeout=0))
        pair.client.mux.openStream()
        pair.client.mux.openStream()
        pair.pump()
        self.assertRaises(StreamLimitExceeded, pair.client.mux.openStream)

    def test_ackBacklogLimit(self) -> None:
        """
        Beyond maxPendingOutbound un-ACKed streams openStream raises; the
        peer's ACKs make room again.
        """
        pair = Pair(MuxConfig(maxPendingOutbound=3, keepaliveInterval=0, keepaliveTimeout=0))
        for _ in range(3):
            pair.client.mux.openStream()
        self.assertRaises(StreamLimitExceeded, pair.client.mux.openStream)
        pair.pump()
        pair.client.mux.openStream()

    def test_abortedUnackedStreamFreesBacklog(self) -> None:
        """
        Resetting a stream that was never ACKed frees its backlog slot.
        """
        pair = Pair(MuxConfig(maxPendingOutbound=1, keepaliveInterval=0, keepaliveTimeout=0))
        pair.client.mux.openStream().abortConnection()
        pair.client.mux.openStream()


class KeepaliveTests(SynchronousTestCase):
    def test_pingRtt(self) -> None:
        """
        ping() fires with the round-trip time measured on the reactor's
        clock, and rtt is updated.
        """
        pair = Pair()
        results: list[float] = []
        pair.client.mux.ping().addCallback(results.append)
        pair.clock.advance(0.25)
        pair.pump()
        self.assertEqual(results, [0.25])
        self.assertEqual(pair.client.mux.rtt, 0.25)

    def test_answersPing(self) -> None:
        """
        A Ping SYN is answered with a Ping ACK echoing the opaque value.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_PING, FLAG_SYN, 0, 0xDEADBEEF))
        self.assertEqual(side.transport.value(), frame(TYPE_PING, FLAG_ACK, 0, 0xDEADBEEF))

    def test_keepalivePingsUpdateRtt(self) -> None:
        """
        Every keepaliveInterval a Ping SYN goes out; its answer sets rtt.
        """
        pair = Pair(MuxConfig())
        pair.clock.advance(15)
        [ping] = parseFrames(pair.client.transport.value())
        self.assertEqual(ping[:2], (TYPE_PING, FLAG_SYN))
        pair.clock.advance(0.5)
        pair.pump()
        self.assertEqual(pair.client.mux.rtt, 0.5)
        self.assertEqual(pair.client.closed, [])

    def test_keepaliveTimeout(self) -> None:
        """
        With no frame received for keepaliveTimeout, the link is aborted,
        onClose gets a LinkError naming the timeout, and no timer is left.
        """
        side = listener(MuxConfig())
        clock = side.mux._reactor
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        protocol = side.accepted[0].protocol
        clock.advance(59)
        self.assertEqual(side.closed, [])
        clock.advance(1)
        [reason] = side.closed
        reason.trap(LinkError)
        self.assertEqual(str(reason.value.args[0]), "keepalive timeout: no frame for 60 s")
        self.assertIs(protocol.lost, reason)
        self.assertTrue(side.transport.disconnected)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_trafficPostponesTimeout(self) -> None:
        """
        Any frame received restarts the keepalive timeout.
        """
        side = listener(MuxConfig())
        clock = side.mux._reactor
        clock.advance(50)
        side.mux.dataReceived(frame(TYPE_PING, FLAG_ACK, 0, 1))
        clock.advance(50)
        self.assertEqual(side.closed, [])
        clock.advance(10)
        self.assertEqual(len(side.closed), 1)

    def test_timersCancelledOnClose(self) -> None:
        """
        Closing the link cancels every timer and fails pending pings.
        """
        pair = Pair(MuxConfig())
        d = pair.client.mux.ping()
        failures: list[Failure] = []
        d.addErrback(failures.append)
        pair.client.mux.connectionLost(Failure(ConnectionDone()))
        pair.server.mux.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        failures[0].trap(ConnectionDone)


class GoAwayTests(SynchronousTestCase):
    def test_goAwayReceived(self) -> None:
        """
        After the peer's GoAway, openStream raises GoAwayReceived while
        existing streams keep working.
        """
        pair = Pair(serverFactory=Echo)
        stream = pair.client.mux.openStream()
        protocol = Recorder()
        stream.attachProtocol(protocol)
        pair.pump()
        pair.server.mux.goAway()
        pair.pump()
        self.assertRaises(GoAwayReceived, pair.client.mux.openStream)
        stream.write(b"still here")
        pair.pump()
        self.assertEqual(protocol.received, b"still here")

    def test_goAwaySentRefusesInbound(self) -> None:
        """
        After we send GoAway, inbound SYNs are reset.
        """
        pair = Pair()
        pair.server.mux.goAway()
        stream = pair.client.mux._nextStreamID
        pair.client.mux._goAwayReceived = False  # the peer opens before reading it
        s = pair.client.mux.openStream()
        p = Recorder()
        s.attachProtocol(p)
        pair.pump()
        self.assertEqual(stream, s.streamID)
        self.assertEqual(pair.server.accepted, [])
        p.lost.trap(ConnectionLost)

    def test_abortSendsGoAway(self) -> None:
        """
        abort(code) sends GoAway(code), aborts the transport and closes.
        """
        side = listener(MuxConfig())
        side.mux.abort(2)
        self.assertEqual(side.transport.value(), frame(TYPE_GO_AWAY, 0, 0, 2))
        self.assertTrue(side.transport.disconnected)
        side.closed[0].trap(ConnectionAborted)
        self.assertEqual(side.mux._reactor.getDelayedCalls(), [])


class ProducerTests(SynchronousTestCase):
    def test_linkBackpressurePausesStreamProducer(self) -> None:
        """
        While the link transport has paused the multiplexer, a stream's
        writes are buffered and its producer is paused above the high-water
        mark; resuming the link drains the buffer and resumes the producer.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        producer = Producer(stream)
        stream.registerProducer(producer, True)
        side.transport.clear()
        side.mux.pauseProducing()
        producer.produce(1024 * KiB)
        self.assertTrue(producer.paused)
        self.assertEqual(side.transport.value(), b"")
        self.assertEqual(producer.written, SEND_HIGH_WATER + 16 * KiB)
        side.mux.resumeProducing()
        self.assertFalse(producer.paused)
        self.assertIsNone(stream._sendBuf)
        sent = sum(f[3] for f in parseFrames(side.transport.value()))
        self.assertEqual(sent, producer.written)

    def test_pullProducer(self) -> None:
        """
        A pull producer is asked for more from the reactor (never from
        inside its own write) until the window is used up and the send
        buffer passes the low-water mark; it is stopped when the stream
        closes.
        """
        side = listener()
        clock = side.mux._reactor
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        calls: list[str] = []
        depth = [0]

        class Pull:
            def resumeProducing(self) -> None:
                depth[0] += 1
                calls.append(f"resume{depth[0]}")
                stream.write(b"p" * 1000)
                depth[0] -= 1

            def stopProducing(self) -> None:
                calls.append("stop")

        stream.registerProducer(Pull(), False)
        self.assertEqual(calls, [])
        clock.advance(0)
        self.assertEqual(set(calls), {"resume1"})
        # Only failure detection watches the data sent; no pull is pending.
        watching = [c.func for c in clock.getDelayedCalls()]
        self.assertEqual(watching, [side.mux._failureCheck])
        self.assertGreater(len(stream._sendBuf), SEND_LOW_WATER)
        self.assertEqual(stream.bytesSent, 256 * KiB)
        count = len(calls)
        stream.abortConnection()
        self.assertEqual(len(calls), count + 1)
        self.assertEqual(calls[-1], "stop")
        self.assertEqual([c.func for c in clock.getDelayedCalls()], [side.mux._failureCheck])

    def test_registerTwiceFails(self) -> None:
        """
        Registering a second producer is an error, as on TCP transports.
        """
        side = listener()
        side.mux.dataReceived(frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
        stream = side.accepted[0]
        stream.registerProducer(Producer(stream), True)
        self.assertRaises(RuntimeError, stream.registerProducer, Producer(stream), True)
