"""
What the control point needs from the node it runs in, and from the
services above it that bind sessions (private to appnpy).

The cp layer knows nothing of sessions, relays or the node: it reads its
host through L{ILinkHost} and hands every inbound BIND to the L{IBindHandler}
its host registered for that kind of BIND.  The node provides L{ILinkHost};
the session layer provides the adjacent and routed-end handlers, the net
layer's relay the relay handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface, implementer

from appnpy.errors import SessionClosed
from appnpy.interfaces import ISession

if TYPE_CHECKING:
    # Only for annotations: the control point is what these methods are given.
    from twisted.internet.defer import Deferred

    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.cp.messages import Message, SessionClose, SessionOpen
    from appnpy.link.yamux import Stream

#: The kinds of inbound BIND, by where this node is on the session's path:
#: a session with the neighbour itself,
ADJACENT = "adjacent"
#: a routed session this node relays (an intermediate hop),
RELAY = "relay"
#: a routed session that ends here (the destination, after relays).
ROUTED_END = "routed-end"

#: A handler of one class of control message: C{handler(cp, message)}.
ControlHandler = Callable[["ControlPoint", Any], None]


class IBindHandler(Interface):
    """
    Accepts or refuses the inbound BINDs of one kind (L{ADJACENT},
    L{RELAY}, L{ROUTED_END}).
    """

    def bindReceived(cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        A BIND arrived from neighbour C{cp} on C{stream}, which carries
        nothing after it until it is answered (with C{cp.refuse} or a
        L{SessionAccept} on the stream).
        """

    def unbindReceived(cp: ControlPoint, msg: SessionClose) -> None:
        """
        UNBIND for a session no control point owns (one this handler may
        carry without a session of its own, as a relay does).
        """


class ISessionOpener(Interface):
    """
    Opens (BINDs) adjacent sessions for a control point.
    """

    def openSession(
        cp: ControlPoint,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None,
        cos: str | None,
    ) -> Deferred[Any]:
        """
        BIND a session of C{plugin} with C{cp}'s neighbour; fires with the
        plugin protocol.
        """


class IBoundSession(ISession):
    """
    A session as its control point sees it: registered in C{cp.sessions}
    while bound, told of its UNBIND and of the link's end.
    """

    info = Attribute("L{appnpy.interfaces.ISessionInfo}: what both ends know of the session.")
    bytesSent = Attribute("C{int}: session bytes written to the peer so far.")
    bytesReceived = Attribute("C{int}: session bytes received from the peer so far.")
    since = Attribute("C{float}: when the session was bound (reactor seconds).")

    def unbindReceived(reason: str, detail: str) -> None:
        """
        The peer (or a relay) sent UNBIND for this session.
        """

    def linkLost() -> None:
        """
        The link the session rides went down.
        """


class ILinkTransport(Interface):
    """
    The authenticated connection under a control point (the link protocol).
    """

    isClient = Attribute("C{bool}: whether this node dialled the link.")
    transport = Attribute("The TLS transport of the link.")
    peerCertifiedName = Attribute(
        "C{str | None}: in network trust mode, the CP name the network CA certified "
        "for the peer; else None."
    )

    def addressText() -> str:
        """
        The neighbour's address, for logs and management.
        """

    def closeTransport() -> None:
        """
        Close the connection after what is already written.
        """

    def abortTransport() -> None:
        """
        Drop the connection now.
        """

    def whenLost() -> Deferred[None]:
        """
        Fires once the connection is gone.
        """

    def dropUnauthenticated() -> None:
        """
        Close a connection still in its TLS handshake (the node is stopping).
        """


