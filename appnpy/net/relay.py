"""
Intermediate session routing (APPN ISR): a network node relays a routed
session between two of its neighbours by splicing two streams.

A BIND (L{SessionOpen}) whose destination is another node arrives on a stream
from the previous hop.  After checking the previous hop's BIND rate, the
route (this node exactly once, the previous element is the neighbour that
sent it, no loop, not too long, the next hop an active neighbour), the
origin's signature on the BIND (L{BindVerifier}: self-certifying key, fresh,
not replayed) and the caps (in total, per previous hop, per origin, and the
buffer budget), the relay opens a stream to the next hop, forwards the BIND
unchanged and relays the answer back.  Only a verified BIND counts against
its origin's cap, so no neighbour can spend another node's places.  On an accept the two streams are spliced: each one's bytes are
written to the other, and each stream is registered as the push producer of the
other, so a slow receiver far away pauses this node's reading, which stops the
window updates to the previous hop: backpressure travels hop by hop and a
relay buffers about one window per direction.  What every splice may buffer
is reserved from one budget per node (L{RELAY_BUFFER_BUDGET}): as the budget
fills, new splices get smaller send buffers, then BINDs are refused.

A splice holds its place only for L{START_TIMEOUT} until the destination
confirms, by L{SessionStarted} passed back hop by hop, that the end-to-end
TLS has authenticated the origin; otherwise both streams are reset.

The relay never sees plaintext: the two ends run TLS end to end over the
chain of streams (L{appnpy.session.routed}).

State per session is one L{RelayEntry} in L{Relay.table}, keyed by the
origin that signed its BIND and the session ID: another origin using the
same ID (over other links) is another session.
It is released when the session ends: UNBIND from either side (forwarded to
the other side, then the FINs follow through the splice), a reset of either
stream, or the loss of either link (the surviving side gets UNBIND
C{link-failure} and a reset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import RELAY, IBindHandler, ILinkObserver, ILinkRegistry
from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    SessionStarted,
)
from appnpy.errors import GoAwayReceived, Reason, StreamLimitExceeded
from appnpy.link.ratelimit import TokenBucket
from appnpy.net.relaymachine import IN, OUT, RelayEntry
from appnpy.session._interfaces import IRoutedSessionsHost
from appnpy.session.bind import BindVerifier, chainStartedHandler, checkRoute

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream


class IRelayHost(IRoutedSessionsHost, ILinkRegistry):
    """
    What the relay needs from its node: its identity and state (through
    L{IRoutedSessionsHost}), the active links, BIND handler registration
    and link events.
    """

    def endsSession(sessionID: str) -> bool:
        """
        Whether a session this node originates or ends (adjacent or routed,
        bound, being bound or switching paths) uses C{sessionID}.
        """


__all__ = [
    "Relay",
    "RelayEntry",
    "installRelay",
    "checkRoute",
    "MAX_RELAYED_SESSIONS",
    "MAX_RELAYED_PER_ORIGIN",
    "MAX_RELAYED_PER_PREVIOUS_HOP",
    "RELAY_BUFFER_BUDGET",
]

#: Relayed sessions one node carries at most, all origins together.
MAX_RELAYED_SESSIONS = 4096
#: Relayed sessions one origin node may have through this node at a time.
MAX_RELAYED_PER_ORIGIN = 256
#: Relayed sessions whose BIND came from one neighbour, all origins
#: together: a neighbour that makes up origins (each with a key of its own)
#: still gets only this share of the relay.
MAX_RELAYED_PER_PREVIOUS_HOP = 1024
#: Routed BINDs a neighbour may send per second (and at once): bounds the
#: signature checks and replay-cache entries one neighbour can cause.
BIND_RATE = 500.0
BIND_BURST = 1000.0
#: Seconds a splice may wait for the destination's SessionStarted (the ends
#: have 10 s for their handshake by default; this leaves room for a slow
#: route and a longer configured handshake timeout).
START_TIMEOUT = 60.0
#: Seconds the next hop may take to answer a forwarded BIND.
BIND_TIMEOUT = 30.0
#: Seconds a session may take to finish closing (FINs through the splice)
#: after UNBIND or the end of one of its streams; then both are reset.
LINGER_TIMEOUT = 30.0


#: Send buffer per direction of a spliced session before the relay stops
#: reading the other side (see benchmarks/routed_bulk.py).
RELAY_SEND_HIGH_WATER = 1024 * 1024
#: The least send buffer a splice gets; below it the relay refuses BINDs.
RELAY_MIN_SEND_HIGH_WATER = 64 * 1024
#: Bytes all splices of this node together may buffer.  Each splice
#: reserves, per direction, its receive window, its send high water and one
#: frame (a write may overshoot the high water by a frame), and gives it
#: back when it ends; yamux's window growth beyond the initial window is
#: bounded apart from this, per link (L{MuxConfig.maxLinkReceiveBuffer}).
RELAY_BUFFER_BUDGET = 512 * 1024 * 1024


@implementer(IPushProducer)
class _Pauser:
    """
    One spliced stream as the push producer of the other: pausing stops
    reading (and so the window updates to the previous hop).  Stopping is
    handled by the relay, which must send UNBIND before any FIN or reset.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def pauseProducing(self) -> None:
        self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        self._stream.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _Batch:
    """
    Forwards what one read of a link brings for a spliced stream in one
    write to the other stream: the frames of the read (about 256 KiB) leave
    in one TLS write, not one each.  The multiplexer of the link read from
    flushes it before it handles anything else of that read (a FIN, a
    reset, a control message), so nothing overtakes the data.
    """

    __slots__ = ("_to", "_fromMux", "_fromID", "_pending")

    def __init__(self, to: Stream, fromMux: Any, fromID: int) -> None:
        self._to = to
        self._fromMux = fromMux
        self._fromID = fromID
        self._pending: list[Any] | None = None

    def forward(self, data: Any) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._fromMux.holdUntilOther(self._fromID, self.flush)
        else:
            pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            self._to.writeFrames(pending)


