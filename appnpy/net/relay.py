"""
Intermediate session routing (APPN ISR): a network node relays a routed
session between two of its neighbours by splicing two streams.

A BIND (L{SessionOpen}) whose destination is another node arrives on a stream
from the previous hop.  After checking the route (this node exactly once, the
previous element is the neighbour that sent it, no loop, not too long, the
next hop an active neighbour) and the caps (per origin and in total), the relay
opens a stream to the next hop, forwards the BIND unchanged and relays the
answer back.  On an accept the two streams are spliced: each one's bytes are
written to the other, and each stream is registered as the push producer of the
other, so a slow receiver far away pauses this node's reading, which stops the
window updates to the previous hop: backpressure travels hop by hop and a
relay buffers about one window per direction.

The relay never sees plaintext: the two ends run TLS end to end over the
chain of streams (L{appnpy.session.routed}).

State per session is one L{RelayEntry} in L{Relay.table}, keyed by session ID.
It is released when the session ends: UNBIND from either side (forwarded to
the other side, then the FINs follow through the splice), a reset of either
stream, or the loss of either link (the surviving side gets UNBIND
C{link-failure} and a reset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from appnpy.cp._interfaces import RELAY, IBindHandler, ILinkObserver, ILinkRegistry
from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
)
from appnpy.errors import GoAwayReceived, Reason, StreamLimitExceeded
from appnpy.session._interfaces import IRoutedSessionsHost
from appnpy.session.bind import checkRoute

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream


class IRelayHost(IRoutedSessionsHost, ILinkRegistry):
    """
    What the relay needs from its node: its identity and state (through
    L{IRoutedSessionsHost}), the active links, BIND handler registration
    and link events.
    """

    relay = Attribute("The node's L{Relay}, set by L{installRelay}.")


__all__ = [
    "Relay",
    "RelayEntry",
    "installRelay",
    "checkRoute",
    "MAX_RELAYED_SESSIONS",
    "MAX_RELAYED_PER_ORIGIN",
]

#: Relayed sessions one node carries at most, all origins together.
MAX_RELAYED_SESSIONS = 4096
#: Relayed sessions one origin node may have through this node at a time.
MAX_RELAYED_PER_ORIGIN = 256
#: Seconds the next hop may take to answer a forwarded BIND.
BIND_TIMEOUT = 30.0
#: Seconds a session may take to finish closing (FINs through the splice)
#: after UNBIND or the end of one of its streams; then both are reset.
LINGER_TIMEOUT = 30.0

IN = 0
OUT = 1


#: Send buffer per direction of a spliced session before the relay stops
#: reading the other side (see benchmarks/routed_bulk.py).
RELAY_SEND_HIGH_WATER = 1024 * 1024


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


@implementer(IHalfCloseableProtocol)
class _SpliceSide:
    """
    The protocol of one spliced stream.  Its C{dataReceived} is set per
    instance to the forwarder into the other stream (normally that stream's
    C{write}), so relaying a frame costs no extra Python call.
    """

    def __init__(self, relay: Relay, entry: RelayEntry, side: int) -> None:
        self._relay = relay
        self._entry = entry
        self._side = side
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:  # replaced per instance
        pass

    def readConnectionLost(self) -> None:
        self._entry.lifecycle.finReceived(self._side)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._entry.lifecycle.streamLost(self._side, reason)


class _PendingInbound:
    """
    The protocol of the previous hop's stream while the BIND is forwarded:
    data before the answer breaks the protocol; loss cancels the BIND.
    """

    def __init__(self, relay: Relay, entry: RelayEntry) -> None:
        self._relay = relay
        self._entry = entry
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self._entry.lifecycle.cancelBind(Reason.PROTOCOL_ERROR.value, "data before BIND answer")

    def connectionLost(self, reason: Failure) -> None:
        self._entry.lifecycle.cancelBind(Reason.LINK_FAILURE.value, "previous hop went away")


@attrs.define(eq=False)
class RelayEntry:
    """
    One relayed session: the stream from the previous hop and the stream to
    the next, and how far the session has got.
    """

    sessionID: str
    origin: str
    destination: str
    inCp: ControlPoint
    inStream: Stream
    outCp: ControlPoint
    outStream: Stream
    since: float
    relay: Relay = attrs.field(kw_only=True)
    #: Sides whose UNBIND went to the other side already (IN, OUT).
    unbound: set[int] = attrs.Factory(set)
    #: Sides whose stream is gone.
    lost: set[int] = attrs.Factory(set)
    timer: Any = None
    #: The entry's lifecycle (docs/state-machines.md, "Relay").
    lifecycle: _RelayInputs = attrs.field(init=False)
    #: The lifecycle's state, for readers; only the machine sets it.
    _state: str = attrs.field(default="binding", init=False)

    def __attrs_post_init__(self) -> None:
        self.lifecycle = _RelayMachine(self)

    @property
    def state(self) -> str:
        """
        C{binding} until the next hop answers, then C{spliced}; C{released}
        once the entry has left the relay table.
        """
        return self._state

    def cp(self, side: int) -> ControlPoint:
        return self.inCp if side == IN else self.outCp

    def stream(self, side: int) -> Stream:
        return self.inStream if side == IN else self.outStream

    def asDict(self) -> dict[str, Any]:
        return {
            "session_id": self.sessionID,
            "origin": self.origin,
            "destination": self.destination,
            "from": self.inCp.peerNodeID,
            "to": self.outCp.peerNodeID,
            "state": self.state,
            "since": self.since,
            "bytes_forward": self.outStream.bytesSent,
            "bytes_back": self.inStream.bytesSent,
        }


@implementer(IBindHandler, ILinkObserver)
class Relay:
    """
    The intermediate session routing of one network node.

    @ivar table: relayed sessions by session ID (both directions share it).
    @ivar maxSessions: cap on relayed sessions, all origins.
    @ivar maxPerOrigin: cap on relayed sessions per origin node.
    @ivar maxRouteNodes: the longest route relayed.
    """

    log = Logger()

    def __init__(self, node: IRelayHost) -> None:
        self.node = node
        self.reactor = node.reactor
        self.table: dict[str, RelayEntry] = {}
        self.perOrigin: dict[str, int] = {}
        self.maxSessions = MAX_RELAYED_SESSIONS
        self.maxPerOrigin = MAX_RELAYED_PER_ORIGIN
        self.maxRouteNodes = MAX_ROUTE_NODES
        self.bindTimeout = BIND_TIMEOUT
        self.lingerTimeout = LINGER_TIMEOUT
        #: Counters for metrics and management.
        self.relayed = 0
        self.refused = 0

    # -- hooks (tests substitute these) -------------------------------------------

    def forwarder(self, entry: RelayEntry, toSide: int) -> Callable[[bytes], None]:
        """
        The function that relays bytes into the stream of C{toSide}.
        """
        return entry.stream(toSide).write

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
            self._refuse(cp, stream, sid, Reason.SHUTTING_DOWN, "the node is stopping")
            return
        if node.role != "network":
            self._refuse(cp, stream, sid, Reason.NO_ROUTE, "an end node relays nothing")
            return
        count = route.count(me)
        why: str | None
        if count != 1:
            why = "this node is not on the route" if count == 0 else "loop through this node"
            self._refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        here = route.index(me)
        why = checkRoute(route, here, self.maxRouteNodes)
        if why is None:
            if route[0] != req.origin or route[-1] != req.destination:
                why = "the route does not run from the origin to the destination"
            elif here in (0, len(route) - 1):
                why = "this node is an end of the route"
            elif route[here - 1] != cp.peerNodeID:
                why = "the BIND came from a node that is not the previous hop"
        if why is not None:
            self._refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        nextHop = route[here + 1]
        nextCp = node.links.get(nextHop)
        if nextCp is None or not nextCp.isActive:
            self._refuse(cp, stream, sid, Reason.NO_ROUTE, f"no active link to {nextHop}")
            return
        if sid in self.table:
            self._refuse(cp, stream, sid, Reason.PROTOCOL_ERROR, "session ID in use")
            return
        if len(self.table) >= self.maxSessions:
            self._refuse(
                cp, stream, sid, Reason.LIMIT_REACHED, f"{self.maxSessions} relayed sessions"
            )
            return
        if self.perOrigin.get(req.origin, 0) >= self.maxPerOrigin:
            self._refuse(
                cp,
                stream,
                sid,
                Reason.LIMIT_REACHED,
                f"{self.maxPerOrigin} relayed sessions from this origin",
            )
            return
        try:
            outStream = nextCp.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded) as e:
            self._refuse(cp, stream, sid, Reason.LIMIT_REACHED, str(e))
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
        self.table[sid] = entry
        self.perOrigin[req.origin] = self.perOrigin.get(req.origin, 0) + 1
        entry.timer = self.reactor.callLater(self.bindTimeout, entry.lifecycle.bindTimedOut)
        # Data the previous hop already sent may cancel the BIND right here.
        stream.attachProtocol(_PendingInbound(self, entry))
        entry.lifecycle.forwardBind(req)

    def _refuse(self, cp: ControlPoint, stream: Stream, sid: str, reason: str, detail: str) -> None:
        self.refused += 1
        cp.refuse(stream, sid, str(reason), detail)

    def _answered(self, entry: RelayEntry, answer: Message, leftover: bytes) -> None:
        sid = entry.sessionID
        if isinstance(answer, SessionAccept) and answer.session_id == sid:
            entry.lifecycle.accepted(answer, leftover)
        elif isinstance(answer, SessionRefuse) and answer.session_id == sid:
            entry.lifecycle.refused(answer)
        else:
            entry.lifecycle.badAnswer(answer)

    # -- splice ----------------------------------------------------------------------

    def _splice(self, entry: RelayEntry, leftover: bytes) -> None:
        self.relayed += 1
        inStream, outStream = entry.inStream, entry.outStream
        inSide = _SpliceSide(self, entry, IN)
        outSide = _SpliceSide(self, entry, OUT)
        inSide.dataReceived = self.forwarder(entry, OUT)  # type: ignore[method-assign,assignment]
        outSide.dataReceived = self.forwarder(entry, IN)  # type: ignore[method-assign,assignment]
        # A deeper send buffer on each spliced stream keeps a chain of hops
        # streaming instead of stalling every 64 KiB; it bounds what the
        # relay holds per direction (plus the receive window).
        inStream.sendHighWater = outStream.sendHighWater = RELAY_SEND_HIGH_WATER
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
            inSide.dataReceived(leftover)
        outStream.attachProtocol(outSide)
        inStream.attachProtocol(inSide)

    def _linger(self, entry: RelayEntry) -> None:
        if entry.timer is None:
            entry.timer = self.reactor.callLater(self.lingerTimeout, entry.lifecycle.lingerExpired)

    # -- UNBIND and link events ------------------------------------------------------

    def unbindReceived(self, cp: ControlPoint, msg: SessionClose) -> None:
        """
        UNBIND for a session this link does not own: forward it if this node
        relays that session and C{cp} is one of its two links.
        """
        entry = self.table.get(msg.session_id)
        if entry is None or cp not in (entry.inCp, entry.outCp):
            self.log.debug("UNBIND for unknown session {sid}", sid=msg.session_id)
            return
        side = IN if cp is entry.inCp else OUT
        entry.lifecycle.unbindReceived(side, msg.reason, msg.detail)

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

    # -- bookkeeping --------------------------------------------------------------------

    def _cancelTimer(self, entry: RelayEntry) -> None:
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None

    def _free(self, entry: RelayEntry) -> None:
        # Only on entering Released, so exactly once per entry.
        self._cancelTimer(entry)
        if self.table.get(entry.sessionID) is entry:
            del self.table[entry.sessionID]
        left = self.perOrigin.get(entry.origin, 0) - 1
        if left > 0:
            self.perOrigin[entry.origin] = left
        else:
            self.perOrigin.pop(entry.origin, None)

    def asDict(self) -> dict[str, Any]:
        return {
            "sessions": [e.asDict() for e in self.table.values()],
            "relayed": self.relayed,
            "refused": self.refused,
            "max_sessions": self.maxSessions,
            "max_per_origin": self.maxPerOrigin,
        }


class _Ignore:
    """
    The protocol of a stream this relay is done with.
    """

    transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


class _RelayInputs(Protocol):
    """
    The inputs of one relayed session's lifecycle machine (its core is the
    L{RelayEntry}); docs/state-machines.md has its diagram.  Relayed bytes
    never reach it: the splice writes them straight into the other stream.
    """

    def forwardBind(self, req: SessionOpen) -> None:
        """
        Send the checked BIND on to the next hop.
        """

    def accepted(self, answer: SessionAccept, leftover: bytes) -> None:
        """
        The next hop accepted the BIND.
        """

    def refused(self, answer: SessionRefuse) -> None:
        """
        The next hop refused the BIND.
        """

    def badAnswer(self, answer: Message) -> None:
        """
        The next hop answered the BIND with something else.
        """

    def nextHopLost(self, reason: Failure) -> None:
        """
        The stream to the next hop ended before its answer.
        """

    def bindTimedOut(self) -> None:
        """
        The next hop did not answer within L{Relay.bindTimeout}.
        """

    def cancelBind(self, reason: str, detail: str) -> None:
        """
        The previous hop broke or left the BIND exchange (data before the
        answer, its stream lost).
        """

    def unbindReceived(self, side: int, reason: str, detail: str) -> None:
        """
        An UNBIND for this session arrived from C{side}.
        """

    def finReceived(self, side: int) -> None:
        """
        C{side}'s stream half-closed.
        """

    def streamLost(self, side: int, reason: Failure) -> None:
        """
        C{side}'s stream ended.
        """

    def lingerExpired(self) -> None:
        """
        The session did not finish closing within L{Relay.lingerTimeout}.
        """

    def linkLost(self, side: int, reason: Failure) -> None:
        """
        The link of C{side} is gone (normally its streams have ended first).
        """

    def bothStreamsEnded(self) -> None:
        """
        Neither stream is left: the session is over.
        """


def _buildRelayMachine() -> Callable[[RelayEntry], _RelayInputs]:
    machine = TypeMachineBuilder(_RelayInputs, RelayEntry)
    Binding = machine.state("Binding")
    Spliced = machine.state("Spliced")
    Released = machine.state("Released")
    I = _RelayInputs  # noqa: E741

    def ignore(states: list[Any], *inputs: Callable[..., None]) -> None:
        for state in states:
            for input in inputs:
                state.upon(input).loop().returns(None)

    def release(e: RelayEntry) -> Relay:
        e._state = "released"
        e.relay._free(e)
        return e.relay

    # -- Binding -------------------------------------------------------------

    @Binding.upon(I.forwardBind).loop()
    def forward(m: _RelayInputs, e: RelayEntry, req: SessionOpen) -> None:
        relay = e.relay
        e.outStream.attachProtocol(
            BindReader(
                lambda msg, leftover: relay._answered(e, msg, leftover),
                m.nextHopLost,
            )
        )
        e.outStream.write(encodeMessage(req))

    @Binding.upon(I.accepted).to(Spliced)
    def splice(m: _RelayInputs, e: RelayEntry, answer: SessionAccept, leftover: bytes) -> None:
        e._state = "spliced"
        e.relay._cancelTimer(e)
        e.inStream.write(encodeMessage(answer))
        e.relay._splice(e, leftover)

    @Binding.upon(I.refused).to(Released)
    def passRefusalBack(m: _RelayInputs, e: RelayEntry, answer: SessionRefuse) -> None:
        e.relay.log.info(
            "relayed BIND {sid} refused by {peer}: {reason}",
            sid=e.sessionID,
            peer=e.outCp.peerNodeID,
            reason=answer.reason,
        )
        release(e)
        e.inStream.protocol = _Ignore()
        e.inStream.write(encodeMessage(answer))
        e.inStream.loseConnection()
        e.outStream.loseConnection()

    @Binding.upon(I.badAnswer).to(Released)
    def refuseBadAnswer(m: _RelayInputs, e: RelayEntry, answer: Message) -> None:
        release(e)
        e.inStream.protocol = _Ignore()
        e.outStream.abortConnection()
        e.relay._refuse(
            e.inCp,
            e.inStream,
            e.sessionID,
            Reason.PROTOCOL_ERROR,
            f"the next hop answered with {answer.typeName}",
        )

    @Binding.upon(I.nextHopLost).to(Released)
    def refuseNextHopLost(m: _RelayInputs, e: RelayEntry, reason: Failure) -> None:
        release(e)
        e.inStream.protocol = _Ignore()
        e.relay._refuse(
            e.inCp,
            e.inStream,
            e.sessionID,
            Reason.LINK_FAILURE,
            f"the next hop {e.outCp.peerNodeID} went away: {reason.getErrorMessage()}",
        )

    @Binding.upon(I.bindTimedOut).to(Released)
    def refuseTimedOut(m: _RelayInputs, e: RelayEntry) -> None:
        e.timer = None
        release(e)
        e.inStream.protocol = _Ignore()
        e.outStream.abortConnection()
        e.relay._refuse(
            e.inCp,
            e.inStream,
            e.sessionID,
            Reason.TIMEOUT,
            f"no answer from {e.outCp.peerNodeID} within {e.relay.bindTimeout:g} s",
        )

    @Binding.upon(I.cancelBind).to(Released)
    def cancel(m: _RelayInputs, e: RelayEntry, reason: str, detail: str) -> None:
        # The destination may already have accepted: tell the next hop.
        release(e)
        e.outCp.sendUnbind(e.sessionID, reason, detail)
        e.outStream.abortConnection()
        e.inStream.abortConnection()

    @Binding.upon(I.unbindReceived).loop()
    def unbindWhileBinding(
        m: _RelayInputs, e: RelayEntry, side: int, reason: str, detail: str
    ) -> None:
        # From the previous hop it cancels the BIND; the next hop answers
        # a BIND, it does not UNBIND it.
        if side == IN:
            m.cancelBind(reason, detail)

    @Binding.upon(I.linkLost).loop()
    def linkLostWhileBinding(m: _RelayInputs, e: RelayEntry, side: int, reason: Failure) -> None:
        if side == IN:
            m.cancelBind(Reason.LINK_FAILURE.value, reason.getErrorMessage())
        else:
            m.nextHopLost(reason)

    # Only a spliced stream reports FIN or loss this way.
    ignore([Binding], I.finReceived, I.streamLost, I.lingerExpired, I.bothStreamsEnded)

    # -- Spliced -------------------------------------------------------------

    @Spliced.upon(I.unbindReceived).loop()
    def passUnbindOn(m: _RelayInputs, e: RelayEntry, side: int, reason: str, detail: str) -> None:
        if side in e.unbound:
            return
        e.unbound.add(side)
        e.cp(1 - side).sendUnbind(e.sessionID, reason, detail)
        e.relay._linger(e)

    @Spliced.upon(I.finReceived).loop()
    def passFinOn(m: _RelayInputs, e: RelayEntry, side: int) -> None:
        # A half-close travels on: FIN the other stream after what is buffered.
        e.stream(1 - side).loseConnection()
        e.relay._linger(e)

    def sideLost(m: _RelayInputs, e: RelayEntry, side: int, reason: Failure) -> None:
        e.lost.add(side)
        other = 1 - side
        if other in e.lost:
            m.bothStreamsEnded()
        elif not reason.check(ConnectionDone):
            # A reset or a lost link: the surviving side learns why first,
            # then its stream is reset.
            if side not in e.unbound:
                e.unbound.add(side)
                e.cp(other).sendUnbind(
                    e.sessionID,
                    Reason.LINK_FAILURE.value,
                    f"the session's stream via {e.cp(side).peerNodeID} failed: "
                    f"{reason.getErrorMessage()}",
                )
            e.stream(other).abortConnection()
        else:
            e.relay._linger(e)

    Spliced.upon(I.streamLost).loop()(sideLost)

    @Spliced.upon(I.bothStreamsEnded).to(Released)
    def ended(m: _RelayInputs, e: RelayEntry) -> None:
        release(e).log.info("relayed session {sid} ended", sid=e.sessionID)

    @Spliced.upon(I.linkLost).to(Released)
    def spliceLinkLost(m: _RelayInputs, e: RelayEntry, side: int, reason: Failure) -> None:
        sideLost(m, e, side, reason)
        release(e).log.info("relayed session {sid} ended", sid=e.sessionID)

    @Spliced.upon(I.lingerExpired).to(Released)
    def resetBoth(m: _RelayInputs, e: RelayEntry) -> None:
        e.timer = None
        relay = release(e)
        relay.log.info("relayed session {sid} did not finish closing; reset", sid=e.sessionID)
        for side in (IN, OUT):
            if side not in e.unbound:
                e.unbound.add(side)
                e.cp(1 - side).sendUnbind(e.sessionID, Reason.TIMEOUT.value, "close")
        e.inStream.abortConnection()
        e.outStream.abortConnection()
        relay.log.info("relayed session {sid} ended", sid=e.sessionID)

    # The BIND exchange is over once spliced; its late events change nothing.
    ignore(
        [Spliced],
        I.forwardBind,
        I.accepted,
        I.refused,
        I.badAnswer,
        I.nextHopLost,
        I.bindTimedOut,
        I.cancelBind,
    )

    # -- Released ------------------------------------------------------------

    # An answer after the BIND was given up: drop the next hop's stream.
    @Released.upon(I.accepted).loop()
    def dropLateAccept(
        m: _RelayInputs, e: RelayEntry, answer: SessionAccept, leftover: bytes
    ) -> None:
        e.outStream.abortConnection()

    @Released.upon(I.refused).loop()
    def dropLateRefusal(m: _RelayInputs, e: RelayEntry, answer: SessionRefuse) -> None:
        e.outStream.abortConnection()

    @Released.upon(I.badAnswer).loop()
    def dropLateAnswer(m: _RelayInputs, e: RelayEntry, answer: Message) -> None:
        e.outStream.abortConnection()

    @Released.upon(I.finReceived).loop()
    def passLateFinOn(m: _RelayInputs, e: RelayEntry, side: int) -> None:
        e.stream(1 - side).loseConnection()

    ignore(
        [Released],
        I.forwardBind,
        I.nextHopLost,
        I.bindTimedOut,
        I.cancelBind,
        I.unbindReceived,
        I.streamLost,
        I.lingerExpired,
        I.linkLost,
        I.bothStreamsEnded,
    )

    return machine.build()


_RelayMachine = _buildRelayMachine()


def installRelay(node: IRelayHost) -> Relay:
    """
    Make C{node} relay routed sessions (network nodes only): sets
    C{node.relay}, registers it for the BINDs this node relays and
    observes link losses.
    """
    relay = Relay(node)
    node.relay = relay
    node.setBindHandler(RELAY, relay)
    node.addLinkObserver(relay)
    return relay
