"""
What every part of the directory shares: its collaborators and tunables, its
own resources and their records, the search table (one entry per search ID
seen), admission control, and the next hop toward a node.

The parts (L{registration}, L{locate}, L{search}, L{routeproxy}) each add
one job to this base; L{service.Directory} composes them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cryptography import x509
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import Message
from appnpy.errors import ResourceNotFound
from appnpy.interfaces import ISessionPlugin
from appnpy.link.identity import Identity
from appnpy.link.ratelimit import TokenBucket
from appnpy.net.directory.cache import CacheEntry, LocateCache
from appnpy.net.directory.messages import (
    MAX_RECORDS_PER_ANSWER,
    LocateReply,
    RouteReply,
    RouteRequest,
    SearchReply,
    newSearchID,
)
from appnpy.net.directory.records import NameRules, ResourceRecord, validResourceName
from appnpy.net.directory.registry import Registry
from appnpy.net.topology._interfaces import IRouteQueries


@attrs.define(eq=False)
class SearchEntry:
    """
    One search ID this node has seen: whom to answer (C{parent}, None when
    this node asked), whom it is still waiting for, and, at the requester,
    what it collected.
    """

    searchID: str
    kind: str  # "locate" or "search"
    parent: ControlPoint | None
    pending: set[str]
    expires: float
    name: str = ""
    maxResults: int = 1
    collected: list[Any] = attrs.field(factory=list)
    route: list[str] = attrs.field(factory=list)
    waiter: Deferred[Any] | None = None
    timer: IDelayedCall | None = None
    interrupted: bool = False
    done: bool = False
    sentResults: int = 0
    sentBytes: int = 0
    heldRecords: list[bytes] = attrs.field(factory=list)
    #: Locate: the owners whose records were taken for this search (each
    #: owner's record is verified and passed on once), and how many
    #: record-bearing replies each neighbour sent (capped).
    owners: set[str] = attrs.field(factory=set)
    repliesFrom: Counter[str] = attrs.field(factory=Counter)
    #: Search, at the requester: told of each batch of results as it arrives.
    onResults: Callable[[list[Any]], object] | None = None


@attrs.define(eq=False)
class PendingRoute:
    """
    A route request an end node sent its server, until the answer.
    """

    deferred: Deferred[RouteReply]
    request: RouteRequest
    timer: IDelayedCall | None


class DirectoryBase(Service):
    """
    The shared state and plumbing of L{service.Directory} (see there).

    Tunables (seconds unless said): C{recordTTL} of this node's records;
    C{cacheFresh}/C{cacheTTL} of a cached answer, C{negativeTTL} of a cached
    miss, C{cacheSize} entries each; C{locateTimeout}, C{searchTimeout}, and
    C{requestTimeout} for what an end node asks its server; C{maxHops} of a
    broadcast; C{neighbourRate}/C{neighbourBurst} and
    C{overallRate}/C{overallBurst} (requests per second) admit requests;
    C{searchTableSize} entries kept C{searchTableTTL}; C{tickInterval} of
    refresh and expiry (default a third of C{recordTTL});
    C{replyRate}/C{replyBurst} (records per second) of locate answers a
    neighbour may send; C{registerRate}/C{registerBurst} (registrations per
    second) a neighbour may send and an origin may make.

    C{caCertificate} (network trust mode) binds names to keys: see
    L{appnpy.net.directory.records.NameRules}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        identity: Identity,
        cpName: str,
        role: str,
        links: ILinkRegistry,
        topology: IRouteQueries | None,
        plugins: Mapping[str, ISessionPlugin],
        cds: bool = False,
        cdsNode: str | None = None,
        *,
        recordTTL: int = 300,
        cacheFresh: float = 60.0,
        cacheTTL: float = 600.0,
        negativeTTL: float = 10.0,
        locateTimeout: float = 5.0,
        searchTimeout: float = 3.0,
        requestTimeout: float = 10.0,
        maxHops: int = 16,
        neighbourRate: float = 20.0,
        neighbourBurst: float = 40.0,
        overallRate: float = 200.0,
        overallBurst: float = 400.0,
        searchTableSize: int = 4096,
        searchTableTTL: float = 30.0,
        cacheSize: int = 4096,
        tickInterval: float | None = None,
        replyRate: float = 100.0,
        replyBurst: float = 400.0,
        registerRate: float = 2.0,
        registerBurst: float = 20.0,
        caCertificate: x509.Certificate | None = None,
    ) -> None:
        if not ILinkRegistry.providedBy(links):
            raise TypeError(f"{links!r} does not provide ILinkRegistry")
        if topology is not None and not IRouteQueries.providedBy(topology):
            raise TypeError(f"{topology!r} does not provide IRouteQueries")
        self.reactor = reactor
        self.identity = identity
        self.nodeID: str = identity.nodeID
        self.cpName = cpName
        self.role = role
        self.links = links
        self.topology = topology
        self.plugins = plugins
        self.isCDS = cds
        self.cdsNode = None if cds else cdsNode
        self.recordTTL = recordTTL
        self.locateTimeout = locateTimeout
        self.searchTimeout = searchTimeout
        self.requestTimeout = requestTimeout
        self.maxHops = maxHops
        self.neighbourRate = neighbourRate
        self.neighbourBurst = neighbourBurst
        self.searchTableSize = searchTableSize
        self.searchTableTTL = searchTableTTL
        self.replyRate = replyRate
        self.replyBurst = replyBurst
        self.registerRate = registerRate
        self.registerBurst = registerBurst
        self.names = NameRules(caCertificate)
        #: Records are refreshed (re-registered, re-pushed) three times per TTL.
        self.tickInterval = tickInterval or max(1.0, recordTTL / 3)
        self.serverNodeID: str | None = None
        self.stats: Counter[str] = Counter()
        self.cache = LocateCache(cacheSize, cacheFresh, cacheTTL, negativeTTL)
        self.registry = Registry(self.stats)
        self._registered: set[str] = set()
        self._own: dict[str, ResourceRecord] = {}
        self._seq = 0
        self._searches: OrderedDict[str, SearchEntry] = OrderedDict()
        self._attached: dict[str, ControlPoint] = {}
        self._routes: dict[str, PendingRoute] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._replyBuckets: dict[str, TokenBucket] = {}
        self._registerBuckets: dict[str, TokenBucket] = {}
        #: Per origin, the newest registration seq accepted (no replays).
        self._registrationSeqs: dict[str, int] = {}
        self._refusedOwn: set[str] = set()
        self._overall = TokenBucket(overallRate, overallBurst, self.reactor.seconds())
        self._lastLimited = -1e18
        self._loop: LoopingCall | None = None
        self._pushScheduled: IDelayedCall | None = None

    # -- own resources ---------------------------------------------------------

    def localResources(self) -> list[str]:
        """
        The resources this node offers: C{node:<CP name>} (so any node can
        find another by name, end nodes included), registered names, its
        plugins' C{resources()}, and C{echo:<CP name>} with the echo plugin.
        In network trust mode only names under this node's certified CP name
        (others are left out, logged once each).
        """
        names = set(self._registered)
        names.add(f"node:{self.cpName}")
        for plugin in self.plugins.values():
            try:
                offered = list(plugin.resources())
            except Exception:
                self.log.failure("plugin {plugin} failed to list its resources", plugin=plugin.name)
                continue
            names.update(n for n in offered if validResourceName(n))
        if "echo" in self.plugins:
            names.add(f"echo:{self.cpName}")
        if self.names.bound:
            refused = {n for n in names if not self.names.mayOffer(n, self.cpName)}
            for name in sorted(refused - self._refusedOwn):
                self.log.warn(
                    "not offering {name}: in network trust mode this node offers only "
                    "names under its CP name ({cpName} or <kind>:{cpName}/...)",
                    name=name,
                    cpName=self.cpName,
                )
            self._refusedOwn |= refused
            names -= refused
        return sorted(names)

    def _ownRecord(self, name: str) -> ResourceRecord:
        record = self._own.get(name)
        if record is None:
            self._nextSeq()
            record = ResourceRecord.create(
                self.identity, name, self._seq, self.recordTTL, withCertificate=self.names.bound
            )
            self._own[name] = record
        return record

    def _ownRecords(self) -> list[ResourceRecord]:
        return [self._ownRecord(n) for n in self.localResources()]

    def _authoritative(self, name: str) -> list[ResourceRecord]:
        """
        What this node answers for C{name} from its own knowledge: its own
        record, and those registered here.
        """
        out = []
        if name in self.localResources():
            out.append(self._ownRecord(name))
        out.extend(self.registry.current(name, self.reactor.seconds()))
        return out[:MAX_RECORDS_PER_ANSWER]

    def _cached(self, name: str) -> tuple[CacheEntry | None, bool]:
        """
        (cache entry or None, is it fresh?); raises for a cached miss.
        """
        try:
            return self.cache.lookup(name, self.reactor.seconds())
        except ResourceNotFound:
            self.stats["found-negative-cache"] += 1
            raise

    # -- links ----------------------------------------------------------------------

    def _peerRole(self, cp: ControlPoint) -> str:
        return cp.peerHello.role if cp.peerHello is not None else ""

    def _networkNeighbours(self) -> list[ControlPoint]:
        return [cp for cp in self.links.links.values() if self._peerRole(cp) == "network"]

    def _serverCP(self) -> ControlPoint | None:
        if self.serverNodeID is None:
            return None
        cp: ControlPoint | None = self.links.links.get(self.serverNodeID)
        return cp

    # -- sending and admission ------------------------------------------------------

    def _send(self, cp: ControlPoint, msg: Message) -> None:
        self.stats["messages-sent"] += 1
        cp.send(msg)

    def _nextSeq(self) -> int:
        """
        A sequence number greater than every one this node used before (and,
        as it follows the clock in ms, than those of its previous runs).
        """
        self._seq = max(self._seq + 1, int(self.reactor.seconds() * 1000))
        return self._seq

    def _bucket(
        self, buckets: dict[str, TokenBucket], key: str, rate: float, burst: float
    ) -> TokenBucket:
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.searchTableSize:
                # Bounded: forget the oldest (a fresh bucket starts full,
                # which only the keys seen least recently get).
                del buckets[next(iter(buckets))]
            bucket = buckets[key] = TokenBucket(rate, burst, self.reactor.seconds())
        return bucket

    def _admit(self, cp: ControlPoint) -> bool:
        """
        Rate limit requests (locate, search, route) a neighbour sends.
        """
        now = self.reactor.seconds()
        bucket = self._buckets.get(cp.peerNodeID)
        if bucket is None:
            bucket = self._buckets[cp.peerNodeID] = TokenBucket(
                self.neighbourRate, self.neighbourBurst, now
            )
        if bucket.take(now) and self._overall.take(now):
            return True
        self.stats["requests-limited"] += 1
        now = self.reactor.seconds()
        if now - self._lastLimited > 1.0:
            # One line per burst, not per dropped request.
            self.log.warn(
                "directory request storm: limiting requests from {peer} ({name}); "
                "{count} limited so far",
                peer=cp.peerNodeID,
                name=cp.peerName,
                count=self.stats["requests-limited"],
            )
        self._lastLimited = now
        return False

    def _nextHop(self, target: str) -> ControlPoint | None:
        """
        The neighbour toward C{target}: the target itself if adjacent, else
        the second node of the topology's route.
        """
        links = self.links.links
        if target in links:
            cp: ControlPoint = links[target]
            return cp
        topology = self.topology
        if topology is None:
            return None
        try:
            hops = topology.selectRoute(self.nodeID, target, "control").hops
        except Exception:
            return None
        if len(hops) < 2:
            return None
        nextHop: ControlPoint | None = links.get(hops[1])
        return nextHop

    def _directoryNodeFor(self, owner: str) -> str:
        """
        The node that answers for C{owner}'s resources: itself if it is a
        network node, else its network-node server.
        """
        topology = self.topology
        if topology is None or owner in self.links.links:
            return owner
        try:
            if owner in topology.networkNodes():
                return owner
            server = topology.servingNode(owner)
        except Exception:
            return owner
        return str(server) if server else owner

    # -- the search table -------------------------------------------------------------

    def _remember(self, entry: SearchEntry) -> None:
        self._searches[entry.searchID] = entry
        while len(self._searches) > self.searchTableSize:
            _, old = self._searches.popitem(last=False)
            self.stats["search-table-evictions"] += 1
            self._finishOrigin(old)

    @property
    def centralDirectory(self) -> str | None:
        """
        The node ID of the CDS this node registers with, its own when it is
        the CDS, or C{None}.
        """
        return self.nodeID if self.isCDS else self.cdsNode

    def _newOrigin(
        self, kind: str, pending: set[str], timeout: float, name: str = "", maxResults: int = 1
    ) -> SearchEntry:
        if not self.running:
            raise ResourceNotFound(f"{name or 'search'} (this node is stopping)")
        now = self.reactor.seconds()
        if kind == "locate":
            # Every owner found is kept: several are a conflict to report.
            maxResults = MAX_RECORDS_PER_ANSWER
        entry = SearchEntry(
            newSearchID(),
            kind,
            None,
            pending,
            now + max(timeout, self.searchTableTTL),
            name=name,
            maxResults=maxResults,
            waiter=Deferred(),
        )
        entry.timer = self.reactor.callLater(timeout, self._timedOut, entry)
        self._remember(entry)
        return entry

    def _timedOut(self, entry: SearchEntry) -> None:
        entry.timer = None
        self.stats["search-timeouts"] += 1
        self._finishOrigin(entry)

    def _finishOrigin(self, entry: SearchEntry) -> None:
        """
        At the requester: hand over what was collected (once).
        """
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        waiter, entry.waiter = entry.waiter, None
        if waiter is not None:
            waiter.callback(entry.collected[: entry.maxResults])

    def _complete(self, entry: SearchEntry) -> None:
        """
        Everyone asked has answered: tell the parent, or finish at the origin.
        """
        if entry.done:
            return
        entry.done = True
        if entry.parent is None:
            self._finishOrigin(entry)
        elif entry.kind == "locate":
            held, entry.heldRecords = entry.heldRecords, []
            self._send(entry.parent, LocateReply(search_id=entry.searchID, records=held))
        else:
            self._send(entry.parent, SearchReply(search_id=entry.searchID))

    def _forwardTargets(
        self, cp: ControlPoint | None, origin: str, hopsLeft: int
    ) -> list[ControlPoint]:
        if hopsLeft <= 1:
            return []
        exclude = {cp.peerNodeID if cp else "", origin}
        return [n for n in self._networkNeighbours() if n.peerNodeID not in exclude]
