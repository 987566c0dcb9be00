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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp.messages import (
    Message,
    MessageReader,
    SessionAccept,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
)
from appnpy.errors import ProtocolError, Reason, SessionClosed, SessionRefused
from appnpy.interfaces import ISession, ISessionInfo

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream

INBOUND = "inbound"
#: Seconds a session that ended cleanly waits for the peer's UNBIND reason.
UNBIND_GRACE = 2.0
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

    __slots__ = ()
    info: SessionInfo
    _stream: Stream

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

    def abortConnection(self) -> None:
        raise NotImplementedError


@implementer(ISession, IHalfCloseableProtocol)
class Session(SessionBase):
    """
    A bound session: the transport its plugin protocol writes to, and the
    protocol of the stream underneath.
    """

    __slots__ = (
        "info",
        "protocol",
        "_stream",
        "_cp",
        "_closeReason",
        "_peerReason",
        "_closing",
        "disconnecting",
        "since",
        "_graceTimer",
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
        self._graceTimer: Any = None

    def start(self, protocol: Any, leftover: bytes = b"") -> None:
        self.protocol = protocol
        self._stream.protocol = self
        protocol.makeConnection(self)
        if leftover:
            protocol.dataReceived(leftover)

    # -- ITransport / IConsumer / IPushProducer ------------------------------

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._stream.write(data)

    def writeSequence(self, data: Any) -> None:
        if not self._closing:
            self._stream.writeSequence(data)

    def loseConnection(self) -> None:
        self.loseConnectionWithReason(Reason.NORMAL)

    def loseConnectionWithReason(self, reason: str, detail: str = "") -> None:
        if self._closing:
            return
        self._closing = self.disconnecting = True
        self._closeReason = (str(reason), detail)
        self._cp.sendUnbind(self.info.sessionID, str(reason), detail)
        self._stream.loseConnection()

    def abortConnection(self) -> None:
        if not self._closing:
            self._closing = self.disconnecting = True
            self._closeReason = (Reason.ABORTED.value, "")
            self._cp.sendUnbind(self.info.sessionID, Reason.ABORTED.value, "")
        self._stream.abortConnection()

    def getPeer(self) -> SessionAddress:
        return SessionAddress(self.info.peerNodeID, self.info.peerName, self.info.sessionID)

    def getHost(self) -> SessionAddress:
        return SessionAddress(self.info.localNodeID, self._cp.localName, self.info.sessionID)

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
        # The peer finished sending.  Sessions close as a whole: finish ours.
        if not self._closing:
            self._closing = self.disconnecting = True
            self._stream.loseConnection()

    def writeConnectionLost(self) -> None:
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
            self._stream.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if (
            self._peerReason is None
            and self._closeReason is None
            and reason.check(ConnectionDone)
            and self._graceTimer is None
        ):
            # A clean end without UNBIND yet: the peer's FIN can overtake its
            # UNBIND, which travels on its control stream.  Wait a moment.
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
        if self._peerReason is not None:
            why = SessionClosed(*self._peerReason)
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


class _BindReader:
    """
    The protocol of a stream until its BIND exchange is over: reads exactly
    one message, hands it on, and passes any bytes after it along.
    """

    __slots__ = ("_reader", "_onMessage", "_onLost", "transport")

    def __init__(
        self,
        onMessage: Callable[[Message, bytes], None],
        onLost: Callable[[Failure], None],
    ) -> None:
        self._reader = MessageReader()
        self._onMessage: Callable[[Message, bytes], None] | None = onMessage
        self._onLost = onLost
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        if self._onMessage is None:
            return
        try:
            messages = self._reader.feed(data, maxMessages=1)
        except ProtocolError as e:
            self._onMessage = None
            self._onLost(Failure(e))
            self.transport.abortConnection()
            return
        if messages:
            onMessage, self._onMessage = self._onMessage, None
            onMessage(messages[0], self._reader.leftover())

    def connectionLost(self, reason: Failure) -> None:
        if self._onMessage is not None:
            self._onMessage = None
            self._onLost(reason)


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
    log = Logger()

    def start(self) -> None:
        self.stream.attachProtocol(_BindReader(self._answered, self._lost))
        self.stream.write(encodeMessage(self.request))

    def _answered(self, answer: Message, leftover: bytes) -> None:
        req = self.request
        self.cp.bindFinished(self)
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
            session = Session(self.cp, self.stream, info)
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
        self.cp.bindFinished(self)
        if isinstance(reason.value, SessionClosed):
            why = reason.value.reason
        elif isinstance(reason.value, ProtocolError):
            why = Reason.PROTOCOL_ERROR.value
        else:
            why = Reason.LINK_FAILURE.value
        self.deferred.errback(SessionRefused(why, reason.getErrorMessage()))


def inboundBindReader(cp: ControlPoint, stream: Stream) -> _BindReader:
    """
    The protocol for a stream the peer opened: its first message decides
    whether it is the peer's control stream or a session.
    """

    def lost(reason: Failure) -> None:
        cp.pendingInboundEnded(stream)

    def received(msg: Message, leftover: bytes) -> None:
        cp.firstMessageReceived(stream, msg, leftover)

    return _BindReader(received, lost)
