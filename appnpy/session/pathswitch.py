"""
Non-disruptive path switch for routed sessions (APPN HPR's idea): the
numbered, acknowledged byte stream under the end-to-end TLS
(L{ResumableStream}) and the lifecycle of a session that can move to a new
path (L{PathSwitch} and its Automat machine, docs/state-machines.md "Path
switch").  The wire rules are docs/protocol.md section 15.8.

The end-to-end TLS layer of a routed session writes its ciphertext into a
L{ResumableStream} instead of the session's yamux stream.  That layer frames
it (a DATA frame per TLS write, with no sequence number: the bytes of one
direction are numbered by their position), keeps every byte the far end has
not acknowledged (at most a window's worth: the TLS layer's producer, and so
the plugin's, is paused when it is full) and acknowledges what it receives
(an ACK frame every L{ACK_EVERY} bytes, or L{ACK_DELAY} after the first
unacknowledged byte).  When the path fails, the layer is detached from the
dead stream and the TLS layer sees nothing but a pause; once the origin has
re-bound the session on a new path, both ends say how much they have
received (the re-BIND's C{resume}, the destination's RESUME frame) and
retransmit the rest, so the TLS records continue with no byte lost,
repeated or reordered.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import Message, SessionAccept, SessionOpen, SessionRefuse, encodeMessage
from appnpy.errors import GoAwayReceived, Reason, SessionClosed, StreamLimitExceeded
from appnpy.session.bind import signBind

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.endtoend import RoutedSession
    from appnpy.session.routed import RoutedSessions

__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "MAX_DATA_FRAME",
    "RETRY_INTERVAL",
    "SWITCH_TIMEOUT",
    "SWITCH_WINDOW",
    "PathSwitch",
    "ResumableStream",
    "orderAlternatives",
]

#: Frame types of the numbered stream (docs/protocol.md 15.8).
FRAME_DATA = 0
FRAME_ACK = 1
FRAME_RESUME = 2
_DATA = struct.Struct(">BI")
_POSITION = struct.Struct(">BQ")

#: The largest DATA payload sent or accepted (the TLS layer writes at most
#: 32 KiB at a time).
MAX_DATA_FRAME = 65536
#: Unacknowledged bytes an end keeps for retransmission; the producer
#: writing into the session is paused while this many are outstanding.
SWITCH_WINDOW = 4 * 1024 * 1024
#: Received bytes after which an end acknowledges at once ...
ACK_EVERY = 64 * 1024
#: ... and how long it waits at most before it acknowledges fewer.
ACK_DELAY = 0.05
#: Seconds a session may go without a path before it ends with no-route
#: (the origin keeps looking for one that long; the destination holds the
#: session that long plus the origin's BIND timeout).
SWITCH_TIMEOUT = 30.0
#: Seconds the origin waits after every route it knew has failed before it
#: asks for routes again.
RETRY_INTERVAL = 1.0
#: How many alternative routes the origin asks for.
ALTERNATIVE_ROUTES = 8


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


class _StreamSide:
    """
    The protocol of the yamux stream the session rides now.  Its
    C{dataReceived} is the numbered stream's (set per instance).
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
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._layer._streamLost(reason)


