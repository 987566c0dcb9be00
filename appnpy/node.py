"""
The node and the composition root.

L{Node} is one appnpy node as a Twisted C{MultiService}: it listens and
dials, hosts a control point per link (it provides the seams the layers
below declare: L{appnpy.cp._interfaces.ILinkHost}, the BIND handler
registry, the link registry...) and opens sessions by neighbour, node or
resource name.  L{buildNode} is the one place a node and its services are
assembled; L{deployNode} adds what C{twist appnnode} reads from disk, and
L{buildProber} makes the prober's throwaway end node.

Both halves are the node's one job, and each reads against the other (what
the node provides, and what is plugged into it): hence the module's length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    FirstError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, ROLES
from appnpy.cp._interfaces import (
    ADJACENT,
    ControlHandler,
    IBindHandler,
    IBoundSession,
    ILinkObserver,
    ILinkTransport,
    INodeObserver,
    ISessionOpener,
)
from appnpy.cp.controlpoint import ControlPoint, LinkState
from appnpy.cp.linkmachine import preferredLink
from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.cp.messages import Message
from appnpy.errors import (
    AmbiguousName,
    ConfigurationError,
    DestinationGone,
    NoRoute,
    NoSuchNode,
    Reason,
    ResourceNotFound,
    SessionClosed,
    SessionRefused,
)
from appnpy.interfaces import INode, IPluginLifecycle, IResourceDirectory, ISessionPlugin
from appnpy.link.identity import (
    Identity,
    certifiedCPName,
    defaultCPName,
    generateIdentity,
    isNodeID,
    loadOrCreateIdentity,
    pluginSignedBytes,
    validateCPName,
)
from appnpy.link.refusal import LinkTLSFactory
from appnpy.link.tls import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    NETWORK,
    LinkAddress,
    LinkContextFactory,
    TrustPolicy,
    loadTrustPolicy,
    parseAddress,
)
from appnpy.link.yamux import MuxConfig, withNodeBudget
from appnpy.net._interfaces import IPeerHost
from appnpy.net.addresses import dialableAddresses
from appnpy.net.admission import AdmissionControl
from appnpy.net.directory import IDirectory, IDirectoryHost, installDirectory
from appnpy.net.peers import PeerManager
from appnpy.net.relay import IRelayHost, Relay, installRelay
from appnpy.net.topology import ITopology, ITopologyHost, installTopology
from appnpy.ops._interfaces import IManagedNode
from appnpy.ops.config import NodeConfig
from appnpy.ops.lockfile import DataDirectoryLock, dataDirectoryProblem, lockDataDirectory
from appnpy.ops.management import ManagementService
from appnpy.ops.probe import installProbeResponder, proberPlugins
from appnpy.session._interfaces import IRoutedSessionsHost
from appnpy.session.adjacent import AdjacentSessions
from appnpy.session.plugins import checkPlugin, loadPlugins
from appnpy.session.routed import RoutedSessions, installRoutedSessions

#: How long a graceful stop waits for sessions to close before dropping links.
STOP_TIMEOUT = 5.0


class _LinkFactory(Factory):
    """
    Builds the L{LinkProtocol} that TLS wraps, for one direction.
    """

    # The node logs its links in words; not "Starting factory <... at 0x...>".
    noisy = False

    def __init__(
        self, node: Node, isClient: bool, expectedNodeID: str | None, address: str
    ) -> None:
        self.node = node
        self.isClient = isClient
        self.expectedNodeID = expectedNodeID
        self.address = address

    def buildProtocol(self, addr: Any) -> LinkProtocol:
        return LinkProtocol(self.node, self.isClient, self.expectedNodeID, self.address)


@implementer(
    INode,
    IRoutedSessionsHost,
    IRelayHost,
    IPeerHost,
    ITopologyHost,
    IDirectoryHost,
    IResourceDirectory,
    IManagedNode,
)
class Node(MultiService):
    """
    One appnpy node: listens, dials, runs a control point per link and binds
    sessions for its plugins.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        identity: Identity,
        name: str | None = None,
        role: str = "network",
        trust: TrustPolicy | None = None,
        listen: Iterable[str] = (),
        muxConfig: MuxConfig | None = None,
        handshakeTimeout: float = 10.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        if role not in ROLES:
            raise ConfigurationError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.reactor = reactor
        self.identity = identity
        self.nodeID: str = identity.nodeID
        self.name: str = validateCPName(name) if name else defaultCPName(identity.nodeID)
        self.role = role
        self.trust = trust or TrustPolicy.open()
        if self.trust.mode == NETWORK:
            self.name = _certifiedName(identity, name)
        self.listenEndpoints = list(listen)
        # One receive budget for all of this node's links.
        self.muxConfig = withNodeBudget(muxConfig or MuxConfig())
        self.handshakeTimeout = handshakeTimeout
        #: The protocol versions this node speaks, lowest and highest.
        self.protocolVersions = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX)
        self.plugins: dict[str, ISessionPlugin] = {}
        #: Active links by the neighbour's node ID.
        self.links: dict[str, ControlPoint] = {}
        #: Links that lost a simultaneous dial, until their sessions end.
        self.drainingLinks: set[ControlPoint] = set()
        self.ports: list[IListeningPort] = []
        self.shuttingDown = False
        self.startedAt = reactor.seconds()
        #: The TLS context of every link, and of routed sessions end to end.
        self.linkContextFactory = LinkContextFactory(identity, self.trust)
        #: Told of links coming and going, in registration order; the node
        #: observers are also told of session and handshake events.
        self._linkObservers: list[ILinkObserver] = []
        self._nodeObservers: list[INodeObserver] = []
        self._startWaiters: list[Deferred[None]] | None = []
        self._startResult: object = None
        #: Connections accepted or dialled that have not authenticated yet.
        self.pendingLinks: set[ILinkTransport] = set()
        #: Handlers of control messages by class, for the node's services
        #: (peer exchange, topology, directory): C{handler(cp, message)}.
        self.controlHandlers: dict[type[Message], ControlHandler] = {}
        #: Handlers of inbound BINDs by kind (appnpy.cp._interfaces): the
        #: adjacent sessions here, relay and routed ends by their installers.
        self._bindHandlers: dict[str, IBindHandler] = {}
        self._adjacentSessions = AdjacentSessions(self.plugins)
        self.setBindHandler(ADJACENT, self._adjacentSessions)
        #: Admission control for inbound connections (set by L{buildNode}):
        #: the node listens with C{admission.wrap(factory)}.
        self.admission: AdmissionControl | None = None
        #: Network services, set by their modules' install functions: the
        #: topology database (network nodes), the directory, intermediate
        #: session routing, and the ends of routed sessions.
        self.topology: ITopology | None = None
        self.directory: IDirectory | None = None
        self.relay: Relay | None = None
        self.routedSessions: RoutedSessions | None = None
        #: The data directory (set by L{buildNode}), or None for a node that
        #: keeps no state on disk.
        self.dataDir: str | None = None

    # -- plugins -------------------------------------------------------------

    def addSessionPlugin(self, plugin: ISessionPlugin) -> None:
        checkPlugin(plugin)
        self.plugins[plugin.name] = plugin

    def capabilities(self) -> set[str]:
        """
        The optional protocol capabilities this node's services handle,
        announced in Hello.
        """
        handled = {cls.capability for cls in self.controlHandlers if cls.capability}
        return handled | self._adjacentSessions.capabilities()

    def sessionLimits(self) -> dict[str, int]:
        return {name: p.sessionLimit for name, p in self.plugins.items()}

    # -- what links dispatch to (ILinkHost) ----------------------------------

    def sessionOpener(self) -> ISessionOpener:
        return self._adjacentSessions

    def bindHandler(self, kind: str) -> IBindHandler | None:
        return self._bindHandlers.get(kind)

    def setBindHandler(self, kind: str, handler: IBindHandler | None) -> None:
        """
        Register C{handler} for inbound BINDs of C{kind}; L{None} removes it.
        """
        if handler is None:
            self._bindHandlers.pop(kind, None)
        else:
            self._bindHandlers[kind] = IBindHandler(handler)

    def controlHandler(self, messageClass: type[Message]) -> ControlHandler | None:
        return self.controlHandlers.get(messageClass)

    def addControlHandler(self, messageClass: type[Message], handler: ControlHandler) -> None:
        """
        Deliver control messages of C{messageClass} to C{handler(cp, message)}.
        """
        self.controlHandlers[messageClass] = handler

    def removeControlHandler(self, messageClass: type[Message]) -> None:
        self.controlHandlers.pop(messageClass, None)

    def linkPending(self, link: ILinkTransport) -> None:
        self.pendingLinks.add(link)

    def linkSettled(self, link: ILinkTransport) -> None:
        self.pendingLinks.discard(link)

    # -- observers (metrics, management) --------------------------------------

    def addLinkObserver(self, observer: ILinkObserver) -> None:
        """
        Tell C{observer} of every link that comes up or goes down from now on.
        """
        self._linkObservers.append(observer)

    def resourcesChanged(self, plugin: ISessionPlugin) -> None:
        """
        A plugin's resources changed: tell the directory (see L{IResourceDirectory}).
        """
        if self.directory is not None:
            self.directory.resourcesChanged(plugin)

    def addObserver(self, observer: INodeObserver) -> None:
        """
        Tell C{observer} of link and session events (see L{INodeObserver};
        subclass L{appnpy.cp._interfaces.NodeObserver} for the ones not
        followed).
        """
        self._linkObservers.append(observer)
        self._nodeObservers.append(observer)

    # -- links ---------------------------------------------------------------

    def serverFactory(self) -> TLSMemoryBIOFactory:
        return LinkTLSFactory(
            self.linkContextFactory, False, _LinkFactory(self, False, None, ""), clock=self.reactor
        )

    def clientFactory(self, address: LinkAddress) -> TLSMemoryBIOFactory:
        return LinkTLSFactory(
            self.linkContextFactory,
            True,
            _LinkFactory(self, True, address.nodeID, str(address)),
            clock=self.reactor,
        )

    def advertisedAddresses(self) -> list[str]:
        out = []
        for port in self.ports:
            # Any: IAddress declares no host/port; the hasattr below guards them.
            host: Any = port.getHost()
            if hasattr(host, "port"):
                out.append(f"appn://{self.nodeID}@{_hostText(host.host)}:{host.port}")
        return out

    def connect(self, address: str | LinkAddress) -> Deferred[ControlPoint]:
        """
        Dial a neighbour and wait until the link is active.

        @param address: C{host:port} or C{appn://<nodeid>@host:port}.
        @return: fires with the link's L{ControlPoint}.
        """
        addr = parseAddress(address) if isinstance(address, str) else address
        if addr.nodeID is not None and addr.nodeID in self.links:
            existing: Deferred[ControlPoint] = Deferred()
            existing.callback(self.links[addr.nodeID])
            return existing
        endpoint = clientFromString(self.reactor, addr.clientEndpointString())
        return Deferred.fromCoroutine(self._connect(endpoint, addr))

    async def _connect(self, endpoint: Any, addr: LinkAddress) -> ControlPoint:
        tls = await endpoint.connect(self.clientFactory(addr))
        return await self.whenLinkActive(tls.wrappedProtocol)

    async def whenLinkActive(self, link: LinkProtocol) -> ControlPoint:
        """
        Wait for a link protocol's control point to become active; if it lost
        a simultaneous-dial contest, answer the link that survived.
        """
        try:
            await link.whenAuthenticatedOrLost()
            if link.cp is None:
                raise SessionClosed(
                    *(link.refusal or (Reason.LINK_FAILURE.value, link.failureReason()))
                )
            return await link.cp.whenActive()
        except SessionClosed as e:
            if e.reason == Reason.DUPLICATE_LINK and link.peerNodeID in self.links:
                return self.links[link.peerNodeID]
            raise

    def linkActive(self, cp: ControlPoint) -> None:
        existing = self.links.get(cp.peerNodeID)
        if existing is not None and existing is not cp:
            # Two links to one neighbour (a simultaneous dial, or a re-dial):
            # both ends keep the same one; the other drains.
            keep = preferredLink(existing, cp)
            drop = cp if keep is existing else existing
            drop.supersede()  # it stops being a neighbour (and tells the observers)
            self.drainingLinks.add(drop)
            if keep is existing:
                return
        self.links[cp.peerNodeID] = cp
        self.log.info(
            "link up with {peer} ({name}) at {address}, {direction}",
            peer=cp.peerNodeID,
            name=cp.peerName,
            address=cp.address,
            direction="dialled" if cp.isDialer else "accepted",
        )
        for observer in self._linkObservers:
            observer.linkActive(cp)

    def linkClosing(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        """
        A link was refused and is being torn down: it stops counting as a
        neighbour now, not when TLS has finished closing.
        """
        self.linkLost(cp, why)

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        if cp.state is LinkState.CLOSED:
            self.drainingLinks.discard(cp)
        if self.links.get(cp.peerNodeID) is cp:
            del self.links[cp.peerNodeID]
            self.log.info(
                "link down with {peer} ({name}): {reason} {detail}",
                peer=cp.peerNodeID,
                name=cp.peerName,
                reason=why[0],
                detail=why[1],
            )
            for observer in self._linkObservers:
                observer.linkLost(cp, why)

    def activeLink(self, nodeID: str) -> ControlPoint | None:
        return self.links.get(nodeID)

    def findNeighbour(self, destination: str) -> ControlPoint:
        """
        The active link to C{destination}: a node ID, a unique prefix of one,
        or a CP name.

        @raise NoSuchNode: if none, or the prefix is ambiguous.
        """
        if not destination:
            raise NoSuchNode("an empty name")
        if destination in self.links:
            return self.links[destination]
        upper = destination.upper()
        byName = [cp for cp in self.links.values() if cp.peerName == upper]
        if len(byName) == 1:
            return byName[0]
        byPrefix = [cp for nid, cp in self.links.items() if nid.startswith(destination.lower())]
        if len(byPrefix) == 1:
            return byPrefix[0]
        if len(byPrefix) > 1:
            raise NoSuchNode(f"{destination!r} matches {len(byPrefix)} neighbours")
        raise NoSuchNode(repr(destination))

    # -- what plugins use (INode) -------------------------------------------------

    @property
    def publicKey(self) -> bytes:
        return self.identity.publicKeyBytes

    @property
    def centralDirectory(self) -> str | None:
        return self.directory.centralDirectory if self.directory is not None else None

    def dataDirectory(self, plugin: str) -> str | None:
        if self.dataDir is None:
            return None
        if plugin not in self.plugins or "/" in plugin or plugin.startswith("."):
            raise ValueError(f"no plugin {plugin!r} on this node")
        path = os.path.join(self.dataDir, "plugins", plugin)
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    def sign(self, context: str, data: bytes) -> bytes:
        return self.identity.sign(pluginSignedBytes(context, data))

    def search(
        self,
        kind: str,
        keywords: list[str],
        maxResults: int = 100,
        onResults: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        if self.directory is None:
            return fail(ResourceNotFound(f"{kind} search (this node has no directory)"))
        return self.directory.search(kind, list(keywords), maxResults, onResults)

    def locate(self, name: str) -> Deferred[list[str]]:
        async def owners() -> list[str]:
            if self.directory is None:
                raise ResourceNotFound(f"{name} (this node has no directory)")
            found = await self.directory.locate(name)
            return list(found.owners) if found.owners else [str(found.owner)]

        return Deferred.fromCoroutine(owners())

    def neighbours(self) -> list[str]:
        return list(self.links)

    # -- sessions ---------------------------------------------------------------

    def openSession(  # type: ignore[override]  # INode declares protocolFactory as object
        self,
        destination: str,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None = None,
        cos: str | None = None,
    ) -> Deferred[Any]:
        """
        Open a session to C{destination}: a neighbour or any node of the
        network (node ID, unique prefix or CP name), or a resource name
        C{<kind>:<name>}, which is located first.  Non-adjacent destinations
        are reached over a route chosen for C{cos}, through relays, with TLS
        end to end.
        """
        if self.shuttingDown:
            return fail(SessionRefused(Reason.SHUTTING_DOWN.value, "this node is stopping"))
        # A neighbour needs no locate or route: bind directly (the common,
        # hot case: one coroutine less per session).
        cp = self.links.get(destination)
        if cp is not None:
            return cp.openSession(plugin, protocolFactory, parameters, cos)
        return Deferred.fromCoroutine(
            self._openSession(destination, plugin, protocolFactory, parameters, cos)
        )

    async def _openSession(
        self,
        destination: str,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None,
        cos: str | None,
    ) -> Any:
        route = None
        if isResourceName(destination):
            if self.directory is None:
                raise ResourceNotFound(f"{destination} (this node has no directory)")
            localPlugin = self.plugins.get(plugin)
            cos = cos or (localPlugin.defaultCOS if localPlugin else "interactive")
            # The route an end node's server returns is chosen for this COS.
            found = await self.directory.locate(destination, cos)
            if found.conflict:
                raise SessionRefused(
                    Reason.AMBIGUOUS_NAME.value, _conflict(destination, found.owners)
                )
            if found.owner == self.nodeID:
                raise SessionRefused(Reason.NO_ROUTE.value, f"{destination} is on this node")
            destination, route = found.owner, found.route
        try:
            if not isNodeID(destination):
                self._refuseAmbiguous(destination)
            cp = self.findNeighbour(destination)
        except AmbiguousName as e:
            raise SessionRefused(Reason.AMBIGUOUS_NAME.value, str(e.args[0])) from None
        except NoSuchNode:
            if self.routedSessions is None:
                raise
            try:
                target = await self.locateNode(destination)
            except AmbiguousName as e:
                raise SessionRefused(Reason.AMBIGUOUS_NAME.value, str(e.args[0])) from None
            return await self.routedSessions.open(
                target, plugin, protocolFactory, parameters, cos, route=route
            )
        return await cp.openSession(plugin, protocolFactory, parameters, cos)

    def resolveNode(self, name: str) -> str:
        """
        The node ID for C{name}: a neighbour's or a topology node's ID,
        unique ID prefix or CP name.

        @raise NoSuchNode: if no known node matches exactly one way.
        @raise AmbiguousName: if several nodes claim the CP name C{name}.
        """
        self._refuseAmbiguous(name)
        try:
            return self.findNeighbour(name).peerNodeID
        except NoSuchNode:
            pass
        if isNodeID(name):
            return name
        known: dict[str, str] = {}
        if self.topology is not None:
            for nodeID in self.topology.networkNodes():
                known[nodeID] = self.topology.nodeName(nodeID) or ""
        upper = name.upper()
        matches = [nid for nid, cpName in known.items() if cpName == upper]
        if not matches and name:
            matches = [nid for nid in known if nid.startswith(name.lower())]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NoSuchNode(repr(name))
        raise NoSuchNode(f"{name!r} matches {len(matches)} nodes")

    def _refuseAmbiguous(self, name: str) -> None:
        """
        Raise L{AmbiguousName} if several nodes (neighbours, or nodes of the
        topology database) call themselves C{name}: a CP name is only a
        claim in open trust mode, and a conflict is never resolved silently.
        """
        upper = name.upper()
        claimants = {nid for nid, cp in self.links.items() if cp.peerName == upper}
        if self.topology is not None and "." in name:
            claimants.update(
                nid for nid in self.topology.networkNodes() if self.topology.nodeName(nid) == upper
            )
        if len(claimants) > 1:
            raise AmbiguousName(_conflict(upper, sorted(claimants)))

    async def locateNode(self, name: str) -> str:
        """
        Like L{resolveNode}, but a CP name this node does not know (an end
        node has no topology database) is located in the directory as the
        resource C{node:<CP name>}, which every node offers.
        """
        try:
            return self.resolveNode(name)
        except NoSuchNode:
            if self.directory is None or "." not in name:
                raise
        try:
            found = await self.directory.locate(f"node:{name.upper()}")
        except ResourceNotFound:
            raise NoSuchNode(repr(name)) from None
        if found.conflict:
            raise AmbiguousName(_conflict(name.upper(), found.owners))
        return str(found.owner)

    def nodeName(self, nodeID: str) -> str:
        """
        The CP name of C{nodeID} in the topology database, or C{""}.
        """
        if self.topology is not None:
            try:
                return self.topology.nodeName(nodeID) or ""
            except Exception:
                return ""
        return ""

    def routeTo(self, destination: str, cos: str | None = None) -> Deferred[list[str]]:
        """
        The route (node IDs from this node to C{destination}) for C{cos}:
        computed from the topology database on a network node, asked of the
        network-node server on an end node.
        """
        return Deferred.fromCoroutine(self._routeTo(destination, cos or "interactive"))

    def alternativeRoutes(
        self, destination: str, cos: str | None, k: int
    ) -> Deferred[list[list[str]]]:
        """
        Up to C{k} routes to C{destination}, best first (for a path switch):
        the k shortest of the topology database on a network node; the one
        route L{routeTo} gives otherwise.
        """
        if self.topology is not None:
            topology = self.topology
            if (
                self.links
                and not topology.isReachable(destination)
                and not topology.isAnnounced(destination)
            ):
                # Its neighbours have withdrawn their links to it and its own
                # records went with them: it is gone.  Merely unreachable (a
                # partition: links to it still announced) is no route for now,
                # and the path switch keeps looking until its timeout.
                return fail(DestinationGone(f"{destination} is no longer in the topology"))
            try:
                routes = self.topology.alternativeRoutes(self.nodeID, destination, cos, k)
            except NoRoute as e:
                return fail(e)
            return succeed([list(r.hops) for r in routes])
        return self.routeTo(destination, cos).addCallback(lambda route: [route])

    async def _routeTo(self, destination: str, cos: str) -> list[str]:
        if self.topology is not None:
            return list(self.topology.selectRoute(self.nodeID, destination, cos).hops)
        if self.directory is not None:
            return list(await self.directory.requestRoute(destination, cos))
        raise NoRoute(f"this node has no topology database or directory to reach {destination}")

    def sessions(self) -> list[IBoundSession]:
        cps = [*self.links.values(), *self.drainingLinks]
        return [s for cp in cps for s in cp.sessions.values()]

    def endsSession(self, sessionID: str) -> bool:
        # The relay refuses to carry another node's session under such an ID.
        cps = [*self.links.values(), *self.drainingLinks]
        if any(sessionID in cp.sessions or sessionID in cp.outboundBinds for cp in cps):
            return True
        routed = self.routedSessions
        return routed is not None and (
            sessionID in routed.sessions  # routed, switching paths too
            or sessionID in routed.handshaking
            or sessionID in routed.pending  # a routed BIND of this node's own
            or sessionID in routed.adjacent.sessions  # adjacent, switching paths
        )

    def sessionStarted(self, session: IBoundSession) -> None:
        for observer in self._nodeObservers:
            observer.sessionStarted(session)

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        for observer in self._nodeObservers:
            observer.sessionEnded(session, why)

    def sessionRefused(self, reason: str) -> None:
        for observer in self._nodeObservers:
            observer.sessionRefused(reason)

    def handshakeFailed(self, why: str) -> None:
        """
        A connection to or from this node failed before authentication.
        """
        for observer in self._nodeObservers:
            observer.handshakeFailed(why)

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        # Listen and announce readiness only once the reactor runs, so the
        # readiness line means the node can already answer (and a signal
        # sent on seeing it meets the node's own handlers).
        callWhenRunning = getattr(self.reactor, "callWhenRunning", None)
        if callWhenRunning is None:
            self._begin()
        else:
            callWhenRunning(self._begin)

    def _begin(self) -> None:
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._startFailed)
        d.addBoth(self._fireStarted)

    def _startFailed(self, failure: Failure) -> Failure:
        self.log.critical(
            "node {node_id} could not start: {why}",
            node_id=self.nodeID,
            why=failure.getErrorMessage(),
        )
        return failure

    def _fireStarted(self, result: object) -> None:
        waiters, self._startWaiters = self._startWaiters, None
        for d in waiters or []:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)
        self._startResult = result

    def whenStarted(self) -> Deferred[None]:
        """
        Fires once the node listens on every endpoint and has announced
        readiness, or fails with why it could not (a port in use, ...).
        """
        d: Deferred[None] = Deferred()
        if self._startWaiters is not None:
            self._startWaiters.append(d)
        elif isinstance(self._startResult, Failure):
            d.errback(self._startResult)
        else:
            d.callback(None)
        return d

    async def _start(self) -> None:
        for description in self.listenEndpoints:
            factory: Any = self.serverFactory()
            if self.admission is not None:
                factory = self.admission.wrap(factory)
            port = await serverFromString(self.reactor, description).listen(factory)
            self.ports.append(port)
            host = port.getHost()
            self.log.info(
                "listening on {address}",
                address=f"{_hostText(host.host)}:{host.port}"
                if isinstance(host, (IPv4Address, IPv6Address))
                else str(host),
            )
        # A wildcard listener is shown as the host's addresses: what a peer
        # can dial (0.0.0.0 is not).
        self.log.info(
            "node {node_id} ({name}) ready, role {role}, listening on {addresses}",
            node_id=self.nodeID,
            name=self.name,
            role=self.role,
            addresses=" ".join(dialableAddresses(self.advertisedAddresses())),
        )

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.shuttingDown = True
        await DeferredList([Deferred.fromCoroutine(_stopPort(p)) for p in self.ports])
        self.ports.clear()
        for pending in list(self.pendingLinks):
            pending.dropUnauthenticated()
        if self.relay is not None:
            # The ends of relayed sessions hear shutting-down before the links go.
            self.relay.stop()
        if self.routedSessions is not None:
            # Routed sessions waiting for a new path end now.
            self.routedSessions.stop()
        closing = [
            cp.close(Reason.SHUTTING_DOWN, "the node is stopping")
            for cp in [*self.links.values(), *self.drainingLinks]
        ]
        if closing:
            timeout = self.reactor.callLater(STOP_TIMEOUT, self._abortAll)
            await DeferredList(closing)
            if timeout.active():
                timeout.cancel()
        await super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        if self.admission is not None:
            self.admission.stop()
        for plugin in self.plugins.values():
            if IPluginLifecycle.providedBy(plugin):
                plugin.detach()

    def _abortAll(self) -> None:
        for cp in [*self.links.values(), *self.drainingLinks]:
            cast(ITCPTransport, cp.link.transport).abortConnection()


