"""
The control point of one link (APPN's pair of CP-CP sessions).

Once TLS has authenticated the neighbour, each side opens one control stream
and sends a signed L{Hello} on it.  Every stream the peer opens starts with one
message: C{Hello} marks the peer's control stream; C{SessionOpen} is a BIND.
The link is I{active} when the peer's Hello has been verified and a protocol
version agreed; only then are sessions bound.  Session limits per plugin are
negotiated from the two Hellos, the lower limit winning (APPN CNOS).

The control point dispatches; it binds nothing itself.  A BIND goes to the
L{IBindHandler} its host registered for the BIND's kind, a control message to
the handler registered for its class, an adjacent session open to the host's
L{ISessionOpener}.  Its lifecycle is the machine of L{appnpy.cp.linkmachine}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.cp._interfaces import (
    ADJACENT,
    RELAY,
    ROUTED_END,
    IBoundSession,
    ILinkHost,
    ILinkTransport,
)
from appnpy.cp.bindreader import BindReader
from appnpy.cp.linkmachine import (
    CLOSE_TIMEOUT,
    LINGER_TIMEOUT,
    LinkInputs,
    LinkState,
    buildLinkMachine,
    nextDialSerial,
)
from appnpy.cp.messages import (
    Hello,
    LinkRefused,
    Message,
    MessageReader,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
    isToken,
)
from appnpy.errors import (
    InvalidCPName,
    ProtocolError,
    Reason,
    SessionClosed,
)
from appnpy.link.identity import nodeIDFromSPKI, validateCPName, verifySignature
from appnpy.link.tls import NETWORK
from appnpy.link.yamux import Multiplexer, Stream

__all__ = [
    "CAPABILITIES",
    "CLOSE_TIMEOUT",
    "FIRST_MESSAGE_TIMEOUT",
    "LINGER_TIMEOUT",
    "MAX_PENDING_INBOUND",
    "ControlPoint",
    "LinkState",
    "negotiateLimits",
    "wireReason",
]

#: Capabilities this implementation announces; unknown ones are ignored.
CAPABILITIES = ["sessions"]
#: Streams the peer may have open that have not yet sent their first message.
MAX_PENDING_INBOUND = 64
#: Seconds a peer-opened stream may take to send its first message.
FIRST_MESSAGE_TIMEOUT = 30.0


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

    @ivar outboundBinds: the BINDs this node sent on the link and is
        waiting on, by session ID.
    """

    log = Logger()

    def __init__(
        self,
        host: ILinkHost,
        mux: Multiplexer,
        link: ILinkTransport,
        peerNodeID: str,
    ) -> None:
        self.host = host
        self.reactor = host.reactor
        self.mux = mux
        self.link = link
        self.peerNodeID = peerNodeID
        self.localNodeID: str = host.nodeID
        self.localName: str = host.name
        self.isDialer: bool = link.isClient
        #: This link's dial serial if this node dialled it (sent in Hello).
        self.dialSerial = nextDialSerial(self.reactor.seconds()) if self.isDialer else 0
        self.address = link.addressText()
        self.peerHello: Hello | None = None
        self.version: int | None = None
        self.limits: dict[str, int] = {}
        self.sessions: dict[str, IBoundSession] = {}
        self.outboundBinds: dict[str, SessionOpen] = {}
        #: Peer-opened streams waiting for their first message, with the
        #: timer that resets them (None until the read that opened them is
        #: done: the first message usually comes in the same read).
        self.pendingInbound: dict[Stream, IDelayedCall | None] = {}
        self.since = self.reactor.seconds()
        self._peerControl: Stream | None = None
        # Every session opens through these two: looked up once per link.
        self._adjacentBinds = host.bindHandler(ADJACENT)
        self._opener = host.sessionOpener()
        # Owned by the lifecycle machine (appnpy.cp.linkmachine).
        self.linkState = LinkState.HANDSHAKE
        self.controlStream: Stream | None = None
        self.closeReason: tuple[str, str] | None = None
        self.closeTimer: IDelayedCall | None = None
        self.waiters: list[Deferred[ControlPoint]] = []
        #: A draining link: the peer sent its duplicate-link LinkRefused.
        self.peerDrained = False
        self._lifecycle: LinkInputs = _LinkMachine(self)

    @property
    def state(self) -> LinkState:
        """
        Where the link is in its lifecycle; only the lifecycle machine
        changes it.
        """
        return self.linkState

    @property
    def isActive(self) -> bool:
        """
        Whether the Hello exchange is done and the link is not closing:
        sessions and control messages may use it.
        """
        return self.linkState is LinkState.ACTIVE

    def tieBreakKey(self) -> tuple[str, int]:
        """
        (dialler's node ID, dial serial): what both ends know of this link
        once it is active, for L{appnpy.cp.linkmachine.preferredLink}.
        """
        if self.isDialer:
            return self.localNodeID, self.dialSerial
        serial = self.peerHello.dial_serial if self.peerHello is not None else 0
        return self.peerNodeID, serial

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
        host = self.host
        self.controlStream = self.mux.openStream()
        self.controlStream.attachProtocol(_OwnControl(self))
        hello = Hello(
            node_id=host.nodeID,
            public_key=host.identity.publicKeyBytes,
            name=host.name,
            role=host.role,
            versions=list(host.protocolVersions),
            capabilities=sorted(set(CAPABILITIES) | host.capabilities()),
            listen=host.advertisedAddresses(),
            plugins=dict(sorted(host.sessionLimits().items())),
            dial_serial=self.dialSerial,
        )
        signature = host.identity.sign(hello.signedBytes())
        self.sendControl(attrs.evolve(hello, signature=signature))
        # An RTT from the first round trip, so that failure detection
        # times this link by its own RTT from the start.
        self.mux.measureRtt()

    def sendControl(self, msg: Message) -> None:
        """
        Write C{msg} on this node's control stream, while there is one.
        """
        if self.controlStream is not None:
            self.controlStream.write(encodeMessage(msg))

    # -- streams the peer opens -------------------------------------------

    def streamAccepted(self, stream: Stream) -> None:
        # Every session the peer opens comes through here: on an active link
        # take the machine's Active transition directly (dispatching an input
        # costs a scan of the transition table, per session).
        if self.linkState is LinkState.ACTIVE:
            self.admitStream(stream)
        else:
            self._lifecycle.streamAccepted(stream)

    def admitStream(self, stream: Stream) -> None:
        """
        Read the first message of a stream the peer opened, within limits.
        """
        if len(self.pendingInbound) >= MAX_PENDING_INBOUND:
            stream.abortConnection()
            return
        self.pendingInbound[stream] = None
        self.mux.callAfterRead(lambda: self._armFirstMessage(stream))

        def lost(reason: Failure) -> None:
            self.pendingInboundEnded(stream)

        def received(msg: Message, leftover: bytes) -> None:
            self.firstMessageReceived(stream, msg, leftover)

        stream.attachProtocol(BindReader(received, lost))

    def _armFirstMessage(self, stream: Stream) -> None:
        if stream in self.pendingInbound and self.pendingInbound[stream] is None:
            self.pendingInbound[stream] = self.reactor.callLater(
                FIRST_MESSAGE_TIMEOUT, stream.abortConnection
            )

    def pendingInboundEnded(self, stream: Stream) -> None:
        timer = self.pendingInbound.pop(stream, None)
        if timer is not None and timer.active():
            timer.cancel()
        if self.linkState is LinkState.DRAINING:
            self._lifecycle.drainCheck()

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
            if self.linkState is not LinkState.ACTIVE:
                self._lifecycle.bindArrived(stream, msg, leftover)
            elif leftover:  # the Active transition of bindArrived, inline (per session)
                self.refuse(
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
        ourLow, ourHigh = self.host.protocolVersions
        low = max(ourLow, hello.versions[0])
        high = min(ourHigh, hello.versions[1])
        if low > high:
            self.refuseLink(
                Reason.INCOMPATIBLE_VERSION,
                f"this node speaks versions {ourLow}..{ourHigh}, "
                f"the peer {hello.versions[0]}..{hello.versions[1]}",
            )
            return
        limits = negotiateLimits(self.host.sessionLimits(), hello.plugins)
        if self._lifecycle.helloAccepted(hello, high, limits):
            # Outside the machine's outputs: the node and its observers may
            # refuse this link (a duplicate, over max-peers) right away, and
            # then its waiters must not hear that it came up.
            self.host.linkActive(self)
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
        if self.host.trust.mode == NETWORK and hello.name != self.link.peerCertifiedName:
            # Network trust: the CA binds the CP name to the key; a peer may
            # not call itself by another node's name.
            certified = self.link.peerCertifiedName
            return Reason.NAME_NOT_CERTIFIED, (
                f"the Hello claims CP name {hello.name}, but the network CA certified "
                + (certified if certified else "no CP name")
                + f" for node {self.peerNodeID}"
            )
        if hello.role not in ("network", "end"):
            return bad, f"unknown role {hello.role!r}"
        return None

    # -- control messages ------------------------------------------------

    def controlMessageReceived(self, msg: Message) -> None:
        if isinstance(msg, SessionClose):
            session = self.sessions.get(msg.session_id)
            if session is not None:
                session.unbindReceived(msg.reason, msg.detail)
            else:
                relay = self.host.bindHandler(RELAY)
                if relay is not None:
                    relay.unbindReceived(self, msg)
        elif isinstance(msg, LinkRefused):
            if msg.reason == Reason.DUPLICATE_LINK and self.linkState is not LinkState.HANDSHAKE:
                # The peer kept another link to this node: drain this one.
                self._lifecycle.peerDraining()
            else:
                self._lifecycle.peerRefused(msg.reason, msg.detail)
        else:
            handler = self.host.controlHandler(type(msg))
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
        self.sendControl(msg)
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
        reason, detail = wireReason(reason, detail, Reason.NORMAL)
        self.sendControl(SessionClose(session_id=sessionID, reason=reason, detail=detail))

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
            count += sum(1 for req in self.outboundBinds.values() if req.plugin == plugin)
        return count

    def bindReceived(self, stream: Stream, req: SessionOpen) -> None:
        """
        A BIND on an active link: hand it to the host's handler for its kind.
        """
        if self.host.shuttingDown:
            self.refuse(stream, req.session_id, Reason.SHUTTING_DOWN, "the node is stopping")
            return
        if req.destination != self.localNodeID or req.origin != self.peerNodeID:
            # A routed session: relayed onward (intermediate session routing)
            # or ending here after relays.
            kind = RELAY if req.destination != self.localNodeID else ROUTED_END
            handler = self.host.bindHandler(kind)
            if handler is None or not req.route:
                self.refuse(stream, req.session_id, Reason.NO_ROUTE, "this node does not relay")
            else:
                handler.bindReceived(self, stream, req)
            return
        if self._adjacentBinds is None:
            self.refuse(stream, req.session_id, Reason.UNKNOWN_PLUGIN, f"no plugin {req.plugin!r}")
            return
        self._adjacentBinds.bindReceived(self, stream, req)

    def refuse(self, stream: Stream, sessionID: str, reason: str, detail: str) -> None:
        """
        Answer a BIND on C{stream} with a refusal and close the stream.
        """
        reason, detail = wireReason(reason, detail, Reason.REFUSED_BY_PLUGIN)
        self.log.info(
            "refused session {sid} from {peer}: {reason} {detail}",
            sid=sessionID,
            peer=self.peerNodeID,
            reason=str(reason),
            detail=detail,
        )
        self.host.sessionRefused(str(reason))
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
        return self._opener.openSession(self, plugin, protocolFactory, parameters, cos)

    def bindStarted(self, request: SessionOpen) -> None:
        """
        This node sent BIND C{request} on the link: it counts against the
        plugin's limit until answered.
        """
        self.outboundBinds[request.session_id] = request

    def bindFinished(self, sessionID: str) -> None:
        self.outboundBinds.pop(sessionID, None)
        if self.linkState is LinkState.DRAINING:
            self._lifecycle.drainCheck()

    def sessionStarted(self, session: IBoundSession) -> None:
        # One log line per session, when it ends (a node may open thousands
        # a second; the management API lists the live ones).
        self.sessions[session.info.sessionID] = session
        self.host.sessionStarted(session)

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        if self.sessions.pop(session.info.sessionID, None) is not None:
            self.log.info(
                "session {sid} ({plugin}, {direction}) with {peer} closed: {reason}",
                sid=session.info.sessionID,
                plugin=session.info.plugin,
                direction=session.info.direction,
                peer=self.peerNodeID,
                reason=why.reason,
            )
            self.host.sessionEnded(session, why)
        if not self.sessions and self.linkState is LinkState.CLOSING:
            # Only a closing link waits for its sessions to drain.
            self._lifecycle.sessionsDrained()
        elif self.linkState is LinkState.DRAINING:
            self._lifecycle.drainCheck()

    def cancelCloseTimer(self) -> None:
        if self.closeTimer is not None and self.closeTimer.active():
            self.closeTimer.cancel()
        self.closeTimer = None

    # -- closing -----------------------------------------------------------

    def protocolError(self, detail: str) -> None:
        self.refuseLink(Reason.PROTOCOL_ERROR, detail)

    def supersede(self) -> None:
        """
        The node keeps another link to this neighbour
        (L{appnpy.cp.linkmachine.preferredLink}): drain this one.  It stops being a neighbour now; the sessions and
        BINDs already on it finish, for at most C{DRAIN_TIMEOUT} seconds;
        both ends send C{LinkRefused(duplicate-link)} and close it once it is
        empty.
        """
        self._lifecycle.superseded()

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

    def closeGracefully(self) -> None:
        # Tell the peer why the link ends (e.g. shutting-down), so it does not
        # see its control stream end as a protocol error.
        if self.closeReason is not None:
            reason, detail = self.closeReason
            self.sendControl(LinkRefused(reason=reason, detail=detail[:512]))
        self.link.closeTransport()

    def linkLost(self, reason: Failure) -> None:
        self._lifecycle.connectionLost(reason)


def newLinkMachine() -> Callable[[ControlPoint], LinkInputs]:
    """
    The link lifecycle machine, built with L{ControlPoint} as its core.
    """
    return buildLinkMachine(TypeMachineBuilder(LinkInputs, ControlPoint))


_LinkMachine = newLinkMachine()


def wireReason(reason: str, detail: str, fallback: str) -> tuple[str, str]:
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
