"""
The lifecycle of one relayed session: its core (L{RelayEntry}: the two
streams and how far the session has got) and the Automat machine that moves
it from Binding through Starting (spliced, the end-to-end TLS not yet
confirmed by the destination) and Spliced to Released
(docs/state-machines.md, "Relay").

Kept apart from L{appnpy.net.relay} (the BIND checks, caps and splicing of
the whole relay) so the machine reads as one table of transitions; relayed
bytes never pass through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import (
    Message,
    SessionAccept,
    SessionOpen,
    SessionRefuse,
    SessionStarted,
    encodeMessage,
)
from appnpy.errors import Reason

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.net.relay import Relay

#: The two sides of a relayed session: the previous hop's stream and the next's.
IN = 0
OUT = 1


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
    #: The splice deadline: running while Starting.
    startTimer: Any = None
    #: Bytes of the relay's buffer budget this entry holds (L{Relay.splice}).
    reserved: int = 0
    #: The send high water of each spliced stream, from the budget.
    sendHighWater: int = 0
    #: The BIND's path number: 0 if the session cannot switch paths
    #: (docs/protocol.md 15.8); a re-BIND with a larger one supersedes it.
    path: int = 0
    #: The entry's lifecycle (docs/state-machines.md, "Relay").
    lifecycle: _RelayInputs = attrs.field(init=False)
    #: The lifecycle's state, for readers; only the machine sets it.
    _state: str = attrs.field(default="binding", init=False)

    def __attrs_post_init__(self) -> None:
        self.lifecycle = _RelayMachine(self)

    @property
    def state(self) -> str:
        """
        C{binding} until the next hop answers, C{starting} until the
        destination confirms the end-to-end TLS, then C{spliced};
        C{released} once the entry has left the relay table.
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

    def started(self, msg: SessionStarted) -> None:
        """
        The next hop passed on the destination's SessionStarted: the ends
        have authenticated each other.
        """

    def startTimedOut(self) -> None:
        """
        The end-to-end TLS was not confirmed within L{Relay.startTimeout}.
        """

    def shutDown(self) -> None:
        """
        This node is stopping gracefully.
        """

    def superseded(self) -> None:
        """
        The origin re-bound the session on a new path through this node
        (a verified re-BIND with a larger path number): this entry's path
        is dead.
        """


def _pathReason(e: RelayEntry, reason: str) -> str:
    # The ends of a session that can switch paths take link-failure as
    # "this path failed, switch" (docs/protocol.md 15.8); shutting-down
    # would end it.
    return Reason.LINK_FAILURE.value if e.path else reason


