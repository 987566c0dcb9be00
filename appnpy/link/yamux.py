"""
The multiplexer: many independent, flow-controlled streams over one link,
speaking the yamux wire format (libp2p/specs yamux/README.md).

Every frame starts with a 12-byte big-endian header::

    version (u8, 0) | type (u8) | flags (u16) | stream ID (u32) | length (u32)

Only Data frames carry a payload (C{length} bytes).  For WindowUpdate the
length is a window delta, for Ping an opaque value echoed by the answer, for
GoAway an error code.

Performance notes (see shared/reference/performance.md): payload is handed to
the stream cut-through, straight out of the bytes the link delivered, so a
frame is never copied into an intermediate buffer unless its stream cannot take
it yet; a frame goes out as one C{header + payload} write; windows start at the
spec's 256 KiB and grow by auto-tuning (as go-yamux does), because a fixed
window caps a single stream at about 0.6x of the link.

One module, over the usual 600 lines, because it is one job that reads best
whole: L{Stream} and L{Multiplexer} are two halves of one yamux session that
share per-frame state directly (the multiplexer hands payload to a stream's
C{_dataIn}; a stream checks the multiplexer's C{_paused} and writes to its
transport).  Splitting them would either make that internal state public
API between modules or put an indirection on every frame of the bulk path;
the header codec is a few lines the parser inlines anyway.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.errors import GoAwayReceived, LinkError, ProtocolError, StreamLimitExceeded
from appnpy.link.budget import MuxBudget

__all__ = [
    "GoAwayReceived",
    "MuxBudget",
    "MuxConfig",
    "Multiplexer",
    "Stream",
    "StreamLimitExceeded",
    "decodeHeader",
    "encodeHeader",
    "withNodeBudget",
    "TYPE_DATA",
    "TYPE_WINDOW_UPDATE",
    "TYPE_PING",
    "TYPE_GO_AWAY",
    "FLAG_SYN",
    "FLAG_ACK",
    "FLAG_FIN",
    "FLAG_RST",
    "GOAWAY_NORMAL",
    "GOAWAY_PROTOCOL_ERROR",
    "GOAWAY_INTERNAL_ERROR",
]

VERSION = 0
TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3

FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8

GOAWAY_NORMAL = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

HEADER_SIZE = 12
_HEADER = struct.Struct(">BBHII")
_pack = _HEADER.pack
_unpackFrom = _HEADER.unpack_from
_MAX_U32 = 0xFFFFFFFF

# A stream's unsent data above this pauses its producer; it resumes once the
# buffer has drained to half of it (hysteresis, so a producer writing exactly
# the mark does not flap).  A stream the peer opened also stops granting the
# peer receive window above it, producer or not, so a peer that writes into
# an echo and never reads fills at most this plus one receive window.
SEND_HIGH_WATER = 64 * 1024
SEND_LOW_WATER = SEND_HIGH_WATER // 2

# Before any RTT is measured, a window update that follows the previous one
# within this many seconds counts as "faster than the round trip" for
# auto-tuning: consuming half a window that quickly means the window, not the
# reader, limits the stream.
_UNKNOWN_RTT_GROWTH_INTERVAL = 0.005

# Frames shorter than this written while a read is parsed are collected and
# written together when it is done; longer ones (bulk data) go at once.
_COALESCE_BELOW = 16 * 1024

# The suspicion timeout before any RTT has been measured (RFC 2988's
# initial RTO): the link-up ping gives a measurement one round trip later.
_UNMEASURED_SUSPECT_TIMEOUT = 3.0
# Slack when comparing times, so a timer that fires a rounding error early
# counts as on time (rescheduling it for 1e-17 s would spin).
_EPSILON = 1e-6

# go-yamux allocates a stream ID and sends its SYN without holding a lock, so
# SYNs may arrive slightly out of order.  IDs skipped by at most this many
# positions stay acceptable for a while; anything else below the highest seen
# ID is a reuse and a protocol error.
_SYN_REORDER_SLACK = 32


def withNodeBudget(config: MuxConfig) -> MuxConfig:
    """
    C{config} as one node's links share it: with a receive budget of the
    node's own, unless C{config} already carries one.
    """
    if config.budget is not None:
        return config
    return attrs.evolve(config, budget=MuxBudget())


def _peerText(transport: ITransport) -> str:
    """
    A link's peer address for log lines, as C{host:port}.
    """
    peer = transport.getPeer()
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return f"[{peer.host}]:{peer.port}" if ":" in peer.host else f"{peer.host}:{peer.port}"
    return "an unknown address"


def encodeHeader(type: int, flags: int, streamID: int, length: int) -> bytes:
    """
    Encode a yamux frame header (version 0).
    """
    return _pack(VERSION, type, flags, streamID, length)


def decodeHeader(data: bytes) -> tuple[int, int, int, int]:
    """
    Decode a 12-byte frame header into C{(type, flags, streamID, length)}.

    @raise ProtocolError: wrong size, unknown version or unknown type.
    """
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"yamux header must be 12 bytes, got {len(data)}")
    version, type, flags, streamID, length = _HEADER.unpack(data)
    _checkHeader(version, type)
    return type, flags, streamID, length


def _checkHeader(version: int, type: int) -> None:
    if version != VERSION:
        raise ProtocolError(f"yamux version {version} is not supported")
    if type > TYPE_GO_AWAY:
        raise ProtocolError(f"unknown yamux frame type {type}")


@attrs.frozen
class MuxConfig:
    """
    Tunables of one multiplexed link.
    """

    # Spec value; what the peer may assume for every new stream.
    initialWindow: int = 256 * 1024
    # Auto-tuning ceiling per stream.
    maxStreamWindow: int = 16 * 1024 * 1024
    # Sum of the windows granted beyond the initial one, across all streams.
    maxLinkReceiveBuffer: int = 64 * 1024 * 1024
    # Largest data frame we send: 66 KiB with its header, room for one
    # 64 KiB write as one frame, and for the 64 KiB of a routed session's
    # end-to-end TLS records (four 22-byte record overheads) in its numbered
    # stream frame (5 bytes).  The link's TLS encrypts a frame in one call
    # (appnpy.link.bulktls), so its short fifth record costs no Python work;
    # a write split over two frames would cost a frame's whole path twice.
    maxFramePayload: int = 66 * 1024 - 12
    # Concurrently open streams per link (both directions); an excess inbound
    # SYN is reset.  512 as the libp2p DoS-mitigation guide advises ("surely
    # you don't need >512"; rust-yamux's default too); hashicorp/yamux
    # bounds its accept backlog at 256.
    maxStreams: int = 512
    # Our streams opened but not yet acknowledged by the peer.
    maxPendingOutbound: int = 256
    # Seconds between keepalive pings (0 disables them).
    keepaliveInterval: float = 15.0
    # No frame received for this long: the link is declared dead (0 disables).
    keepaliveTimeout: float = 60.0
    # Failure detection while something waits on the link (data or a SYN
    # sent, a ping out) and nothing has come back: the suspicion timeout is
    # max(suspectMinimum, 4 x smoothed RTT + 4 x RTT variation), like TCP's
    # retransmission timeout; a probe Ping goes out at half of it, the link
    # is suspected at the timeout and declared dead at deadFactor times it.
    # suspectMinimum 0 disables; an idle link has only the keepalive above.
    suspectMinimum: float = 1.0
    deadFactor: float = 3.0
    # Link-level replies (SYN ACKs, RSTs, window updates, FINs) written while
    # the link transport is paused: above this many bytes the multiplexer
    # stops reading the link until it can send again.  Ping ACKs are not
    # queued at all while paused: only the latest is kept.
    maxControlBacklog: int = 64 * 1024
    # Frames a second read from the link (any type, charged per read), up
    # to a burst of as many: above it the link is not read until the excess
    # is paid for.  Caps the CPU a flood of tiny frames takes (about 0.8 us
    # a frame, benchmarks/frame_flood.py); bulk data at 1 GB/s is 16,000
    # frames a second.  0 disables.
    maxFrameRate: int = 200_000
    # Streams of every link whose initial window does not come out of the
    # node budget, so that a link always gets its control streams and a few
    # sessions however full the budget is (a peer that fills it cannot stop
    # other links from coming up).
    ownStreams: int = 8
    # The node's receive budget, shared by all its links (buildNode makes
    # one); None: this multiplexer gets a budget of its own.
    budget: MuxBudget | None = attrs.field(default=None, eq=False, repr=False)


@implementer(ITransport, IPushProducer, IConsumer)
class Stream:
    """
    One yamux stream: a transport for its protocol, a push producer for the
    receive side, and a consumer for a producer feeding the send side.

    Buffers are allocated only while they hold data, so an idle stream costs
    a few hundred bytes.
    """

    __slots__ = (
        "_mux",
        "streamID",
        "protocol",
        "remoteClosed",
        "localClosed",
        "bytesSent",
        "bytesReceived",
        "_acked",
        "_finished",
        "_writeClosed",
        "_finPending",
        "_sendWindow",
        "_sendBuf",
        "_recvWindow",
        "_recvMax",
        "_consumed",
        "_lastUpdate",
        "_recvBuf",
        "_readPaused",
        "sendHighWater",
        "_readLostDelivered",
        "_lostReason",
        "_lostDelivered",
        "_producer",
        "_streaming",
        "_producerPaused",
        "_pullCall",
        "_queued",
        "_inbound",
        "takesViews",
    )

    def __init__(self, mux: Multiplexer, streamID: int, outbound: bool) -> None:
        self._mux = mux
        self.streamID = streamID
        self.protocol: Any = None
        self.remoteClosed = False
        self.localClosed = False
        self.bytesSent = 0
        self.bytesReceived = 0
        self._acked = not outbound
        self._finished = False
        self._writeClosed = False
        self._finPending = False
        window = mux.config.initialWindow
        self._sendWindow = window
        self._sendBuf: bytearray | None = None
        self._recvWindow = window
        self._recvMax = window
        self._consumed = 0
        self._lastUpdate = mux._reactor.seconds()
        self._recvBuf: bytearray | None = None
        self._readPaused = False
        #: Unsent bytes above which a registered push producer is paused
        #: (resumed at half).  Relays raise it on spliced streams so a chain
        #: of hops does not stall on every 64 KiB.
        self.sendHighWater = SEND_HIGH_WATER
        self._readLostDelivered = False
        self._lostReason: Failure | None = None
        self._lostDelivered = False
        self._producer: Any = None
        self._streaming = True
        self._producerPaused = False
        self._pullCall: Any = None
        self._queued = False
        self._inbound = not outbound
        #: Whether received payload may be handed to the protocol as
        #: memoryview slices of the link's read instead of bytes copies (a
        #: relay's spliced streams: the slice is written on at once, so the
        #: copy would be thrown away).
        self.takesViews = False

    def __repr__(self) -> str:
        return f"<Stream {self.streamID}>"

    @property
    def unsent(self) -> int:
        """
        Bytes written to this stream that have not left it yet (waiting for
        the peer's window or for the link).
        """
        buf = self._sendBuf
        return 0 if buf is None else len(buf)

    # -- protocol attachment and receive side --------------------------------

    def attachProtocol(self, protocol: Any) -> None:
        """
        Connect C{protocol} to this stream, then deliver whatever arrived
        before it was attached (unless the stream is paused).
        """
        self.protocol = protocol
        protocol.makeConnection(self)
        self._deliverPending()

    def pauseProducing(self) -> None:
        """
        Stop delivering received data: it is buffered and no window updates
        are sent, so the peer stops once the window is used up.
        """
        self._readPaused = True

    def resumeProducing(self) -> None:
        """
        Deliver buffered data and resume granting window.
        """
        if not self._readPaused:
            return
        self._readPaused = False
        self._deliverPending()

    def stopProducing(self) -> None:
        """
        The consumer of this stream wants no more: close our side, as a TCP
        transport does.
        """
        self.loseConnection()

    def _dataIn(self, data: bytes) -> None:
        # Hot path: one call per frame (or per piece of a frame split across
        # link reads).
        if self._finished:
            # Reset while the rest of a frame was still arriving.
            return
        n = len(data)
        self.bytesReceived += n
        protocol = self.protocol
        if self._recvBuf is None and not self._readPaused and protocol is not None:
            self._consumed += n
            try:
                protocol.dataReceived(data)
            except BaseException:
                self._mux._log.failure("stream {sid} protocol failed", sid=self.streamID)
                self.abortConnection()
                return
            if (
                self._consumed >= self._recvMax >> 1
                and not self._readPaused
                and not self.remoteClosed
                and not self._finished
                and not self._sendBlocked()
            ):
                self._sendWindowUpdate(0)
        else:
            if self._recvBuf is None:
                self._recvBuf = bytearray(data)
            else:
                self._recvBuf += data
            self._mux._budget.hold(n)

    def _deliverPending(self) -> None:
        """
        Deliver buffered data, then any half-close or close notification that
        was held back behind it.
        """
        protocol = self.protocol
        if protocol is None:
            return
        buf = self._recvBuf
        if buf is not None and not self._readPaused:
            self._recvBuf = None
            self._mux._budget.free(len(buf))
            data = bytes(buf)
            if not self._finished:
                self._consumed += len(data)
            try:
                protocol.dataReceived(data)
            except BaseException:
                self._mux._log.failure("stream {sid} protocol failed", sid=self.streamID)
                self.abortConnection()
                return
        if self._recvBuf is not None:
            # Still paused with data waiting: notifications wait behind it.
            return
        if self.remoteClosed and not self._readLostDelivered:
            self._readLostDelivered = True
            if IHalfCloseableProtocol.providedBy(protocol):
                protocol.readConnectionLost()
        if self._lostReason is not None:
            if not self._lostDelivered:
                self._lostDelivered = True
                protocol.connectionLost(self._lostReason)
        else:
            self._grantIfDue()

    def _sendBlocked(self) -> bool:
        """
        Whether this stream withholds receive window because of its own send
        buffer: a stream the peer opened whose unsent data is above
        C{sendHighWater}.  Such data is what the peer made us write (an echo,
        a reply) while not reading it, so the peer gets no more window until
        it reads.  Streams we opened hold what our own application wrote,
        and keep granting: with one end of every stream granting, two ends
        that both write more than they read cannot stall each other.
        """
        buf = self._sendBuf
        return buf is not None and self._inbound and len(buf) > self.sendHighWater

    def _grantIfDue(self) -> None:
        """
        Send the window update held back, if one is due and nothing holds
        it back any longer.
        """
        if (
            self._consumed >= self._recvMax >> 1
            and not self._readPaused
            and not self.remoteClosed
            and not self._finished
            and self._recvBuf is None
            and self.protocol is not None
            and not self._sendBlocked()
        ):
            self._sendWindowUpdate(0)

    def _sendWindowUpdate(self, flags: int) -> None:
        """
        Grant the peer back what the protocol consumed, doubling the window
        when updates come faster than twice the round trip (the window, not
        the reader, is then what limits the stream).
        """
        mux = self._mux
        config = mux.config
        delta = self._consumed
        now = mux._reactor.seconds()
        current = self._recvMax
        if current < config.maxStreamWindow:
            elapsed = now - self._lastUpdate
            rtt = mux.rtt
            if rtt is None:
                fast = elapsed < _UNKNOWN_RTT_GROWTH_INTERVAL
                mux._measureRtt()
            else:
                fast = elapsed < 2 * rtt
            if fast:
                grown = min(current * 2, config.maxStreamWindow)
                extra = grown - current
                if mux._extraGranted + extra <= config.maxLinkReceiveBuffer and (
                    mux._budget.reserveGrowth(extra)
                ):
                    mux._extraGranted += extra
                    self._recvMax = grown
                    delta += extra
        self._lastUpdate = now
        self._consumed = 0
        self._recvWindow += delta
        mux._control(_pack(VERSION, TYPE_WINDOW_UPDATE, flags, self.streamID, delta))

    # -- send side -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Send C{data}; whatever exceeds the peer's window is buffered.
        """
        if self._writeClosed:
            return
        n = len(data)
        if not n:
            return
        mux = self._mux
        if (
            self._sendBuf is None
            and not mux._paused
            and n <= self._sendWindow
            and n <= mux._maxFrame
        ):
            # Fast path: one frame, one write.
            self._sendWindow -= n
            self.bytesSent += n
            mux.bytesSent += n
            if mux._collecting:
                mux._send(_pack(VERSION, TYPE_DATA, 0, self.streamID, n) + data)
            else:
                mux.transport.write(_pack(VERSION, TYPE_DATA, 0, self.streamID, n) + data)
            if mux._waitSince is None:
                mux._startWait()
            self._pullIfDrained()
            return
        if self._sendBuf is None:
            self._sendBuf = bytearray(data)
        else:
            self._sendBuf += data
        mux._budget.hold(n)
        if not mux._paused:
            self._flush()
        else:
            self._markReady()
        if self._streaming:
            self._checkHighWater()
        else:
            self._pullIfDrained()

    def writeSequence(self, seq: Any) -> None:
        """
        Send the concatenation of C{seq}.
        """
        self.write(b"".join(seq))

    def writeWithRoom(self, frame: memoryview) -> None:
        """
        Send C{frame[HEADER_SIZE:]}, where C{frame} is a writable buffer that
        its writer never touches again, its first L{HEADER_SIZE} bytes room
        for a header.  When the payload can go at once as one Data frame,
        the header is written into the room and the frame goes to the link
        as it is, without the copy of the payload behind a header that
        L{write} makes (the end-to-end TLS layer of a routed session reads
        its records into such a buffer); otherwise, or when the link's
        transport takes bytes only, this is L{write}.
        """
        n = len(frame) - HEADER_SIZE
        mux = self._mux
        if (
            n <= 0
            # (A transport that says it takes any buffer, as the link's TLS
            # layer does: Twisted's own transports take bytes only.)
            or not getattr(mux.transport, "takesBuffers", False)
            or self._writeClosed
            or self._sendBuf is not None
            or mux._paused
            or n > self._sendWindow
            or n > mux._maxFrame
        ):
            self.write(frame[HEADER_SIZE:])  # type: ignore[arg-type]  # a buffer will do
            return
        _HEADER.pack_into(frame, 0, VERSION, TYPE_DATA, 0, self.streamID, n)
        self._sendWindow -= n
        self.bytesSent += n
        mux.bytesSent += n
        if mux._collecting:
            mux._send(frame)  # type: ignore[arg-type]  # a buffer will do
        else:
            mux.transport.write(frame)
        if mux._waitSince is None:
            mux._startWait()
        self._pullIfDrained()

    def writeFrames(self, pieces: list[Any]) -> None:
        """
        Send the concatenation of C{pieces} (bytes or memoryviews), each
        piece one Data frame if it can go now, all of them in one write to
        the link: a relay forwards what one read of the other link brought
        this way, with one copy and one TLS write instead of one per frame.
        """
        mux = self._mux
        n = 0
        maxFrame = mux._maxFrame
        for piece in pieces:
            if len(piece) > maxFrame:
                n = -1
                break
            n += len(piece)
        if (
            n <= 0
            or self._writeClosed
            or self._sendBuf is not None
            or mux._paused
            or n > self._sendWindow
            or mux._collecting
        ):
            self.write(b"".join(pieces))
            return
        sid = self.streamID
        parts = []
        for piece in pieces:
            parts.append(_pack(VERSION, TYPE_DATA, 0, sid, len(piece)))
            parts.append(piece)
        self._sendWindow -= n
        self.bytesSent += n
        mux.bytesSent += n
        mux.transport.write(b"".join(parts))
        if mux._waitSince is None:
            mux._startWait()
        self._pullIfDrained()

    def _sendOne(self) -> bool:
        """
        Send at most one frame of buffered data (and the FIN once drained).

        @return: whether this stream can send more right away.
        """
        buf = self._sendBuf
        if buf is None:
            return False
        mux = self._mux
        n = min(len(buf), self._sendWindow, mux._maxFrame)
        if n <= 0:
            return False
        chunk = buf[:n]
        # Deleting from the front of a bytearray only moves its start pointer.
        del buf[:n]
        self._sendWindow -= n
        self.bytesSent += n
        mux.bytesSent += n
        mux._budget.free(n)
        mux._send(_pack(VERSION, TYPE_DATA, 0, self.streamID, n) + chunk)
        if mux._waitSince is None:
            mux._startWait()
        if not buf:
            self._sendBuf = None
            if self._finPending:
                self._sendFin()
            else:
                self._resumeProducer()
                self._grantIfDue()
            return False
        if len(buf) <= self.sendHighWater >> 1:
            self._resumeProducer()
            self._grantIfDue()
        return self._sendWindow > 0 and self._sendBuf is not None

    def _flush(self) -> None:
        # Send this stream's buffer as far as window and link allow; the rest
        # waits in the link's round robin.
        mux = self._mux
        while self._sendOne():
            if mux._paused:
                self._markReady()
                return

    def _markReady(self) -> None:
        if (
            not self._queued
            and self._sendBuf is not None
            and self._sendWindow > 0
            and not self._finished
        ):
            self._queued = True
            self._mux._ready.append(self)

    def _windowUpdateIn(self, delta: int) -> None:
        window = self._sendWindow + delta
        if window > _MAX_U32:
            raise ProtocolError(f"stream {self.streamID} window overflows")
        self._sendWindow = window
        if self._sendBuf is not None and window > 0:
            if self._mux._paused:
                self._markReady()
            else:
                self._flush()

    def _checkHighWater(self) -> None:
        buf = self._sendBuf
        if (
            buf is not None
            and len(buf) > self.sendHighWater
            and self._producer is not None
            and self._streaming
            and not self._producerPaused
        ):
            self._producerPaused = True
            self._producer.pauseProducing()

    def _resumeProducer(self) -> None:
        if self._producerPaused and self._producer is not None:
            self._producerPaused = False
            self._producer.resumeProducing()
        else:
            self._pullIfDrained()

    def _pullIfDrained(self) -> None:
        # Pull producers get asked for more from the reactor, never from
        # inside write, so a producer writing from resumeProducing cannot
        # recurse without bound.
        if (
            self._producer is not None
            and not self._streaming
            and self._pullCall is None
            and (self._sendBuf is None or len(self._sendBuf) <= self.sendHighWater >> 1)
        ):
            self._pullCall = self._mux._reactor.callLater(0, self._pull)

    def _pull(self) -> None:
        self._pullCall = None
        if self._producer is not None and not self._streaming:
            self._producer.resumeProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a producer for the send side: a push producer is paused
        while more than C{sendHighWater} bytes wait unsent.
        """
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}: {self._producer!r} is registered"
            )
        if self._writeClosed:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = streaming
        self._producerPaused = False
        if streaming:
            self._checkHighWater()
        else:
            self._pullIfDrained()

    def unregisterProducer(self) -> None:
        """
        Forget the registered producer.
        """
        self._producer = None
        self._producerPaused = False
        if self._pullCall is not None:
            self._pullCall.cancel()
            self._pullCall = None

    @property
    def disconnecting(self) -> bool:
        """
        Whether C{loseConnection} or C{abortConnection} was called (or the
        stream is gone).
        """
        return self._writeClosed

    def loseConnection(self) -> None:
        """
        Half-close: send FIN once everything written so far is sent; later
        writes are dropped.  The stream is freed when the peer FINs too.
        """
        if self._writeClosed:
            return
        self._writeClosed = True
        if self._sendBuf is None:
            self._sendFin()
        else:
            self._finPending = True

    def _sendFin(self) -> None:
        self._finPending = False
        if self.localClosed or self._finished:
            return
        self.localClosed = True
        self._mux._control(_pack(VERSION, TYPE_WINDOW_UPDATE, FLAG_FIN, self.streamID, 0))
        if self.remoteClosed:
            self._finish(Failure(ConnectionDone()), clean=True)

    def abortConnection(self) -> None:
        """
        Reset the stream now: unsent and undelivered data is dropped and the
        protocol sees C{connectionLost} with L{ConnectionAborted}.
        """
        if self._finished:
            return
        self._writeClosed = True
        if not self._mux._closed:
            self._mux._control(_pack(VERSION, TYPE_WINDOW_UPDATE, FLAG_RST, self.streamID, 0))
        self._finish(Failure(ConnectionAborted()), clean=False)

    def getPeer(self) -> Any:
        """
        The link's peer address.
        """
        return self._mux.transport.getPeer()

    def getHost(self) -> Any:
        """
        The link's local address.
        """
        return self._mux.transport.getHost()

    # -- events from the peer ------------------------------------------------

    def _finIn(self) -> None:
        if self.remoteClosed or self._finished:
            return
        self.remoteClosed = True
        if self.localClosed:
            self._finish(Failure(ConnectionDone()), clean=True)
        else:
            self._deliverPending()

    def _resetIn(self) -> None:
        self._finish(Failure(ConnectionLost("stream reset by peer")), clean=False)

    def _finish(self, reason: Failure, clean: bool) -> None:
        """
        Free the stream and tell the protocol, once.
        """
        if self._finished:
            return
        self._finished = True
        self._writeClosed = True
        self._finPending = False
        mux = self._mux
        budget = mux._budget
        if self._sendBuf is not None:
            budget.free(len(self._sendBuf))
            self._sendBuf = None
        config = mux.config
        mux.streams.pop(self.streamID, None)
        extra = self._recvMax - config.initialWindow
        mux._extraGranted -= extra
        budget.release(extra)
        if len(mux.streams) >= config.ownStreams:
            budget.release(config.initialWindow)
        if not self._acked:
            self._acked = True
            mux._unacked -= 1
        if self._pullCall is not None:
            self._pullCall.cancel()
            self._pullCall = None
        producer = self._producer
        if producer is not None:
            self._producer = None
            producer.stopProducing()
        if not clean and self._recvBuf is not None:
            budget.free(len(self._recvBuf))
            self._recvBuf = None
        self._lostReason = reason
        self._deliverPending()


@implementer(IPushProducer)
class Multiplexer:
    """
    One side of a yamux link.

    @ivar streams: open streams by ID.
    @ivar rtt: the last measured round-trip time in seconds, or C{None}.
    @ivar srtt: the smoothed RTT (RFC 6298), or C{None} before a sample.
    @ivar rttvar: the RTT variation (RFC 6298).
    @ivar suspected: whether the link has not answered for the suspicion
        timeout while something waits on it (see L{suspectTimeout}); route
        selection avoids a suspected link.
    @ivar bytesSent: payload bytes sent, all streams.
    @ivar bytesReceived: payload bytes received, all streams.
    """

    _log = Logger()

    def __init__(
        self,
        transport: Any,
        isClient: bool,
        acceptStream: Callable[[Stream], None],
        reactor: Any,
        config: MuxConfig = MuxConfig(),
        onClose: Callable[[Failure], None] | None = None,
    ) -> None:
        self.transport = transport
        self.isClient = isClient
        self._acceptStream = acceptStream
        self._reactor = reactor
        self.config = config
        self._onClose = onClose
        self._maxFrame = config.maxFramePayload
        self.streams: dict[int, Stream] = {}
        self.rtt: float | None = None
        self.bytesSent = 0
        self.bytesReceived = 0
        self._nextStreamID = 1 if isClient else 2
        # The peer's last stream ID; its first one is this plus 2.
        self._peerHighest = 0 if isClient else -1
        self._peerSkipped: set[int] = set()
        self._unacked = 0
        self._extraGranted = 0
        self._budget = config.budget if config.budget is not None else MuxBudget()
        # Control bytes written since the link transport paused us, whether
        # we stopped reading the link because of them, and the one ping ACK
        # held back while paused.
        self._backlog = 0
        self._readStopped = False
        self._pingAck: int | None = None
        # The frame budget (frames a second, up to a burst) and the call
        # that resumes reading once a flood has paid for itself.
        self._frameRate = config.maxFrameRate
        self._frameBurst = self._frameTokens = float(config.maxFrameRate)
        self._frameTime = reactor.seconds()
        self._floodCall: Any = None
        self._readPauses = 0
        self._readPauseLogged = 0.0
        self._paused = False
        self._closed = False
        self._goAwaySent = False
        self._goAwayReceived = False
        self.goAwayCode: int | None = None
        # Streams with buffered data and window, waiting for the link, in
        # round-robin order (a finished stream is skipped when reached).
        self._ready: deque[Stream] = deque()
        # Parser state: a partial header, and the payload still to come.
        self._header = bytearray()
        self._payloadStream: Stream | None = None
        self._payloadRemaining = 0
        self._payloadFin = False
        # Pings: opaque value -> (send time, waiting Deferreds).
        self._pings: dict[int, tuple[float, list[Deferred[float]]]] = {}
        self._pingCounter = 0
        # Whether a read is being parsed, and the frames collected meanwhile
        # (see _send).
        self._collecting = False
        self._out: list[bytes] | None = None
        self._afterRead: list[Callable[[], None]] | None = None
        # A call held until the parser handles anything but more plain Data
        # for one stream (see holdUntilOther).
        self._held: tuple[int, Callable[[], None]] | None = None
        self._lastReceived = reactor.seconds()
        # Failure detection (MuxConfig.suspectMinimum): when the current wait
        # for the peer began (None: nothing sent since the last frame
        # received), when a Ping of that wait went out (its answer is
        # certain, unlike data's), and the timer that watches the wait.
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.suspected = False
        self._waitSince: float | None = None
        self._probeSent: float | None = None
        self._failureCall: Any = None
        #: Seconds the network path under the link has been quiet (see
        #: L{appnpy.link.tcpinfo}), if the owner can tell: a wait counts
        #: only from the path's last sign of life.
        self.pathQuiet: Callable[[], float] | None = None
        self._keepaliveCall: Any = None
        self._timeoutCall: Any = None
        if config.keepaliveInterval > 0:
            self._keepaliveCall = reactor.callLater(config.keepaliveInterval, self._keepalive)
        if config.keepaliveTimeout > 0:
            self._timeoutCall = reactor.callLater(config.keepaliveTimeout, self._checkTimeout)
        transport.registerProducer(self, True)

    # -- opening streams -----------------------------------------------------

    def openStream(self) -> Stream:
        """
        Open a stream to the peer (SYN is sent at once; data may follow
        before the peer's ACK).

        @raise GoAwayReceived: the peer is going away.
        @raise StreamLimitExceeded: too many open or un-acknowledged streams.
        """
        if self._goAwayReceived:
            raise GoAwayReceived(f"code {self.goAwayCode}")
        if self._closed:
            raise LinkError("the link is closed")
        config = self.config
        if len(self.streams) >= config.maxStreams:
            raise StreamLimitExceeded(f"{len(self.streams)} streams open")
        if self._unacked >= config.maxPendingOutbound:
            raise StreamLimitExceeded(f"{self._unacked} streams awaiting the peer's ACK")
        streamID = self._nextStreamID
        if streamID > _MAX_U32:
            raise StreamLimitExceeded("stream IDs exhausted on this link")
        if not self._reserveStream():
            raise StreamLimitExceeded("the node's receive window budget is used up")
        self._nextStreamID = streamID + 2
        stream = Stream(self, streamID, outbound=True)
        self.streams[streamID] = stream
        self._unacked += 1
        self._control(_pack(VERSION, TYPE_WINDOW_UPDATE, FLAG_SYN, streamID, 0))
        if self._waitSince is None:
            self._startWait()
        return stream

    def _reserveStream(self) -> bool:
        # The first ownStreams streams of the link are its own; the node
        # budget pays for the rest.  Streams are interchangeable, so the
        # budget holds initialWindow x (open streams - ownStreams).
        if len(self.streams) < self.config.ownStreams:
            return True
        return self._budget.reserveStream(self.config.initialWindow)

    def _inboundSyn(self, streamID: int) -> Stream | None:
        if streamID == 0 or (streamID & 1) == (1 if self.isClient else 0):
            raise ProtocolError(f"peer opened stream {streamID} with our parity")
        if streamID > self._peerHighest:
            gap = (streamID - self._peerHighest) // 2 - 1
            if 0 < gap <= _SYN_REORDER_SLACK:
                self._peerSkipped.update(range(self._peerHighest + 2, streamID, 2))
                if len(self._peerSkipped) > 2 * _SYN_REORDER_SLACK:
                    floor = streamID - 4 * _SYN_REORDER_SLACK
                    self._peerSkipped = {s for s in self._peerSkipped if s > floor}
            self._peerHighest = streamID
        elif streamID in self._peerSkipped:
            self._peerSkipped.discard(streamID)
        else:
            raise ProtocolError(f"peer reused stream ID {streamID}")
        if (
            self._goAwaySent
            or len(self.streams) >= self.config.maxStreams
            or not self._reserveStream()
        ):
            self._control(_pack(VERSION, TYPE_WINDOW_UPDATE, FLAG_RST, streamID, 0))
            return None
        stream = Stream(self, streamID, outbound=False)
        self.streams[streamID] = stream
        self._control(_pack(VERSION, TYPE_WINDOW_UPDATE, FLAG_ACK, streamID, 0))
        try:
            self._acceptStream(stream)
        except BaseException:
            self._log.failure("acceptStream failed for stream {sid}", sid=streamID)
            stream.abortConnection()
        return stream

    # -- receiving -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Parse frames from the link (bytes, or a memoryview over a buffer
        nobody else writes to).  A protocol violation aborts the link; it
        never raises out of here.
        """
        if self._closed:
            return
        self._lastReceived = now = self._reactor.seconds()
        if self._waitSince is not None:
            # Any frame shows the link alive, whatever it answers.
            self._answered()
        # Re-entered, the outer call writes what both collect.
        nested = self._collecting
        self._collecting = True
        try:
            frames = self._parse(data)
        except ProtocolError as e:
            self._protocolError(e)
            return
        finally:
            if not nested:
                self._collecting = False
                if self._held is not None:
                    self._runHeld()
                if self._out is not None:
                    self.flush()
                if self._afterRead is not None:
                    self._runAfterRead()
        rate = self._frameRate
        if rate and frames:
            # The frame budget, charged once per read: a flood of tiny frames
            # costs a fixed amount of work per frame, so capping frames per
            # second caps the CPU one link can take.
            tokens = self._frameTokens + (now - self._frameTime) * rate
            if tokens > self._frameBurst:
                tokens = self._frameBurst
            self._frameTime = now
            self._frameTokens = tokens = tokens - frames
            if tokens < 0 and self._floodCall is None and not self._closed:
                self._readPaused(now, f"more than {rate:g} frames a second")
                self.transport.pauseProducing()
                self._floodCall = self._reactor.callLater(-tokens / rate, self._floodOver)

    def _parse(self, data: bytes) -> int:
        """
        Parse C{data}; return how many frame headers it completed.
        """
        pos = 0
        frames = 0
        end = len(data)
        view = memoryview(data)
        header = self._header
        if header:
            # Complete a header split across reads.
            take = HEADER_SIZE - len(header)
            header += data[:take]
            if len(header) < HEADER_SIZE:
                return 0
            pos = take
            fields = decodeHeader(bytes(header))
            header.clear()
            frames = 1
            held = self._held
            if held is not None and (fields[0] or fields[1] or fields[2] != held[0]):
                self._runHeld()
            self._frame(*fields)
        while not self._closed:
            remaining = self._payloadRemaining
            if remaining:
                avail = end - pos
                if not avail:
                    return frames
                stream = self._payloadStream
                # A slice of a memoryview copies nothing; of bytes, all of it.
                views = stream is not None and stream.takesViews
                cut: Any = view if views else data
                if avail >= remaining:
                    chunk = cut[pos : pos + remaining] if (pos or remaining != end) else data
                    pos += remaining
                    self._payloadRemaining = 0
                    done = True
                else:
                    chunk = cut[pos:] if pos else data
                    pos = end
                    self._payloadRemaining = remaining - avail
                    done = False
                if not views and chunk.__class__ is memoryview:
                    # The link handed a view (appnpy.link.bulktls): streams
                    # that do not take views get bytes of their own.
                    chunk = bytes(chunk)
                self.bytesReceived += len(chunk)
                if stream is not None:
                    stream._dataIn(chunk)
                    if done:
                        self._payloadStream = None
                        if self._payloadFin:
                            self._payloadFin = False
                            if self._held is not None:
                                self._runHeld()
                            stream._finIn()
                continue
            if end - pos < HEADER_SIZE:
                if pos < end:
                    header += data[pos:]
                return frames
            version, type, flags, streamID, length = _unpackFrom(data, pos)
            pos += HEADER_SIZE
            frames += 1
            if version or type > TYPE_GO_AWAY:
                _checkHeader(version, type)
            held = self._held
            if held is not None and (type or flags or streamID != held[0]):
                self._runHeld()
            self._frame(type, flags, streamID, length)
        return frames

    def _frame(self, type: int, flags: int, streamID: int, length: int) -> None:
        if type <= TYPE_WINDOW_UPDATE:
            if flags & FLAG_SYN:
                stream = self._inboundSyn(streamID)
            else:
                stream = self.streams.get(streamID)
            if type == TYPE_DATA:
                self._payloadRemaining = length
                self._payloadStream = None
            if stream is None:
                # Closed, refused or never opened: ignore (skip any payload).
                return
            if flags & FLAG_ACK and not stream._acked:
                stream._acked = True
                self._unacked -= 1
            if flags & FLAG_RST:
                stream._resetIn()
                return
            if type == TYPE_DATA:
                if length > stream._recvWindow:
                    raise ProtocolError(
                        f"stream {streamID}: {length} bytes sent into a window of {stream._recvWindow}"
                    )
                stream._recvWindow -= length
                if stream.remoteClosed:
                    # Data after FIN is dropped; the window was still charged.
                    return
                if length:
                    self._payloadStream = stream
                    self._payloadFin = bool(flags & FLAG_FIN)
                    return
            elif length:
                stream._windowUpdateIn(length)
            if flags & FLAG_FIN:
                stream._finIn()
        elif type == TYPE_PING:
            if flags & FLAG_SYN:
                if self._paused:
                    # Only the latest answer waits: a flood of pings to a
                    # paused link costs nothing.
                    self._pingAck = length
                else:
                    self._send(_pack(VERSION, TYPE_PING, FLAG_ACK, 0, length))
            elif flags & FLAG_ACK:
                self._pong(length)
        else:
            self._goAwayReceived = True
            self.goAwayCode = length
            if length != GOAWAY_NORMAL:
                self._log.info("peer sent GoAway with error code {code}", code=length)

    def connectionLost(self, reason: Any) -> None:
        """
        The link is gone: every open stream's protocol gets C{reason}.
        """
        if not self._closed and (self._header or self._payloadRemaining):
            self._log.warn(
                "link ended inside a frame: {missing} bytes missing",
                missing=(HEADER_SIZE - len(self._header))
                if self._header
                else self._payloadRemaining,
            )
        self._teardown(reason if isinstance(reason, Failure) else Failure(reason))

    # -- sending: link backpressure and fairness ------------------------------

    def _send(self, frame: bytes) -> None:
        # While frames are parsed, what they make us write (ACKs, window
        # updates, replies the protocols write at once) is collected and
        # written as one piece when the read is done: one TLS record and one
        # read at the peer instead of one per frame.  A large frame is
        # written at once (after what was collected), never copied.
        if not self._collecting:
            self.transport.write(frame)
        elif len(frame) >= _COALESCE_BELOW:
            self.flush()
            self.transport.write(frame)
        elif self._out is None:
            self._out = [frame]
        else:
            self._out.append(frame)

    def callAfterRead(self, f: Callable[[], None]) -> None:
        """
        Call C{f} once the read being parsed is done (at once outside a
        read): a timer for something the same read may settle (a stream's
        first message following its SYN) costs nothing when it does.
        """
        if not self._collecting:
            f()
        elif self._afterRead is None:
            self._afterRead = [f]
        else:
            self._afterRead.append(f)

    def holdUntilOther(self, streamID: int, f: Callable[[], None]) -> None:
        """
        Call C{f} before this multiplexer handles anything but more plain
        Data frames of stream C{streamID} in the read being parsed, and at
        the latest when that read is done (at once outside a read): what a
        relay forwards of a read can go out in one piece and still keep its
        order with everything else the link brought (a FIN, a reset, an
        UNBIND on the control stream).  A second hold runs the first.
        """
        if not self._collecting:
            f()
            return
        if self._held is not None:
            self._runHeld()
        self._held = (streamID, f)

    def _runHeld(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            try:
                held[1]()
            except Exception:
                self._log.failure("a held call failed")

    def _runAfterRead(self) -> None:
        calls, self._afterRead = self._afterRead, None
        for f in calls or ():
            try:
                f()
            except Exception:
                self._log.failure("a call after a read failed")

    def flush(self) -> None:
        """
        Write the frames collected while parsing now (the link protocol
        calls this before it closes the transport).
        """
        out, self._out = self._out, None
        if out and not self._closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pauseProducing(self) -> None:
        """
        The link transport is full: streams buffer until resumed.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The link can take more: flush streams round robin, one frame each per
        turn.  A stream that sent goes to the back of the queue, so the next
        resume starts where this one stopped and no stream starves.
        """
        self._paused = False
        if self._closed:
            return
        self._backlog = 0
        if self._pingAck is not None:
            opaque, self._pingAck = self._pingAck, None
            self._send(_pack(VERSION, TYPE_PING, FLAG_ACK, 0, opaque))
        if self._readStopped:
            self._readStopped = False
            self._resumeReading()
        ready = self._ready
        while ready and not self._paused and not self._closed:
            stream = ready.popleft()
            stream._queued = False
            if stream._sendOne():
                stream._markReady()

    def stopProducing(self) -> None:
        """
        The link transport is going away; C{connectionLost} follows.
        """
        self._paused = True

    def _control(self, frame: bytes) -> None:
        """
        Write a link-level frame.  While the link transport is paused these
        pile up in its buffer, and the peer can provoke them (a SYN costs us
        an ACK or RST): past C{maxControlBacklog} bytes we stop reading the
        link until it drains, so the pile stays bounded.
        """
        self._send(frame)
        if self._paused and not self._closed:
            self._backlog += len(frame)
            if self._backlog > self.config.maxControlBacklog and not self._readStopped:
                self._readStopped = True
                self._readPaused(
                    self._reactor.seconds(), f"{self._backlog} bytes of replies wait to be sent"
                )
                self.transport.pauseProducing()

    def _readPaused(self, now: float, why: str) -> None:
        # One line for the first pause, then at most one a minute with the
        # count, however fast a hostile peer makes us pause.
        self._readPauses += 1
        if self._readPauses == 1 or now - self._readPauseLogged >= 60:
            self._readPauseLogged = now
            self._log.info(
                "paused reading the link from {peer}: {why} ({count} pauses so far)",
                peer=_peerText(self.transport),
                why=why,
                count=self._readPauses,
            )

    def _resumeReading(self) -> None:
        # Reading stops for a reply backlog or a frame flood (pausing twice
        # is harmless); it resumes when neither holds any more.
        if not self._readStopped and self._floodCall is None and not self._closed:
            self.transport.resumeProducing()

    def _floodOver(self) -> None:
        # Frames that were already on their way were charged too: wait until
        # the whole excess is paid for.
        now = self._reactor.seconds()
        rate = self._frameRate
        self._frameTokens = tokens = min(
            self._frameBurst, self._frameTokens + (now - self._frameTime) * rate
        )
        self._frameTime = now
        if tokens < 0:
            self._floodCall = self._reactor.callLater(-tokens / rate, self._floodOver)
            return
        self._floodCall = None
        self._resumeReading()

    # -- ping and keepalive ----------------------------------------------------

    def ping(self) -> Deferred[float]:
        """
        Measure the round trip.

        @return: a Deferred firing with the RTT in seconds.
        """
        d: Deferred[float] = Deferred()
        if self._closed:
            d.errback(LinkError("the link is closed"))
            return d
        self._sendPing().append(d)
        self._probed()
        return d

    def measureRtt(self) -> None:
        """
        Measure the RTT now unless a Ping is out already (the control point
        asks at link-up, so that failure detection has a timeout to use).
        """
        if not self._pings and not self._closed:
            self._sendPing()
            self._probed()

    def _sendPing(self) -> list[Deferred[float]]:
        self._pingCounter = opaque = (self._pingCounter + 1) & _MAX_U32
        waiters: list[Deferred[float]] = []
        self._pings[opaque] = (self._reactor.seconds(), waiters)
        self._send(_pack(VERSION, TYPE_PING, FLAG_SYN, 0, opaque))
        return waiters

    def _measureRtt(self) -> None:
        # Auto-tuning wants an RTT: ask for one unless a ping is out already.
        self.measureRtt()

    def _pong(self, opaque: int) -> None:
        entry = self._pings.pop(opaque, None)
        if entry is None:
            return
        sent, waiters = entry
        self.rtt = rtt = self._reactor.seconds() - sent
        srtt = self.srtt
        if srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - rtt)
            self.srtt = 0.875 * srtt + 0.125 * rtt
        for d in waiters:
            d.callback(rtt)

    def _keepalive(self) -> None:
        self._keepaliveCall = self._reactor.callLater(
            self.config.keepaliveInterval, self._keepalive
        )
        # One keepalive ping outstanding is enough; a lost answer is what the
        # timeout is for.
        self._pings = {k: v for k, v in self._pings.items() if v[1]}
        self._sendPing()

    def _checkTimeout(self) -> None:
        timeout = self.config.keepaliveTimeout
        idle = self._reactor.seconds() - self._lastReceived
        if idle >= timeout:
            self._timeoutCall = None
            self._log.info("link aborted: no frame for {idle:.1f} s", idle=idle)
            self._abortWith(
                GOAWAY_NORMAL, Failure(LinkError(f"keepalive timeout: no frame for {timeout:g} s"))
            )
        else:
            self._timeoutCall = self._reactor.callLater(timeout - idle, self._checkTimeout)

    # -- failure detection -----------------------------------------------------

    def suspectTimeout(self) -> float:
        """
        Seconds without any frame, while something waits on the link, after
        which it is suspected: C{max(suspectMinimum, 4 srtt + 4 rttvar)}
        (TCP's RTO with a wider margin, because an answer here may wait for
        the peer's event loop).  A probe Ping goes out at half of it and the
        link is declared dead at C{deadFactor} times it.
        """
        srtt = self.srtt
        base = _UNMEASURED_SUSPECT_TIMEOUT if srtt is None else 4 * (srtt + self.rttvar)
        return max(self.config.suspectMinimum, base)

    def _startWait(self) -> None:
        # Something went out that the peer is expected to react to.  One
        # timer at a time: it finds the current wait when it fires (moved
        # earlier if it was set for a longer timeout than this wait's).
        self._waitSince = now = self._reactor.seconds()
        if self.config.suspectMinimum <= 0 or self._closed:
            return
        delay = self.suspectTimeout() / 2
        call = self._failureCall
        if call is None:
            self._failureCall = self._reactor.callLater(delay, self._failureCheck)
        elif call.getTime() > now + delay:
            call.reset(delay)

    def _probed(self) -> None:
        # A Ping went out: its answer is certain while the peer is alive.
        if self._waitSince is None:
            self._startWait()
        if self._probeSent is None:
            self._probeSent = self._reactor.seconds()

    def _answered(self) -> None:
        self._waitSince = self._probeSent = None
        if self.suspected:
            self.suspected = False
            self._log.info(
                "link to {peer} answers again: no longer suspected", peer=_peerText(self.transport)
            )

    def _failureCheck(self) -> None:
        # Every step is timed from the probe as well as from the start of
        # the wait: after the event loop stalled (a suspended machine, a
        # long callback, a test clock jumping ahead) the timer runs before
        # the answers waiting in the socket are read, so a probe sent late
        # gets its full time before the link is judged.
        self._failureCall = None
        since = self._waitSince
        if since is None or self._closed:
            return
        now = self._reactor.seconds() + _EPSILON
        timeout = self.suspectTimeout()
        probe = self._probeSent
        if self.pathQuiet is not None:
            # The peer's TCP acknowledged what we sent: the path is alive and
            # what we wait for is queued (behind bulk data, or at a peer
            # whose process is stopped), not lost.
            since = max(since, now - self.pathQuiet())
        if probe is None:
            if now - since < timeout / 2:
                # The wait began after this timer was set for an earlier one.
                due = since + timeout / 2
            else:
                # Data and SYNs need not be answered at once (a peer with
                # nothing to say stays quiet): a Ping must be.
                self._sendPing()
                self._probeSent = self._reactor.seconds()
                due = self._probeSent + timeout / 2
        else:
            factor = self.config.deadFactor
            deadAt = max(since + factor * timeout, probe + (factor - 0.5) * timeout)
            suspectAt = max(since + timeout, probe + timeout / 2)
            if now >= deadAt:
                self._declareDead(since, timeout)
                return
            if now < suspectAt and self.suspected:
                self.suspected = False
                self._log.info(
                    "link to {peer}: the path answers again, no longer suspected",
                    peer=_peerText(self.transport),
                )
            if now >= suspectAt:
                if not self.suspected:
                    self.suspected = True
                    self._log.info(
                        "link to {peer} suspected: no answer for {waited:.2f} s "
                        "(timeout {timeout:.2f} s), probing",
                        peer=_peerText(self.transport),
                        waited=now - since,
                        timeout=timeout,
                    )
                due = deadAt
            else:
                due = suspectAt
        self._failureCall = self._reactor.callLater(
            max(0.0, due - self._reactor.seconds()), self._failureCheck
        )

    def _declareDead(self, since: float, timeout: float) -> None:
        detail = (
            f"no answer for {self._reactor.seconds() - since:.1f} s while waiting on the "
            f"link (suspicion timeout {timeout:.2f} s)"
        )
        self._log.info(
            "link to {peer} declared dead: {detail}", peer=_peerText(self.transport), detail=detail
        )
        self._abortWith(GOAWAY_NORMAL, Failure(LinkError(f"failure detection: {detail}")))

    # -- going away ----------------------------------------------------------

    def goAway(self, code: int = GOAWAY_NORMAL) -> None:
        """
        Tell the peer we accept no new streams; later inbound SYNs are reset.
        Existing streams continue.
        """
        if self._closed or self._goAwaySent:
            return
        self._goAwaySent = True
        self._send(_pack(VERSION, TYPE_GO_AWAY, 0, 0, code))

    def abort(self, code: int) -> None:
        """
        Send GoAway(C{code}) and drop the link at once.
        """
        self._abortWith(code, Failure(ConnectionAborted(f"multiplexer aborted with code {code}")))

    def _protocolError(self, error: ProtocolError) -> None:
        self._log.warn("link aborted: {error}", error=error)
        self._abortWith(GOAWAY_PROTOCOL_ERROR, Failure(error))

    def _abortWith(self, code: int, reason: Failure) -> None:
        if self._closed:
            return
        self._goAwaySent = True
        self._send(_pack(VERSION, TYPE_GO_AWAY, 0, 0, code))
        self.flush()
        self._teardown(reason)
        # The owner (told through onClose) may already be closing the
        # transport so that the GoAway gets out; otherwise drop it now.
        if not self.transport.disconnecting:
            self.transport.abortConnection()

    def _teardown(self, reason: Failure) -> None:
        if self._closed:
            return
        self._closed = True
        self._paused = True
        for call in (self._keepaliveCall, self._timeoutCall, self._floodCall, self._failureCall):
            if call is not None and call.active():
                call.cancel()
        self._keepaliveCall = self._timeoutCall = self._floodCall = self._failureCall = None
        self._ready.clear()
        self._payloadStream = None
        # The owner hears why first, before the streams' protocols see them
        # end, so the real cause is what gets reported.
        if self._onClose is not None:
            onClose, self._onClose = self._onClose, None
            onClose(reason)
        for stream in list(self.streams.values()):
            stream._finish(reason, clean=False)
        pings, self._pings = self._pings, {}
        for _, waiters in pings.values():
            for d in waiters:
                d.errback(reason)
