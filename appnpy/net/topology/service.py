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

import attrs
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
from appnpy.net.topology.endnode import EndRecord
from appnpy.net.topology.flooding import Flooder, Neighbour, OwnerBuckets, isNetworkPeer
from appnpy.net.topology.origination import OwnRecords
from appnpy.net.topology.records import (
    END,
    LINK,
    MAX_LINKS_PER_ORIGIN,
    MAX_NODES,
    NODE,
    BadRecord,
    TopologyRecord,
    TopologySync,
    TopologyUpdate,
)
from appnpy.net.topology.routes import alternativeRoutes, explainRoute, selectRoute
from appnpy.net.topology.rsn import OwnRSN
from appnpy.net.topology.sync import (
    Held,
    HeldRecords,
    advance,
    changesSince,
    rewind,
    syncRequest,
)

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["TopologyDatabase", "installTopology", "MAX_BYTES"]

#: Seconds of quiet after a change before the database logs its summary.
SUMMARY_DELAY = 1.0
#: The default byte budget of the records held from other nodes.
MAX_BYTES = 16 << 20
#: The default bounds of the records held for their owner's key.
HOLD_RECORDS, HOLD_BYTES = 4096, 1 << 20


@attrs.define
class _Batch:
    """
    What became of the records of one message.
    """

    applied: list[Entry] = attrs.Factory(list)
    newer: list[TopologyRecord] = attrs.Factory(list)
    unheld: list[Held] = attrs.Factory(list)
    limited: int = 0
    ownLimited: int = 0
    ownSeen: bool = False


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
    "odd_rsn",
    "replayed",
    "held",
    "held_dropped",
    "withdrawn",
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
        maxBytes: int = MAX_BYTES,
        maxNodes: int = MAX_NODES,
        ownerRate: float = 1.0,
        ownerBurst: float = MAX_LINKS_PER_ORIGIN + 16,
        holdRecords: int = HOLD_RECORDS,
        holdBytes: int = HOLD_BYTES,
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
        self.maxBytes = maxBytes
        self.maxNodes = maxNodes
        self._lastFullLog = -1e18
        self.store = RecordStore(self.nodeID, identity.publicKeyBytes)
        self.owners = OwnerBuckets(ownerRate, ownerBurst)
        self.held = HeldRecords(holdRecords, holdBytes)
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
        self._withdrawDead()
        self.store.cachedGraph = None
        revived = self.store.takeRevived()
        if revived:
            # A withdrawn node is tied again: pass its records on.
            self.flooder.flood(revived, None, self.reactor.seconds())
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
        reachable = self.store.reachable()
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
        ns.linked = True
        cp.send(syncRequest(ns))
        self.own.linkUp(cp, now)

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        now = self.reactor.seconds()
        ns = self.flooder.neighbours.get(cp.peerNodeID)
        if ns is not None:
            ns.sentUpTo = None
            ns.linked = False
            ns.lastLinked = now
        self.own.linkDown(cp.peerNodeID, now)

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
        now = self.reactor.seconds()
        self.flooder.prune(now, self.maxAge)
        count = self.store.ageOut(now, self.maxAge)
        if count:
            self.stats["aged_out"] += count
            self.log.info("topology: {count} records aged out", count=count)
            self._changed()

    def updateReceived(self, cp: ControlPoint, msg: TopologyUpdate) -> None:
        """
        Handle a TDU from a neighbour (from an end node: only its own
        C{end} record naming this node).
        """
        peer = cp.peerNodeID
        now = self.reactor.seconds()
        if not isNetworkPeer(cp):
            self._endNodeUpdate(cp, msg, now)
            return
        ns = self.flooder.neighbour(peer, now)
        # Node records first: they carry the keys that verify link records.
        decoded = sorted(self._decode(msg.records), key=lambda r: r.kind != NODE)
        batch = _Batch()
        for rec in decoded:
            self._consider(rec, peer, ns, msg.epoch, msg.frsn_from, now, batch)
        self._finish(cp, ns, batch, now)
        advance(ns, msg, bool(batch.limited))
        if batch.limited and msg.frsn_to:
            self._resyncLater(peer, ns)
        self._rewind(batch.unheld, now)
        if batch.ownSeen:
            self.own.markDirty((NODE, self.nodeID, ""))

    def _decode(self, raws: list[bytes]) -> list[TopologyRecord]:
        decoded = []
        for raw in raws:
            self.stats["received"] += 1
            try:
                decoded.append(TopologyRecord.decode(raw))
            except BadRecord as e:
                self.stats[e.counter] += 1
        return decoded

    def _endNodeUpdate(self, cp: ControlPoint, msg: TopologyUpdate, now: float) -> None:
        """
        An end node names this node as its server in an C{end} record it
        signed; anything else from a non-network node is ignored.
        """
        peer = cp.peerNodeID
        if cp.peerHello is None or cp.peerHello.role != "end":
            self.stats["not_network"] += len(msg.records)
            return
        batch = _Batch()
        for rec in self._decode(msg.records):
            if rec.kind != END or rec.owner != peer or rec.subject != self.nodeID:
                self.stats["not_network"] += 1
                continue
            self._consider(rec, peer, None, "", 0, now, batch)
        self._finish(cp, None, batch, now)

    def _consider(
        self,
        rec: TopologyRecord,
        source: str,
        ns: Neighbour | None,
        epoch: str,
        frsnFrom: int,
        now: float,
        batch: _Batch,
    ) -> None:
        """
        Apply one received record if it is new, genuine and within the
        limits; C{ns} is the sender's state when it is still to be charged.
        """
        store = self.store
        current = store.entries.get(rec.key)
        if current is not None and rec.rsn == current.record.rsn:
            if rec.raw == current.record.raw:
                self.stats["duplicate"] += 1
                return
            self.stats["inconsistent"] += 1
            if rec.owner != self.nodeID:
                return
        if ns is not None and not ns.bucket.take(now):
            batch.limited += 1
            batch.ownLimited += rec.owner == source
            return
        if current is not None and rec.rsn < current.record.rsn:
            self.stats["older"] += 1
            batch.newer.append(current.record)
            return
        if store.replayed(rec):
            self.stats["replayed"] += 1
            return
        try:
            store.verify(rec)
        except BadRecord as e:
            if e.counter != "unknown_owner_key":
                self.stats[e.counter] += 1
                return
            # Its owner's node record may be further on in the sync.
            self.stats["held"] += 1
            batch.unheld.extend(self.held.hold(Held(rec, source, epoch, frsnFrom)))
            return
        if rec.owner == self.nodeID:
            # Our own record, newer than (or as new as) ours: we lost our
            # RSN state.  Jump past it and re-issue.
            self.ownRSN.jumpPast(rec.rsn)
            self.stats["own_rsn_bumped"] += 1
            self.own.ownSeen(rec.key)
            batch.ownSeen = True
            return
        # Charged to the originator only once its signature is known good,
        # so a forger cannot spend an honest owner's allowance.
        if not self.owners.take(rec.owner, now):
            batch.limited += 1
            batch.ownLimited += rec.owner == source
            return
        if (
            current is None
            and rec.kind == LINK
            and store.linkCount(rec.owner) >= MAX_LINKS_PER_ORIGIN
        ):
            self.stats["origin_cap"] += 1
            return
        batch.applied.append(store.apply(rec, source, now))
        if rec.kind == NODE:
            for held in self.held.release(rec.owner):
                self._consider(
                    held.record, held.source, None, held.epoch, held.frsnFrom, now, batch
                )

    def _finish(self, cp: ControlPoint, ns: Neighbour | None, batch: _Batch, now: float) -> None:
        """
        After a message: the rate-limit verdict, the newer copies back, the
        budget, and the flood of what was applied.
        """
        if ns is not None:
            if batch.limited:
                self.flooder.rateLimited(cp, ns, batch.limited, batch.ownLimited, now)
            elif ns.inBurst and ns.bucket.tokens >= ns.bucket.burst / 2:
                ns.inBurst = False
        if batch.newer:
            self.flooder.send(cp, batch.newer, 0, 0)
        if not batch.applied:
            return
        self._enforceBudget({cp.peerNodeID} if not isNetworkPeer(cp) else set())
        applied = [e for e in batch.applied if self.store.entries.get(e.record.key) is e]
        self.stats["applied"] += len(applied)
        if applied:
            self.flooder.flood(applied, cp.peerNodeID, now)
            self._changed()

    def _rewind(self, unheld: list[Held], now: float) -> None:
        """
        Records pushed out of the hold un-applied: move their senders' FRSN
        back and ask them again (at most once per C{abuseWindow} each).
        """
        for held in unheld:
            self.stats["held_dropped"] += 1
            ns = self.flooder.neighbours.get(held.source)
            if ns is None:
                continue
            rewind(ns, held)
            cp = self.links.links.get(held.source)
            if cp is not None and now - ns.lastResync >= self.abuseWindow:
                ns.lastResync = now
                cp.send(syncRequest(ns))

    def _resyncLater(self, peer: str, ns: Neighbour) -> None:
        """
        Part of a range was rate-limited, so our FRSN from C{peer} stays
        behind: ask again once its bucket has refilled (one timer per
        neighbour), rather than only at the next link-up.
        """
        name = f"resync {peer}"
        if name in self._timers or not self.running:
            return

        def resync() -> None:
            del self._timers[name]
            cp = self.links.links.get(peer)
            if cp is not None:
                ns.lastResync = self.reactor.seconds()
                cp.send(syncRequest(ns))

        delay = max(1.0, ns.bucket.burst / max(ns.bucket.rate, 1e-3))
        self._timers[name] = self.reactor.callLater(delay, resync)

    def _withdrawDead(self) -> None:
        """
        Withdraw (tombstone, keep dormant) the records of every node that no
        other node announces a link up to any more and that is not linked
        to us: its last link went down, so it is gone from the network now,
        not when its records age out.
        """
        count = self.store.withdrawCutOff(self.links.links)
        if count:
            self.stats["withdrawn"] += count

    def _enforceBudget(self, keep: set[str]) -> None:
        """
        Over C{maxBytes} or C{maxNodes}: drop whole owners in
        L{RecordStore.evictionOrder} until back under 95% of the budget.
        """
        count = self.store.evict(self.maxBytes, self.maxNodes, keep)
        self.stats["db_full"] += count
        now = self.reactor.seconds()
        if count and now - self._lastFullLog >= self.abuseWindow:
            self._lastFullLog = now
            self.log.warn(
                "topology: database full; {count} records of unconnected or distant nodes dropped",
                count=count,
            )

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

    def suspectedLinks(self) -> list[tuple[str, str]]:
        """
        This node's links that are suspected of having failed (they stopped
        answering while something waits on them; see
        L{appnpy.link.yamux.Multiplexer.suspectTimeout}), as node-ID pairs.
        """
        return [(self.nodeID, peer) for peer, cp in self.links.links.items() if cp.mux.suspected]

    def selectRoute(self, origin: str, destination: str, cos: str | None = None) -> Route:
        """
        The least-weight route for C{cos} (see L{appnpy.net.topology.routes.selectRoute})
        that avoids this node's suspected links; over a suspected link only
        when there is no other route (it may answer yet; refusing would
        fail the session for certain).

        @raise NoRoute: when none qualifies.
        """
        table = self.classOfService(cos)
        avoid = self.suspectedLinks()
        if avoid:
            try:
                return selectRoute(self.store, table, origin, destination, avoid)
            except NoRoute:
                pass
        return selectRoute(self.store, table, origin, destination)

    def isReachable(self, nodeID: str) -> bool:
        reachable = self.store.reachable()
        return nodeID in reachable or self.store.servingNode(nodeID) in reachable

    def isAnnounced(self, nodeID: str) -> bool:
        server = self.store.servingNode(nodeID)
        return self.store.hasLinks(nodeID if server is None else server)

    def alternativeRoutes(
        self, origin: str, destination: str, cos: str | None, k: int
    ) -> list[Route]:
        """
        Up to C{k} routes for C{cos}, best first (see
        L{appnpy.net.topology.routes.alternativeRoutes}).
        """
        routes = alternativeRoutes(self.store, self.classOfService(cos), origin, destination, k)
        suspected = set(self.suspectedLinks())
        if not suspected:
            return routes

        def usesSuspected(route: Route) -> bool:
            hops = list(route.hops)
            return any((a, b) in suspected for a, b in zip(hops, hops[1:], strict=False))

        # Routes over a suspected link last (stable: best first otherwise).
        return sorted(routes, key=usesSuspected)

    def explainRoute(
        self, origin: str, destination: str, cos: str | None = None
    ) -> RouteExplanation:
        table = self.classOfService(cos)
        avoid = self.suspectedLinks()
        if avoid:
            explanation = explainRoute(self.store, table, origin, destination, avoid)
            if explanation.route is not None:
                return explanation
        return explainRoute(self.store, table, origin, destination)

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
            "bytes": self.store.bytes,
            "max_bytes": self.maxBytes,
            "held": len(self.held),
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
    C{node.topology}); end nodes keep none (they ask their network-node
    server for routes): for them this installs only the issuing of their
    C{end} record (L{appnpy.net.topology.endnode}) and returns C{None}.

    @param cosTables: classes of service added to (or replacing) the
        built-in ones, by name.
    @param stateDir: where the own RSN is persisted (C{topology.json}).
    @param options: tuning, see L{TopologyDatabase}.
    """
    if host.role != "network":
        refresh = options.get("refreshInterval", 1800.0)
        end = EndRecord(host.reactor, host.identity, host.name, host, stateDir, refresh)
        host.addLinkObserver(end)
        if isinstance(host, MultiService):
            end.setServiceParent(host)  # type: ignore[no-untyped-call]  # unannotated Twisted method
        else:
            end.startService()
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