@implementer(IHalfCloseableProtocol)
class _SpliceSide:
    """
    The protocol of one spliced stream.  Its C{dataReceived} is set per
    instance to the forwarder into the other stream (normally that stream's
    C{write}), so relaying a frame costs no extra Python call.
    """

    def __init__(self, entry: RelayEntry, side: int) -> None:
        self._entry = entry
        self._side = side
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:  # replaced per instance
        pass

    def _settle(self) -> None:
        # Whatever this stream's forwarder still holds goes first.
        batch = getattr(self.dataReceived, "__self__", None)
        if isinstance(batch, _Batch):
            batch.flush()

    def readConnectionLost(self) -> None:
        self._settle()
        self._entry.lifecycle.finReceived(self._side)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._settle()
        self._entry.lifecycle.streamLost(self._side, reason)


class _PendingInbound:
    """
    The protocol of the previous hop's stream while the BIND is forwarded:
    data before the answer breaks the protocol; loss cancels the BIND.
    """

    def __init__(self, entry: RelayEntry) -> None:
        self._entry = entry
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self._entry.lifecycle.cancelBind(Reason.PROTOCOL_ERROR.value, "data before BIND answer")

    def connectionLost(self, reason: Failure) -> None:
        self._entry.lifecycle.cancelBind(Reason.LINK_FAILURE.value, "previous hop went away")


