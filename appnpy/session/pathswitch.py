"""
Non-disruptive path switch for routed sessions (APPN HPR's idea): the
lifecycle of a session that can move to a new path (L{PathSwitch} and its
Automat machine, docs/state-machines.md "Path switch"), over the numbered,
acknowledged byte stream under the end-to-end TLS
(L{appnpy.session.resumable.ResumableStream}).  The wire rules are
docs/protocol.md section 15.8.

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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from automat import TypeMachineBuilder
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import Message, SessionAccept, SessionOpen, SessionRefuse, encodeMessage
from appnpy.errors import (
    DestinationGone,
    GoAwayReceived,
    Reason,
    SessionClosed,
    StreamLimitExceeded,
)
from appnpy.session.bind import signBind
from appnpy.session.resumable import SWITCH_WINDOW, Gone, ResumableStream

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.routed import RoutedSessions

__all__ = [
    "ALTERNATIVE_ROUTES",
    "NO_SUCH_SESSION",
    "RETRY_INTERVAL",
    "SWITCH_TIMEOUT",
    "SWITCH_WINDOW",
    "PathSwitch",
    "ResumableStream",
    "SwitchingSession",
    "orderAlternatives",
]

#: Seconds a session may go without a path before it ends with no-route
#: (the origin keeps looking for one that long; the destination holds the
#: session that long plus the origin's BIND timeout).
SWITCH_TIMEOUT = 30.0
#: Seconds the origin waits after every route it knew has failed before it
#: asks for routes again.
RETRY_INTERVAL = 1.0
#: How many alternative routes the origin asks for.
ALTERNATIVE_ROUTES = 8
#: The detail of the destination's refusal (protocol-error) of a re-BIND
#: for a session it does not have (docs/protocol.md 15.8): it has ended it.
NO_SUCH_SESSION = "no such session to switch"


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


class _Attempt(NamedTuple):
    """
    A re-BIND in flight: its stream, the link it went out on, and its
    timer, which runs until the destination's RESUME (an accept alone does
    not move the session).
    """

    stream: Stream
    cp: ControlPoint
    timer: IDelayedCall
    #: Whether the destination accepted: the session rides the stream and
    #: waits for the RESUME.
    accepted: bool = False


class SwitchingSession(Protocol):
    """
    What a path switch needs of its session: a routed session
    (L{appnpy.session.endtoend.RoutedSession}) or an adjacent one that can
    switch (L{appnpy.session.switchable.SwitchableSession}).
    """

    route: list[str]
    layer: ResumableStream

    @property
    def sessionID(self) -> str: ...

    @property
    def peerNodeID(self) -> str: ...

    @property
    def plugin(self) -> str: ...

    @property
    def cos(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    @property
    def direction(self) -> str: ...

    def endSwitch(self, reason: str, detail: str) -> None: ...

    def leavePath(self) -> None: ...

    def rideOn(
        self,
        cp: ControlPoint,
        stream: Stream,
        route: list[str],
        awaitingResume: bool,
        leftover: bytes = b"",
    ) -> None: ...


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

    def __init__(self, owner: RoutedSessions, session: SwitchingSession, timeout: float) -> None:
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
        #: The re-BIND in flight, until the destination's RESUME.
        self._attempt: _Attempt | None = None
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

    def attemptDone(self) -> None:
        """
        The attempt's path resumed: its timer stops, its stream is the
        session's.
        """
        attempt, self._attempt = self._attempt, None
        if attempt is not None and attempt.timer.active():
            attempt.timer.cancel()

    def abandonAttempt(self) -> None:
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            if attempt.timer.active():
                attempt.timer.cancel()
            attempt.stream.protocol = Gone()
            attempt.stream.abortConnection()

    def pathDown(self, why: str) -> None:
        """
        The session's stream or path failed (C{why}): by role, switch or
        hold; during a switch, the re-BIND's new path failed before it
        resumed.
        """
        if self.state == "switching":
            attempt = self._attempt
            if attempt is None or not attempt.accepted:
                # The session rides no path: this is a late word of one it
                # left (a failed attempt's neighbour, say), which must not
                # cost the attempt in flight.
                return
            self.why = why
            self._attempt = None
            if attempt.timer.active():
                attempt.timer.cancel()
            # Off that path for good: out of its link's sessions too, so
            # that neighbour's UNBINDs no longer reach the session.
            self.session.leavePath()
            self.lifecycle.attemptFailed(Reason.LINK_FAILURE.value, f"the new path failed: {why}")
            return
        self.why = why
        if self.session.direction == "outbound":
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
        if self.state == "switching" and failure.check(DestinationGone):
            # The far end left or crashed: no path will come back to it, so
            # the plugin hears link-failure now, not no-route after the
            # whole switch timeout.
            self.session.endSwitch(
                Reason.LINK_FAILURE.value, f"the far end is gone: {failure.getErrorMessage()}"
            )
            return
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
        # Whoever failed the attempt has let it go already (_failAttempt,
        # _attemptTimedOut, pathDown); an attempt set now is in flight and
        # is left alone (tryNext waits for it).
        self.log.info(
            "path switch of session {sid}: re-BIND failed: {reason} {detail}",
            sid=self.session.sessionID,
            reason=reason,
            detail=detail,
        )
        if reason == Reason.PROTOCOL_ERROR.value and detail == NO_SUCH_SESSION:
            # The destination's word that the session is over there (its
            # plugin ended it while the path was down): no path can bring
            # it back, so the plugin hears of it now, not after the switch
            # timeout.
            self.session.endSwitch(Reason.LINK_FAILURE.value, "the far end has ended the session")
            return
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
        self._attempt = _Attempt(stream, cp, timer)

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
        return self._attempt is not None and self._attempt.stream is stream

    def _failAttempt(self, stream: Stream, reason: str, detail: str) -> None:
        if self.state != "switching" or not self._isCurrent(stream):
            return
        if self._attempt is not None:
            timer = self._attempt.timer
            if timer.active():
                timer.cancel()
        self._attempt = None
        self.lifecycle.attemptFailed(reason, detail)

    def _attemptTimedOut(self, stream: Stream) -> None:
        attempt = self._attempt
        if attempt is None or attempt.stream is not stream:
            return
        self._attempt = None
        # The reset alone tells the relays (they UNBIND link-failure onward,
        # which a destination that accepted meanwhile takes as a path lost).
        if attempt.accepted:
            # Accepted, but no RESUME came (whoever accepted may not be the
            # destination): the session leaves that path.
            self.session.leavePath()
            detail = "no RESUME on the new path"
        else:
            stream.protocol = Gone()
            stream.abortConnection()
            detail = "no answer to the re-BIND"
        if self.state == "switching":
            self.lifecycle.attemptFailed(Reason.TIMEOUT.value, detail)

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
        # Attached, but silent until the destination's RESUME says where
        # to start; a loss before it, or no RESUME before the attempt's
        # timer, is this attempt's failure (anyone on the path can send an
        # accept; only the destination's RESUME, and for an adjacent
        # session its TLS, show that the session has a path again).
        self._attempt = self._attempt._replace(accepted=True)
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
        c.attemptDone()
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
