"""
Path switch for adjacent sessions (docs/protocol.md 15.9): an adjacent
session whose BIND asked for it (C{path} 1) survives the loss of its link
when the topology has another route between the two ends.

Such a session (L{SwitchableSession}) runs the numbered stream of 15.8
(L{appnpy.session.resumable}) over its plaintext: on the direct link the
plugin's bytes go into DATA frames on the yamux stream, protected by the
link's TLS, as any adjacent session's.  When the link fails the origin
re-BINDs the session on a routed path (at least one relay), signed as any
routed BIND, and both ends run a fresh TLS 1.3 connection end to end over
the new path (L{appnpy.session.carrier.EndToEndCarrier}); the numbered
stream continues inside it from where each end's bytes stopped arriving.
Later failures switch the session again the same way, each new path with
its own end-to-end TLS.  The path lifecycle is the routed sessions'
L{appnpy.session.pathswitch.PathSwitch}.

L{AdjacentPathSwitch} is the node's service: whether a BIND to a
neighbour asks for path switch (the origin's C{path-switch} setting and the
neighbour's C{path-switch} capability), and the switchable sessions by ID,
so that a re-BIND arriving through relays finds its session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet._producer_helpers import _PullToPush
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp.messages import SessionAccept, SessionOpen, SessionStarted, encodeMessage
from appnpy.errors import Reason
from appnpy.session.adjacent import OUTBOUND, PATH_SWITCH_CAPABILITY, Session, SessionInfo
from appnpy.session.carrier import EndToEndCarrier
from appnpy.session.pathswitch import PathSwitch
from appnpy.session.resumable import ResumableStream, _StreamSide

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.routed import RoutedSessions

__all__ = ["PATH_SWITCH_CAPABILITY", "AdjacentPathSwitch", "SwitchableSession"]


#: An adjacent session acknowledges every window / this many bytes (1 MiB
#: of the 4 MiB window) rather than every 64 KiB as a routed one: on a
#: direct link each ACK is a frame and a TLS record of its own, and ACKs
#: that often cost the bulk data path about a quarter more CPU
#: (benchmarks/bulk.py --path-switch); at a quarter of the window the
#: sender still has three quarters in flight when one comes.
ADJACENT_ACK_FRACTION = 4


@implementer(IHalfCloseableProtocol)
class _FinSide(_StreamSide):
    """
    The numbered stream's side of a yamux stream, told of the far end's FIN
    (an adjacent session can half-close).
    """


class _NumberedStream(ResumableStream):
    """
    The numbered stream of an adjacent session: the plugin's plaintext,
    numbered, on the direct stream or inside a path's end-to-end TLS.
    """

    streamSide = _FinSide


class SwitchableSession(Session):
    """
    An adjacent session that can move to a routed path: the transport of
    its plugin's protocol, over the numbered stream, over the current path
    (the direct yamux stream, then an end-to-end TLS connection through
    relays).

    Half-close works as on any adjacent session while the session is on
    its direct link; once it is on a routed path a FIN closes it as a
    whole, as on any routed session.  A session that has begun closing
    (or half-closing) gracefully still switches until its close has
    finished: the far end's FIN has arrived and every byte of this end is
    acknowledged.
    """

    log = Logger()
    routed = False

    def __init__(
        self, service: AdjacentPathSwitch, cp: ControlPoint, stream: Stream, info: SessionInfo
    ) -> None:
        super().__init__(cp, stream, info)
        self._service = service
        owner = service.routed
        self._owner = owner
        #: The session's path, origin first: the two neighbours, then the
        #: route of the last re-BIND.
        if info.direction == OUTBOUND:
            self.route = [info.localNodeID, info.peerNodeID]
        else:
            self.route = [info.peerNodeID, info.localNodeID]
        window = owner.switchWindow
        self.layer: ResumableStream = _NumberedStream(
            owner.reactor,
            self,
            window,
            ackEvery=window // ADJACENT_ACK_FRACTION,
            progressTimeout=owner.progressTimeout,
        )
        #: Its path lifecycle, made when first needed (most sessions never
        #: lose their link, and a session open should cost little).
        self._switch: PathSwitch | None = None
        #: What the session rides now: the yamux stream or a carrier.
        self._path: Any = stream
        self._over = False
        #: Whether the session has left its direct link (for good).
        self.offLink = False
        #: Whether the session rides no path now (switching or held): it is
        #: then in no control point's sessions.
        self._offPath = False
        #: The destination: a re-BIND accepted whose end-to-end TLS has
        #: not yet authenticated the origin (carrier, request, link).
        self._incoming: tuple[EndToEndCarrier, SessionOpen, ControlPoint] | None = None
        #: The largest path number of a re-BIND accepted here (destination),
        #: whether or not its path then authenticated: each is taken once,
        #: which is what refuses a replayed re-BIND.
        self._newestRebind = 0
        self._pull: _PullToPush | None = None

    @property
    def switch(self) -> PathSwitch:
        """
        The session's path lifecycle (L{PathSwitch}): up on path 1 until
        the path first fails.
        """
        if self._switch is None:
            self._switch = PathSwitch(self._owner, self, self._owner.switchTimeout)
        return self._switch

    @property
    def pathState(self) -> str:
        """
        C{up}, C{switching}, C{holding} or C{ended} (L{PathSwitch.state}).
        """
        return "up" if self._switch is None else self._switch.state

    @property
    def onRoutedPath(self) -> bool:
        return len(self.route) > 2

    def start(self, protocol: Any, leftover: bytes = b"") -> None:
        self.protocol = protocol
        layer = self.layer
        stream, self._stream = self._stream, cast("Stream", layer)
        # Whatever the stream delivers as it is attached waits for the
        # plugin's connectionMade (the plugin may write in it, so the
        # stream must be attached first).
        early: list[bytes] = []
        layer.deliver = early.append
        layer.attach(stream, awaitingResume=False, leftover=leftover)
        layer.deliver = protocol.dataReceived
        self._service.sessions[self.info.sessionID] = self
        if self.info.direction == OUTBOUND:
            # Tells the destination this end is bound: from now on it holds
            # the session when the link fails.
            layer.sendAckNow()
        protocol.makeConnection(self)
        for data in early:
            if self.protocol is protocol:
                protocol.dataReceived(data)

    # -- the plugin's producer ---------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        # The numbered stream pauses push producers (window, path, stream);
        # a pull producer is driven as one, as Twisted's TLS layer does.
        if not streaming:
            self._pull = _PullToPush(producer, self)
            producer = self._pull
        self.layer.registerProducer(producer, True)
        if self._pull is not None:
            self._pull.startStreaming()

    def unregisterProducer(self) -> None:
        pull, self._pull = self._pull, None
        if pull is not None:
            pull.stopStreaming()
        self.layer.unregisterProducer()

    # -- the numbered stream's owner -----------------------------------------------

    def _canSwitch(self) -> bool:
        return (
            self.pathState == "up"
            and self.protocol is not None
            and not self._over
            and (
                not (self._closing or self._writeClosed or self._peerFinished) or self._closeUnfinished()
            )
            and not self._owner.host.shuttingDown
            and (self.info.direction == OUTBOUND or self.layer.ackSeen)
        )

    def _closeUnfinished(self) -> bool:
        """
        Whether a session that is closing (or half-closed) still needs a
        path: its close is a graceful one (this end's reason and the far
        end's UNBIND, if any, normal: any other comes with a reset) and the
        far end's FIN has not arrived or bytes of this end are
        unacknowledged.  An UNBIND travels ahead of the data, so a path that
        fails after it may still owe either end its last bytes.
        """
        return self._graceful() and not (self._peerFinished and self.layer.buffered == 0)

    def _graceful(self) -> bool:
        """
        Whether no end has ended the session otherwise than normally (an
        abort, a timeout: a reset comes with them, and nothing is owed).
        """
        return all(
            why is None or why[0] == Reason.NORMAL.value
            for why in (self._closeReason, self._peerReason)
        )

    def farEndFinished(self) -> None:
        # The numbered stream's FIN (or TLS close): after the far end's last
        # byte, and inside the end-to-end TLS on a routed path.
        if self._peerFinished:
            return
        self._peerFinished = True
        if not self.onRoutedPath:
            self.readConnectionLost()
        elif not self._closing:
            # Over TLS a close ends both directions: close as a whole.
            self._closing = self.disconnecting = True
            if not self._writeClosed:
                self._sendFin()

    def streamLost(self, reason: Failure) -> None:
        """
        The path the session rides ended: switch or hold, or the session
        is over.
        """
        # A clean end (both FINs) is the session's end, not its path's.
        if (self.pathState == "switching" and self._graceful()) or (
            not reason.check(ConnectionDone) and self._canSwitch()
        ):
            self.switch.pathDown(f"stream lost: {reason.getErrorMessage()}"[:200])
            return
        self.connectionLost(reason)

    def layerFailed(self, detail: str) -> None:
        detail = f"path switch: {detail}"[:512]
        self.log.warn(
            "session {sid} with {peer}: {detail}",
            sid=self.info.sessionID,
            peer=self.info.peerNodeID,
            detail=detail,
        )
        if not self._closing:
            self._closing = self.disconnecting = True
            self._closeReason = (Reason.PROTOCOL_ERROR.value, detail)
            self._cp.sendUnbind(self.info.sessionID, Reason.PROTOCOL_ERROR.value, detail)
        self._path.abortConnection()
        self._finish(Failure(ConnectionAborted(detail)))

    def resumed(self) -> None:
        self.switch.lifecycle.rebound()

    def unbindReceived(self, reason: str, detail: str) -> None:
        # On a routed path only a relay sends link-failure (15.4): the path
        # failed.  On the direct link the neighbour is the far end.
        if (
            reason == Reason.LINK_FAILURE.value
            and self.onRoutedPath
            and (self.pathState == "switching" or self._canSwitch())
        ):
            self.switch.pathDown(f"UNBIND link-failure: {detail}"[:200])
            return
        super().unbindReceived(reason, detail)

    # -- the path switch's session -------------------------------------------------

    def leavePath(self) -> None:
        cp = self._cp
        if cp.sessions.get(self.info.sessionID) is self:
            del cp.sessions[self.info.sessionID]
        self._offPath = True
        self.layer.detach()
        self._leftLink()

    def _leftLink(self) -> None:
        if not self.offLink:
            # Off its direct link for good: it counts there all the same.
            self.offLink = True
            self._service.left(self)

    def _move(self, cp: ControlPoint, route: list[str]) -> None:
        sid = self.info.sessionID
        old = self._cp
        if old.sessions.get(sid) is self:
            del old.sessions[sid]
        self._cp = cp
        cp.sessions[sid] = self
        self._offPath = False
        self.route = list(route)
        self._leftLink()

    def rideOn(
        self,
        cp: ControlPoint,
        stream: Stream,
        route: list[str],
        awaitingResume: bool,
        leftover: bytes = b"",
    ) -> None:
        """
        The origin: the destination accepted the re-BIND on C{stream}.  The
        end-to-end TLS starts; the numbered stream sends nothing until the
        destination's RESUME, which comes inside that TLS once both ends
        have authenticated each other.
        """
        self._move(cp, route)
        if self.layer.attached:
            self.layer.detach()
        carrier = EndToEndCarrier(
            self._owner, stream, True, self.info.peerNodeID, _ignore, _ignoreFailure
        )
        self._path = carrier
        self.layer.attach(cast("Stream", carrier), awaitingResume=True)
        carrier.feed(leftover)

    def checkRebind(self, req: SessionOpen) -> str | None:
        """
        Why the origin's (verified) re-BIND C{req} cannot move this session
        (the destination's end), or L{None}.
        """
        if self._over or self.pathState == "ended":
            return "the session cannot switch paths"
        sw = self.switch
        newest = max(sw.path, self._newestRebind)
        if req.path <= newest:
            return f"path {req.path} is not newer than the session's path {newest}"
        return self.layer.checkResume(req.resume)

    def rebindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        The destination: the origin re-bound the session on a new path
        (checked by L{checkRebind} and the BIND checks).  Accept and run the
        end-to-end TLS; the session moves only once it has authenticated
        the origin (until then it keeps its path, if it still has one).
        """
        self._dropIncoming()
        self._newestRebind = req.path
        stream.write(encodeMessage(SessionAccept(session_id=self.info.sessionID)))
        carrier = EndToEndCarrier(
            self._owner,
            stream,
            False,
            self.info.peerNodeID,
            self._incomingAuthenticated,
            self._incomingFailed,
        )
        self._incoming = (carrier, req, cp)

    def _incomingAuthenticated(self, carrier: EndToEndCarrier) -> None:
        incoming = self._incoming
        if incoming is None or incoming[0] is not carrier or self._over:
            carrier.abortConnection()
            return
        self._incoming = None
        _, req, cp = incoming
        layer = self.layer
        if layer.checkResume(req.resume) is not None or not cp.isActive:
            carrier.abortConnection()
            return
        sw = self.switch
        sw.path = req.path
        self._move(cp, req.route)
        if layer.attached:
            # The old path still looked alive here: the origin has left it.
            layer.detach()
        self._path = carrier
        layer.attach(cast("Stream", carrier), awaitingResume=False)
        layer.sendResume()
        layer.resumeFrom(req.resume)
        # The relays of the new path hold the splice until they hear it.
        cp.send(SessionStarted(session_id=self.info.sessionID))
        sw.lifecycle.rebound()

    def _incomingFailed(self, carrier: EndToEndCarrier, why: str) -> None:
        if self._incoming is not None and self._incoming[0] is carrier:
            self._incoming = None
            self.log.info(
                "session {sid}: the new path failed before it resumed: {why}",
                sid=self.info.sessionID,
                why=why,
            )

    def _dropIncoming(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming[0].abortConnection()

    def endSwitch(self, reason: str, detail: str) -> None:
        """
        No path came back (or the node is stopping): the session ends.
        """
        if self._over:
            return
        self._closing = self.disconnecting = True
        self._closeReason = (reason, detail)
        self._finish(Failure(ConnectionLost(detail)))

    def _finish(self, reason: Failure) -> None:
        if self._over:
            return
        self._over = True
        if self._switch is not None:
            self._switch.lifecycle.sessionEnded()
        self._dropIncoming()
        self.layer.end()
        pull, self._pull = self._pull, None
        if pull is not None:
            pull.stopStreaming()
        self._service.ended(self)
        if self._offPath:
            # Back on its last link, so that its end is accounted (logged,
            # counted, told to observers) once, as any session's, however
            # it ended while it had no path.
            self._offPath = False
            self._cp.sessions[self.info.sessionID] = self
        super()._finish(reason)


def _ignore(carrier: EndToEndCarrier) -> None:
    # The origin's carrier: its numbered stream is attached from the start
    # and waits for the RESUME, which only an authenticated far end sends.
    pass


def _ignoreFailure(carrier: EndToEndCarrier, why: str) -> None:
    # The origin's carrier tells its numbered stream (attached) instead.
    pass


class AdjacentPathSwitch:
    """
    Path switch for the adjacent sessions of one node.

    @ivar sessions: the node's switchable adjacent sessions by session ID.
    """

    def __init__(self, routed: RoutedSessions) -> None:
        """
        @param routed: the node's routed-session ends, whose routes, key,
            TLS context and path-switch settings these sessions use.
        """
        self.routed = routed
        self.sessions: dict[str, SwitchableSession] = {}
        #: Sessions that left their direct link (switching, held, or on a
        #: routed path), by (neighbour, plugin).
        self.away: dict[tuple[str, str], int] = {}

    def left(self, session: SwitchableSession) -> None:
        """
        C{session} left its direct link.
        """
        key = (session.info.peerNodeID, session.info.plugin)
        self.away[key] = self.away.get(key, 0) + 1

    def ended(self, session: SwitchableSession) -> None:
        """
        C{session} is over.
        """
        info = session.info
        if self.sessions.get(info.sessionID) is session:
            del self.sessions[info.sessionID]
        if session.offLink:
            key = (info.peerNodeID, info.plugin)
            left = self.away[key] - 1
            if left:
                self.away[key] = left
            else:
                del self.away[key]

    def asks(self, cp: ControlPoint) -> bool:
        """
        Whether a BIND to C{cp}'s neighbour asks for path switch.
        """
        return self.routed.pathSwitch and cp.peerSupports(PATH_SWITCH_CAPABILITY)

    def newSession(self, cp: ControlPoint, stream: Stream, info: SessionInfo) -> Session:
        return SwitchableSession(self, cp, stream, info)

    def elsewhere(self, cp: ControlPoint, plugin: str) -> int:
        """
        Sessions of C{plugin} with C{cp}'s neighbour that do not ride C{cp}
        (switching, held, or moved to a routed path): they still count
        against the plugin's limit with that neighbour, so a neighbour that
        drops and re-opens its link cannot make this node hold more.
        """
        return self.away.get((cp.peerNodeID, plugin), 0)

    def stop(self) -> None:
        """
        The node is stopping: sessions without a path end with shutting-down.
        """
        for session in list(self.sessions.values()):
            if session.pathState in ("switching", "holding"):
                session.endSwitch(Reason.SHUTTING_DOWN.value, "the node is stopping")