def _buildRelayMachine() -> Callable[[RelayEntry], _RelayInputs]:
    machine = TypeMachineBuilder(_RelayInputs, RelayEntry)
    Binding = machine.state("Binding")
    Starting = machine.state("Starting")
    Spliced = machine.state("Spliced")
    Released = machine.state("Released")
    I = _RelayInputs  # noqa: E741

    def ignore(states: list[Any], *inputs: Callable[..., None]) -> None:
        for state in states:
            for input in inputs:
                state.upon(input).loop().returns(None)

    def release(e: RelayEntry) -> Relay:
        e._state = "released"
        e.relay.free(e)
        return e.relay

    # -- Binding -------------------------------------------------------------

    @Binding.upon(I.forwardBind).loop()
    def forward(m: _RelayInputs, e: RelayEntry, req: SessionOpen) -> None:
        relay = e.relay
        e.outStream.attachProtocol(
            BindReader(
                lambda msg, leftover: relay.answered(e, msg, leftover),
                m.nextHopLost,
            )
        )
        e.outStream.write(encodeMessage(req))

    @Binding.upon(I.accepted).to(Starting)
    def splice(m: _RelayInputs, e: RelayEntry, answer: SessionAccept, leftover: bytes) -> None:
        e._state = "starting"
        e.relay.cancelTimer(e)
        e.inStream.write(encodeMessage(answer))
        e.relay.splice(e, leftover)

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
        e.relay.refuse(
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
        e.relay.refuse(
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
        e.relay.refuse(
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

    @Binding.upon(I.shutDown).to(Released)
    def refuseShuttingDown(m: _RelayInputs, e: RelayEntry) -> None:
        release(e)
        e.inStream.protocol = _Ignore()
        e.outCp.sendUnbind(
            e.sessionID, _pathReason(e, Reason.SHUTTING_DOWN.value), "a relay is stopping"
        )
        e.outStream.abortConnection()
        e.relay.refuse(e.inCp, e.inStream, e.sessionID, Reason.SHUTTING_DOWN, "a relay is stopping")

    # Only a spliced stream reports FIN or loss this way; only the spliced
    # session's destination confirms it.
    ignore(
        [Binding],
        I.finReceived,
        I.streamLost,
        I.lingerExpired,
        I.bothStreamsEnded,
        I.started,
        I.startTimedOut,
    )

    # -- Starting ------------------------------------------------------------

    @Starting.upon(I.started).to(Spliced)
    def confirm(m: _RelayInputs, e: RelayEntry, msg: SessionStarted) -> None:
        e._state = "spliced"
        e.relay.cancelStartTimer(e)
        e.inCp.send(msg)

    @Starting.upon(I.startTimedOut).to(Released)
    def tearDownUnstarted(m: _RelayInputs, e: RelayEntry) -> None:
        e.startTimer = None
        relay = release(e)
        detail = f"end-to-end TLS not confirmed within {relay.startTimeout:g} s"
        relay.log.info("relayed session {sid}: {detail}; reset", sid=e.sessionID, detail=detail)
        for side in (IN, OUT):
            if side not in e.unbound:
                e.unbound.add(side)
                e.cp(1 - side).sendUnbind(e.sessionID, Reason.TIMEOUT.value, detail)
        e.inStream.abortConnection()
        e.outStream.abortConnection()

    # -- Starting and Spliced ------------------------------------------------

    @Starting.upon(I.unbindReceived).loop()
    def passUnbindOn(m: _RelayInputs, e: RelayEntry, side: int, reason: str, detail: str) -> None:
        if side in e.unbound:
            return
        e.unbound.add(side)
        e.cp(1 - side).sendUnbind(e.sessionID, reason, detail)
        e.relay.linger(e)

    Spliced.upon(I.unbindReceived).loop()(passUnbindOn)

    def unbindBoth(m: _RelayInputs, e: RelayEntry) -> None:
        # Both ends learn why before the links go: the FINs follow.
        for side in (IN, OUT):
            if side not in e.unbound:
                e.unbound.add(side)
                e.cp(side).sendUnbind(
                    e.sessionID, _pathReason(e, Reason.SHUTTING_DOWN.value), "a relay is stopping"
                )
        e.relay.linger(e)

    Starting.upon(I.shutDown).loop()(unbindBoth)
    Spliced.upon(I.shutDown).loop()(unbindBoth)

    @Starting.upon(I.finReceived).loop()
    def passFinOn(m: _RelayInputs, e: RelayEntry, side: int) -> None:
        # A half-close travels on: FIN the other stream after what is buffered.
        e.stream(1 - side).loseConnection()
        e.relay.linger(e)

    Spliced.upon(I.finReceived).loop()(passFinOn)

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
            e.relay.linger(e)

    Starting.upon(I.streamLost).loop()(sideLost)
    Spliced.upon(I.streamLost).loop()(sideLost)

    @Starting.upon(I.bothStreamsEnded).to(Released)
    def ended(m: _RelayInputs, e: RelayEntry) -> None:
        release(e).log.info("relayed session {sid} ended", sid=e.sessionID)

    Spliced.upon(I.bothStreamsEnded).to(Released)(ended)

    @Starting.upon(I.linkLost).to(Released)
    def spliceLinkLost(m: _RelayInputs, e: RelayEntry, side: int, reason: Failure) -> None:
        sideLost(m, e, side, reason)
        release(e).log.info("relayed session {sid} ended", sid=e.sessionID)

    Spliced.upon(I.linkLost).to(Released)(spliceLinkLost)

    @Starting.upon(I.lingerExpired).to(Released)
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

    Spliced.upon(I.lingerExpired).to(Released)(resetBoth)

    # The BIND exchange is over once spliced; its late events change nothing.
    ignore(
        [Starting, Spliced],
        I.forwardBind,
        I.accepted,
        I.refused,
        I.badAnswer,
        I.nextHopLost,
        I.bindTimedOut,
        I.cancelBind,
    )
    ignore([Spliced], I.started, I.startTimedOut)

    @Binding.upon(I.superseded).to(Released)
    @Starting.upon(I.superseded).to(Released)
    @Spliced.upon(I.superseded).to(Released)
    def dropSuperseded(m: _RelayInputs, e: RelayEntry) -> None:
        # Silently: an UNBIND from this dead path must not reach the new
        # one; its other nodes learn from the resets.
        relay = release(e)
        e.inStream.protocol = _Ignore()
        e.outStream.protocol = _Ignore()
        e.inStream.abortConnection()
        e.outStream.abortConnection()
        relay.log.info("relayed session {sid} moved to a new path", sid=e.sessionID)

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
        I.started,
        I.startTimedOut,
        I.shutDown,
        I.superseded,
    )

    return machine.build()


_RelayMachine = _buildRelayMachine()