@implementer(IBindHandler, ILinkObserver)
class Relay:
    """
    The intermediate session routing of one network node.

    @ivar table: relayed sessions by (origin, session ID), the origin being
        the node whose signature on the BIND verified (both directions
        share it).
    @ivar maxSessions: cap on relayed sessions, all origins.
    @ivar maxPerOrigin: cap on relayed sessions per origin node.
    @ivar maxPerPreviousHop: cap on relayed sessions per neighbour the BIND
        came from.
    @ivar maxRouteNodes: the longest route relayed.
    @ivar bufferBudget: bytes all splices may buffer together.
    @ivar bufferReserved: bytes of it the current entries hold.
    """

    log = Logger()

    def __init__(self, node: IRelayHost) -> None:
        self.node = node
        self.reactor = node.reactor
        self.table: dict[tuple[str, str], RelayEntry] = {}
        #: The same entries by (neighbour, session ID), for each of their
        #: two links: UNBIND and SessionStarted name a session by its ID
        #: alone, so an ID stands for at most one entry on each link.
        self._onLink: dict[tuple[str, str], RelayEntry] = {}
        self.perOrigin: dict[str, int] = {}
        self.perPreviousHop: dict[str, int] = {}
        self.maxSessions = MAX_RELAYED_SESSIONS
        self.maxPerOrigin = MAX_RELAYED_PER_ORIGIN
        self.maxPerPreviousHop = MAX_RELAYED_PER_PREVIOUS_HOP
        self.maxRouteNodes = MAX_ROUTE_NODES
        self.bindTimeout = BIND_TIMEOUT
        self.lingerTimeout = LINGER_TIMEOUT
        self.startTimeout = START_TIMEOUT
        self.bindRate = BIND_RATE
        self.bindBurst = BIND_BURST
        self.bufferBudget = RELAY_BUFFER_BUDGET
        self.bufferReserved = 0
        self.verifier = BindVerifier()
        #: Each neighbour's BIND rate, by node ID (dropped with its link).
        self._bindBuckets: dict[str, TokenBucket] = {}
        #: Counters for metrics and management.
        self.relayed = 0
        self.refused = 0

    @property
    def sessionCount(self) -> int:
        """
        The sessions relayed now, binding, starting or spliced (read by the
        topology database to measure this node's load).
        """
        return len(self.table)

    # -- hooks (tests substitute these) -------------------------------------------

    def forwarder(self, entry: RelayEntry, toSide: int) -> Callable[[bytes], None]:
        """
        The function that relays bytes into the stream of C{toSide}.  It is
        handed memoryview slices of the link's reads (spliced streams take
        views), valid for the call.
        """
        fromSide = IN if toSide == OUT else OUT
        fromCp = entry.inCp if toSide == OUT else entry.outCp
        return _Batch(entry.stream(toSide), fromCp.mux, entry.stream(fromSide).streamID).forward

    # -- BIND ----------------------------------------------------------------------

    def bindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        A BIND for another node arrived from neighbour C{cp} on C{stream}.
        """
        node = self.node
        route = list(req.route)
        me = node.nodeID
        sid = req.session_id
        if node.shuttingDown:
            self.refuse(cp, stream, sid, Reason.SHUTTING_DOWN, "the node is stopping")
            return
        if node.role != "network":
            self.refuse(cp, stream, sid, Reason.NO_ROUTE, "an end node relays nothing")
            return
        prev = cp.peerNodeID
        bucket = self._bindBuckets.get(prev)
        now = self.reactor.seconds()
        if bucket is None:
            bucket = self._bindBuckets[prev] = TokenBucket(self.bindRate, self.bindBurst, now)
        if not bucket.take(now):
            self.refuse(cp, stream, sid, Reason.RATE_LIMITED, "too many BINDs from this neighbour")
            return
        count = route.count(me)
        why: str | None
        if count != 1:
            why = "this node is not on the route" if count == 0 else "loop through this node"
            self.refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        here = route.index(me)
        why = checkRoute(route, here, self.maxRouteNodes)
        if why is None:
            if route[0] != req.origin or route[-1] != req.destination:
                why = "the route does not run from the origin to the destination"
            elif here in (0, len(route) - 1):
                why = "this node is an end of the route"
            elif route[here - 1] != prev:
                why = "the BIND came from a node that is not the previous hop"
        if why is not None:
            self.refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        # Only now is the origin known to be the origin: nothing was
        # counted for it before.
        problem = self.verifier.check(req, now)
        if problem is not None:
            self.refuse(cp, stream, sid, *problem)
            return
        nextHop = route[here + 1]
        nextCp = node.links.get(nextHop)
        if nextCp is None or not nextCp.isActive:
            self.refuse(cp, stream, sid, Reason.NO_ROUTE, f"no active link to {nextHop}")
            return
        old = self.table.get((req.origin, sid))
        if old is not None:
            if req.path > 1 and req.path > old.path:
                # The verified origin moved the session to a new path that
                # runs through here again (docs/protocol.md 15.8).
                old.lifecycle.superseded()
            else:
                self.refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, "session ID in use")
                return
        if (prev, sid) in self._onLink or (nextHop, sid) in self._onLink:
            # Another origin's session under this ID on one of the two
            # links: the UNBINDs of the two could not be told apart.
            self.refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, "session ID in use on the link")
            return
        if node.endsSession(sid):
            # The ID names a session of this node's own, on a link next to
            # it (or to come, after a path switch): relayed, it would take
            # that link's ID from the session (whose UNBINDs could not be
            # told apart from the relayed one's) and block its re-BINDs.
            self.refuse(
                cp,
                stream,
                sid,
                Reason.PROTOCOL_ERROR,
                "session ID in use by a session of this node",
            )
            return
        if len(self.table) >= self.maxSessions:
            self.refuse(
                cp, stream, sid, Reason.LIMIT_REACHED, f"{self.maxSessions} relayed sessions"
            )
            return
        if self.perPreviousHop.get(prev, 0) >= self.maxPerPreviousHop:
            self.refuse(
                cp,
                stream,
                sid,
                Reason.LIMIT_REACHED,
                f"{self.maxPerPreviousHop} relayed sessions from this neighbour",
            )
            return
        if self.perOrigin.get(req.origin, 0) >= self.maxPerOrigin:
            self.refuse(
                cp,
                stream,
                sid,
                Reason.LIMIT_REACHED,
                f"{self.maxPerOrigin} relayed sessions from this origin",
            )
            return
        highWater, reserve = self._bufferShare(cp, nextCp)
        if highWater == 0:
            self.refuse(cp, stream, sid, Reason.LIMIT_REACHED, "the relay's buffer budget is spent")
            return
        try:
            outStream = nextCp.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded) as e:
            self.refuse(cp, stream, sid, Reason.LIMIT_REACHED, str(e))
            return
        entry = RelayEntry(
            sid,
            req.origin,
            req.destination,
            cp,
            stream,
            nextCp,
            outStream,
            self.reactor.seconds(),
            relay=self,
        )
        entry.sendHighWater, entry.reserved = highWater, reserve
        entry.path = req.path
        self.bufferReserved += reserve
        self.table[req.origin, sid] = entry
        self._onLink[prev, sid] = self._onLink[nextHop, sid] = entry
        self.perOrigin[req.origin] = self.perOrigin.get(req.origin, 0) + 1
        self.perPreviousHop[prev] = self.perPreviousHop.get(prev, 0) + 1
        entry.timer = self.reactor.callLater(self.bindTimeout, entry.lifecycle.bindTimedOut)
        # Data the previous hop already sent may cancel the BIND right here.
        stream.attachProtocol(_PendingInbound(entry))
        entry.lifecycle.forwardBind(req)

    def _bufferShare(self, inCp: ControlPoint, outCp: ControlPoint) -> tuple[int, int]:
        """
        The send high water a new splice gets and the bytes it reserves
        for it; (0, 0) if the budget cannot give it the minimum.
        """
        # Per direction: what the peer may send before this node reads
        # (the receive window) and one frame of overshoot, plus the send
        # buffer: the window and frame are fixed, the send buffer shrinks.
        fixed = sum(
            c.mux.config.initialWindow + c.mux.config.maxFramePayload for c in (inCp, outCp)
        )
        room = self.bufferBudget - self.bufferReserved - fixed
        highWater = min(RELAY_SEND_HIGH_WATER, room // 2)
        if highWater < RELAY_MIN_SEND_HIGH_WATER:
            return 0, 0
        return highWater, fixed + 2 * highWater

    def refuse(self, cp: ControlPoint, stream: Stream, sid: str, reason: str, detail: str) -> None:
        """
        Refuse a BIND back to C{cp}, counted.  This and the methods below
        taking an entry are what the lifecycle (L{appnpy.net.relaymachine})
        does to the relay.
        """
        self.refused += 1
        cp.refuse(stream, sid, str(reason), detail)

    def answered(self, entry: RelayEntry, answer: Message, leftover: bytes) -> None:
        """
        The next hop answered the BIND forwarded for C{entry}.
        """
        sid = entry.sessionID
        if isinstance(answer, SessionAccept) and answer.session_id == sid:
            entry.lifecycle.accepted(answer, leftover)
        elif isinstance(answer, SessionRefuse) and answer.session_id == sid:
            entry.lifecycle.refused(answer)
        else:
            entry.lifecycle.badAnswer(answer)

    # -- splice ----------------------------------------------------------------------

    def splice(self, entry: RelayEntry, leftover: bytes) -> None:
        """
        Join C{entry}'s two streams, each the push producer of the other.
        """
        self.relayed += 1
        inStream, outStream = entry.inStream, entry.outStream
        inSide = _SpliceSide(entry, IN)
        outSide = _SpliceSide(entry, OUT)
        inSide.dataReceived = self.forwarder(entry, OUT)  # type: ignore[method-assign,assignment]
        outSide.dataReceived = self.forwarder(entry, IN)  # type: ignore[method-assign,assignment]
        # A deeper send buffer on each spliced stream keeps a chain of hops
        # streaming instead of stalling every 64 KiB; it bounds what the
        # relay holds per direction (plus the receive window).
        inStream.sendHighWater = outStream.sendHighWater = entry.sendHighWater
        # What a spliced stream receives is written into the other at once
        # (or copied into its buffer): slices of the link's read will do.
        inStream.takesViews = outStream.takesViews = True
        entry.startTimer = self.reactor.callLater(self.startTimeout, entry.lifecycle.startTimedOut)
        outStream.registerProducer(_Pauser(inStream), True)
        inStream.registerProducer(_Pauser(outStream), True)
        self.log.info(
            "relaying session {sid} from {origin} via {prev} to {next} for {destination}",
            sid=entry.sessionID,
            origin=entry.origin,
            prev=entry.inCp.peerNodeID,
            next=entry.outCp.peerNodeID,
            destination=entry.destination,
        )
        if leftover:
            # Bytes the next hop sent right after its answer (the far end's
            # RESUME, TLS records): they go back towards the origin.
            outSide.dataReceived(leftover)
        outStream.attachProtocol(outSide)
        inStream.attachProtocol(inSide)

    def linger(self, entry: RelayEntry) -> None:
        """
        Give C{entry} L{lingerTimeout} to finish closing (once).
        """
        if entry.timer is None:
            entry.timer = self.reactor.callLater(self.lingerTimeout, entry.lifecycle.lingerExpired)

    # -- UNBIND and link events ------------------------------------------------------

    def unbindReceived(self, cp: ControlPoint, msg: SessionClose) -> None:
        """
        UNBIND for a session this link does not own: forward it if this node
        relays that session and C{cp} is one of its two links.
        """
        entry = self._onLink.get((cp.peerNodeID, msg.session_id))
        if entry is None or cp not in (entry.inCp, entry.outCp):
            self.log.debug("UNBIND for unknown session {sid}", sid=msg.session_id)
            return
        side = IN if cp is entry.inCp else OUT
        entry.lifecycle.unbindReceived(side, msg.reason, msg.detail)

    def startedReceived(self, cp: ControlPoint, msg: SessionStarted) -> bool:
        """
        SessionStarted for C{msg.session_id} from C{cp}: passed on if this
        node relays that session and C{cp} is its next hop.

        @return: whether it was this relay's.
        """
        entry = self._onLink.get((cp.peerNodeID, msg.session_id))
        if entry is None or cp is not entry.outCp:
            return False
        entry.lifecycle.started(msg)
        return True

    def stop(self) -> None:
        """
        The node is stopping gracefully: every relayed session's ends are
        told C{shutting-down} (a BIND still on its way is refused so) before
        the links close.
        """
        for entry in list(self.table.values()):
            entry.lifecycle.shutDown()

    def linkActive(self, cp: ControlPoint) -> None:
        """
        Nothing to do: a relayed session starts with its BIND.
        """

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        # The multiplexer ends every stream before the link's loss is
        # reported, so entries are normally gone already; this is the net
        # under that.
        for entry in [e for e in self.table.values() if cp in (e.inCp, e.outCp)]:
            side = IN if cp is entry.inCp else OUT
            entry.lifecycle.linkLost(side, Failure(ConnectionError(why[1])))
        self._bindBuckets.pop(cp.peerNodeID, None)

    # -- bookkeeping --------------------------------------------------------------------

    def cancelTimer(self, entry: RelayEntry) -> None:
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None

    def cancelStartTimer(self, entry: RelayEntry) -> None:
        if entry.startTimer is not None and entry.startTimer.active():
            entry.startTimer.cancel()
        entry.startTimer = None

    def free(self, entry: RelayEntry) -> None:
        """
        Forget C{entry}: only on entering Released, so once per entry.
        """
        self.cancelTimer(entry)
        self.cancelStartTimer(entry)
        sid = entry.sessionID
        if self.table.get((entry.origin, sid)) is entry:
            del self.table[entry.origin, sid]
        for cp in (entry.inCp, entry.outCp):
            if self._onLink.get((cp.peerNodeID, sid)) is entry:
                del self._onLink[cp.peerNodeID, sid]
        _countDown(self.perOrigin, entry.origin)
        _countDown(self.perPreviousHop, entry.inCp.peerNodeID)
        self.bufferReserved -= entry.reserved
        entry.reserved = 0

    def asDict(self) -> dict[str, Any]:
        return {
            "sessions": [e.asDict() for e in self.table.values()],
            "relayed": self.relayed,
            "refused": self.refused,
            "max_sessions": self.maxSessions,
            "max_per_origin": self.maxPerOrigin,
            "max_per_previous_hop": self.maxPerPreviousHop,
            "buffer_budget": self.bufferBudget,
            "buffer_reserved": self.bufferReserved,
        }


def _countDown(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def installRelay(node: IRelayHost) -> Relay:
    """
    Make C{node} relay routed sessions (network nodes only): the relay is
    registered for the BINDs this node relays and observes link losses
    (L{appnpy.node.buildNode} keeps it as C{node.relay}).
    """
    relay = Relay(node)
    node.setBindHandler(RELAY, relay)
    node.addLinkObserver(relay)
    chainStartedHandler(node, relay.startedReceived)
    return relay
