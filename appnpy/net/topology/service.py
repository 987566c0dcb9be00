"""
The topology database service: the parts composed and driven by time and
by link events.

It owns the record store (L{appnpy.net.topology.database}), the flooder and
per-neighbour state (L{appnpy.net.topology.flooding}), the own RSN
(L{appnpy.net.topology.rsn}) and the own records
(L{appnpy.net.topology.origination}), runs their timers, and applies the
rules for a received TDU:

  - a newer RSN is applied and forwarded once to the other network-node
    neighbours; an equal one is dropped; an older one is answered with our
    newer copy; a record that is oversized, malformed, badly signed, or whose
    owner's key is unknown is dropped and counted in L{TopologyDatabase.stats};
  - owners re-issue their records every C{refreshInterval}; records not
    refreshed within C{maxAge} (local receive time) age out;
  - a link counts for routing only when both its ends announce it up.

It is also what the node's other services use of the topology
(L{ITopology}): queries, and route selection over the current graph
(L{appnpy.net.topology.routes}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from appnpy.cp._interfaces import ILinkObserver, ILinkRegistry
from appnpy.errors import NoRoute
from appnpy.link.identity import Identity
from appnpy.net.routing import (
    BUILTIN_COS,
    ClassOfService,
    LinkSettings,
    Route,
    RouteExplanation,
    TopologyGraph,
)
from appnpy.net.topology._interfaces import IRelayLoad, IRouteQueries, ITopology, ITopologyHost
from appnpy.net.topology.database import Entry, RecordStore
from appnpy.net.topology.flooding import Flooder, isNetworkPeer
from appnpy.net.topology.origination import OwnRecords
from appnpy.net.topology.records import (
    LINK,
    MAX_LINKS_PER_ORIGIN,
    MAX_NODES,
    NODE,
    BadRecord,
    TopologyRecord,
    TopologySync,
    TopologyUpdate,
)
from appnpy.net.topology.routes import explainRoute, selectRoute
from appnpy.net.topology.rsn import OwnRSN
from appnpy.net.topology.sync import advance, changesSince, syncRequest

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["TopologyDatabase", "installTopology"]

#: Seconds of quiet after a change before the database logs its summary.
SUMMARY_DELAY = 1.0

_STATS = (
    "received",
    "applied",
    "duplicate",
    "inconsistent",
    "older",
    "forwarded",
    "sent",
    "bad_signature",
    "unknown_owner_key",
    "oversized",
    "malformed",
    "rate_limited",
    "origin_cap",
    "db_full",
    "not_network",
    "aged_out",
    "own_rsn_bumped",
    "originated",
    "sync_requests",
    "sync_records_sent",
    "links_closed_for_abuse",
)


@implementer(ITopology, ILinkObserver, IRouteQueries)
class TopologyDatabase(Service):
    """
    The replicated topology database of one network node; see the module
    docstring.  C{stats} counts every record received, applied, forwarded
    and dropped (by reason).

    @param reactor: time and timers.
    @param identity: signs this node's own records.
    @param name: this node's CP name, announced in its node record.
    @param links: the node's active links and control-message dispatch.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        identity: Identity,
        name: str,
        links: ILinkRegistry,
        cosTables: dict[str, ClassOfService] | None = None,
        stateDir: str | None = None,
        refreshInterval: float = 1800.0,
        maxAge: float | None = None,
        damping: float = 5.0,
        measureInterval: float = 30.0,
        rate: float = 200.0,
        burst: float = 2000.0,
        syncCredit: float = 50_000.0,
        abuseLimit: int = 50_000,
        abuseWindow: float = 60.0,
        resistance: int = 0,
        cds: bool = False,
        linkSettings: LinkSettings | None = None,
        rttChange: float = 0.5,
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.nodeID: str = identity.nodeID
        self.name = name
        self.links = links
        self.cosTables: dict[str, ClassOfService] = dict(BUILTIN_COS)
        self.cosTables.update(cosTables or {})
        self.refreshInterval = refreshInterval
        self.maxAge = maxAge if maxAge is not None else 2 * refreshInterval + 600.0
        self.measureInterval = measureInterval
        self.syncCredit = syncCredit
        self.abuseWindow = abuseWindow
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self.store = RecordStore(self.nodeID, identity.publicKeyBytes)
        self.flooder = Flooder(links, self.store, self.stats, rate, burst, abuseLimit, abuseWindow)
        self.ownRSN = OwnRSN(stateDir, reactor.seconds())
        self.own = OwnRecords(
            reactor,
            identity,
            name,
            self.store,
            self.flooder,
            self.ownRSN,
            self.stats,
            self._changed,
            damping=damping,
            maxAge=self.maxAge,
            rttChange=rttChange,
            resistance=resistance,
            cds=cds,
            linkSettings=linkSettings,
        )
        #: Where this node's load is measured (its relay), once wired.
        self.loadSource: IRelayLoad | None = None
        self._timers: dict[str, IDelayedCall] = {}
        self._observers: list[Callable[[], None]] = []

    @property
    def epoch(self) -> str:
        return self.store.epoch

    @property
    def frsn(self) -> int:
        return self.store.frsn

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.links.addControlHandler(TopologyUpdate, self.updateReceived)
        self.links.addControlHandler(TopologySync, self.syncReceived)
        self.own.start()
        self._every("refresh", self.refreshInterval, self.own.refresh)
        self._every("age", min(self.maxAge / 4, 300.0), self.ageOut)
        if self.measureInterval > 0:
            self._every("measure", self.measureInterval, self.measureLinks)
        for cp in list(self.links.links.values()):
            self.linkActive(cp)
        self.own.announce()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self.own.stop()
        self.links.removeControlHandler(TopologyUpdate)
        self.links.removeControlHandler(TopologySync)

    def _every(self, name: str, interval: float, f: Callable[[], None]) -> None:
        def tick() -> None:
            self._timers[name] = self.reactor.callLater(interval, tick)
            f()

        self._timers[name] = self.reactor.callLater(interval, tick)

    # -- observers ------------------------------------------------------------

    def addObserver(self, observer: Callable[[], None]) -> None:
        """
        Call C{observer()} (no arguments) after any change to the database.
        """
        self._observers.append(observer)

    def _changed(self) -> None:
        self.store.cachedGraph = None
        if self.running and "summary" not in self._timers:
            self._timers["summary"] = self.reactor.callLater(SUMMARY_DELAY, self._summarise)
        for observer in list(self._observers):
            try:
                observer()
            except Exception:
                self.log.failure("topology observer failed")

    def _summarise(self) -> None:
        # One line per burst of changes: what this node now knows, and the
        # digest operators compare across nodes to see convergence.
        del self._timers["summary"]
        graph = self.graph()
        reachable = {self.nodeID}
        frontier = [self.nodeID]
        while frontier:
            for peer in graph.adjacency.get(frontier.pop(), {}):
                if peer not in reachable:
                    reachable.add(peer)
                    frontier.append(peer)
        self.log.info(
            "topology: {nodes} network nodes ({reachable} reachable), {links} routable links, "
            "digest {digest}",
            nodes=len(self.networkNodes()),
            reachable=len(reachable),
            links=sum(len(peers) for peers in graph.adjacency.values()) // 2,
            digest=self.digest(),
        )

    # -- link events (ILinkObserver) -----------------------------------------

    def linkActive(self, cp: ControlPoint) -> None:
        if not self.running or not isNetworkPeer(cp):
            return
        peer = cp.peerNodeID
        now = self.reactor.seconds()
        ns = self.flooder.neighbour(peer, now)
        # One initial-exchange allowance per link-up, at most once per window,
        # so a neighbour cannot reconnect its way around the rate limit.
        if now - ns.lastCredit >= self.abuseWindow:
            ns.bucket.credit(self.syncCredit, now + self.abuseWindow)
            ns.lastCredit = now
        ns.sentUpTo = None
        cp.send(syncRequest(ns))
        self.own.linkUp(cp, now)

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        ns = self.flooder.neighbours.get(cp.peerNodeID)
        if ns is not None:
            ns.sentUpTo = None
        self.own.linkDown(cp.peerNodeID, self.reactor.seconds())

    # -- what this node announces (see OwnRecords) -----------------------------

    def setLinkCharacteristics(
        self, peer: str, cost: int | None = None, security: int | None = None
    ) -> None:
        """
        Configure the cost and security level (0-255) this node announces
        for its link to C{peer}.
        """
        self.own.setLinkCharacteristics(peer, cost, security)

    def setNodeCharacteristics(
        self, resistance: int | None = None, load: int | None = None, cds: bool | None = None
    ) -> None:
        """
        Change what this node's own record announces (0-255 each).
        """
        self.own.setNodeCharacteristics(resistance, load, cds)

    def setAttachedEndNodes(self, ids: Iterable[str]) -> None:
        """
        The end nodes this node serves (called by the directory); announced
        in this node's node record.  At most L{MAX_END_NODES} are announced.
        """
        self.own.setAttachedEndNodes(ids)

    def refresh(self) -> None:
        self.own.refresh()

    def measureLinks(self) -> None:
        """
        Sample RTT (keepalive pings) and observed throughput of every own
        link, and the node's load; re-announce what moved.
        """
        self.own.measure(self.links)
        if self.loadSource is not None:
            self.own.measureLoad(self.loadSource)

    def setLoadSource(self, relay: IRelayLoad) -> None:
        """
        Measure this node's load from the sessions C{relay} carries
        (L{appnpy.node.buildNode} wires the node's relay).
        """
        self.loadSource = relay

    # -- receiving ------------------------------------------------------------------

    def ageOut(self) -> None:
        """
        Remove records not refreshed within C{maxAge}; a node record takes
        its owner's link records with it.
        """
        count = self.store.ageOut(self.reactor.seconds(), self.maxAge)
        if count:
            self.stats["aged_out"] += count
            self.log.info("topology: {count} records aged out", count=count)
            self._changed()

    def updateReceived(self, cp: ControlPoint, msg: TopologyUpdate) -> None:
        """
        Handle a TDU from a neighbour.
        """
        peer = cp.peerNodeID
        if not isNetworkPeer(cp):
            self.stats["not_network"] += len(msg.records)
            return
        now = self.reactor.seconds()
        ns = self.flooder.neighbour(peer, now)
        store = self.store
        decoded: list[TopologyRecord] = []
        for raw in msg.records:
            self.stats["received"] += 1
            try:
                decoded.append(TopologyRecord.decode(raw))
            except BadRecord as e:
                self.stats[e.counter] += 1
        # Node records first: they carry the keys that verify link records.
        decoded.sort(key=lambda r: r.kind != NODE)
        applied: list[Entry] = []
        newer: list[TopologyRecord] = []
        limited = 0
        ownSeen = False
        for rec in decoded:
            current = store.entries.get(rec.key)
            if current is not None and rec.rsn == current.record.rsn:
                if rec.raw == current.record.raw:
                    self.stats["duplicate"] += 1
                    continue
                self.stats["inconsistent"] += 1
                if rec.owner != self.nodeID:
                    continue
            if not ns.bucket.take(now):
                limited += 1
                continue
            if current is not None and rec.rsn < current.record.rsn:
                self.stats["older"] += 1
                newer.append(current.record)
                continue
            try:
                store.verify(rec)
            except BadRecord as e:
                self.stats[e.counter] += 1
                continue
            if rec.owner == self.nodeID:
                # Our own record, newer than (or as new as) ours: we lost our
                # RSN state.  Jump past it and re-issue.
                self.ownRSN.jumpPast(rec.rsn)
                self.stats["own_rsn_bumped"] += 1
                self.own.ownSeen(rec.key)
                ownSeen = True
                continue
            if current is None:
                if rec.kind == LINK and store.linkCount(rec.owner) >= MAX_LINKS_PER_ORIGIN:
                    self.stats["origin_cap"] += 1
                    continue
                if rec.kind == NODE and store.nodeCount() >= MAX_NODES:
                    self.stats["db_full"] += 1
                    continue
            applied.append(store.apply(rec, peer, now))
        self.stats["applied"] += len(applied)
        if limited:
            self.flooder.rateLimited(cp, ns, limited, now)
        elif ns.inBurst and ns.bucket.tokens >= ns.bucket.burst / 2:
            ns.inBurst = False
        advance(ns, msg, bool(limited))
        if newer:
            self.flooder.send(cp, newer, 0, 0)
        if applied:
            self.flooder.flood(applied, peer, now)
            self._changed()
        if ownSeen:
            self.own.markDirty((NODE, self.nodeID, ""))

    def syncReceived(self, cp: ControlPoint, msg: TopologySync) -> None:
        """
        A neighbour's link came up: send what changed since the last FRSN
        it holds from us, or everything if it names another epoch.
        """
        if not isNetworkPeer(cp):
            self.stats["not_network"] += 1
            return
        self.stats["sync_requests"] += 1
        peer = cp.peerNodeID
        entries, since = changesSince(self.store, msg, peer)
        self.stats["sync_records_sent"] += len(entries)
        self.flooder.sendEntries(cp, entries, since, self.frsn)
        self.flooder.neighbour(peer, self.reactor.seconds()).sentUpTo = self.frsn

    # -- queries (ITopology) ------------------------------------------------------------

    def records(self) -> list[TopologyRecord]:
        return self.store.records()

    def record(self, kind: str, owner: str, subject: str = "") -> TopologyRecord | None:
        return self.store.record(kind, owner, subject)

    def __len__(self) -> int:
        return len(self.store)

    def digest(self) -> str:
        return self.store.digest()

    def nodeName(self, nodeID: str) -> str | None:
        return self.store.nodeName(nodeID)

    def networkNodes(self) -> list[str]:
        return self.store.networkNodes()

    def servingNode(self, endNodeID: str) -> str | None:
        return self.store.servingNode(endNodeID)

    def graph(self) -> TopologyGraph:
        return self.store.graph()

    def classOfService(self, name: str | None) -> ClassOfService:
        cos = self.cosTables.get(name or "interactive")
        if cos is None:
            raise NoRoute(f"unknown class of service {name!r}")
        return cos

    def selectRoute(self, origin: str, destination: str, cos: str | None = None) -> Route:
        """
        The least-weight route for C{cos} (see L{appnpy.net.topology.routes.selectRoute}).

        @raise NoRoute: when none qualifies.
        """
        return selectRoute(self.store, self.classOfService(cos), origin, destination)

    def explainRoute(
        self, origin: str, destination: str, cos: str | None = None
    ) -> RouteExplanation:
        return explainRoute(self.store, self.classOfService(cos), origin, destination)

    def asDict(self) -> dict[str, Any]:
        """
        The database for C{appn topology}.
        """
        now = self.reactor.seconds()
        nodes, links = self.store.describe(now)
        return {
            "node_id": self.nodeID,
            "digest": self.digest(),
            "epoch": self.epoch,
            "frsn": self.frsn,
            "rsn": self.ownRSN.value,
            "records": len(self.store),
            "nodes": nodes,
            "links": links,
            "stats": dict(self.stats),
            "cos": sorted(self.cosTables),
        }


def installTopology(
    host: ITopologyHost,
    cosTables: dict[str, ClassOfService] | None = None,
    stateDir: str | None = None,
    **options: Any,
) -> TopologyDatabase | None:
    """
    Make a network node's topology database, observing its links and
    running as its child service (L{appnpy.node.buildNode} keeps it as
    C{node.topology}); end nodes keep none (they ask their network-node server for routes), so for them
    this does nothing and returns C{None}.

    @param cosTables: classes of service added to (or replacing) the
        built-in ones, by name.
    @param stateDir: where the own RSN is persisted (C{topology.json}).
    @param options: tuning, see L{TopologyDatabase}.
    """
    if host.role != "network":
        return None
    db = TopologyDatabase(
        host.reactor, host.identity, host.name, host, cosTables, stateDir, **options
    )
    host.addLinkObserver(db)
    if isinstance(host, MultiService):
        db.setServiceParent(host)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    else:
        db.startService()
    return db
