"""
The control point of one link (APPN's pair of CP-CP sessions).

Once TLS has authenticated the neighbour, each side opens one control stream
and sends a signed L{Hello} on it.  Every stream the peer opens starts with one
message: C{Hello} marks the peer's control stream; C{SessionOpen} is a BIND.
The link is I{active} when the peer's Hello has been verified and a protocol
version agreed; only then are sessions bound.  Session limits per plugin are
negotiated from the two Hellos, the lower limit winning (APPN CNOS).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.cp.messages import (
    Hello,
    LinkRefused,
    Message,
    MessageReader,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
    isToken,
)
from appnpy.errors import (
    GoAwayReceived,
    InvalidCPName,
    ProtocolError,
    Reason,
    SessionClosed,
    SessionRefused,
    StreamLimitExceeded,
)
from appnpy.link.identity import nodeIDFromSPKI, validateCPName, verifySignature
from appnpy.link.tls import AuthenticatedProtocol

# Stream is needed at run time: Automat evaluates the input annotations.
from appnpy.link.yamux import Multiplexer, Stream
from appnpy.session.adjacent import (
    INBOUND,
    OutboundBind,
    Session,
    SessionInfo,
    inboundBindReader,
    newSessionID,
)

if TYPE_CHECKING:
    from appnpy.node import Node

#: Capabilities this implementation announces; unknown ones are ignored.
CAPABILITIES = ["sessions"]
#: Streams the peer may have open that have not yet sent their first message.
MAX_PENDING_INBOUND = 64
#: Seconds a peer-opened stream may take to send its first message.
FIRST_MESSAGE_TIMEOUT = 30.0
#: Seconds a graceful close waits for sessions to finish before dropping the link.
CLOSE_TIMEOUT = 5.0
#: Seconds a refused link may take to finish closing before it is aborted.
LINGER_TIMEOUT = 2.0


class LinkState(enum.Enum):
    """
    Where a link is in its lifecycle: the state of its L{ControlPoint}'s
    lifecycle machine, for readers (see docs/state-machines.md).
    """

    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSING = "closing"
    CLOSED = "closed"


class _ControlReader:
    """
    The protocol of the peer's control stream after its Hello.
    """

    __slots__ = ("_cp", "_reader", "transport")

    def __init__(self, cp: ControlPoint) -> None:
        self._cp = cp
        self._reader = MessageReader()
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ProtocolError as e:
            self._cp.protocolError(str(e))
            return
        for msg in messages:
            self._cp.controlMessageReceived(msg)

    def connectionLost(self, reason: Failure) -> None:
        self._cp.peerControlStreamLost()


class _OwnControl:
    """
    The protocol of the control stream this node opened: it only writes; a
    peer that writes back breaks the protocol.
    """

    __slots__ = ("_cp", "transport")

    def __init__(self, cp: ControlPoint) -> None:
        self._cp = cp
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self._cp.protocolError("data on the receiving side of a control stream")

    def connectionLost(self, reason: Failure) -> None:
        pass


class ControlPoint:
    """
    One link's control point: Hello, CNOS limits, BIND/UNBIND dispatch.
    """

    log = Logger()

    def __init__(
        self,
        node: Node,
        mux: Multiplexer,
        linkProtocol: LinkProtocol,
        peerNodeID: str,
    ) -> None:
        self.node = node
        self.reactor = node.reactor
        self.mux = mux
        self.link = linkProtocol
        self.peerNodeID = peerNodeID
        self.localNodeID = node.nodeID
        self.localName = node.name
        self.isDialer = linkProtocol.isClient
        self.address = linkProtocol.addressText()
        self._linkState = LinkState.HANDSHAKE
        self.peerHello: Hello | None = None
        self.version: int | None = None
        self.limits: dict[str, int] = {}
        self.sessions: dict[str, Session] = {}
        self.outboundBinds: dict[str, OutboundBind] = {}
        self.pendingInbound: dict[Stream, Any] = {}
        self.since = self.reactor.seconds()
        self._control: Stream | None = None
        self._peerControl: Stream | None = None
        self._whenActive: Deferred[ControlPoint] = Deferred()
        self._closeReason: tuple[str, str] | None = None
        self._closeTimer: Any = None
        self._waiters: list[Deferred[ControlPoint]] = []
        self._lifecycle: _LinkInputs = _LinkMachine(self)

    @property
    def state(self) -> LinkState:
        """
        Where the link is in its lifecycle; only the lifecycle machine
        changes it.
        """
        return self._linkState

    @property
    def isActive(self) -> bool:
        """
        Whether the Hello exchange is done and the link is not closing:
        sessions and control messages may use it.
        """
        return self._linkState is LinkState.ACTIVE

    @property
    def peerName(self) -> str:
        return self.peerHello.name if self.peerHello else ""

    def whenActive(self) -> Deferred[ControlPoint]:
        """
        Fires with this control point once the Hello exchange is done, or
        fails with why the link did not come up.
        """
        d: Deferred[ControlPoint] = Deferred()
        self._lifecycle.awaitActive(d)
        return d

    # -- start ---------------------------------------------------------------

    def start(self) -> None:
        self._control = self.mux.openStream()
        self._control.attachProtocol(_OwnControl(self))
        hello = Hello(
            node_id=self.node.nodeID,
            public_key=self.node.identity.publicKeyBytes,
            name=self.node.name,
            role=self.node.role,
            versions=list(self.node.protocolVersions),
            capabilities=sorted(set(CAPABILITIES) | self.node.capabilities()),
            listen=self.node.advertisedAddresses(),
            plugins={name: p.sessionLimit for name, p in sorted(self.node.plugins.items())},
        )
        signature = self.node.identity.sign(hello.signedBytes())
        self._sendControl(attrs.evolve(hello, signature=signature))

    def _sendControl(self, msg: Message) -> None:
        if self._control is not None:
            self._control.write(encodeMessage(msg))

    # -- streams the peer opens -------------------------------------------

    def streamAccepted(self, stream: Stream) -> None:
        # Every session the peer opens comes through here: on an active link
        # take the machine's Active transition directly (dispatching an input
        # costs a scan of the transition table, per session).
        if self._linkState is LinkState.ACTIVE:
            self._admitStream(stream)
        else:
            self._lifecycle.streamAccepted(stream)

    def _admitStream(self, stream: Stream) -> None:
        if len(self.pendingInbound) >= MAX_PENDING_INBOUND:
            stream.abortConnection()
            return
        timer = self.reactor.callLater(FIRST_MESSAGE_TIMEOUT, stream.abortConnection)
        self.pendingInbound[stream] = timer
        stream.attachProtocol(inboundBindReader(self, stream))

    def pendingInboundEnded(self, stream: Stream) -> None:
        timer = self.pendingInbound.pop(stream, None)
        if timer is not None and timer.active():
            timer.cancel()

    def firstMessageReceived(self, stream: Stream, msg: Message, leftover: bytes) -> None:
        self.pendingInboundEnded(stream)
        if isinstance(msg, Hello):
            if self._peerControl is not None:
                self.protocolError("a second control stream")
                return
            self._peerControl = stream
            reader = _ControlReader(self)
            stream.protocol = reader
            reader.transport = stream
            self.helloReceived(msg)
            if leftover:
                reader.dataReceived(leftover)
        elif isinstance(msg, SessionOpen):
            if self._linkState is not LinkState.ACTIVE:
                self._lifecycle.bindArrived(stream, msg, leftover)
            elif leftover:  # the Active transition of bindArrived, inline (per session)
                self._refuse(
                    stream, msg.session_id, Reason.PROTOCOL_ERROR, "data before BIND answer"
                )
            else:
                self.bindReceived(stream, msg)
        else:
            stream.abortConnection()
            self.protocolError(f"{msg.typeName} as the first message of a stream")

    # -- Hello -------------------------------------------------------------

    def helloReceived(self, hello: Hello) -> None:
        problem = self._checkHello(hello)
        if problem is not None:
            self.refuseLink(*problem)
            return
        ourLow, ourHigh = self.node.protocolVersions
        low = max(ourLow, hello.versions[0])
        high = min(ourHigh, hello.versions[1])
        if low > high:
            self.refuseLink(
                Reason.INCOMPATIBLE_VERSION,
                f"this node speaks versions {ourLow}..{ourHigh}, "
                f"the peer {hello.versions[0]}..{hello.versions[1]}",
            )
            return
        limits = negotiateLimits(
            {name: p.sessionLimit for name, p in self.node.plugins.items()}, hello.plugins
        )
        if self._lifecycle.helloAccepted(hello, high, limits):
            # Outside the machine's outputs: the node and its observers may
            # refuse this link (a duplicate, over max-peers) right away, and
            # then its waiters must not hear that it came up.
            self.node.linkActive(self)
            self._lifecycle.announced()

    def _checkHello(self, hello: Hello) -> tuple[str, str] | None:
        """
        Why the peer's Hello is unacceptable, as (reason code, detail).
        """
        bad = Reason.PROTOCOL_ERROR
        if hello.node_id != self.peerNodeID:
            return bad, f"Hello names node {hello.node_id}, but TLS authenticated {self.peerNodeID}"
        if nodeIDFromSPKI(hello.public_key) != hello.node_id:
            return Reason.BAD_SIGNATURE, "the Hello's public key does not match its node ID"
        if not verifySignature(hello.public_key, hello.signature, hello.signedBytes()):
            return Reason.BAD_SIGNATURE, "the Hello's signature does not verify"
        try:
            canonical = validateCPName(hello.name)
        except InvalidCPName:
            canonical = None
        if canonical != hello.name:
            return bad, f"invalid CP name {hello.name!r} (NETID.NAME in upper case)"
        if hello.role not in ("network", "end"):
            return bad, f"unknown role {hello.role!r}"
        return None

    # -- control messages ------------------------------------------------

    def controlMessageReceived(self, msg: Message) -> None:
        if isinstance(msg, SessionClose):
            session = self.sessions.get(msg.session_id)
            if session is not None:
                session.unbindReceived(msg.reason, msg.detail)
            elif self.node.relay is not None:
                self.node.relay.unbindReceived(self, msg)
        elif isinstance(msg, LinkRefused):
            self._lifecycle.peerRefused(msg.reason, msg.detail)
        else:
            handler = self.node.controlHandlers.get(type(msg))
            if handler is None:
                self.protocolError(f"unexpected {msg.typeName} on a control stream")
            else:
                handler(self, msg)

    def peerSupports(self, capability: str) -> bool:
        """
        Whether the neighbour announced C{capability} in its Hello.
        """
        return self.peerHello is not None and capability in self.peerHello.capabilities

    def send(self, msg: Message) -> bool:
        """
        Send a control message to the neighbour on this node's control
        stream.  An optional message goes only to a neighbour that announced
        its capability; returns whether it was sent.
        """
        if not self.isActive:
            return False
        if msg.capability is not None and not self.peerSupports(msg.capability):
            return False
        self._sendControl(msg)
        return True

    def peerControlStreamLost(self) -> None:
        self._lifecycle.peerControlStreamLost()

    def multiplexerClosed(self, reason: Failure) -> None:
        """
        The link's multiplexer stopped: keep its reason as the link's.
        """
        self._lifecycle.multiplexerClosed(reason)

    def sendUnbind(self, sessionID: str, reason: str, detail: str) -> None:
        # Once the link is closed there is no control stream to send on.
        reason, detail = _wireReason(reason, detail, Reason.NORMAL)
        self._sendControl(SessionClose(session_id=sessionID, reason=reason, detail=detail))

    # -- BIND --------------------------------------------------------------

    def sessionCount(self, plugin: str, includePending: bool = True) -> int:
        # Routed sessions riding this link (their far end is another node)
        # count against their own limits, not this neighbour's.
        count = sum(
            1
            for s in self.sessions.values()
            if s.info.plugin == plugin and s.info.peerNodeID == self.peerNodeID
        )
        if includePending:
            count += sum(1 for b in self.outboundBinds.values() if b.request.plugin == plugin)
        return count

    def bindReceived(self, stream: Stream, req: SessionOpen) -> None:
        node = self.node
        plugin = node.plugins.get(req.plugin)
        if node.shuttingDown:
            self._refuse(stream, req.session_id, Reason.SHUTTING_DOWN, "the node is stopping")
            return
        if req.destination != self.localNodeID or req.origin != self.peerNodeID:
            # A routed session: relayed onward (intermediate session routing)
            # or ending here after relays.
            handler = node.relay if req.destination != self.localNodeID else node.routedSessions
            if handler is None or not req.route:
                self._refuse(stream, req.session_id, Reason.NO_ROUTE, "this node does not relay")
            else:
                handler.bindReceived(self, stream, req)
            return
        if plugin is None:
            self._refuse(stream, req.session_id, Reason.UNKNOWN_PLUGIN, f"no plugin {req.plugin!r}")
            return
        if req.session_id in self.sessions:
            self._refuse(stream, req.session_id, Reason.PROTOCOL_ERROR, "session ID in use")
            return
        # Contention: when both ends race for the last slot, the contention
        # winner (the lower node ID) counts its own pending BINDs and refuses;
        # the loser does not, so it accepts, and its own BIND is refused.
        winner = self.localNodeID < self.peerNodeID
        if self.sessionCount(req.plugin, includePending=winner) >= self.limits.get(req.plugin, 0):
            self._refuse(
                stream,
                req.session_id,
                Reason.LIMIT_REACHED,
                f"{self.limits.get(req.plugin, 0)} {req.plugin} sessions with this node",
            )
            return
        info = SessionInfo(
            req.session_id,
            req.plugin,
            req.cos,
            req.parameters,
            INBOUND,
            self.localNodeID,
            self.peerNodeID,
            self.peerName,
        )
        try:
            protocol = plugin.buildProtocol(info)
        except SessionRefused as e:
            self._refuse(stream, req.session_id, e.reason, e.detail)
            return
        except Exception:
            self.log.failure("plugin {plugin} failed to build a protocol", plugin=req.plugin)
            self._refuse(stream, req.session_id, Reason.REFUSED_BY_PLUGIN, "plugin error")
            return
        if protocol is None:
            self._refuse(stream, req.session_id, Reason.REFUSED_BY_PLUGIN, "")
            return
        stream.write(encodeMessage(SessionAccept(session_id=req.session_id)))
        session = Session(self, stream, info)
        self.sessionStarted(session)
        session.start(protocol)

    def refuse(self, stream: Stream, sessionID: str, reason: str, detail: str) -> None:
        """
        Answer a BIND on C{stream} with a refusal and close the stream.
        """
        self._refuse(stream, sessionID, reason, detail)

    def _refuse(self, stream: Stream, sessionID: str, reason: str, detail: str) -> None:
        reason, detail = _wireReason(reason, detail, Reason.REFUSED_BY_PLUGIN)
        self.log.info(
            "refused session {sid} from {peer}: {reason} {detail}",
            sid=sessionID,
            peer=self.peerNodeID,
            reason=str(reason),
            detail=detail,
        )
        self.node.sessionRefused(str(reason))
        stream.write(
            encodeMessage(SessionRefuse(session_id=sessionID, reason=str(reason), detail=detail))
        )
        stream.loseConnection()

    def openSession(
        self,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None = None,
        cos: str | None = None,
    ) -> Deferred[Any]:
        """
        BIND a session with the neighbour; see L{appnpy.interfaces.INode.openSession}.
        """
        if not self.isActive:
            return fail(SessionRefused(Reason.LINK_FAILURE.value, "the link is not active"))
        if self.peerHello is None or plugin not in self.peerHello.plugins:
            return fail(SessionRefused(Reason.UNKNOWN_PLUGIN.value, f"the peer has no {plugin!r}"))
        if self.sessionCount(plugin) >= self.limits[plugin]:
            return fail(
                SessionRefused(
                    Reason.LIMIT_REACHED.value,
                    f"{self.limits[plugin]} {plugin} sessions with this node",
                )
            )
        try:
            stream = self.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded) as e:
            return fail(SessionRefused(Reason.LIMIT_REACHED.value, str(e)))
        localPlugin = self.node.plugins.get(plugin)
        request = SessionOpen(
            session_id=newSessionID(),
            origin=self.localNodeID,
            destination=self.peerNodeID,
            plugin=plugin,
            cos=cos or (localPlugin.defaultCOS if localPlugin else "interactive"),
            window=self.mux.config.initialWindow,
            parameters=dict(parameters or {}),
        )
        d: Deferred[Any] = Deferred()
        bind = OutboundBind(self, stream, request, protocolFactory, d)
        self.outboundBinds[request.session_id] = bind
        bind.start()
        return d

    def bindFinished(self, bind: OutboundBind) -> None:
        self.outboundBinds.pop(bind.request.session_id, None)

    def sessionStarted(self, session: Session) -> None:
        self.sessions[session.info.sessionID] = session
        self.log.info(
            "session {sid} ({plugin}, {direction}) bound with {peer}",
            sid=session.info.sessionID,
            plugin=session.info.plugin,
            direction=session.info.direction,
            peer=self.peerNodeID,
        )
        self.node.sessionStarted(session)

    def sessionEnded(self, session: Session, why: SessionClosed) -> None:
        if self.sessions.pop(session.info.sessionID, None) is not None:
            self.log.info(
                "session {sid} ({plugin}) with {peer} closed: {reason}",
                sid=session.info.sessionID,
                plugin=session.info.plugin,
                peer=self.peerNodeID,
                reason=why.reason,
            )
            self.node.sessionEnded(session, why)
        if not self.sessions and self._linkState is LinkState.CLOSING:
            # Only a closing link waits for its sessions to drain.
            self._lifecycle.sessionsDrained()

    def _cancelCloseTimer(self) -> None:
        if self._closeTimer is not None and self._closeTimer.active():
            self._closeTimer.cancel()
        self._closeTimer = None

    # -- closing -----------------------------------------------------------

    def protocolError(self, detail: str) -> None:
        self.refuseLink(Reason.PROTOCOL_ERROR, detail)

    def refuseLink(self, reason: str, detail: str) -> None:
        """
        Tell the peer why, and close the link.
        """
        self._lifecycle.refuseLink(str(reason), detail)

    def close(self, reason: str = Reason.NORMAL, detail: str = "") -> Deferred[None]:
        """
        Close gracefully: UNBIND every session with C{reason}, send go-away,
        and drop the link once the sessions are done.
        """
        d = self.link.whenLost()
        self._lifecycle.close(str(reason), detail)
        return d

    def _closeGracefully(self) -> None:
        # Tell the peer why the link ends (e.g. shutting-down), so it does not
        # see its control stream end as a protocol error.
        if self._closeReason is not None:
            reason, detail = self._closeReason
            self._sendControl(LinkRefused(reason=reason, detail=detail[:512]))
        self.link.closeTransport()

    def linkLost(self, reason: Failure) -> None:
        self._lifecycle.connectionLost(reason)


class _LinkInputs(Protocol):
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

    def awaitActive(self, d: Deferred[ControlPoint]) -> None:
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


def _buildLinkMachine() -> Callable[[ControlPoint], _LinkInputs]:
    machine = TypeMachineBuilder(_LinkInputs, ControlPoint)
    Handshake = machine.state("Handshake")
    Active = machine.state("Active")
    Closing = machine.state("Closing")
    Closed = machine.state("Closed")
    I = _LinkInputs  # noqa: E741

    def ignore(states: list[Any], *inputs: Callable[..., None]) -> None:
        for state in states:
            for input in inputs:
                state.upon(input).loop().returns(None)

    # -- Handshake ---------------------------------------------------------

    @Handshake.upon(I.helloAccepted).to(Active)
    def activate(
        m: _LinkInputs, cp: ControlPoint, hello: Hello, version: int, limits: dict[str, int]
    ) -> bool:
        cp._linkState = LinkState.ACTIVE
        cp.peerHello = hello
        cp.version = version
        cp.limits = limits
        return True

    for state in (Active, Closing, Closed):
        state.upon(I.helloAccepted).loop().returns(False)

    @Active.upon(I.announced).loop()
    def fireWaiters(m: _LinkInputs, cp: ControlPoint) -> None:
        waiters, cp._waiters = cp._waiters, []
        for d in waiters:
            d.callback(cp)

    ignore([Handshake, Closing, Closed], I.announced)

    @Handshake.upon(I.awaitActive).loop()
    @Closing.upon(I.awaitActive).loop()
    def addWaiter(m: _LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        cp._waiters.append(d)

    @Active.upon(I.awaitActive).loop()
    def alreadyActive(m: _LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        d.callback(cp)

    @Closed.upon(I.awaitActive).loop()
    def neverActive(m: _LinkInputs, cp: ControlPoint, d: Deferred[ControlPoint]) -> None:
        d.errback(SessionClosed(*(cp._closeReason or (Reason.LINK_FAILURE.value, ""))))

    # -- streams the peer opens ------------------------------------------

    @Handshake.upon(I.streamAccepted).loop()
    @Active.upon(I.streamAccepted).loop()
    def admitStream(m: _LinkInputs, cp: ControlPoint, stream: Stream) -> None:
        cp._admitStream(stream)

    @Closing.upon(I.streamAccepted).loop()
    @Closed.upon(I.streamAccepted).loop()
    def resetStream(m: _LinkInputs, cp: ControlPoint, stream: Stream) -> None:
        stream.abortConnection()

    @Active.upon(I.bindArrived).loop()
    def bind(
        m: _LinkInputs, cp: ControlPoint, stream: Stream, msg: SessionOpen, leftover: bytes
    ) -> None:
        if leftover:
            cp._refuse(stream, msg.session_id, Reason.PROTOCOL_ERROR, "data before BIND answer")
        else:
            cp.bindReceived(stream, msg)

    @Handshake.upon(I.bindArrived).loop()
    @Closing.upon(I.bindArrived).loop()
    @Closed.upon(I.bindArrived).loop()
    def refuseBind(
        m: _LinkInputs, cp: ControlPoint, stream: Stream, msg: SessionOpen, leftover: bytes
    ) -> None:
        cp._refuse(stream, msg.session_id, Reason.PROTOCOL_ERROR, "BIND before Hello")

    # -- into Closing --------------------------------------------------------

    @Handshake.upon(I.refuseLink).to(Closing)
    @Active.upon(I.refuseLink).to(Closing)
    def sendRefusal(m: _LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp._linkState = LinkState.CLOSING
        cp.log.warn(
            "closing link with {peer}: {reason} {detail}",
            peer=cp.peerNodeID,
            reason=reason,
            detail=detail,
        )
        cp._closeReason = (reason, detail)
        cp._sendControl(LinkRefused(reason=reason, detail=detail[:512]))
        cp.mux.goAway(1 if reason == Reason.PROTOCOL_ERROR else 0)
        cp.link.closeTransport()
        cp.node.linkClosing(cp, cp._closeReason)
        # A peer that never finishes the TLS shutdown must not hold the
        # connection open.
        cp._cancelCloseTimer()
        cp._closeTimer = cp.reactor.callLater(LINGER_TIMEOUT, cp.link.abortTransport)

    @Active.upon(I.peerControlStreamLost).to(Closing)
    def controlStreamLost(m: _LinkInputs, cp: ControlPoint) -> None:
        sendRefusal(m, cp, Reason.PROTOCOL_ERROR.value, "the peer closed its control stream")

    @Active.upon(I.peerRefused).to(Closing)
    def refusedByPeer(m: _LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp._linkState = LinkState.CLOSING
        cp.log.warn(
            "link to {peer} refused by the peer: {reason} {detail}",
            peer=cp.peerNodeID,
            reason=reason,
            detail=detail,
        )
        cp._closeReason = (reason, detail)
        cp.link.closeTransport()

    @Handshake.upon(I.close).to(Closing)
    @Active.upon(I.close).to(Closing)
    def unbindAll(m: _LinkInputs, cp: ControlPoint, reason: str, detail: str) -> None:
        cp._linkState = LinkState.CLOSING
        cp._closeReason = (reason, detail)
        for session in list(cp.sessions.values()):
            session.loseConnectionWithReason(reason, detail)
        cp.mux.goAway(0)
        if cp.sessions:
            # Let the UNBINDs and the data before them drain; the peer's FINs
            # end the sessions, and the last one ends the link.
            cp._closeTimer = cp.reactor.callLater(CLOSE_TIMEOUT, m.closeTimedOut)
        else:
            cp._closeGracefully()

    @Handshake.upon(I.multiplexerClosed).to(Closing)
    @Active.upon(I.multiplexerClosed).to(Closing)
    def linkUnusable(m: _LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        cp._linkState = LinkState.CLOSING
        if reason.check(ConnectionDone, ConnectionLost):
            return  # the connection itself ended: connectionLost reports it
        if reason.check(ProtocolError):
            cp._closeReason = (Reason.PROTOCOL_ERROR.value, reason.getErrorMessage())
        else:
            cp._closeReason = (Reason.LINK_FAILURE.value, reason.getErrorMessage())
        # The link is unusable now; do not wait for TLS to finish closing
        # (a peer that stopped answering never will).
        cp.node.linkClosing(cp, cp._closeReason)

    # A LinkRefused before this end has verified the Hello is one end of a
    # refusal race: this end is already closing, or about to.
    ignore([Handshake, Closing, Closed], I.peerRefused)
    ignore([Handshake, Closing, Closed], I.peerControlStreamLost)
    ignore([Closing, Closed], I.refuseLink, I.close, I.multiplexerClosed)

    # -- Closing -------------------------------------------------------------

    @Closing.upon(I.sessionsDrained).loop()
    def lastSessionEnded(m: _LinkInputs, cp: ControlPoint) -> None:
        if cp._closeTimer is not None:
            cp._cancelCloseTimer()
            cp._closeGracefully()

    @Closing.upon(I.closeTimedOut).loop()
    def closeAnyway(m: _LinkInputs, cp: ControlPoint) -> None:
        cp._closeGracefully()

    ignore([Handshake, Active, Closed], I.sessionsDrained, I.closeTimedOut)

    # -- into Closed ---------------------------------------------------------

    def tearDown(cp: ControlPoint, reason: Failure) -> tuple[str, str]:
        cp._linkState = LinkState.CLOSED
        cp._control = None  # nothing more goes out on it
        cp._cancelCloseTimer()
        for session in list(cp.sessions.values()):
            session.linkLost()
        for timer in cp.pendingInbound.values():
            if timer.active():
                timer.cancel()
        cp.pendingInbound.clear()
        why = cp._closeReason or (Reason.LINK_FAILURE.value, reason.getErrorMessage())
        waiters, cp._waiters = cp._waiters, []
        for d in waiters:
            d.errback(SessionClosed(*why))
        return why

    @Handshake.upon(I.connectionLost).to(Closed)
    def lostBeforeHello(m: _LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        # The node never heard of this link.
        tearDown(cp, reason)

    @Active.upon(I.connectionLost).to(Closed)
    @Closing.upon(I.connectionLost).to(Closed)
    def lost(m: _LinkInputs, cp: ControlPoint, reason: Failure) -> None:
        cp.node.linkLost(cp, tearDown(cp, reason))

    ignore([Closed], I.connectionLost)

    return machine.build()


_LinkMachine = _buildLinkMachine()


def _wireReason(reason: str, detail: str, fallback: str) -> tuple[str, str]:
    """
    A reason code and detail that fit the wire: plugins may pass anything,
    and an invalid code must not break the message that carries it.
    """
    reason = str(reason)
    if not isToken(reason):
        detail = f"{reason}: {detail}" if detail else reason
        reason = str(fallback)
    return reason, str(detail)[:512]


def negotiateLimits(ours: dict[str, int], theirs: dict[str, int]) -> dict[str, int]:
    """
    CNOS: for each plugin either side offers, the lower of the two limits
    applies; a plugin only one side has gets that side's limit (sessions can
    then only be opened toward that side).
    """
    limits = {}
    for name in ours.keys() | theirs.keys():
        offered = [x[name] for x in (ours, theirs) if name in x]
        limits[name] = min(offered)
    return limits


class LinkProtocol(AuthenticatedProtocol):
    """
    The protocol under TLS: once the peer is authenticated it runs the
    multiplexer and the link's control point.
    """

    log = Logger()

    def __init__(
        self, node: Node, isClient: bool, expectedNodeID: str | None, address: str
    ) -> None:
        super().__init__(
            reactor=node.reactor,
            ownNodeID=node.nodeID,
            expectedNodeID=expectedNodeID,
            handshakeTimeout=node.handshakeTimeout,
            trustMode=node.trust.mode,
        )
        self.node = node
        self.isClient = isClient
        self.address = address
        self.mux: Multiplexer | None = None
        self.cp: ControlPoint | None = None
        self._lostWaiters: list[Deferred[None]] = []
        self._authWaiters: list[Deferred[None]] = []
        self.lost = False
        self._lostReason: Failure | None = None
        #: Why this end refused the link before it came up, if it did.
        self.refusal: tuple[str, str] | None = None
        self._lingerCall: Any = None

    def addressText(self) -> str:
        if self.address:
            return self.address
        # Any: IAddress declares no host/port; the hasattr below guards them.
        peer: Any = self.transport.getPeer() if self.transport else None
        return f"{peer.host}:{peer.port}" if peer is not None and hasattr(peer, "host") else ""

    def closeTransport(self) -> None:
        """
        Close the TLS connection after what is already written.  The
        multiplexer is unregistered first: a transport with a registered
        producer would otherwise wait for it forever.
        """
        if self.transport is None or self.lost:
            return
        cast(IConsumer, self.transport).unregisterProducer()
        self.transport.loseConnection()

    def dropUnauthenticated(self) -> None:
        """
        Close a connection still in its handshake (the node is stopping):
        the TCP connection is closed under TLS, which has nothing to flush.
        """
        if self.transport is not None and not self.lost:
            tcp = getattr(self.transport, "transport", None) or self.transport
            tcp.loseConnection()

    def abortTransport(self) -> None:
        if self.transport is not None and not self.lost:
            cast(ITCPTransport, self.transport).abortConnection()

    def whenLost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.lost:
            d.callback(None)
        else:
            self._lostWaiters.append(d)
        return d

    def whenAuthenticatedOrLost(self) -> Deferred[None]:
        """
        Fires once TLS has authenticated the peer (C{self.cp} is then set) or
        the connection is gone.
        """
        d: Deferred[None] = Deferred()
        if self.cp is not None or self.lost:
            d.callback(None)
        else:
            self._authWaiters.append(d)
        return d

    def failureReason(self) -> str:
        if self._lostReason is None:
            return "the link was closed"
        return self._lostReason.getErrorMessage()

    def _fireAuthWaiters(self) -> None:
        waiters, self._authWaiters = self._authWaiters, []
        for d in waiters:
            d.callback(None)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.node.pendingLinks.add(self)

    def authenticationFailed(self, why: str) -> None:
        self.node.handshakeFailed(why)

    def linkAuthenticated(self, peerNodeID: str) -> None:
        self.node.pendingLinks.discard(self)
        if peerNodeID == self.node.nodeID:
            self.log.info(
                "dropped a link to this node itself ({address})", address=self.addressText()
            )
            self.refusal = (Reason.SELF_DIAL.value, "this node dialled its own address")
            cast(ITCPTransport, self.transport).abortConnection()
            return
        mux = Multiplexer(
            self.transport,
            self.isClient,
            self._streamAccepted,
            self.node.reactor,
            self.node.muxConfig,
            onClose=self._muxClosed,
        )
        self.mux = mux
        # The data path goes straight from TLS to the multiplexer.
        self.dataReceived = mux.dataReceived  # type: ignore[method-assign]
        self.cp = ControlPoint(self.node, mux, self, peerNodeID)
        self.cp.start()
        self._fireAuthWaiters()

    def _streamAccepted(self, stream: Stream) -> None:
        assert self.cp is not None
        self.cp.streamAccepted(stream)

    def _muxClosed(self, reason: Failure) -> None:
        # The multiplexer failed (protocol error, keepalive timeout) or the
        # connection is gone.  Record the real cause before the streams end,
        # then close so that a GoAway already written still goes out.
        if self.cp is not None:
            self.cp.multiplexerClosed(reason)
        if self.transport is not None and not self.lost:
            self.closeTransport()
            self._lingerCall = self.node.reactor.callLater(LINGER_TIMEOUT, self.abortTransport)

    def authenticatedDataReceived(self, data: bytes) -> None:
        assert self.mux is not None
        self.mux.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.node.pendingLinks.discard(self)
        self.lost = True
        self._lostReason = reason
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        if self.mux is not None:
            self.mux.connectionLost(reason)
        if self.cp is not None:
            self.cp.linkLost(reason)
        self._fireAuthWaiters()
        waiters, self._lostWaiters = self._lostWaiters, []
        for d in waiters:
            d.callback(None)