async def _stopPort(port: IListeningPort) -> None:
    # Twisted types the result as optional; real ports return a Deferred.
    await cast("Deferred[None]", port.stopListening())


def _conflict(name: str, owners: Iterable[str]) -> str:
    """
    Why a session by C{name} is refused: several nodes claim it; a node ID
    (or C{appn://<id>@} address) names one of them unambiguously.
    """
    ids = list(owners)
    return f"{name} is claimed by {len(ids)} nodes: {', '.join(ids)}; name one by its node ID"


def _certifiedName(identity: Identity, configured: str | None) -> str:
    """
    In network trust mode the node's CP name is the one its certificate
    certifies; a configured name must agree with it.
    """
    certified = certifiedCPName(identity.certificate)
    if certified is None:
        raise ConfigurationError(
            "network trust mode needs a certificate that certifies this node's CP "
            "name; re-sign it with `appn ca sign --name NETID.NAME`"
        )
    if configured and validateCPName(configured) != certified:
        raise ConfigurationError(
            f"the configured CP name {validateCPName(configured)} is not the name "
            f"{certified} the network CA certified for this node"
        )
    return certified


def isResourceName(text: str) -> bool:
    """
    Whether C{text} names a resource (C{<kind>:<name>}) rather than a node.
    """
    kind, sep, rest = text.partition(":")
    return bool(sep and kind and rest) and "/" not in kind


