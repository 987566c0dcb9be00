"""
The directory service of a node: the parts (registration, locate, keyword
search, route proxy) composed over their shared base, plus what ties them to
the node's life: start and stop, the periodic refresh and expiry, links
coming and going (an end node's choice of network-node server), and the
management view.

An B{end node} keeps one network-node server (NNS): the first network node
it links to; others are candidates, used only when the server's link goes
away.  It registers its resources with the server, sends it its locates and
route requests, and relays nothing.

Every request a neighbour can push on us is rate limited (per neighbour and
overall, token buckets) and counted; tables are bounded (LRU + TTL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from zope.interface import implementer

from appnpy.cp._interfaces import ILinkObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import Message
from appnpy.interfaces import ISessionPlugin
from appnpy.net.directory._interfaces import IDirectory, IDirectoryHost
from appnpy.net.directory.locate import LocateMixin
from appnpy.net.directory.messages import (
    LocateReply,
    LocateRequest,
    RegisterResources,
    RouteReply,
    RouteRequest,
    SearchReply,
    SearchRequest,
)
from appnpy.net.directory.registration import RegistrationMixin
from appnpy.net.directory.routeproxy import RouteProxyMixin
from appnpy.net.directory.search import SearchMixin


@implementer(IDirectory, ILinkObserver)
class Directory(RegistrationMixin, LocateMixin, SearchMixin, RouteProxyMixin):
    """
    A node's directory services.

    Built with its collaborators: C{reactor}, C{identity} (signs this node's
    records), C{cpName}, C{role} (C{'network'} or C{'end'}), C{links} (an
    L{ILinkRegistry}), C{topology} (an L{IRouteQueries}, C{None} on end
    nodes), C{plugins} (the node's live plugin mapping), then C{cds},
    C{cdsNode} and the tunables (see L{DirectoryBase}).

    @ivar serverNodeID: at an end node, the node ID of the current
        network-node server (C{None} while it has none).
    @ivar stats: counters, named after VTAM's directory statistics where
        they match (found-local, found-cache, found-directed, found-cds,
        found-broadcast, not-found) plus the fault counters.
    """

    def messageHandlers(self) -> dict[type[Message], Callable[[ControlPoint, Any], None]]:
        """
        The handler of each directory control message, for the link registry.
        """
        return {
            RegisterResources: self._registerReceived,
            LocateRequest: self._locateRequestReceived,
            LocateReply: self._locateReplyReceived,
            SearchRequest: self._searchRequestReceived,
            SearchReply: self._searchReplyReceived,
            RouteRequest: self._routeRequestReceived,
            RouteReply: self._routeReplyReceived,
        }

    def resourcesChanged(self, plugin: ISessionPlugin) -> None:
        """
        C{plugin} offers other resources now: forget the records of names no
        longer offered and register the current set at once.
        """
        offered = set(self.localResources())
        for name in [n for n in self._own if n not in offered]:
            del self._own[name]
        if self.running:
            self._refreshRegistrations()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.tickInterval, now=False)
        for cp in list(self.links.links.values()):
            self.linkActive(cp)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._pushScheduled is not None and self._pushScheduled.active():
            self._pushScheduled.cancel()
        self._pushScheduled = None
        for entry in list(self._searches.values()):
            self._finishOrigin(entry)
        for pending in list(self._routes.values()):
            self._failRoute(pending, "the node is stopping")
        return super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def _tick(self) -> None:
        now = self.reactor.seconds()
        self.registry.expire(now)
        self.cache.expire(now)
        for sid in [s for s, e in self._searches.items() if e.expires <= now]:
            self._finishOrigin(self._searches.pop(sid))
        self._refreshRegistrations()

    def linkActive(self, cp: ControlPoint) -> None:
        if self.role == "end" and self.serverNodeID is None and self._peerRole(cp) == "network":
            self._adoptServer(cp)

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        peer = cp.peerNodeID
        self._buckets.pop(peer, None)
        for entry in list(self._searches.values()):
            if peer in entry.pending:
                entry.pending.discard(peer)
                entry.interrupted = True
                if not entry.pending:
                    self._complete(entry)
        if self._attached.get(peer) is cp:
            del self._attached[peer]
            self._replaceRegistrations(peer, [])
            self.log.info("end node {peer} detached", peer=peer)
            self._attachedChanged()
            self._schedulePush()
        if self.role == "end" and peer == self.serverNodeID:
            self.serverNodeID = None
            candidates = sorted(self._networkNeighbours(), key=lambda c: c.since)
            if candidates:
                self._adoptServer(candidates[0])
            else:
                self.log.warn(
                    "lost network-node server {peer}; no other network node is linked", peer=peer
                )

    def _adoptServer(self, cp: ControlPoint) -> None:
        previous = self.serverNodeID
        self.serverNodeID = cp.peerNodeID
        self.stats["server-changes"] += 1
        self.log.info(
            "network-node server is now {peer} ({name}){was}",
            peer=cp.peerNodeID,
            name=cp.peerName,
            was=f", was {previous}" if previous else "",
        )
        self._refreshRegistrations()
        for pending in list(self._routes.values()):
            self._send(cp, pending.request)

    # -- management ---------------------------------------------------------------------------

    def asDict(self) -> dict[str, Any]:
        """
        The directory as JSON-able data, for C{appn resources}.
        """
        now = self.reactor.seconds()
        return {
            "role": self.role,
            "cds": self.isCDS,
            "cds_node": self.cdsNode,
            "server": self.serverNodeID,
            "local": self.localResources(),
            "registered": self.registry.asDict(now),
            "attached_end_nodes": sorted(self._attached),
            **self.cache.asDict(now),
            "stats": dict(sorted(self.stats.items())),
        }


def installDirectory(
    node: IDirectoryHost, cds: bool = False, cdsNode: str | None = None, **options: Any
) -> Directory:
    """
    Make C{node}'s directory services, registered for their control
    messages and running as its child service (L{appnpy.node.buildNode}
    keeps them as C{node.directory}); C{cds=True} makes it
    a central directory server, C{cdsNode} names the CDS other nodes register
    with and ask first.  C{options} are L{Directory}'s tunables.  A network
    node's topology database (C{node.topology}) must be installed first.
    """
    directory = Directory(
        node.reactor,
        node.identity,
        node.name,
        node.role,
        node,
        node.topology,
        node.plugins,
        cds=cds,
        cdsNode=cdsNode,
        caCertificate=node.trust.caCertificate,
        **options,
    )
    for messageClass, handler in directory.messageHandlers().items():
        node.addControlHandler(messageClass, handler)
    node.addLinkObserver(directory)
    directory.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    return directory
