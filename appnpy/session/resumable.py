"""
The numbered, acknowledged byte stream under a routed session's end-to-end
TLS (L{ResumableStream}), which lets the session move to a new path without
a gap in the TLS records (docs/protocol.md section 15.8; the path switch
itself is L{appnpy.session.pathswitch}).

The end-to-end TLS layer writes its ciphertext into it instead of the
session's yamux stream.  It frames it (a DATA frame per TLS write, with no
sequence number: the bytes of one direction are numbered by their
position), keeps every byte the far end has not acknowledged (at most a
window's worth: the TLS layer's producer, and so the plugin's, is paused
when it is full) and acknowledges what it receives (an ACK frame every
L{ACK_EVERY} bytes, or L{ACK_DELAY} after the first unacknowledged byte).
When the path fails it leaves the dead stream and the TLS layer sees
nothing but a pause; on the new path both ends say how much they have
received and retransmit the rest.  Relayed bytes pass through with one
Python call per read and per TLS write, never per byte.

A plugin that stops reading does not stop the stream: its DATA is held,
unacknowledged, while the ACK and RESUME frames behind it are acted on.
With bytes outstanding and no ACK for L{ResumableStream.progressDeadline}
the path counts as failed, as if its stream were lost: that catches a relay
that keeps its links up and forwards nothing.  An end holding bytes for
its plugin repeats its ACK every L{ACK_REPEAT}, so a slow reader is not
taken for a dead path.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.link.yamux import HEADER_SIZE

if TYPE_CHECKING:
    from appnpy.link.yamux import Stream

__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "ACK_REPEAT",
    "DATA_HEADER",
    "FRAME_ROOM",
    "FRAME_ACK",
    "FRAME_DATA",
    "FRAME_RESUME",
    "Gone",
    "MAX_DATA_FRAME",
    "PROGRESS_GRACE",
    "PROGRESS_RTT_FACTOR",
    "PROGRESS_TIMEOUT",
    "SWITCH_WINDOW",
    "ResumableStream",
]

#: Frame types of the numbered stream (docs/protocol.md 15.8).
FRAME_DATA = 0
FRAME_ACK = 1
FRAME_RESUME = 2
_DATA = struct.Struct(">BI")
_POSITION = struct.Struct(">BQ")
#: The bytes of a DATA frame before its payload.
DATA_HEADER = _DATA.size
#: The room before the payload in a buffer given to
#: L{ResumableStream.writeFrame}: the yamux Data frame's header, then the
#: DATA frame's.
FRAME_ROOM = HEADER_SIZE + DATA_HEADER

#: The largest DATA payload sent or accepted.  The TLS layer writes the
#: records of one write at once (appnpy.link.bulktls): a 64 KiB write is
#: 65,624 bytes of records, and goes out as one frame.
MAX_DATA_FRAME = 256 * 1024
#: Unacknowledged bytes an end keeps for retransmission; the producer
#: writing into the session is paused while this many are outstanding.
SWITCH_WINDOW = 4 * 1024 * 1024
#: Received bytes after which an end acknowledges at once: a quarter of
#: the default window (and never more than a quarter of the end's own
#: window), so that the far end has three quarters left to send while the
#: ACK travels ...
ACK_EVERY = SWITCH_WINDOW // 4
#: ... and how long it waits at most before it acknowledges fewer.
ACK_DELAY = 0.05
#: While an end holds received bytes back from a plugin that does not read
#: (so does not acknowledge them), it repeats its last ACK this often: the
#: far end then knows that the path works and the reader is slow.
ACK_REPEAT = 1.0
#: Seconds an end with unacknowledged bytes waits for an ACK before it
#: takes the path for failed (a relay that keeps its streams up but
#: forwards nothing) ...
PROGRESS_TIMEOUT = 5.0
#: ... or this many times the path's smoothed round-trip time, if longer;
#: and then this long again, after what has arrived meanwhile is read: a
#: timer that runs late (a busy or stopped process runs its timers before
#: it reads) must not take the ACKs waiting to be read for silence.
PROGRESS_RTT_FACTOR = 4
PROGRESS_GRACE = ACK_REPEAT


class _Owner(Protocol):
    """
    What the numbered stream tells its session (L{RoutedSession}).
    """

    def farEndFinished(self) -> None: ...

    def streamLost(self, reason: Failure) -> None: ...

    def layerFailed(self, detail: str) -> None: ...

    def resumed(self) -> None: ...


@implementer(IPushProducer)
class _SendGate:
    """
    The numbered stream as the push producer of one yamux stream: a full
    send buffer there pauses the TLS layer's producer.
    """

    __slots__ = ("_layer",)

    def __init__(self, layer: ResumableStream) -> None:
        self._layer = layer

    def pauseProducing(self) -> None:
        self._layer._pause("stream")

    def resumeProducing(self) -> None:
        self._layer._unpause("stream")

    def stopProducing(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class _StreamSide:
    """
    The protocol of the yamux stream the session rides now.  Its
    C{dataReceived} is the numbered stream's (set per instance).

    It is half-closeable so that yamux tells it of the far end's FIN (the
    FIN after the last DATA, which follows the TLS close_notify): without
    it the session would hear only the stream's full close, and take a
    completed close for a path failure.
    """

    def __init__(self, layer: ResumableStream) -> None:
        self._layer = layer
        self.dataReceived = layer.dataReceived
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def readConnectionLost(self) -> None:
        self._layer._finReceived()

    def writeConnectionLost(self) -> None:
        # IHalfCloseableProtocol requires it; yamux streams never call it
        # (our own FIN is the layer's loseConnection).
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._layer._streamLost(reason)


class Gone:
    """
    The protocol of a stream the session left (a failed path).
    """

    transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        pass

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


class ResumableStream:
    """
    The numbered, acknowledged byte stream between the end-to-end TLS layer
    (whose transport it is) and the routed session's current yamux stream.

    @ivar sent: bytes the TLS layer wrote, in total (the next byte's number).
    @ivar acked: bytes the far end acknowledged; C{sent - acked} are kept.
    @ivar received: bytes received from the far end and delivered (what
        is acknowledged; bytes held for a plugin that does not read are not
        counted until delivered).
    @ivar rtt: the path's smoothed round-trip time, from a write to the ACK
        that covers it (None until measured; measured afresh on each path).
    """

    #: The protocol it attaches to the stream it rides.
    streamSide: Callable[[ResumableStream], Any] = _StreamSide

    def __init__(
        self,
        clock: IReactorTime,
        owner: _Owner,
        window: int = SWITCH_WINDOW,
        ackEvery: int = ACK_EVERY,
        ackDelay: float = ACK_DELAY,
        progressTimeout: float = PROGRESS_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._owner = owner
        #: Where received bytes go: the TLS layer's dataReceived.
        self.deliver: Callable[[bytes], None] = lambda data: None
        #: Whether L{deliver} takes memoryviews (the TLS layer copies what it
        #: is given into OpenSSL at once): the streams ridden then hand this
        #: layer slices of the link's reads instead of copies.  A plugin
        #: reading the stream directly gets bytes.
        self.takesViews = False
        self.window = window
        self.ackEvery = max(1, min(ackEvery, window // 4))
        self.ackDelay = ackDelay
        #: The progress check (L{progressDeadline}); 0 turns it off.
        self.progressTimeout = progressTimeout
        self.rtt: float | None = None
        #: The write being timed: (position, when).
        self._mark: tuple[int, float] | None = None
        #: When the wait for an ACK began (the last ACK, or the first byte
        #: outstanding after none was).
        self._since = 0.0
        #: When the deadline was found passed (the grace runs from then).
        self._overdue: float | None = None
        self._progressTimer: IDelayedCall | None = None
        self.sent = 0
        self.acked = 0
        self.received = 0
        self._ackSent = 0
        #: The unacknowledged bytes, as written, oldest first (or views of
        #: the frames they were sent in, which nothing else writes to).
        self._unacked: deque[bytes | memoryview] = deque()
        #: The stream writes go to (None while there is no path, or while
        #: the origin waits for the destination's RESUME).
        self._live: Stream | None = None
        #: The stream read from.
        self._reading: Stream | None = None
        self._last: Stream | None = None
        self._awaitingResume = False
        #: Payload bytes still to come in the DATA frame being received.
        self._need = 0
        #: A frame header split over two reads.
        self._head = b""
        self._ackTimer: IDelayedCall | None = None
        self._producer: Any = None
        #: Why the producer is paused: "stream", "window", "path".
        self._pausedBy: set[str] = set()
        #: Whether the plugin has paused reading (L{pauseProducing}).
        self._readPaused = False
        #: DATA payloads received while the plugin does not read, oldest
        #: first: the stream is still read, so that the ACK and RESUME
        #: frames behind them are not held up.  They are not acknowledged
        #: until delivered, so the far end keeps them and they are at most
        #: its window (and are dropped when the path fails: it resends).
        self._held: deque[bytes] = deque()
        self._heldSize = 0
        #: Whether received payload is held (the plugin does not read, or
        #: held bytes wait to be delivered first).
        self._holding = False
        self._draining = False
        #: Whether the stream itself is paused: more than a window held
        #: (a far end that writes beyond its window).
        self._transportPaused = False
        #: The far end's FIN, or its stream's clean close, that came behind
        #: held bytes: told once they are delivered.
        self._finHeld = False
        #: Whether the far end's FIN came on this path: it sends no more
        #: ACKs there, so there is no progress to wait for.
        self._farFinished = False
        #: Bytes sent after the far end's FIN, not kept: a path switch can
        #: then resume only a far end that has them all.
        self.unkept = 0
        self._lostHeld: Failure | None = None
        self._repeatTimer: IDelayedCall | None = None
        self._finPending = False
        self.ended = False
        #: Whether the far end has acknowledged anything: the origin does so
        #: once its plugin is connected, and only then does the destination
        #: hold the session when its path fails (before, the origin may
        #: have given the session up).
        self.ackSeen = False

    # -- what the session reads --------------------------------------------

    @property
    def bytesSent(self) -> int:
        return self.sent

    @property
    def bytesReceived(self) -> int:
        return self.received

    @property
    def buffered(self) -> int:
        """
        Bytes kept for retransmission.
        """
        return self.sent - self.acked - self.unkept

    @property
    def attached(self) -> bool:
        return self._reading is not None

    # -- paths ---------------------------------------------------------------

    def attach(self, stream: Stream, awaitingResume: bool, leftover: bytes = b"") -> None:
        """
        Ride C{stream} from now on.  With C{awaitingResume} (the origin, on
        a new path) nothing is sent until the destination's RESUME frame
        says where to start; otherwise the stream is live at once.
        """
        self._reading = self._last = stream
        # The link's reads are buffers of their own, never reused
        # (appnpy.link.bulktls), so a slice of one stays valid.
        stream.takesViews = self.takesViews
        self._need = 0
        self._head = b""
        self._farFinished = False
        self._awaitingResume = awaitingResume
        self._live = None if awaitingResume else stream
        # The stream is read even while the plugin does not read (DATA is
        # held for it): the RESUME on a new path, and the ACKs that free
        # this end's window, must not wait for the plugin.
        stream.attachProtocol(self.streamSide(self))
        stream.registerProducer(_SendGate(self), True)
        if not awaitingResume:
            self._watch()
        if leftover and self._reading is stream:
            self.dataReceived(leftover)

    def detach(self, reset: bool = True) -> None:
        """
        Leave the current stream (the path failed): nothing more is sent or
        read on it, and the producer is paused until the session has a
        path again.
        """
        stream, self._reading, self._live = self._reading, None, None
        self._awaitingResume = False
        self._need = 0
        self._head = b""
        # Held bytes were never acknowledged: the far end resends them
        # from the position given on the new path (a FIN behind them too).
        self._dropHeld()
        self._cancelProgress()
        self._pause("path")
        self._unpause("stream")
        if stream is not None:
            stream.protocol = Gone()
            stream.unregisterProducer()
            if reset:
                stream.abortConnection()

    def sendResume(self) -> None:
        """
        Tell the far end how much has arrived (the destination, on a new path).
        """
        if self._live is not None:
            self._live.write(_POSITION.pack(FRAME_RESUME, self.received))
            self._ackSent = self.received

    def resumeFrom(self, position: int) -> str | None:
        """
        The far end has C{position} bytes: retransmit the rest, then carry on.

        @return: why C{position} cannot be right, or L{None}.
        """
        problem = self._checkPosition(position)
        if problem is not None:
            return problem
        self._drop(position)
        stream = self._live
        assert stream is not None
        for chunk in self._unacked:
            stream.write(_DATA.pack(FRAME_DATA, len(chunk)) + chunk)
        if self._finPending:
            stream.loseConnection()
        self._unpause("path")
        self._watch()
        return None

    def checkResume(self, position: int) -> str | None:
        """
        Why the far end cannot have received C{position} bytes, or L{None}.
        """
        return self._checkPosition(position)

    def end(self) -> None:
        """
        The session is over: timers cancelled, buffers freed.
        """
        self.ended = True
        self._cancelAckTimer()
        self._cancelProgress()
        self._dropHeld()
        self._unacked.clear()
        self._producer = None
        stream, self._live, self._reading = self._reading, None, None
        if stream is not None:
            # Still attached (a session given up while its new path
            # waited for RESUME): the path is let go.
            stream.protocol = Gone()
            stream.abortConnection()

    # -- the TLS layer's transport ---------------------------------------------

    def write(self, data: bytes) -> None:
        n = len(data)
        if not n or self.ended:
            return
        if n > MAX_DATA_FRAME:
            for i in range(0, n, MAX_DATA_FRAME):
                self.write(data[i : i + MAX_DATA_FRAME])
            return
        # The data itself is kept (as before writeFrame), and the frame,
        # freed once written, is the block the next write's frame reuses.
        self._send(data, _DATA.pack(FRAME_DATA, n) + data, None)

    def writeFrame(self, frame: memoryview) -> None:
        """
        Send the payload in C{frame}, a writable buffer with L{FRAME_ROOM}
        bytes of room before at most L{MAX_DATA_FRAME} bytes of payload,
        which its writer never touches again (the end-to-end TLS layer reads
        its records into a fresh one, appnpy.link.bulktls.sendFramed).  The
        DATA header is written into the room, and the stream writes its own
        in front (yamux's writeWithRoom), so the frame goes to the link as
        it is; the payload is kept for retransmission as a view of it, with
        no copy.
        """
        n = len(frame) - FRAME_ROOM
        if n <= 0 or self.ended:
            return
        if n > MAX_DATA_FRAME:
            raise ValueError(f"a DATA frame of {n} bytes")
        _DATA.pack_into(frame, HEADER_SIZE, FRAME_DATA, n)
        self._send(frame[FRAME_ROOM:], frame[HEADER_SIZE:], frame)

    def _send(self, payload: bytes | memoryview, frame: Any, room: memoryview | None) -> None:
        # Keep C{payload} until it is acknowledged; send C{frame}, its DATA
        # frame, if there is a path (C{room}: the same with room for the
        # stream's header in front).
        n = len(payload)
        idle = self.sent == self.acked
        if self._farFinished:
            # The far end has sent its FIN on this path: it can acknowledge
            # nothing more, so this is not kept, nor waited for room for (a
            # half-closed peer reading a long answer).
            self.unkept += n
        else:
            self._unacked.append(payload)
        self.sent += n
        stream = self._live
        if stream is not None:
            writeWithRoom = getattr(stream, "writeWithRoom", None)
            if room is not None and writeWithRoom is not None:
                writeWithRoom(room)
            else:
                stream.write(frame)
            if not self._farFinished and idle:
                # The first byte outstanding: the wait for an ACK begins.
                self._watch()
        if self.buffered >= self.window and "window" not in self._pausedBy:
            self._pause("window")

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        # The TLS layer is done (after its close_notify): FIN once every
        # byte is out; during a switch, after the retransmission.
        self._finPending = True
        if self._live is not None:
            # What has arrived is acknowledged first: after the FIN this
            # end can send nothing, and the far end's close has finished
            # only once its last bytes (its close_notify) are acknowledged.
            if self.received > self._ackSent:
                self._sendAck()
            self._live.loseConnection()

    def abortConnection(self) -> None:
        stream = self._reading
        if stream is not None:
            stream.abortConnection()
        else:
            self._owner.streamLost(Failure(ConnectionAborted()))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        if self._pausedBy:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    def getPeer(self) -> Any:
        assert self._last is not None
        return self._last.getPeer()

    def getHost(self) -> Any:
        assert self._last is not None
        return self._last.getHost()

    # -- the receive side as a push producer (the session's) ------------------------

    def pauseProducing(self) -> None:
        # The stream is still read: DATA is held (_hold), ACK and RESUME
        # frames are acted on.
        self._readPaused = True
        self._holding = True

    def resumeProducing(self) -> None:
        self._readPaused = False
        self._drain()

    def stopProducing(self) -> None:
        pass

    # -- producer control --------------------------------------------------------

    def _pause(self, why: str) -> None:
        if why in self._pausedBy:
            return
        self._pausedBy.add(why)
        if len(self._pausedBy) == 1 and self._producer is not None:
            self._producer.pauseProducing()

    def _unpause(self, why: str) -> None:
        if why not in self._pausedBy:
            return
        self._pausedBy.discard(why)
        if not self._pausedBy and self._producer is not None:
            self._producer.resumeProducing()

    # -- receiving -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        need = self._need
        if need:
            # Inside a DATA frame (the common case): pass it on unparsed.
            n = len(data)
            if n <= need:
                self._need = need - n
                self._deliver(data)
                return
            self._need = 0
            stream = self._reading
            self._deliver(data[:need])
            if self._reading is not stream or stream is None:
                return
            data = data[need:]
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        if self._reading is None:
            return  # failed or left: nothing more is read
        if self._head:
            data = self._head + data
            self._head = b""
        stream = self._reading
        pos = 0
        n = len(data)
        while pos < n:
            kind = data[pos]
            if kind == FRAME_DATA:
                if n - pos < _DATA.size:
                    break
                _, length = _DATA.unpack_from(data, pos)
                if not 0 < length <= MAX_DATA_FRAME:
                    self._fail(f"a DATA frame of {length} bytes")
                    return
                if self._awaitingResume:
                    self._fail("DATA before RESUME on a new path")
                    return
                pos += _DATA.size
                end = min(n, pos + length)
                self._need = length - (end - pos)
                if end > pos:
                    # Never an empty delivery: the TLS layer's memory BIO
                    # takes a write of nothing as an error.
                    self._deliver(data[pos:end])
                pos = end
            elif kind == FRAME_ACK or kind == FRAME_RESUME:
                if n - pos < _POSITION.size:
                    break
                _, value = _POSITION.unpack_from(data, pos)
                pos += _POSITION.size
                if kind == FRAME_ACK:
                    self._ackReceived(value)
                else:
                    self._resumeReceived(value)
            else:
                self._fail(f"unknown frame type {kind}")
                return
            if self._reading is not stream or stream is None:
                return
        if pos < n:
            # Kept past this call: bytes of its own, not a view.
            self._head = bytes(data[pos:])

    def _deliver(self, data: bytes) -> None:
        if self._holding:
            self._hold(data)
        else:
            self._pass(data)

    def _pass(self, data: bytes) -> None:
        self.received += len(data)
        if self.received - self._ackSent >= self.ackEvery:
            self._sendAck()
        elif self._ackTimer is None:
            self._ackTimer = self._clock.callLater(self.ackDelay, self._ackDue)
        self.deliver(data)

    # -- holding DATA for a plugin that does not read ------------------------------

    def _hold(self, data: bytes | memoryview) -> None:
        if isinstance(data, memoryview):
            # Held for long, perhaps: a copy, so that a small slice does not
            # keep a whole read of the link alive.
            data = bytes(data)
        self._held.append(data)
        self._heldSize += len(data)
        if self._repeatTimer is None:
            self._repeatTimer = self._clock.callLater(ACK_REPEAT, self._repeatAck)
        if self._heldSize > self.window and not self._transportPaused:
            # More than the far end may have unacknowledged (it wrote past
            # its window): the stream itself is paused now, so memory stays
            # bounded; the frames behind wait in the stream's window.
            stream = self._reading
            if stream is not None and not self._awaitingResume:
                self._transportPaused = True
                stream.pauseProducing()

    def _drain(self) -> None:
        """
        Deliver what was held while the plugin did not read, until it
        pauses again; then what came behind it (a FIN, the stream's end).
        """
        if self._draining:
            return  # the plugin resumed from inside a delivery: carry on there
        self._draining = True
        held = self._held
        try:
            # Anything that arrives meanwhile is held behind, in order.
            while held and not self._readPaused:
                data = held.popleft()
                self._heldSize -= len(data)
                self._pass(data)
        finally:
            self._draining = False
        if held or self._readPaused or self.ended:
            return
        self._holding = False
        self._cancelRepeat()
        stream = self._reading
        if self._transportPaused:
            self._transportPaused = False
            # The far end's ACKs waited behind what this end did not read:
            # the wait for them starts again.
            self._since = self._clock.seconds()
            if stream is not None:
                stream.resumeProducing()
        if self._finHeld:
            # (Checked as it arrived; the stream may be gone since.)
            self._finHeld = False
            self._owner.farEndFinished()
        lost, self._lostHeld = self._lostHeld, None
        if lost is not None:
            self._owner.streamLost(lost)

    def _repeatAck(self) -> None:
        # The far end sees its bytes unacknowledged: the same position
        # again says that they arrived and wait for this end's plugin.
        self._repeatTimer = None
        if self._held and not self.ended:
            stream = self._live
            if stream is not None:
                stream.write(_POSITION.pack(FRAME_ACK, self.received))
            self._repeatTimer = self._clock.callLater(ACK_REPEAT, self._repeatAck)

    def _cancelRepeat(self) -> None:
        if self._repeatTimer is not None and self._repeatTimer.active():
            self._repeatTimer.cancel()
        self._repeatTimer = None

    def _dropHeld(self) -> None:
        self._held.clear()
        self._heldSize = 0
        self._holding = self._readPaused
        self._finHeld = False
        self._lostHeld = None
        self._cancelRepeat()
        if self._transportPaused:
            self._transportPaused = False
            stream = self._reading
            if stream is not None:
                stream.resumeProducing()

    def sendAckNow(self) -> None:
        """
        Acknowledge what has arrived, now (the origin, its plugin connected).
        """
        self._sendAck()

    def _sendAck(self) -> None:
        stream = self._live
        if stream is not None:
            stream.write(_POSITION.pack(FRAME_ACK, self.received))
            self._ackSent = self.received

    def _ackDue(self) -> None:
        self._ackTimer = None
        if self.received > self._ackSent:
            self._sendAck()

    # -- the progress check ------------------------------------------------------

    def progressDeadline(self) -> float:
        """
        Seconds this end waits, with bytes unacknowledged, for an ACK
        before it takes the path for failed: L{progressTimeout}, or
        L{PROGRESS_RTT_FACTOR} times the path's round-trip time if longer.
        """
        rtt = self.rtt
        if rtt is None:
            return self.progressTimeout
        return max(self.progressTimeout, PROGRESS_RTT_FACTOR * rtt)

    def _watch(self) -> None:
        # Bytes are outstanding on a live path: the wait for an ACK starts.
        if self._live is None or self.sent == self.acked or self.ended or self._farFinished:
            return
        if not self.progressTimeout:
            return  # the check is off
        now = self._since = self._clock.seconds()
        if self._mark is None:
            self._mark = (self.sent, now)
        if self._progressTimer is None:
            self._progressTimer = self._clock.callLater(self.progressDeadline(), self._progressDue)

    def _progressDue(self) -> None:
        self._progressTimer = None
        if self._live is None or self.sent == self.acked or self.ended:
            return  # the next byte outstanding on a live path starts it again
        now = self._clock.seconds()
        deadline = self.progressDeadline()
        if self._transportPaused or "stream" in self._pausedBy or self._live.unsent:
            # Held back here, not by the path: this end does not read what
            # the far end's ACKs wait behind, or its own bytes have not left
            # (the next hop's window or a busy link holds them back, as a
            # slow path does).
            self._since = now
        left = self._since + deadline - now
        if left > 0:
            self._overdue = None
            self._progressTimer = self._clock.callLater(left, self._progressDue)
            return
        if self._overdue is None:
            # Overdue: once more, after a turn of reading (an ACK clears it).
            self._overdue = now
            self._progressTimer = self._clock.callLater(PROGRESS_GRACE, self._progressDue)
            return
        # The link may look fine, but nothing comes back from the far end:
        # a relay that swallows the bytes.  Reported as the stream's loss
        # (the path failed); the stream is reset, which the relays pass on.
        waited = now - self._since
        detail = f"no ACK for {waited:.3g} s with {self.sent - self.acked} bytes unacknowledged"
        stream = self._reading
        if stream is not None:
            stream.protocol = Gone()
            stream.unregisterProducer()
            stream.abortConnection()
        self._streamLost(Failure(ConnectionLost(detail)))

    def _cancelProgress(self) -> None:
        self._mark = None
        self._overdue = None
        self.rtt = None
        if self._progressTimer is not None and self._progressTimer.active():
            self._progressTimer.cancel()
        self._progressTimer = None

    def _cancelAckTimer(self) -> None:
        if self._ackTimer is not None and self._ackTimer.active():
            self._ackTimer.cancel()
        self._ackTimer = None

    def _checkPosition(self, position: int) -> str | None:
        if position < self.acked:
            return f"position {position} is before what was acknowledged ({self.acked})"
        if position > self.sent:
            return f"position {position} is beyond what was sent ({self.sent})"
        if self.unkept and position < self.sent:
            return (
                f"position {position}: the {self.unkept} bytes sent after the far "
                "end's FIN were not kept"
            )
        return None

    def _ackReceived(self, position: int) -> None:
        if self._awaitingResume:
            self._fail("ACK before RESUME on a new path")
            return
        problem = self._checkPosition(position)
        if problem is not None:
            self._fail(f"ACK: {problem}")
            return
        self.ackSeen = True
        # Any ACK, even one that repeats its position (a far end holding
        # bytes for its plugin), shows the path works: the wait restarts.
        now = self._since = self._clock.seconds()
        self._overdue = None
        mark = self._mark
        if mark is not None:
            if position >= mark[0]:
                self._mark = None
                sample = now - mark[1]
                rtt = self.rtt
                self.rtt = sample if rtt is None else rtt + (sample - rtt) / 8
            elif position == self.acked:
                # A repeat: the far end held the bytes, so the time to this
                # ACK is not the path's.
                self._mark = None
        self._drop(position)
        if self._mark is None and self.sent > position:
            self._mark = (self.sent, now)

    def _drop(self, position: int) -> None:
        # Forget what the far end has: whole chunks, then part of one.
        drop = position - self.acked
        unacked = self._unacked
        while drop and unacked:
            chunk = unacked[0]
            if len(chunk) <= drop:
                unacked.popleft()
                drop -= len(chunk)
            else:
                unacked[0] = chunk[drop:]
                drop = 0
        self.acked = position
        if position == self.sent:
            self.unkept = 0  # the far end has it all, kept or not
        if "window" in self._pausedBy and self.buffered < self.window:
            self._unpause("window")

    def _resumeReceived(self, position: int) -> None:
        if not self._awaitingResume:
            self._fail("RESUME on a path that is running")
            return
        self._awaitingResume = False
        self._live = self._reading
        problem = self.resumeFrom(position)
        if problem is not None:
            self._fail(f"RESUME: {problem}")
            return
        self._owner.resumed()

    def _fail(self, detail: str) -> None:
        # A frame that breaks the rules: the session ends (protocol-error);
        # nothing more is read from this stream.
        stream = self._reading
        if stream is not None:
            stream.protocol = Gone()
        self._reading = None
        self._need = 0
        self._head = b""
        self._dropHeld()
        self._cancelProgress()
        self._owner.layerFailed(detail)

    def _finReceived(self) -> None:
        if self._reading is None:
            return  # a stream left or failed: its FIN is nobody's
        if self._awaitingResume:
            # The far end sends its RESUME before anything else on a new
            # path, its FIN included.
            self._fail("FIN before RESUME on a new path")
            return
        self._farFinished = True
        self._cancelProgress()
        # Its ACKs would come on the stream it has just finished: what is
        # kept stays kept (a new path's RESUME may still want it), but
        # nothing more waits for room.
        if "window" in self._pausedBy:
            self._unpause("window")
        if self._held:
            self._finHeld = True  # told after the bytes before it
            return
        self._owner.farEndFinished()

    def _streamLost(self, reason: Failure) -> None:
        self._reading = self._live = None
        self._cancelProgress()
        if self._held and (self._finHeld or reason.check(ConnectionDone)):
            # Everything the far end sent has arrived (its FIN came): the
            # plugin reads it before it hears that the stream is gone.
            self._transportPaused = False
            self._lostHeld = reason
            return
        self._owner.streamLost(reason)