def _hostText(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- the composition root ---------------------------------------------------------


def buildNode(
    reactor: Any,
    config: NodeConfig,
    identity: Identity,
    plugins: Iterable[ISessionPlugin] = (),
    trust: TrustPolicy | None = None,
    muxConfig: MuxConfig | None = None,
    services: bool = True,
    managePeers: bool = True,
    topologyOptions: Mapping[str, Any] | None = None,
    directoryOptions: Mapping[str, Any] | None = None,
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    admission: bool = True,
) -> Node:
    """
    Build a node and its services from its configuration and plugins: the one
    place a node is assembled.  C{twist appnnode}, the in-memory harness
    (L{appnpy.testing}), the prober and the benchmarks all build their nodes
    here, so a test node is built exactly as a deployed one.

    @param config: the validated configuration; C{config.dataDir} may be
        L{None} for a node that keeps no state on disk.
    @param trust: the link trust policy (default: open).
    @param muxConfig: multiplexer settings (default: from C{config}'s
        keepalive keys).
    @param services: give the node its network services by role (topology
        database and relay on network nodes; directory and routed-session
        ends on all).  Only low-level tests of links and adjacent sessions
        turn this off.
    @param managePeers: run the peer manager (bootstrap from C{config.peers},
        peer exchange, keeping C{config.maxPeers} links).  The in-memory
        harness links its nodes explicitly and turns it off.
    @param topologyOptions: tuning of the topology database (tests).
    @param directoryOptions: tuning of the directory (tests).
    @param handshakeTimeout: seconds a link may take to authenticate.
    @param admission: limit the accept rate and the unauthenticated
        connections (L{AdmissionControl}); benchmarks that open hundreds of
        links at once turn it off.
    """
    node = Node(
        reactor,
        identity,
        name=config.name,
        role=config.role,
        trust=trust,
        listen=config.listen,
        muxConfig=muxConfig
        or MuxConfig(
            keepaliveInterval=config.keepaliveInterval,
            keepaliveTimeout=config.keepaliveTimeout,
            suspectMinimum=config.suspectMinimum,
            deadFactor=config.deadFactor,
        ),
        handshakeTimeout=handshakeTimeout,
    )
    node.dataDir = config.dataDir
    if admission:
        node.admission = AdmissionControl(reactor)
    plugins = list(plugins)
    for plugin in plugins:
        node.addSessionPlugin(plugin)
    # Every node answers the interop probe.
    installProbeResponder(node)
    if services:
        # On an end node this installs only its signed end record (None).
        topology = installTopology(
            node,
            cosTables=dict(config.cosTables),
            stateDir=config.dataDir,
            linkSettings=config.linkSettings,
            **(topologyOptions or {}),
        )
        node.topology = topology
        if node.role == "network":
            node.relay = installRelay(node)
            if topology is not None:
                topology.setLoadSource(node.relay)
        node.directory = installDirectory(
            node, cds=config.cds, cdsNode=config.cdsNode, **(directoryOptions or {})
        )
        node.routedSessions = installRoutedSessions(node)
        node.routedSessions.pathSwitch = config.pathSwitch
        node.routedSessions.switchTimeout = config.pathSwitchTimeout
        node.routedSessions.progressTimeout = config.pathSwitchProgressTimeout
    if managePeers:
        peers = PeerManager(
            node,
            dataDir=config.dataDir,
            bootstrap=config.peers,
            maxPeers=config.maxPeers,
            slack=config.inboundSlack,
        )
        peers.setName("peers")  # type: ignore[no-untyped-call]  # unannotated Twisted method
        peers.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    if config.api is not None and config.dataDir is not None:
        management = ManagementService(node, config.api, config.dataDir, config.asDict())
        management.setName("management")  # type: ignore[no-untyped-call]  # unannotated Twisted method
        management.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    for plugin in plugins:
        if IPluginLifecycle.providedBy(plugin):
            plugin.attach(node)
    return node


def buildProber(reactor: Any, identity: Identity | None = None, timeout: float = 10.0) -> Node:
    """
    The throwaway node C{appn probe} checks another node from: an end node
    with a fresh identity and only the prober's own echo plugin, and no
    network services, so it registers nothing and leaves no record in
    anyone's topology database.
    """
    return buildNode(
        reactor,
        NodeConfig(dataDir=None, name="PROBE.PROBE", role="end", listen=(), api=None),
        identity or generateIdentity(reactor.seconds()),
        proberPlugins(),
        services=False,
        managePeers=False,
        handshakeTimeout=timeout,
    )


def deployNode(reactor: Any, config: NodeConfig) -> DeployedNode:
    """
    The node C{twist appnnode} runs: lock the data directory, load (or make)
    the identity, the trust policy and the installed plugins, and build the
    node with L{buildNode}.  The lock is held until the node has stopped.

    @raise APPNError: for anything the operator must fix.
    """
    if config.dataDir is None:
        raise ConfigurationError("a deployed node needs a data directory")
    lock = lockDataDirectory(config.dataDir)
    try:
        identity = loadOrCreateIdentity(config.dataDir, reactor.seconds())
        trust = loadTrustPolicy(config.trust, config.dataDir)
        plugins = loadPlugins(config.plugins, config.pluginSections, config.configFile)
        node = buildNode(reactor, config, identity, plugins, trust)
    except OSError as e:
        lock.release()
        raise dataDirectoryProblem(config.dataDir, e) from None
    except BaseException:
        lock.release()
        raise
    return DeployedNode(node, lock)


class DeployedNode(MultiService):
    """
    A node and the lock on its data directory, released once the node has
    stopped.  C{node} is the node (not a named child: a service name would
    overwrite its CP name).
    """

    def __init__(self, node: Node, lock: DataDirectoryLock) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.node = node
        self.lock = lock
        self._started: list[Deferred[None]] | None = []
        self._startFailure: Failure | None = None
        node.setServiceParent(self)  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        waits = [self.node.whenStarted()]
        if "management" in self.node.namedServices:
            management = self.node.getServiceNamed("management")  # type: ignore[no-untyped-call]  # unannotated Twisted method
            waits.append(cast(ManagementService, management).whenListening())
        # The first failure wins: a management API that cannot listen fails
        # the start before the node has even begun listening.
        d: Deferred[list[None]] = gatherResults(waits, consumeErrors=True)
        d.addCallbacks(self._fireStarted, self._fireStarted)

    def _fireStarted(self, result: object) -> None:
        if isinstance(result, Failure):
            failure = result
            if isinstance(failure.value, FirstError):
                failure = failure.value.subFailure
            self._startFailure = failure
        waiters, self._started = self._started, None
        for d in waiters or []:
            if self._startFailure is not None:
                d.errback(self._startFailure)
            else:
                d.callback(None)

    def whenStarted(self) -> Deferred[None]:
        """
        Fires once the node listens on every endpoint and its management
        API (when it has one) listens too; fails with the first reason one
        of them could not (a port in use, ...): the operator must fix it.
        """
        d: Deferred[None] = Deferred()
        if self._started is not None:
            self._started.append(d)
        elif self._startFailure is not None:
            d.errback(self._startFailure)
        else:
            d.callback(None)
        return d

    def stopService(self) -> Deferred[None]:
        d: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        return d.addBoth(self._release)

    def _release(self, result: object) -> object:
        self.lock.release()
        return result