class ILinkHost(Interface):
    """
    What links and their control points need from the node they run in.
    """

    identity = Attribute("L{appnpy.link.identity.Identity}: signs this node's Hello.")
    nodeID = Attribute("C{str}: this node's ID.")
    name = Attribute("C{str}: this node's CP name.")
    role = Attribute("C{str}: C{network} or C{end}.")
    reactor = Attribute("The reactor links and control points schedule on.")
    trust = Attribute("L{appnpy.link.tls.TrustPolicy}: which peers TLS accepts.")
    muxConfig = Attribute("L{appnpy.link.yamux.MuxConfig} of every link.")
    handshakeTimeout = Attribute("C{float}: seconds TLS may take to authenticate a peer.")
    protocolVersions = Attribute("C{(low, high)}: the protocol versions this node speaks.")
    shuttingDown = Attribute("C{bool}: whether the node is stopping (BINDs are refused).")

    def capabilities() -> set[str]:
        """
        The optional protocol capabilities this node handles (for Hello).
        """

    def advertisedAddresses() -> list[str]:
        """
        The addresses this node listens on (for Hello).
        """

    def sessionLimits() -> dict[str, int]:
        """
        This node's session limit per plugin (for Hello and CNOS).
        """

    def sessionOpener() -> ISessionOpener:
        """
        What BINDs the adjacent sessions a control point opens.
        """

    def bindHandler(kind: str) -> IBindHandler | None:
        """
        The handler of inbound BINDs of C{kind}, if this node has one.
        """

    def controlHandler(messageClass: type[Message]) -> ControlHandler | None:
        """
        The handler of control messages of C{messageClass}, if any.
        """

    def addControlHandler(messageClass: type[Message], handler: ControlHandler) -> None:
        """
        Handle control messages of C{messageClass} (one handler per class).
        """

    def removeControlHandler(messageClass: type[Message]) -> None:
        """
        Stop handling control messages of C{messageClass}.
        """

    def linkPending(link: ILinkTransport) -> None:
        """
        A connection is up and has not authenticated its peer yet.
        """

    def linkSettled(link: ILinkTransport) -> None:
        """
        A pending connection authenticated its peer or is gone.
        """

    def handshakeFailed(why: str) -> None:
        """
        A connection failed before authentication.
        """

    def linkActive(cp: ControlPoint) -> None:
        """
        A link came up (the Hello exchange is done); the host may refuse it.
        """

    def linkClosing(cp: ControlPoint, why: tuple[str, str]) -> None:
        """
        A link is being torn down: it is no longer a neighbour.
        """

    def linkLost(cp: ControlPoint, why: tuple[str, str]) -> None:
        """
        A link that was active is gone.
        """

    def sessionStarted(session: IBoundSession) -> None:
        """
        A session was bound.
        """

    def sessionEnded(session: IBoundSession, why: SessionClosed) -> None:
        """
        A bound session ended, with C{why}.
        """

    def sessionRefused(reason: str) -> None:
        """
        This node refused a BIND with C{reason}.
        """


# -- what the network services use of the node's links ----------------------


class ILinkObserver(Interface):
    """
    Told when a link to a neighbour comes up or goes down.
    """

    def linkActive(cp: ControlPoint) -> None:
        """
        The link to C{cp.peerNodeID} is up (a C{ControlPoint}).
        """

    def linkLost(cp: ControlPoint, why: tuple[str, str]) -> None:
        """
        The link is gone; C{why} is (reason code, detail).
        """


class INodeObserver(ILinkObserver):
    """
    Told of a node's link and session events (metrics, the probe, the
    management API): registered with C{node.addObserver}.  Subclass
    L{NodeObserver} to implement only the events wanted.
    """

    def sessionStarted(session: IBoundSession) -> None:
        """
        A session was bound (called once per session: keep it cheap).
        """

    def sessionEnded(session: IBoundSession, why: SessionClosed) -> None:
        """
        A bound session ended, with C{why}.
        """

    def sessionRefused(reason: str) -> None:
        """
        This node refused a BIND with C{reason}.
        """

    def handshakeFailed(why: str) -> None:
        """
        A connection to or from this node failed before authentication.
        """


@implementer(INodeObserver)
class NodeObserver:
    """
    An L{INodeObserver} that ignores every event: observers override the
    ones they follow, so the node calls each method directly.
    """

    def linkActive(self, cp: ControlPoint) -> None:
        pass

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        pass

    def sessionStarted(self, session: IBoundSession) -> None:
        pass

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        pass

    def sessionRefused(self, reason: str) -> None:
        pass

    def handshakeFailed(self, why: str) -> None:
        pass


class ILinkRegistry(Interface):
    """
    The active links of a node and the dispatch of control messages.
    """

    links = Attribute(
        "Mapping[str, ControlPoint]: the active links by the neighbour's node ID "
        "(read only by the services)."
    )

    def addControlHandler(messageClass: type[Message], handler: ControlHandler) -> None:
        """
        Deliver every control message of C{messageClass} arriving on any
        link as C{handler(cp, message)}.
        """

    def removeControlHandler(messageClass: type[Message]) -> None:
        """
        Stop delivering C{messageClass} (no error if none is registered).
        """

    def addLinkObserver(observer: ILinkObserver) -> None:
        """
        Tell C{observer} of every link that comes up or goes down from now on.
        """
