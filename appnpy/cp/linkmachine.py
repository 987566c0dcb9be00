"""
The lifecycle machine of a link's control point: Handshake, Active, Closing,
Closed (docs/state-machines.md has the diagram).

Its core is the L{ControlPoint}: the machine's outputs are the control
point's lifecycle, kept here so that the control point reads as the
protocol (Hello, dispatch, BIND) and this module as the lifecycle.  The
attributes it changes on the core (C{linkState}, C{closeReason},
C{closeTimer}, C{waiters}, C{controlStream}) are the machine's: nothing
else writes them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from appnpy.cp.messages import Hello, LinkRefused, SessionOpen
from appnpy.errors import ProtocolError, Reason, SessionClosed

# Stream is needed at run time: Automat evaluates the input annotations.
from appnpy.link.yamux import Stream

if TYPE_CHECKING:
    from automat import TypeMachineBuilder

    from appnpy.cp.controlpoint import ControlPoint

#: Seconds a graceful close waits for sessions to finish before dropping the link.
CLOSE_TIMEOUT = 5.0
#: Seconds a refused link may take to finish closing before it is aborted.
LINGER_TIMEOUT = 2.0
#: Seconds the losing link of a simultaneous dial lets its sessions run on
#: before it UNBINDs them (docs/protocol.md section 7.4).
DRAIN_TIMEOUT = 30.0


_lastDialSerial = 0


def nextDialSerial(now: float) -> int:
    """
    A dial serial for a link this process dials: its clock in microseconds,
    kept strictly increasing, so that a node's later dial always carries a
    higher serial than its earlier ones (across restarts too, as long as the
    clock does not go back).
    """
    global _lastDialSerial
    _lastDialSerial = max(_lastDialSerial + 1, int(now * 1_000_000))
    return _lastDialSerial


def preferredLink(a: ControlPoint, b: ControlPoint) -> ControlPoint:
    """
    Of two active links between the same two nodes, the one both ends keep
    (docs/protocol.md section 7.4).  A pure function of what both ends know
    about each link, its dialler's node ID and dial serial, so that both
    compute the same survivor whatever order the links came up in: the link
    dialled by the lower node ID; of two links dialled by the same node, the
    one with the higher dial serial (its later dial: the dialler has given
    up on the earlier one).  Ties (a peer that repeats a serial) keep C{a}.
    """
    ka, kb = a.tieBreakKey(), b.tieBreakKey()
    if ka[0] != kb[0]:
        return a if ka[0] < kb[0] else b
    return b if kb[1] > ka[1] else a


class LinkState(enum.Enum):
    """
    Where a link is in its lifecycle: the state of its L{ControlPoint}'s
    lifecycle machine, for readers (see docs/state-machines.md).
    """

    HANDSHAKE = "handshake"
    ACTIVE = "active"
    DRAINING = "draining"
    CLOSING = "closing"
    CLOSED = "closed"


class LinkInputs(Protocol):
    """
    The inputs of a link's lifecycle machine; docs/state-machines.md has its
    diagram.  The machine's core is the L{ControlPoint}.  Only lifecycle
    events are inputs: data frames never reach it.
    """

    def helloAccepted(self, hello: Hello, version: int, limits: dict[str, int]) -> bool:
        """
        The peer's Hello verified and a version agreed: whether the link
        came up (a link already closing stays closing).
        """

    def announced(self) -> None:
        """
        The node has heard that the link is up (L{Node.linkActive}).
        """

    # Deferred[Any]: Automat evaluates these annotations at run time, and
    # this module does not import the control point it fires with.
    def awaitActive(self, d: Deferred[Any]) -> None:
        """
        Fire C{d} once the link is active, or fail it once it is closed.
        """

    def streamAccepted(self, stream: Stream) -> None:
        """
        The peer opened a stream.
        """

    def bindArrived(self, stream: Stream, msg: SessionOpen, leftover: bytes) -> None:
        """
        A peer-opened stream began with a BIND.
        """

    def refuseLink(self, reason: str, detail: str) -> None:
        """
        This node refuses the link: tell the peer why and close.
        """

    def peerRefused(self, reason: str, detail: str) -> None:
        """
        The peer sent C{LinkRefused}.
        """

    def peerControlStreamLost(self) -> None:
        """
        The peer's control stream ended.
        """

    def superseded(self) -> None:
        """
        The node keeps another link to the same neighbour (a simultaneous
        dial): drain this one.
        """

    def peerDraining(self) -> None:
        """
        The peer sent C{LinkRefused(duplicate-link)}: it drains this link and
        opens no more streams on it.
        """

    def drainCheck(self) -> None:
        """
        A session, BIND or new stream on the link ended: a draining link may
        be done.
        """

    def drained(self) -> None:
        """
        A draining link has nothing left on it, and the peer is draining too.
        """

    def drainTimedOut(self) -> None:
        """
        A draining link waited L{DRAIN_TIMEOUT} for its sessions.
        """

    def close(self, reason: str, detail: str) -> None:
        """
        Close gracefully: UNBIND the sessions, go-away, then drop the link.
        """

    def multiplexerClosed(self, reason: Failure) -> None:
        """
        The multiplexer stopped (protocol error, keepalive, connection gone).
        """

    def sessionsDrained(self) -> None:
        """
        The last session riding the link has ended.
        """

    def closeTimedOut(self) -> None:
        """
        A graceful close waited L{CLOSE_TIMEOUT} for the sessions.
        """

    def connectionLost(self, reason: Failure) -> None:
        """
        The TLS connection is gone.
        """


def buildLinkMachine(
    machine: TypeMachineBuilder[LinkInputs, ControlPoint],
) -> Callable[[ControlPoint], LinkInputs]:
    """
    Build the machine on C{machine}, made by the control point module with
    its own class as the core (so this module never imports it).
    """
    Handshake = machine.state("Handshake")
    Active = machine.state("Active")
    Draining = machine.state("Draining")
    Closing = machine.state("Closing")
    Closed = machine.state("Closed")
    I = LinkInputs  # noqa: E741

    def ignore(states: list[Any], *inputs: Callable[..., None]) -> None:
        for state in states:
            for input in inputs:
                state.upon(input).loop().returns(None)

    # -- Handshake ---------------------------------------------------------

    @Handshake.upon(I.helloAccepted).to(Active)
    def activate(
        m: LinkInputs, cp: ControlPoint, hello: Hello, version: int, limits: dict[str, int]
    ) -> bool:
        cp.linkState = LinkState.ACTIVE
        cp.peerHello = hello
        cp.version = version
        cp.limits = limits
        return True

    for state in (Active, Draining, Closing, Closed):
        state.upon(I.helloAccepted).loop().returns(False)

    @Active.upon(I.announced).loop()
    def fireWaiters(m: LinkInputs, cp: ControlPoint) -> None:
        waiters, cp.waiters = cp.waiters, []
        for d in waiters:
            d.callback(cp)

    ignore([Handshake, Draining, Closing, Closed], I.announced)

    @Handshake.upon(I.awaitActive).loop()
    @Closing.upon(I.awaitActive).loop()
    def addWaiter(m: LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        cp.waiters.append(d)

    @Active.upon(I.awaitActive).loop()
    def alreadyActive(m: LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        d.callback(cp)

    @Draining.upon(I.awaitActive).loop()
    @Closed.upon(I.awaitActive).loop()
    def neverActive(m: LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        d.errback(SessionClosed(*(cp.closeReason or (Reason.LINK_FAILURE.value, ""))))

    # -- streams the peer opens ------------------------------------------

    # A draining link still takes the streams and BINDs the peer sent before
    # it heard that the link lost: their sessions finish on it.
    @Handshake.upon(I.streamAccepted).loop()
    @Active.upon(I.streamAccepted).loop()
    @Draining.upon(I.streamAccepted).loop()
    def admitStream(m: LinkInputs, cp: ControlPoint, stream: Stream) -> None:
        cp.admitStream(stream)

    @Closing.upon(I.streamAccepted).loop()
    @Closed.upon(I.streamAccepted).loop()
    def resetStream(m: LinkInputs, cp: ControlPoint, stream: Stream) -> None:
        stream.abortConnection()

    @Active.upon(I.bindArrived).loop()
    @Draining.upon(I.bindArrived).loop()
    def bind(
        m: LinkInputs, cp: ControlPoint, stream: Stream, msg: SessionOpen, leftover: bytes
    ) -> None:
        if leftover:
            cp.refuse(stream, msg.session_id, Reason.PROTOCOL_ERROR, "data before BIND answer")
        else:
            cp.bindReceived(stream, msg)

    @Handshake.upon(I.bindArrived).loop()
    @Closing.upon(I.bindArrived).loop()
    @Closed.upon(I.bindArrived).loop()
    def refuseBind(
        m: LinkInputs, cp: ControlPoint, stream: Stream, msg: SessionOpen, leftover: bytes
    ) -> None:
        cp.refuse(stream, msg.session_id, Reason.PROTOCOL_ERROR, "BIND before Hello")

    # -- into Closing --------------------------------------------------------

    @Handshake.upon(I.refuseLink).to(Closing)
    @Active.upon(I.refuseLink).to(Closing)
    @Draining.upon(I.refuseLink).to(Closing)
    def sendRefusal(m: LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp.linkState = LinkState.CLOSING
        cp.log.warn(
            "closing link with {peer}: {reason} {detail}",
            peer=cp.peerNodeID,
            reason=reason,
            detail=detail,
        )
        cp.closeReason = (reason, detail)
        cp.sendControl(LinkRefused(reason=reason, detail=detail[:512]))
        cp.mux.goAway(1 if reason == Reason.PROTOCOL_ERROR else 0)
        cp.link.closeTransport()
        cp.host.linkClosing(cp, cp.closeReason)
        # A peer that never finishes the TLS shutdown must not hold the
        # connection open.
        cp.cancelCloseTimer()
        cp.closeTimer = cp.reactor.callLater(LINGER_TIMEOUT, cp.link.abortTransport)

    @Active.upon(I.peerControlStreamLost).to(Closing)
    def controlStreamLost(m: LinkInputs, cp: ControlPoint) -> None:
        sendRefusal(m, cp, Reason.PROTOCOL_ERROR.value, "the peer closed its control stream")

    @Active.upon(I.peerRefused).to(Closing)
    @Draining.upon(I.peerRefused).to(Closing)
    def refusedByPeer(m: LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp.linkState = LinkState.CLOSING
        cp.log.warn(
            "link to {peer} refused by the peer: {reason} {detail}",
            peer=cp.peerNodeID,
            reason=reason,
            detail=detail,
        )
        cp.closeReason = (reason, detail)
        cp.link.closeTransport()

    @Handshake.upon(I.close).to(Closing)
    @Active.upon(I.close).to(Closing)
    @Draining.upon(I.close).to(Closing)
    def unbindAll(m: LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp.cancelCloseTimer()
        cp.linkState = LinkState.CLOSING
        cp.closeReason = (reason, detail)
        for session in list(cp.sessions.values()):
            session.loseConnectionWithReason(reason, detail)
        cp.mux.goAway(0)
        if cp.sessions:
            # Let the UNBINDs and the data before them drain; the peer's FINs
            # end the sessions, and the last one ends the link.
            cp.closeTimer = cp.reactor.callLater(CLOSE_TIMEOUT, m.closeTimedOut)
        else:
            cp.closeGracefully()

    @Handshake.upon(I.multiplexerClosed).to(Closing)
    @Active.upon(I.multiplexerClosed).to(Closing)
    @Draining.upon(I.multiplexerClosed).to(Closing)
    def linkUnusable(m: LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        cp.linkState = LinkState.CLOSING
        if reason.check(ConnectionDone, ConnectionLost):
            return  # the connection itself ended: connectionLost reports it
        if reason.check(ProtocolError):
            cp.closeReason = (Reason.PROTOCOL_ERROR.value, reason.getErrorMessage())
        else:
            cp.closeReason = (Reason.LINK_FAILURE.value, reason.getErrorMessage())
        # The link is unusable now; do not wait for TLS to finish closing
        # (a peer that stopped answering never will).
        cp.host.linkClosing(cp, cp.closeReason)

    # A LinkRefused before this end has verified the Hello is one end of a
    # refusal race: this end is already closing, or about to.
    ignore([Handshake, Closing, Closed], I.peerRefused)
    # A draining peer may close its control stream once it is done.
    ignore([Handshake, Draining, Closing, Closed], I.peerControlStreamLost)
    ignore([Closing, Closed], I.refuseLink, I.close, I.multiplexerClosed)

    # -- Draining: the losing link of a simultaneous dial -------------------

    def startDraining(m: LinkInputs, cp: ControlPoint) -> None:
        cp.linkState = LinkState.DRAINING
        cp.closeReason = (
            Reason.DUPLICATE_LINK.value,
            "another link between these nodes was kept",
        )
        cp.log.info(
            "draining link with {peer}: another link between these nodes was kept",
            peer=cp.peerNodeID,
        )
        # "No more streams from this end": the peer drains too.
        cp.sendControl(LinkRefused(reason=Reason.DUPLICATE_LINK.value, detail="draining"))
        cp.host.linkClosing(cp, cp.closeReason)
        waiters, cp.waiters = cp.waiters, []
        for d in waiters:
            d.errback(SessionClosed(*cp.closeReason))
        cp.cancelCloseTimer()
        cp.closeTimer = cp.reactor.callLater(DRAIN_TIMEOUT, m.drainTimedOut)

    def peerDone(m: LinkInputs, cp: ControlPoint) -> None:
        # Every stream the peer opened came before its LinkRefused: nothing
        # new can arrive, so GoAway refuses nothing that was in flight.
        cp.peerDrained = True
        cp.mux.goAway(0)

    def checkDrained(m: LinkInputs, cp: ControlPoint) -> None:
        if cp.peerDrained and not (cp.sessions or cp.outboundBinds or cp.pendingInbound):
            m.drained()

    @Active.upon(I.superseded).to(Draining)
    def supersede(m: LinkInputs, cp: ControlPoint) -> None:
        startDraining(m, cp)

    @Active.upon(I.peerDraining).to(Draining)
    def drainWithPeer(m: LinkInputs, cp: ControlPoint) -> None:
        startDraining(m, cp)
        peerDone(m, cp)
        checkDrained(m, cp)

    @Draining.upon(I.peerDraining).loop()
    def peerDrainingToo(m: LinkInputs, cp: ControlPoint) -> None:
        if not cp.peerDrained:
            peerDone(m, cp)
        checkDrained(m, cp)

    @Draining.upon(I.drainCheck).loop()
    def drainProgress(m: LinkInputs, cp: ControlPoint) -> None:
        checkDrained(m, cp)

    @Draining.upon(I.drained).to(Closing)
    def drainDone(m: LinkInputs, cp: ControlPoint) -> None:
        cp.linkState = LinkState.CLOSING
        cp.cancelCloseTimer()
        cp.link.closeTransport()
        cp.closeTimer = cp.reactor.callLater(LINGER_TIMEOUT, cp.link.abortTransport)

    @Draining.upon(I.drainTimedOut).to(Closing)
    def drainTooLong(m: LinkInputs, cp: ControlPoint) -> None:
        cp.closeTimer = None
        unbindAll(m, cp, Reason.DUPLICATE_LINK.value, f"still draining after {DRAIN_TIMEOUT:g} s")

    # A link that is not active was never kept: no contest to lose.  A
    # peer's duplicate-link LinkRefused before its Hello is a refusal.
    ignore([Handshake, Draining, Closing, Closed], I.superseded)
    ignore([Handshake, Closing, Closed], I.peerDraining)
    ignore([Handshake, Active, Closing, Closed], I.drainCheck, I.drained, I.drainTimedOut)

    # -- Closing -------------------------------------------------------------

    @Closing.upon(I.sessionsDrained).loop()
    def lastSessionEnded(m: LinkInputs, cp: ControlPoint) -> None:
        if cp.closeTimer is not None:
            cp.cancelCloseTimer()
            cp.closeGracefully()

    @Closing.upon(I.closeTimedOut).loop()
    def closeAnyway(m: LinkInputs, cp: ControlPoint) -> None:
        cp.closeGracefully()

    ignore([Handshake, Active, Draining, Closed], I.sessionsDrained, I.closeTimedOut)

    # -- into Closed ---------------------------------------------------------

    def tearDown(cp: ControlPoint, reason: Failure) -> tuple[str, str]:
        cp.linkState = LinkState.CLOSED
        cp.controlStream = None  # nothing more goes out on it
        cp.cancelCloseTimer()
        for session in list(cp.sessions.values()):
            session.linkLost()
        for timer in cp.pendingInbound.values():
            if timer is not None and timer.active():
                timer.cancel()
        cp.pendingInbound.clear()
        why = cp.closeReason or (Reason.LINK_FAILURE.value, reason.getErrorMessage())
        waiters, cp.waiters = cp.waiters, []
        for d in waiters:
            d.errback(SessionClosed(*why))
        return why

    @Handshake.upon(I.connectionLost).to(Closed)
    def lostBeforeHello(m: LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        # The node never heard of this link.
        tearDown(cp, reason)

    @Active.upon(I.connectionLost).to(Closed)
    @Draining.upon(I.connectionLost).to(Closed)
    @Closing.upon(I.connectionLost).to(Closed)
    def lost(m: LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        cp.host.linkLost(cp, tearDown(cp, reason))

    ignore([Closed], I.connectionLost)

    return machine.build()