class _Gone:
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
    @ivar received: bytes received from the far end (what is acknowledged).
    """

    def __init__(
        self,
        clock: IReactorTime,
        owner: _Owner,
        window: int = SWITCH_WINDOW,
        ackEvery: int = ACK_EVERY,
        ackDelay: float = ACK_DELAY,
    ) -> None:
        self._clock = clock
        self._owner = owner
        #: Where received bytes go: the TLS layer's dataReceived.
        self.deliver: Callable[[bytes], None] = lambda data: None
        self.window = window
        self.ackEvery = max(1, min(ackEvery, window // 4))
        self.ackDelay = ackDelay
        self.sent = 0
        self.acked = 0
        self.received = 0
        self._ackSent = 0
        #: The unacknowledged bytes, as written, oldest first.
        self._unacked: deque[bytes] = deque()
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
        self._readPaused = False
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
        return self.sent - self.acked

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
        self._need = 0
        self._head = b""
        self._awaitingResume = awaitingResume
        self._live = None if awaitingResume else stream
        stream.attachProtocol(_StreamSide(self))
        stream.registerProducer(_SendGate(self), True)
        if self._readPaused:
            stream.pauseProducing()
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
        self._pause("path")
        self._unpause("stream")
        if stream is not None:
            stream.protocol = _Gone()
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
        self._unacked.clear()
        self._producer = None
        stream, self._live, self._reading = self._reading, None, None
        if stream is not None:
            # Still attached (a session given up while its new path
            # waited for RESUME): the path is let go.
            stream.protocol = _Gone()
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
        self._unacked.append(data)
        self.sent += n
        stream = self._live
        if stream is not None:
            stream.write(_DATA.pack(FRAME_DATA, n) + data)
        if self.sent - self.acked >= self.window and "window" not in self._pausedBy:
            self._pause("window")

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        # The TLS layer is done (after its close_notify): FIN once every
        # byte is out; during a switch, after the retransmission.
        self._finPending = True
        if self._live is not None:
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
        self._readPaused = True
        if self._reading is not None:
            self._reading.pauseProducing()

    def resumeProducing(self) -> None:
        self._readPaused = False
        if self._reading is not None:
            self._reading.resumeProducing()

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
            self._head = data[pos:]

    def _deliver(self, data: bytes) -> None:
        self.received += len(data)
        if self.received - self._ackSent >= self.ackEvery:
            self._sendAck()
        elif self._ackTimer is None:
            self._ackTimer = self._clock.callLater(self.ackDelay, self._ackDue)
        self.deliver(data)

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

    def _cancelAckTimer(self) -> None:
        if self._ackTimer is not None and self._ackTimer.active():
            self._ackTimer.cancel()
        self._ackTimer = None

    def _checkPosition(self, position: int) -> str | None:
        if position < self.acked:
            return f"position {position} is before what was acknowledged ({self.acked})"
        if position > self.sent:
            return f"position {position} is beyond what was sent ({self.sent})"
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
        self._drop(position)

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
        if "window" in self._pausedBy and self.sent - position < self.window:
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
            stream.protocol = _Gone()
        self._reading = None
        self._need = 0
        self._head = b""
        self._owner.layerFailed(detail)

    def _finReceived(self) -> None:
        self._owner.farEndFinished()

    def _streamLost(self, reason: Failure) -> None:
        self._reading = self._live = None
        self._owner.streamLost(reason)


def orderAlternatives(routes: list[list[str]], failed: list[str]) -> list[list[str]]:
    """
    The routes to try after C{failed} broke, best first: those sharing the
    fewest intermediate nodes, then the fewest links, with the failed path;
    the failed route itself last (its failure may have been passing).
    Routes of two nodes (the far end became a neighbour) are left out: a
    session keeps its kind.
    """
    middle = set(failed[1:-1])
    links = {frozenset(p) for p in zip(failed, failed[1:], strict=False)}

    def key(item: tuple[int, list[str]]) -> tuple[int, int, int, int]:
        i, route = item
        same = 1 if route == failed else 0
        shared = len(middle.intersection(route[1:-1]))
        sharedLinks = len(
            links.intersection(frozenset(p) for p in zip(route, route[1:], strict=False))
        )
        return same, shared, sharedLinks, i

    unique: list[list[str]] = []
    for route in routes:
        if len(route) >= 3 and route not in unique:
            unique.append(route)
    return [route for _, route in sorted(enumerate(unique), key=key)]


# -- the switching session's lifecycle -------------------------------------------


class _SwitchInputs(Protocol):
    """
    The inputs of a switchable routed session's path lifecycle (its core is
    the L{PathSwitch}); docs/state-machines.md has its diagram.
    """

    def pathLost(self) -> None:
        """
        The origin: the session's path failed (a relay's UNBIND
        C{link-failure}, or its stream or first-hop link lost).
        """

    def holdPath(self) -> None:
        """
        The destination: its side of the path failed; the origin switches.
        """

    def attemptFailed(self, reason: str, detail: str) -> None:
        """
        The origin: a re-BIND on a new route was refused or lost.
        """

    def retryDue(self) -> None:
        """
        The origin: time to ask for routes again.
        """

    def rebound(self) -> None:
        """
        The session runs on a new path (the origin: the destination's
        RESUME arrived; the destination: it accepted a re-BIND).
        """

    def deadlinePassed(self) -> None:
        """
        No path for L{PathSwitch.timeout} seconds.
        """

    def sessionEnded(self) -> None:
        """
        The session is over (closed, aborted, failed).
        """


class PathSwitch:
    """
    The path lifecycle of one switchable routed session: which path it is
    on, whether it is switching, and the origin's search for a new path.

    @ivar path: the path number of the session's current path.
    @ivar switches: how many times the session moved to a new path.
    """

    log = Logger()

    def __init__(self, owner: RoutedSessions, session: RoutedSession, timeout: float) -> None:
        self.owner = owner
        self.session = session
        self.reactor = owner.reactor
        self.timeout = timeout
        self.path = 1
        #: The path number of the origin's next re-BIND (each is used once).
        self.nextPath = 2
        self.switches = 0
        self.state = "up"
        #: Why the path failed last.
        self.why = ""
        self._deadline: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._candidates: list[list[str]] = []
        self._failedRoute: list[str] = []
        #: Whether the candidates came from asking for routes this round.
        self._fetched = False
        #: The re-BIND in flight: its stream, link and timer.
        self._attempt: tuple[Stream, ControlPoint, IDelayedCall] | None = None
        self._since = 0.0
        self.lifecycle: _SwitchInputs = _SwitchMachine(self)

    # -- what the outputs do -----------------------------------------------------

    def startDeadline(self, seconds: float) -> None:
        self._since = self.reactor.seconds()
        self._deadline = self.reactor.callLater(seconds, self.lifecycle.deadlinePassed)

    def cancelTimers(self) -> None:
        for timer in (self._deadline, self._retry):
            if timer is not None and timer.active():
                timer.cancel()
        self._deadline = self._retry = None

    def abandonAttempt(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            stream, cp, timer = attempt
            if timer.active():
                timer.cancel()
            stream.protocol = _Gone()
            stream.abortConnection()

    def pathDown(self, why: str) -> None:
        """
        The session's stream or path failed (C{why}): by role, switch or
        hold; during a switch, the re-BIND's new path failed before it
        resumed.
        """
        self.why = why
        if self.state == "switching":
            self.session.layer.detach()
            self.lifecycle.attemptFailed(Reason.LINK_FAILURE.value, f"the new path failed: {why}")
        elif self.session.direction == "outbound":
            self.lifecycle.pathLost()
        else:
            self.lifecycle.holdPath()

    def tryNext(self) -> None:
        """
        Re-BIND on the next candidate route; ask for routes when none is
        left, and wait L{RETRY_INTERVAL} once every route of this round
        failed.
        """
        if self.state != "switching" or self._attempt is not None:
            return
        if self.owner.host.shuttingDown:
            self.session.endSwitch(Reason.SHUTTING_DOWN.value, "the node is stopping")
            return
        while self._candidates:
            if self._bind(self._candidates.pop(0)):
                return
        if self._fetched:
            # Every route of this round failed: the topology may change.
            self._fetched = False
            self._waitForRoutes()
            return
        d = self.owner.alternativeRoutes(self.session.peerNodeID, self.session.cos)
        d.addCallbacks(self._routesFound, self._noRoutes)

    def _routesFound(self, routes: list[list[str]]) -> None:
        if self.state != "switching" or self._attempt is not None:
            return
        me = self.owner.nodeID
        dest = self.session.peerNodeID
        ok = [r for r in routes if r and r[0] == me and r[-1] == dest]
        self._candidates = orderAlternatives(ok, self._failedRoute)
        self._fetched = True
        self.tryNext()

    def _noRoutes(self, failure: Failure) -> None:
        if self.state == "switching":
            self.log.debug(
                "no route for session {sid}: {why}",
                sid=self.session.sessionID,
                why=failure.getErrorMessage(),
            )
            self._fetched = False
            self._waitForRoutes()

    def _waitForRoutes(self) -> None:
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(RETRY_INTERVAL, self.lifecycle.retryDue)

    def afterFailure(self, reason: str, detail: str) -> None:
        self._attempt = None
        self.log.info(
            "path switch of session {sid}: re-BIND failed: {reason} {detail}",
            sid=self.session.sessionID,
            reason=reason,
            detail=detail,
        )
        self.tryNext()

    def _bind(self, route: list[str]) -> bool:
        """
        Send a re-BIND along C{route}; whether it went out.
        """
        owner, session = self.owner, self.session
        cp = owner.host.activeLink(route[1])
        if cp is None or not cp.isActive:
            return False
        try:
            stream = cp.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded):
            return False
        path = self.nextPath
        self.nextPath += 1
        sid = session.sessionID
        request = SessionOpen(
            session_id=sid,
            origin=owner.nodeID,
            destination=session.peerNodeID,
            plugin=session.plugin,
            cos=session.cos,
            window=cp.mux.config.initialWindow,
            parameters=dict(session.parameters),
            route=route,
            path=path,
            resume=session.layer.received,
        )
        identity = owner.identity
        request = signBind(request, identity.publicKeyBytes, identity.sign, self.reactor.seconds())
        left = self.timeout - (self.reactor.seconds() - self._since)
        wait = max(0.001, min(owner.bindTimeout, left))
        timer = self.reactor.callLater(wait, self._attemptTimedOut, stream)
        self._attempt = (stream, cp, timer)

        def onAnswer(msg: Message, leftover: bytes) -> None:
            self._answered(stream, cp, route, path, msg, leftover)

        def onLost(reason: Failure) -> None:
            why = (
                reason.value.reason
                if isinstance(reason.value, SessionClosed)
                else Reason.LINK_FAILURE.value
            )
            self._failAttempt(stream, why, reason.getErrorMessage())

        self.log.info(
            "path switch of session {sid}: re-BIND {path} via {route}",
            sid=sid,
            path=path,
            route=route,
        )
        stream.attachProtocol(BindReader(onAnswer, onLost))
        stream.write(encodeMessage(request))
        return True

    def _isCurrent(self, stream: Stream) -> bool:
        return self._attempt is not None and self._attempt[0] is stream

    def _failAttempt(self, stream: Stream, reason: str, detail: str) -> None:
        if self.state != "switching" or not self._isCurrent(stream):
            return
        if self._attempt is not None:
            timer = self._attempt[2]
            if timer.active():
                timer.cancel()
        self._attempt = None
        self.lifecycle.attemptFailed(reason, detail)

    def _attemptTimedOut(self, stream: Stream) -> None:
        if not self._isCurrent(stream):
            return
        self._attempt = None
        # The reset alone tells the relays (they UNBIND link-failure onward,
        # which a destination that accepted meanwhile takes as a path lost).
        stream.protocol = _Gone()
        stream.abortConnection()
        if self.state == "switching":
            self.lifecycle.attemptFailed(Reason.TIMEOUT.value, "no answer to the re-BIND")

    def _answered(
        self,
        stream: Stream,
        cp: ControlPoint,
        route: list[str],
        path: int,
        answer: Message,
        leftover: bytes,
    ) -> None:
        if self.state != "switching" or not self._isCurrent(stream):
            stream.abortConnection()
            return
        sid = self.session.sessionID
        if isinstance(answer, SessionRefuse) and answer.session_id == sid:
            stream.loseConnection()
            self._failAttempt(stream, answer.reason, answer.detail)
            return
        if not isinstance(answer, SessionAccept) or answer.session_id != sid:
            stream.abortConnection()
            self._failAttempt(stream, Reason.PROTOCOL_ERROR.value, f"unexpected {answer.typeName}")
            return
        assert self._attempt is not None
        timer = self._attempt[2]
        if timer.active():
            timer.cancel()
        # Attached, but silent until the destination's RESUME says where
        # to start; a loss before it is this attempt's failure.
        self._attempt = None
        self.path = path
        self.session.rideOn(cp, stream, route, awaitingResume=True, leftover=leftover)

    def paused(self) -> float:
        return float(self.reactor.seconds() - self._since)


def _buildSwitchMachine() -> Callable[[PathSwitch], _SwitchInputs]:
    machine = TypeMachineBuilder(_SwitchInputs, PathSwitch)
    Up = machine.state("Up")
    Switching = machine.state("Switching")
    Holding = machine.state("Holding")
    Ended = machine.state("Ended")
    I = _SwitchInputs  # noqa: E741

    def ignore(states: list[Any], *inputs: Callable[..., None]) -> None:
        for state in states:
            for input in inputs:
                state.upon(input).loop().returns(None)

    @Up.upon(I.pathLost).to(Switching)
    def startSwitch(m: _SwitchInputs, c: PathSwitch) -> None:
        c.state = "switching"
        c._failedRoute = list(c.session.route)
        c._candidates = []
        c._fetched = False
        c.session.leavePath()
        c.startDeadline(c.timeout)
        c.log.info(
            "session {sid}: path {route} failed ({why}); switching",
            sid=c.session.sessionID,
            route=c.session.route,
            why=c.why,
        )
        c.tryNext()

    @Up.upon(I.holdPath).to(Holding)
    def startHold(m: _SwitchInputs, c: PathSwitch) -> None:
        c.state = "holding"
        c.session.leavePath()
        # The origin looks for a path for its timeout; its last re-BIND
        # may take its BIND timeout to arrive.
        c.startDeadline(c.timeout + c.owner.bindTimeout)
        c.log.info(
            "session {sid}: path failed ({why}); held for the origin",
            sid=c.session.sessionID,
            why=c.why,
        )

    @Up.upon(I.rebound).loop()
    def switchedEarly(m: _SwitchInputs, c: PathSwitch) -> None:
        # The destination: a re-BIND came before this end saw its old path fail.
        c.switches += 1
        c.log.info(
            "session {sid}: moved to path {path} {route}",
            sid=c.session.sessionID,
            path=c.path,
            route=c.session.route,
        )

    @Switching.upon(I.attemptFailed).loop()
    def tryAnother(m: _SwitchInputs, c: PathSwitch, reason: str, detail: str) -> None:
        c.afterFailure(reason, detail)

    @Switching.upon(I.retryDue).loop()
    def askAgain(m: _SwitchInputs, c: PathSwitch) -> None:
        c._retry = None
        c.tryNext()

    @Switching.upon(I.rebound).to(Up)
    @Holding.upon(I.rebound).to(Up)
    def resumed(m: _SwitchInputs, c: PathSwitch) -> None:
        c.state = "up"
        c.cancelTimers()
        c.switches += 1
        c.log.info(
            "session {sid}: resumed on path {path} {route} after {pause:.3f} s",
            sid=c.session.sessionID,
            path=c.path,
            route=c.session.route,
            pause=c.paused(),
        )

    @Switching.upon(I.deadlinePassed).to(Ended)
    @Holding.upon(I.deadlinePassed).to(Ended)
    def endNoRoute(m: _SwitchInputs, c: PathSwitch) -> None:
        c.state = "ended"
        c._deadline = None
        c.cancelTimers()
        c.abandonAttempt()
        c.session.endSwitch(
            Reason.NO_ROUTE.value, f"no path for the session within {c.timeout:g} s"
        )

    @Up.upon(I.sessionEnded).to(Ended)
    @Switching.upon(I.sessionEnded).to(Ended)
    @Holding.upon(I.sessionEnded).to(Ended)
    def finish(m: _SwitchInputs, c: PathSwitch) -> None:
        c.state = "ended"
        c.cancelTimers()
        c.abandonAttempt()

    ignore([Up], I.attemptFailed, I.retryDue, I.deadlinePassed)
    ignore([Switching], I.pathLost, I.holdPath)
    ignore([Holding], I.pathLost, I.holdPath, I.attemptFailed, I.retryDue)
    ignore(
        [Ended],
        I.pathLost,
        I.holdPath,
        I.attemptFailed,
        I.retryDue,
        I.rebound,
        I.deadlinePassed,
        I.sessionEnded,
    )
    return machine.build()


_SwitchMachine = _buildSwitchMachine()
