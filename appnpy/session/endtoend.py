"""
One end of a routed session (L{RoutedSession}): the transport of the
plugin's protocol on top of TLS 1.3 end to end, and the protocol under that
TLS layer on the session's stream.  The service that opens and accepts
routed sessions is L{appnpy.session.routed.RoutedSessions}.

The far end is pinned by node ID; nothing reaches the plugin before it is
authenticated, and the destination builds the plugin's protocol only then.

A session whose BIND asked for path switch (docs/protocol.md 15.8) runs its
TLS over a L{ResumableStream} instead of the bare stream, and has a
L{PathSwitch}: when its path fails it moves to a new one (the origin
re-BINDs, the destination holds) and the plugin sees only a pause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
)
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import IBoundSession
from appnpy.cp.messages import SessionAccept, SessionOpen, SessionStarted, encodeMessage
from appnpy.errors import PeerAuthenticationError, Reason, SessionClosed, SessionRefused
from appnpy.link.bulktls import BulkTLS, framedSendAvailable, sendFramed
from appnpy.link.tls import checkPeer
from appnpy.session.adjacent import (
    CLOSE_WAIT_TIMEOUT,
    INBOUND,
    OUTBOUND,
    SessionBase,
    SessionInfo,
)
from appnpy.session.pathswitch import PathSwitch, ResumableStream
from appnpy.session.resumable import FRAME_ROOM, MAX_DATA_FRAME

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.routed import RoutedSessions

__all__ = ["MAX_EARLY_DATA", "RoutedSession"]

#: Plaintext the origin keeps for its protocol while it waits for the
#: destination's SessionStarted (the destination's plugin may write first).
MAX_EARLY_DATA = 256 * 1024


class _EndToEndTLS(BulkTLS, BufferingTLSTransport):
    """
    Twisted's TLS layer (L{BulkTLS}: whole writes, one delivery per read),
    telling the session of a TLS failure (a record that
    does not authenticate, a bad alert) before it closes the stream, so the
    UNBIND that names the failure goes out ahead of the FIN.
    """

    #: Whether the TLS connection has ended (the session then has nothing
    #: left to shut down).
    ended = False
    #: The numbered stream's writeFrame, when this layer runs over one and
    #: can read its records into fresh buffers (L{sendFramed}): each DATA
    #: frame is then the buffer the records were read into, with the
    #: header put in front of them, not a copy of the records behind it.
    #: False when not; None until the first send finds out.
    _writeFrame: Callable[[memoryview], None] | bool | None = None

    def _sendRecords(self, size: int) -> None:
        writeFrame = self._writeFrame
        if writeFrame is None:
            transport = self.transport
            writeFrame = self._writeFrame = (
                transport.writeFrame
                if isinstance(transport, ResumableStream) and framedSendAvailable()
                else False
            )
        if not callable(writeFrame):
            super()._sendRecords(size)
            return
        sendFramed(self._tlsConnection, FRAME_ROOM, MAX_DATA_FRAME, writeFrame)

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        # Twisted's hook for the end of TLS (overridden, as Twisted's own
        # subclasses do, to learn why before the stream closes).
        if reason is not None:
            cast("RoutedSession", self.wrappedProtocol)._tlsFailed(reason)
        super()._tlsShutdownFinished(reason)  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted gives reason a default
        self.ended = True
        super().connectionLost(reason)

    @property
    def closeNotifyReceived(self) -> bool:
        """
        Whether the far end's close_notify arrived: the only authenticated
        end of its data (an UNBIND or a FIN could come from a relay).
        Readable until this layer's C{connectionLost} returns (the
        session's runs inside it).
        """
        connection = self._tlsConnection
        return connection is not None and bool(connection.get_shutdown() & SSL.RECEIVED_SHUTDOWN)


@implementer(IHalfCloseableProtocol)
class _StreamEnd:
    """
    The protocol of the routed stream at an end: hands the TLS records to
    the TLS layer (C{dataReceived} is that layer's, set per instance) and
    tells the session when the far end half-closes.
    """

    def __init__(self, tls: Any, session: RoutedSession) -> None:
        self.dataReceived = tls.dataReceived
        self._tls = tls
        self._session = session
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def readConnectionLost(self) -> None:
        self._session._farEndFinished()

    def writeConnectionLost(self) -> None:
        # IHalfCloseableProtocol requires it; streams never half-close this way.
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._session._streamGone = True
        self._tls.connectionLost(reason)


@implementer(IBoundSession, IHandshakeListener)
class RoutedSession(SessionBase):
    """
    One end of a routed session: the transport of the plugin's protocol (on
    top of the end-to-end TLS layer) and the protocol under that layer.
    """

    log = Logger()
    routed = True

    def __init__(
        self,
        owner: RoutedSessions,
        cp: ControlPoint,
        stream: Stream,
        info: SessionInfo,
        route: list[str],
        protocolFactory: Callable[[Any], Any],
        ready: Deferred[Any] | None = None,
        switchable: bool = False,
    ) -> None:
        """
        @param switchable: whether the session's BIND asked for path switch
            (its TLS then runs over a L{ResumableStream}).
        """
        self.info = info
        self.route = route
        self.protocol: Any = None
        self.since = cp.reactor.seconds()
        self.disconnecting = False
        self._owner = owner
        self._cp = cp
        self._stream = stream
        self._factory: Callable[[Any], Any] | None = protocolFactory
        self._ready = ready
        self._tls: Any = None
        #: Whether the end-to-end TLS handshake has completed.
        self._handshakeDone = False
        #: Whether the far end's certificate passed the pin check.
        self._authenticated = False
        #: At the origin: whether the destination's SessionStarted arrived.
        self._destinationStarted = False
        #: At the origin: plaintext that came before SessionStarted.
        self._early: list[bytes] = []
        self._earlySize = 0
        self._closing = False
        self._closeReason: tuple[str, str] | None = None
        self._peerReason: tuple[str, str] | None = None
        self._producer: Any = None
        self._handshakeTimer: IDelayedCall | None = None
        #: Bounds the close once it has begun (L{closeWaitTimeout}).
        self._closeWait: IDelayedCall | None = None
        self._ended = False
        self._streamGone = False
        self._aborting = False
        #: Whether the end-to-end TLS failed (a session closing for that
        #: does not switch paths).
        self._tlsError = False
        #: Whether the session left its path and rides no link (switching
        #: or held): it is then in no control point's sessions.
        self._offPath = False
        #: The path switch and the numbered stream, if the session can switch.
        self.switch: PathSwitch | None = None
        self.layer: Any = None
        if switchable:
            self.switch = PathSwitch(owner, self, owner.switchTimeout)

    @property
    def viaLink(self) -> ControlPoint:
        """
        The control point of the link this session's stream runs through.
        """
        return self._cp

    # -- start -------------------------------------------------------------------

    def startTLS(self, isClient: bool, leftover: bytes = b"") -> None:
        owner = self._owner
        factory = owner.tlsFactory(isClient)
        tls = _EndToEndTLS(factory, cast(IProtocol, self))  # provides it without declaring it
        self._handshakeTimer = owner.reactor.callLater(
            owner.host.handshakeTimeout, self._handshakeTimedOut
        )
        if self.switch is not None:
            # The numbered stream goes between the TLS layer and the stream.
            layer = self.layer = ResumableStream(
                owner.reactor, self, owner.switchWindow, progressTimeout=owner.progressTimeout
            )
            # The TLS layer takes the numbered stream's payload as views
            # (BulkTLS.dataReceived): one copy less per received byte.
            layer.takesViews = True
            layer.attach(self._stream, awaitingResume=False)
            self._stream = cast("Stream", layer)  # all of a stream the session uses
            tls.makeConnection(layer)  # type: ignore[no-untyped-call]  # unannotated Twisted method
            layer.deliver = tls.dataReceived
            if leftover:
                layer.dataReceived(leftover)
            return
        tls.makeConnection(self._stream)  # type: ignore[no-untyped-call]  # unannotated Twisted method
        end = _StreamEnd(tls, self)
        self._stream.attachProtocol(end)
        if leftover:
            end.dataReceived(leftover)

    def makeConnection(self, transport: Any) -> None:
        # Called by the TLS layer with itself.
        self._tls = transport

    def handshakeCompleted(self) -> None:
        self._handshakeDone = True
        tls = self._tls
        if tls is None or self._closing or self.protocol is not None:
            return
        owner = self._owner
        try:
            checkPeer(tls, self.info.peerNodeID, owner.nodeID, trustMode=owner.trustMode)
        except PeerAuthenticationError as e:
            self._fail(Reason.PROTOCOL_ERROR.value, f"end-to-end authentication failed: {e}")
            return
        self._authenticated = True
        if self.info.direction == OUTBOUND and not self._destinationStarted:
            # The destination has yet to build its plugin's protocol.
            return
        self._connectPlugin()

    def destinationStarted(self) -> None:
        """
        The destination's SessionStarted arrived (origin only).
        """
        self._destinationStarted = True
        if self._authenticated and not self._closing and self.protocol is None:
            self._connectPlugin()

    def _connectPlugin(self) -> None:
        self._cancelHandshakeTimer()
        assert self._factory is not None
        try:
            protocol = self._factory(self.info)
        except SessionRefused as e:
            self._fail(e.reason, e.detail)
            return
        except Exception:
            self.log.failure("protocol factory for session {sid} failed", sid=self.sessionID)
            self._fail(Reason.ABORTED.value, "protocol factory failed")
            return
        self._factory = None
        if self.info.direction == INBOUND:
            self._owner.authenticated(self)
        elif self.layer is not None:
            # Tells the destination this end is bound: from now on it holds
            # the session when its path fails.
            self.layer.sendAckNow()
        self.protocol = protocol
        # Plaintext goes straight to the plugin from now on.
        early, self._early = self._early, []
        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        protocol.makeConnection(self)
        for data in early:
            if self.protocol is protocol:
                protocol.dataReceived(data)
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.callback(protocol)

    def _handshakeTimedOut(self) -> None:
        self._handshakeTimer = None
        if self.protocol is None:
            what = "SessionStarted" if self._authenticated else "end-to-end TLS handshake"
            self._fail(Reason.TIMEOUT.value, f"{what} timed out")

    def _cancelHandshakeTimer(self) -> None:
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        self._handshakeTimer = None

    def _tlsFailed(self, reason: Failure) -> None:
        # Once the stream is gone, the TLS layer reports the missing close
        # notify as a failure too; that is the link's failure, not TLS's.
        if self._streamGone:
            return
        self._tlsError = True
        if not self._closing:
            detail = f"end-to-end TLS failed: {reason.getErrorMessage()}"[:512]
            self.log.warn(
                "routed session {sid} with {peer}: {detail}",
                sid=self.sessionID,
                peer=self.peerNodeID,
                detail=detail,
            )
            self._closing = self.disconnecting = True
            self._closeReason = (Reason.PROTOCOL_ERROR.value, detail)
            self._cp.sendUnbind(self.sessionID, Reason.PROTOCOL_ERROR.value, detail)
            self._startCloseWait()

    def _fail(self, reason: str, detail: str) -> None:
        self.log.warn(
            "routed session {sid} with {peer} failed: {reason} {detail}",
            sid=self.sessionID,
            peer=self.peerNodeID,
            reason=reason,
            detail=detail,
        )
        if not self._closing:
            self._closing = self.disconnecting = True
            self._closeReason = (reason, detail)
            self._cp.sendUnbind(self.sessionID, reason, detail)
        self._abort()

    def _abort(self) -> None:
        # Never reset the stream from inside the TLS layer's own call chain
        # (a handshake or a record being processed): the stream would end
        # the TLS layer under it.  The next reactor turn is soon enough;
        # nothing reaches the plugin meanwhile, as the session is closing.
        self._aborting = True
        self._owner.reactor.callLater(0, self._stream.abortConnection)

    # -- path switch (the numbered stream's owner) --------------------------------

    def _canSwitch(self) -> bool:
        sw = self.switch
        return (
            sw is not None
            and sw.state == "up"
            and self.protocol is not None
            and (not self._closing or self._closeUnfinished())
            and not self._aborting
            and not self._owner.host.shuttingDown
            and (self.info.direction == OUTBOUND or self.layer.ackSeen)
        )

    def _closeUnfinished(self) -> bool:
        """
        Whether a closing session still needs a path: its close is a
        graceful one (this end's, or the far end's UNBIND normal: any other
        reason may come with the far end's reset), its TLS is sound, and
        the far end's close_notify has not arrived or bytes of this end are
        unacknowledged.  An UNBIND travels ahead of the data, so a path that
        fails after it may still owe either end the last bytes.
        """
        peer = self._peerReason
        return (
            (peer is None or peer[0] == Reason.NORMAL.value)
            and not self._tlsError
            and not (self._tls.closeNotifyReceived and self.layer.buffered == 0)
        )

    def farEndFinished(self) -> None:
        self._farEndFinished()

    def streamLost(self, reason: Failure) -> None:
        """
        The stream the session rides ended: a path failure (switch or
        hold), or the session's end.
        """
        sw = self.switch
        if sw is not None and not self._aborting:
            # A clean end (both FINs, each after its end's close_notify) is
            # the session's end, not its path's.
            if sw.state == "switching" or (not reason.check(ConnectionDone) and self._canSwitch()):
                sw.pathDown(f"stream lost: {reason.getErrorMessage()}"[:200])
                return
        self._streamGone = True
        self._tls.connectionLost(reason)

    def layerFailed(self, detail: str) -> None:
        self._fail(Reason.PROTOCOL_ERROR.value, f"path switch: {detail}"[:512])

    def resumed(self) -> None:
        assert self.switch is not None
        self.switch.lifecycle.rebound()

    def leavePath(self) -> None:
        """
        The path failed: the session no longer rides its link, and the
        numbered stream leaves the stream.
        """
        cp = self._cp
        if cp.sessions.get(self.sessionID) is self:
            del cp.sessions[self.sessionID]
        self._offPath = True
        self.layer.detach()

    def rideOn(
        self,
        cp: ControlPoint,
        stream: Stream,
        route: list[str],
        awaitingResume: bool,
        leftover: bytes = b"",
    ) -> None:
        """
        Move the session to C{stream}, the first (origin) or last
        (destination) hop of a new path through C{cp}.
        """
        old = self._cp
        if old.sessions.get(self.sessionID) is self:
            del old.sessions[self.sessionID]
        self._cp = cp
        cp.sessions[self.sessionID] = self
        self._offPath = False
        self.route = list(route)
        if self.layer.attached:
            self.layer.detach()
        self.layer.attach(stream, awaitingResume, leftover)

    def checkRebind(self, req: SessionOpen) -> str | None:
        """
        Why the origin's (verified) re-BIND C{req} cannot move this session
        (the destination's end), or L{None}.
        """
        sw = self.switch
        if sw is None or sw.state == "ended" or self._ended:
            return "the session cannot switch paths"
        if req.path <= sw.path:
            return f"path {req.path} is not newer than the session's path {sw.path}"
        return self.layer.checkResume(req.resume)  # type: ignore[no-any-return]

    def rebindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        The destination: the origin re-bound the session on a new path
        (checked by L{checkRebind} and the BIND checks): accept, say how
        much has arrived, retransmit what the origin lacks.
        """
        sw = self.switch
        assert sw is not None
        sw.path = req.path
        stream.write(encodeMessage(SessionAccept(session_id=self.sessionID)))
        self.rideOn(cp, stream, req.route, awaitingResume=False)
        self.layer.sendResume()
        self.layer.resumeFrom(req.resume)
        # The relays of the new path hold the splice until they hear it.
        cp.send(SessionStarted(session_id=self.sessionID))
        sw.lifecycle.rebound()

    def endSwitch(self, reason: str, detail: str) -> None:
        """
        No path came back (or the node is stopping): the session ends.
        """
        if self._ended:
            return
        self._closing = self.disconnecting = True
        self._closeReason = (reason, detail)
        self._streamGone = True
        self._tls.connectionLost(Failure(ConnectionLost(detail)))

    # -- the close's bound -----------------------------------------------------------

    @property
    def closeWaitTimeout(self) -> float:
        """
        Seconds a session that began closing (its own close, the far end's
        UNBIND or FIN, a TLS failure) has to finish closing before it is
        reset with reason timeout.  Only the far end's close_notify ends a
        close, and a relay can withhold it while it forges the ACKs that
        would otherwise wake the progress check: without a bound such a
        session would keep its place (the plugin's session limit) for ever.
        A session that can switch gets the longest a switch can take on
        top (the switch timeout, plus the BIND timeout a destination holds
        longer), so a close interrupted by a path failure can still finish.
        """
        if self.switch is None:
            return CLOSE_WAIT_TIMEOUT
        owner = self._owner
        return CLOSE_WAIT_TIMEOUT + owner.switchTimeout + owner.bindTimeout

    def _startCloseWait(self) -> None:
        if self._closeWait is None and not self._ended:
            self._closeWait = self._owner.reactor.callLater(
                self.closeWaitTimeout, self._closeTimedOut
            )

    def _closeTimedOut(self) -> None:
        self._closeWait = None
        if self._ended:
            return
        timeout = self.closeWaitTimeout
        detail = f"the session did not finish closing within {timeout:g} s"
        self.log.info(
            "routed session {sid} ({plugin}) with {peer}: {detail}; reset",
            sid=self.sessionID,
            plugin=self.plugin,
            peer=self.peerNodeID,
            detail=detail,
        )
        if self._peerReason is not None and self._peerReason[0] == Reason.NORMAL.value:
            # A normal close that never finished is no normal end.
            self._peerReason = None
        self._closeReason = (Reason.TIMEOUT.value, detail)
        sw = self.switch
        if sw is not None and sw.state in ("switching", "holding"):
            # No path to tell anyone on: it ends as a switch that ran out.
            self.endSwitch(Reason.TIMEOUT.value, detail)
            return
        self._cp.sendUnbind(self.sessionID, Reason.TIMEOUT.value, detail)
        self._abort()

    # -- the protocol under TLS ----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Replaced by the plugin's dataReceived once the far end is
        # authenticated; nothing reaches the plugin before.  The origin
        # keeps what the (authenticated) destination's plugin sends before
        # its SessionStarted arrives on the control stream.
        if self._authenticated and not self._closing:
            self._earlySize += len(data)
            if self._earlySize > MAX_EARLY_DATA:
                self._fail(Reason.PROTOCOL_ERROR.value, "too much data before SessionStarted")
            else:
                self._early.append(data)

    def _farEndFinished(self) -> None:
        # The far end finished sending; sessions close as a whole.
        if not self._closing:
            self._closing = self.disconnecting = True
            self._finishSending()

    def unbindReceived(self, reason: str, detail: str) -> None:
        """
        The far end (or a relay, for a failure on the way) sent UNBIND.
        Only a relay sends C{link-failure}: a switchable session takes it
        as its path failing.
        """
        sw = self.switch
        if (
            reason == Reason.LINK_FAILURE.value
            and sw is not None
            and (sw.state == "switching" or self._canSwitch())
        ):
            sw.pathDown(f"UNBIND link-failure: {detail}"[:200])
            return
        self._peerReason = (reason, detail)
        if not self._closing:
            self._closing = self.disconnecting = True
            self._finishSending()

    def connectionLost(self, reason: Failure) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancelHandshakeTimer()
        if self._closeWait is not None:
            if self._closeWait.active():
                self._closeWait.cancel()
            self._closeWait = None
        if self.switch is not None:
            self.switch.lifecycle.sessionEnded()
            self.layer.end()
        if self._peerReason is not None:
            why = SessionClosed(*self._peerReason)
        elif self._closeReason is not None:
            why = SessionClosed(*self._closeReason)
        elif isinstance(reason.value, SSL.Error):
            detail = f"end-to-end TLS failed: {reason.getErrorMessage()}"[:512]
            why = SessionClosed(Reason.PROTOCOL_ERROR.value, detail)
            self._cp.sendUnbind(self.sessionID, why.reason, detail)
        elif reason.check(ConnectionDone):
            why = SessionClosed(Reason.NORMAL.value, "")
        else:
            why = SessionClosed(Reason.LINK_FAILURE.value, reason.getErrorMessage())
        if why.reason == Reason.NORMAL.value and not self._tls.closeNotifyReceived:
            # Neither an UNBIND (a relay can forge one, and it travels ahead
            # of the data) nor a FIN says that every byte arrived; only the
            # far end's close_notify does.  Without it, bytes may be missing.
            why = SessionClosed(
                Reason.LINK_FAILURE.value,
                "the session's stream ended before the end-to-end TLS close_notify",
            )
        if self._offPath:
            # Back on its last link, so that its end is accounted (logged,
            # counted, told to observers) once, as any session's, however
            # it ended while it had no path.
            self._offPath = False
            self._cp.sessions[self.sessionID] = self
        self._owner.sessionEnded(self, why)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        protocol, self.protocol = self.protocol, None
        self.dataReceived = RoutedSession.dataReceived.__get__(self)  # type: ignore[method-assign]
        if protocol is not None:
            protocol.connectionLost(Failure(why))
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.errback(SessionRefused(why.reason, why.detail))

    # -- ITransport / IConsumer / IPushProducer for the plugin ---------------------

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._tls.write(data)

    def writeSequence(self, data: Any) -> None:
        if not self._closing:
            self._tls.write(b"".join(data))

    def _finishSending(self) -> None:
        # Close notify after what is written, then FIN.  A registered
        # producer would hold the TLS shutdown back; the session is ending,
        # so it is detached now (and stopped once the session is gone).
        # The timer first: the FIN may end the session (and cancel it) at once.
        self._startCloseWait()
        tls = self._tls
        if tls is None or self._streamGone or tls.ended:
            self._stream.loseConnection()
            return
        if not self._handshakeDone:
            # Nothing can have been written yet; Twisted's TLS layer would
            # abort from inside its own loseConnection here.
            self._abort()
            return
        if self._producer is not None:
            tls.unregisterProducer()
        tls.loseConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._closing:
            producer.stopProducing()
            return
        self._producer = producer
        self._tls.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._producer is not None:
            self._producer = None
            if self._tls is not None:
                self._tls.unregisterProducer()
