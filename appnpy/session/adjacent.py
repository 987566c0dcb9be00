"""
Sessions: BIND and UNBIND over multiplexer streams, and the session as the
transport of a plugin's protocol.

A session is one stream.  Its first message is L{SessionOpen} (BIND), answered
on the same stream by L{SessionAccept} or L{SessionRefuse}; after an accept the
stream carries the plugin's bytes untouched.  UNBIND (L{SessionClose}) travels
on the closer's control stream, ahead of the stream's FIN, so the other end
knows why the session ended before it sees the end of the data.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import IBindHandler, IBoundSession, ISessionOpener
from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import (
    Message,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
)
from appnpy.errors import (
    GoAwayReceived,
    ProtocolError,
    Reason,
    SessionClosed,
    SessionRefused,
    StreamLimitExceeded,
)
from appnpy.interfaces import ISessionInfo, ISessionPlugin
from appnpy.session.bind import acceptBind

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.switchable import AdjacentPathSwitch

INBOUND = "inbound"
#: The Hello capability of a node that ends adjacent sessions that can
#: switch paths (docs/protocol.md 15.9): an adjacent BIND asks for path
#: switch only of such a neighbour (an older node would take the numbered
#: frames for the plugin's bytes).
PATH_SWITCH_CAPABILITY = "path-switch"
#: Seconds a session that ended cleanly waits for the peer's UNBIND reason.
UNBIND_GRACE = 2.0
#: Seconds a session waits, once this end has sent its FIN (closed or
#: half-closed), for the peer's FIN; then it is reset with reason timeout.
#: A peer that never finishes closing must not hold the session (and its
#: stream's buffers) forever.
CLOSE_WAIT_TIMEOUT = 60.0
OUTBOUND = "outbound"


def newSessionID() -> str:
    """
    A global session ID: 128 random bits, so IDs are unpredictable and never
    collide across the network.
    """
    return secrets.token_hex(16)


@implementer(IAddress)
@attrs.frozen
class SessionAddress:
    """
    The address of one end of a session: the node and the session.
    """

    nodeID: str
    name: str
    sessionID: str


@implementer(ISessionInfo)
@attrs.frozen
class SessionInfo:
    """
    What both ends know about a bound session.
    """

    sessionID: str
    plugin: str
    cos: str
    parameters: dict[str, Any]
    direction: str
    localNodeID: str
    peerNodeID: str
    peerName: str


class SessionBase:
    """
    What adjacent and routed sessions share: the L{ISessionInfo} attributes,
    read off C{info}; the byte counts and the receive side's push-producer
    control, both on the session's stream.
    """

    __slots__ = ("info", "disconnecting", "_stream", "_cp", "_closing", "_closeReason")
    info: SessionInfo
    disconnecting: bool
    _stream: Stream
    _cp: ControlPoint
    _closing: bool
    _closeReason: tuple[str, str] | None

    sessionID = property(lambda self: self.info.sessionID)
    plugin = property(lambda self: self.info.plugin)
    cos = property(lambda self: self.info.cos)
    parameters = property(lambda self: self.info.parameters)
    direction = property(lambda self: self.info.direction)
    localNodeID = property(lambda self: self.info.localNodeID)
    peerNodeID = property(lambda self: self.info.peerNodeID)
    peerName = property(lambda self: self.info.peerName)

    @property
    def bytesSent(self) -> int:
        return self._stream.bytesSent

    @property
    def bytesReceived(self) -> int:
        return self._stream.bytesReceived

    def pauseProducing(self) -> None:
        self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        self._stream.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()

    # -- closing, with the reason the UNBIND carries ----------------------------

    def loseConnection(self) -> None:
        self.loseConnectionWithReason(Reason.NORMAL)

    def loseConnectionWithReason(self, reason: str, detail: str = "") -> None:
        if self._closing:
            return
        self._closing = self.disconnecting = True
        self._closeReason = (str(reason), detail)
        self._cp.sendUnbind(self.info.sessionID, str(reason), detail)
        self._finishSending()

    def abortConnection(self) -> None:
        if not self._closing:
            self._closing = self.disconnecting = True
            self._closeReason = (Reason.ABORTED.value, "")
            self._cp.sendUnbind(self.info.sessionID, Reason.ABORTED.value, "")
        self._abort()

    def loseWriteConnection(self) -> None:
        """
        Finish sending but keep receiving (half-close).  Sessions that cannot
        half-close close as a whole.
        """
        self.loseConnection()

    def _finishSending(self) -> None:
        """
        Close this end's direction after what is written (UNBIND is sent).
        """
        raise NotImplementedError

    def _abort(self) -> None:
        """
        Drop the session's stream (UNBIND is sent).
        """
        raise NotImplementedError

    def getPeer(self) -> SessionAddress:
        return SessionAddress(self.info.peerNodeID, self.info.peerName, self.info.sessionID)

    def getHost(self) -> SessionAddress:
        return SessionAddress(self.info.localNodeID, self._cp.localName, self.info.sessionID)

    def linkLost(self) -> None:
        """
        The link the session rides went down; a session that ends with its
        stream needs nothing more.
        """


@implementer(IBoundSession, IHalfCloseableProtocol)
class Session(SessionBase):
    """
    A bound session: the transport its plugin protocol writes to, and the
    protocol of the stream underneath.

    Half-close (docs/writing-plugins.md): C{loseWriteConnection} sends FIN
    without UNBIND and keeps delivering what the peer sends.  A FIN from the
    peer without UNBIND reaches a plugin protocol that provides
    L{IHalfCloseableProtocol} as C{readConnectionLost}, and it may go on
    writing; any other plugin's session closes as a whole.  Either way, once
    this end has sent its FIN the peer has L{CLOSE_WAIT_TIMEOUT} seconds to
    send its own.
    """

    __slots__ = (
        "protocol",
        "_peerReason",
        "since",
        "_graceTimer",
        "_writeClosed",
        "_closeWait",
        "_peerFinished",
    )
    log = Logger()

    def __init__(self, cp: ControlPoint, stream: Stream, info: SessionInfo) -> None:
        self.info = info
        self._stream = stream
        self._cp = cp
        self.protocol: Any = None
        self._closeReason: tuple[str, str] | None = None
        self._peerReason: tuple[str, str] | None = None
        self._closing = False
        self.disconnecting = False
        self.since = cp.reactor.seconds()
        self._graceTimer: IDelayedCall | None = None
        #: This end half-closed (FIN without UNBIND).
        self._writeClosed = False
        self._closeWait: IDelayedCall | None = None
        #: The peer's FIN arrived: it sent all it will (its UNBIND travels
        #: on the control stream and can overtake its last bytes).
        self._peerFinished = False

    def start(self, protocol: Any, leftover: bytes = b"") -> None:
        self.protocol = protocol
        self._stream.protocol = self
        protocol.makeConnection(self)
        if leftover:
            protocol.dataReceived(leftover)

    # -- ITransport / IConsumer / IPushProducer ------------------------------

    def write(self, data: bytes) -> None:
        if not (self._closing or self._writeClosed):
            self._stream.write(data)

    def writeSequence(self, data: Any) -> None:
        if not (self._closing or self._writeClosed):
            self._stream.writeSequence(data)

    def loseWriteConnection(self) -> None:
        """
        Half-close: FIN after what is written (no UNBIND); what the peer
        sends is still delivered.  A plugin protocol that provides
        L{IHalfCloseableProtocol} hears C{writeConnectionLost}.
        """
        if self._closing or self._writeClosed:
            return
        self._writeClosed = True
        self._sendFin()
        protocol = self.protocol
        if protocol is not None and IHalfCloseableProtocol.providedBy(protocol):
            protocol.writeConnectionLost()

    def _finishSending(self) -> None:
        self._sendFin()

    def _sendFin(self) -> None:
        # The timer first: the FIN may end the stream (and cancel it) at once.
        if self._closeWait is None:
            self._closeWait = self._cp.reactor.callLater(CLOSE_WAIT_TIMEOUT, self._closeTimedOut)
        self._stream.loseConnection()

    def _closeTimedOut(self) -> None:
        self._closeWait = None
        self.log.info(
            "session {sid} ({plugin}) with {peer}: no FIN from the peer within "
            "{timeout:g} s of ours; reset",
            sid=self.info.sessionID,
            plugin=self.info.plugin,
            peer=self.info.peerNodeID,
            timeout=CLOSE_WAIT_TIMEOUT,
        )
        detail = f"the peer did not finish closing within {CLOSE_WAIT_TIMEOUT:g} s"
        if self._closeReason is None:
            self._closeReason = (Reason.TIMEOUT.value, detail)
        self._closing = self.disconnecting = True
        self._cp.sendUnbind(self.info.sessionID, Reason.TIMEOUT.value, detail)
        self._stream.abortConnection()

    def _abort(self) -> None:
        self._stream.abortConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._stream.unregisterProducer()

    # -- the stream's protocol ------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # pragma: no cover - set directly
        pass

    def dataReceived(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        # The peer finished sending.  A half-closeable plugin hears it and
        # may go on writing (unless the session is closing anyway); for any
        # other the session closes as a whole.
        self._peerFinished = True
        protocol = self.protocol
        if protocol is not None and IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
            return
        if not (self._closing or self._writeClosed):
            self._closing = self.disconnecting = True
            self._sendFin()

    def writeConnectionLost(self) -> None:
        # IHalfCloseableProtocol requires it; the stream never calls it.
        pass

    def unbindReceived(self, reason: str, detail: str) -> None:
        """
        The peer sent UNBIND: remember why, and close our direction.
        """
        self._peerReason = (reason, detail)
        if self._graceTimer is not None:
            self._finish(Failure(ConnectionDone()))
            return
        if not self._closing:
            self._closing = self.disconnecting = True
            if not self._writeClosed:
                self._sendFin()

    def connectionLost(self, reason: Failure) -> None:
        if (
            self._peerReason is None
            and self._closeReason is None
            and not self._writeClosed
            and reason.check(ConnectionDone)
            and self._graceTimer is None
        ):
            # A clean end without UNBIND yet: the peer's FIN can overtake its
            # UNBIND, which travels on its control stream.  Wait a moment.
            # (A session this end half-closed ends at once: both FINs, no
            # UNBIND, is its normal end.)
            self._graceTimer = self._cp.reactor.callLater(UNBIND_GRACE, self._finish, reason)
            return
        self._finish(reason)

    def linkLost(self) -> None:
        """
        The link went down while this session waited for its UNBIND.
        """
        if self._graceTimer is not None:
            self._finish(Failure(ConnectionLost("the link went down")))

    def _finish(self, reason: Failure) -> None:
        if self._graceTimer is not None:
            if self._graceTimer.active():
                self._graceTimer.cancel()
            self._graceTimer = None
        if self._closeWait is not None:
            if self._closeWait.active():
                self._closeWait.cancel()
            self._closeWait = None
        # Over: a late close from the plugin sends nothing and starts no timer.
        self._closing = self.disconnecting = True
        if self._peerReason is not None:
            why = SessionClosed(*self._peerReason)
            if (
                why.reason == Reason.NORMAL.value
                and not self._peerFinished
                and not reason.check(ConnectionDone)
            ):
                # The UNBIND came ahead of the peer's last bytes and the
                # stream was lost before they (and its FIN) arrived: a
                # normal end would hide that bytes are missing.
                why = SessionClosed(
                    Reason.LINK_FAILURE.value,
                    "the stream was lost before the peer's last bytes arrived",
                )
        elif self._closeReason is not None:
            why = SessionClosed(*self._closeReason)
        else:
            why = (
                SessionClosed(Reason.NORMAL.value, "")
                if reason.check(ConnectionDone)
                else SessionClosed(Reason.LINK_FAILURE.value, reason.getErrorMessage())
            )
        self._cp.sessionEnded(self, why)
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connectionLost(Failure(why))


@attrs.define
class OutboundBind:
    """
    A BIND this node sent and is waiting on.
    """

    cp: ControlPoint
    stream: Stream
    request: SessionOpen
    protocolFactory: Callable[[ISessionInfo], IProtocol]
    deferred: Deferred[Any]
    #: Builds the session once accepted (a switchable one, 15.9, if the
    #: BIND asked for path switch).
    makeSession: Callable[[ControlPoint, Stream, SessionInfo], Session] = Session
    log = Logger()

    def start(self) -> None:
        self.stream.attachProtocol(BindReader(self._answered, self._lost))
        self.stream.write(encodeMessage(self.request))

    def _answered(self, answer: Message, leftover: bytes) -> None:
        # The BIND stops counting once answered, after its session (if any)
        # counts: a draining link must not see itself empty in between.
        try:
            self._answer(answer, leftover)
        finally:
            self.cp.bindFinished(self.request.session_id)

    def _answer(self, answer: Message, leftover: bytes) -> None:
        req = self.request
        if isinstance(answer, SessionAccept) and answer.session_id == req.session_id:
            info = SessionInfo(
                req.session_id,
                req.plugin,
                req.cos,
                req.parameters,
                OUTBOUND,
                self.cp.localNodeID,
                self.cp.peerNodeID,
                self.cp.peerName,
            )
            try:
                protocol = self.protocolFactory(info)
            except Exception:
                self.log.failure("protocol factory for session {sid} failed", sid=req.session_id)
                self.stream.abortConnection()
                self.deferred.errback()
                return
            session = self.makeSession(self.cp, self.stream, info)
            self.cp.sessionStarted(session)
            session.start(protocol, leftover)
            self.deferred.callback(protocol)
        elif isinstance(answer, SessionRefuse) and answer.session_id == req.session_id:
            self.stream.loseConnection()
            self.deferred.errback(SessionRefused(answer.reason, answer.detail))
        else:
            self.stream.abortConnection()
            self.deferred.errback(
                SessionRefused(Reason.PROTOCOL_ERROR.value, f"unexpected {answer.typeName}")
            )

    def _lost(self, reason: Failure) -> None:
        self.cp.bindFinished(self.request.session_id)
        if isinstance(reason.value, SessionClosed):
            why = reason.value.reason
        elif isinstance(reason.value, ProtocolError):
            why = Reason.PROTOCOL_ERROR.value
        else:
            why = Reason.LINK_FAILURE.value
        self.deferred.errback(SessionRefused(why, reason.getErrorMessage()))


@implementer(IBindHandler, ISessionOpener)
class AdjacentSessions:
    """
    The adjacent sessions of one node: binds the sessions its control
    points open, and accepts or refuses the BINDs their neighbours send.
    """

    def __init__(self, plugins: Mapping[str, ISessionPlugin]) -> None:
        #: The node's session plugins by name (the node's live mapping).
        self.plugins = plugins
        #: Path switch of adjacent sessions (docs/protocol.md 15.9), once
        #: the node ends routed sessions (L{installRoutedSessions}).
        self.pathSwitch: AdjacentPathSwitch | None = None

    def capabilities(self) -> set[str]:
        """
        The Hello capabilities of the adjacent sessions: C{path-switch} when
        they can switch paths.
        """
        return {PATH_SWITCH_CAPABILITY} if self.pathSwitch is not None else set()

    def _elsewhere(self, cp: ControlPoint, plugin: str) -> int:
        sw = self.pathSwitch
        return 0 if sw is None else sw.elsewhere(cp, plugin)

    def bindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        sw = self.pathSwitch
        if req.path and (sw is None or req.path != 1):
            # A re-BIND comes through relays (15.9); path switch is asked
            # for only of a node that announced it.
            why = "path switch not offered" if sw is None else "a re-BIND on a direct link"
            cp.refuse(stream, req.session_id, Reason.PROTOCOL_ERROR, why)
            return
        # Contention: when both ends race for the last slot, the contention
        # winner (the lower node ID) counts its own pending BINDs and refuses;
        # the loser does not, so it accepts, and its own BIND is refused.
        winner = cp.localNodeID < cp.peerNodeID
        info = SessionInfo(
            req.session_id,
            req.plugin,
            req.cos,
            req.parameters,
            INBOUND,
            cp.localNodeID,
            cp.peerNodeID,
            cp.peerName,
        )
        protocol = acceptBind(
            cp,
            stream,
            req,
            self.plugins.get(req.plugin),
            req.session_id in cp.sessions or (sw is not None and req.session_id in sw.sessions),
            cp.sessionCount(req.plugin, includePending=winner) + self._elsewhere(cp, req.plugin),
            cp.limits.get(req.plugin, 0),
            info,
        )
        if protocol is not None:
            if sw is not None and req.path:
                session = sw.newSession(cp, stream, info)
            else:
                session = Session(cp, stream, info)
            cp.sessionStarted(session)
            session.start(protocol)

    def unbindReceived(self, cp: ControlPoint, msg: SessionClose) -> None:
        # An adjacent session's UNBIND reaches it through cp.sessions; one
        # for no session is late, and there is nothing to do.
        pass

    def openSession(
        self,
        cp: ControlPoint,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None,
        cos: str | None,
    ) -> Deferred[Any]:
        if not cp.isActive:
            return fail(SessionRefused(Reason.LINK_FAILURE.value, "the link is not active"))
        if cp.peerHello is None or plugin not in cp.peerHello.plugins:
            return fail(SessionRefused(Reason.UNKNOWN_PLUGIN.value, f"the peer has no {plugin!r}"))
        if cp.sessionCount(plugin) + self._elsewhere(cp, plugin) >= cp.limits[plugin]:
            return fail(
                SessionRefused(
                    Reason.LIMIT_REACHED.value,
                    f"{cp.limits[plugin]} {plugin} sessions with this node",
                )
            )
        try:
            stream = cp.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded) as e:
            return fail(SessionRefused(Reason.LIMIT_REACHED.value, str(e)))
        localPlugin = self.plugins.get(plugin)
        sw = self.pathSwitch
        request = SessionOpen(
            session_id=newSessionID(),
            origin=cp.localNodeID,
            destination=cp.peerNodeID,
            plugin=plugin,
            cos=cos or (localPlugin.defaultCOS if localPlugin else "interactive"),
            window=cp.mux.config.initialWindow,
            parameters=dict(parameters or {}),
            path=1 if sw is not None and sw.asks(cp) else 0,
        )
        d: Deferred[Any] = Deferred()
        bind = OutboundBind(cp, stream, request, protocolFactory, d)
        if request.path:
            assert sw is not None
            bind.makeSession = sw.newSession
        cp.bindStarted(request)
        bind.start()
        return d
