"""
Directory services: which node owns a named resource, and how to ask.

A resource is named C{<kind>:<name>} (C{files:music}, C{chat:lobby},
C{rpc:calc}, and C{echo:<CP name>} on every node that runs the echo plugin).
Its owner publishes an owner-signed B{resource record}:

    record = CBOR{name, owner, public_key, seq, ttl, signature}

where C{signature} is the owner's Ed25519 signature over the deterministic
CBOR of the other five fields and C{owner} must be the node ID of
C{public_key}: a record can only ever name its signer as owner, so nobody can
squat on another node's resource.  Every node that receives a record checks
it, and the node that asked (the B{requester}) checks it again, so a relaying
or answering node cannot forge an answer.  A record lives C{ttl} seconds
after it was received unless its owner refreshes it.

A B{locate} at a network node goes (APPN directory services):

  1. local: this node's own resources, and those its end nodes (and, at a
     central directory server, every node) registered here;
  2. cache: a recent answer (fresh for C{cacheFresh} seconds) is used as is;
     a misses cache (C{negativeTTL}) answers "not found" at once;
  3. directed search: an older cached answer is verified by a search sent
     hop by hop to the cached owner (or its network-node server);
  4. the central directory server (CDS), if one is configured, is asked
     the same way;
  5. broadcast search: C{LocateRequest} floods the network nodes with a
     random 128-bit search ID (each node handles an ID once: others get an
     empty final answer at once) and a hop budget; the owner, or the
     network-node server of an owning end node, answers along the reverse
     path.  Positive answers travel back at once; every node sends one final
     answer to its parent when all the neighbours it asked have answered, so
     the requester learns of a miss without waiting for a timeout.

An B{end node} keeps one network-node server (NNS): the first network node
it links to; others are candidates, used only when the server's link goes
away.  It registers its resources with the server (C{RegisterResources}),
sends it its locates (the server runs the whole search and adds the route
from the end node, computed by its topology database) and route requests,
and relays nothing.

Keyword search for plugins (C{search(kind, keywords, maxResults)}) floods
C{SearchRequest} the same way; each node asks its plugins that offer
resources of C{kind} and have a C{search} method:

    plugin.search(keywords: list[str]) -> list[dict]

returning plain CBOR data (text-keyed maps of text, bytes, numbers, lists).
Each result gets the answering node's ID under C{"node"}.  Results stream
back in C{SearchReply} messages, capped in count and bytes at every node.

Every request a neighbour can push on us is rate limited (per neighbour and
overall, token buckets) and counted; tables are bounded (LRU + TTL).
"""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    blob,
    decodeCBOR,
    encodeBody,
    integer,
    listOf,
    message,
    nodeID,
    plainData,
    text,
    token,
)
from appnpy.errors import NoRoute, ProtocolError, Reason, ResourceNotFound
from appnpy.link.identity import nodeIDFromSPKI, verifySignature
from appnpy.net.ratelimit import TokenBucket

__all__ = [
    "Directory",
    "LocateReply",
    "LocateRequest",
    "LocateResult",
    "RegisterResources",
    "ResourceRecord",
    "RouteReply",
    "RouteRequest",
    "SearchReply",
    "SearchRequest",
    "installDirectory",
    "validResourceName",
]

#: C{<kind>:<name>}: a plugin-style token, a colon, then 1..200 printable
#: characters.
_RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}:[^\x00-\x1f\x7f]{1,200}\Z")
_SEARCH_ID = re.compile(r"[0-9a-f]{32}\Z")
#: Largest encoded resource record.
MAX_RECORD_SIZE = 512
#: Longest record lifetime a node accepts (seconds).
MAX_TTL = 3600
#: Most records one message carries.
MAX_RECORDS_PER_MESSAGE = 256
#: Most records a locate answer carries.
MAX_RECORDS_PER_ANSWER = 16
#: Most records registered through one node (an end node, or a network node
#: pushing to a CDS), and in the whole registry.
MAX_RECORDS_PER_REGISTRANT = 1024
MAX_REGISTRY = 65536
#: Keyword search caps: results a request may ask for, results and encoded
#: bytes one node forwards for one search, size of one result.
MAX_SEARCH_RESULTS = 1000
MAX_SEARCH_BYTES = 256 * 1024
MAX_RESULT_SIZE = 4096
_REPLY_CHUNK_BYTES = 16 * 1024
_REPLY_CHUNK_ITEMS = 64


def validResourceName(name: object) -> bool:
    return isinstance(name, str) and _RESOURCE_NAME.match(name) is not None


def _optionalNodeID(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value != "":
        nodeID(inst, field, value)


def _boolean(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ProtocolError(f"field {field.name!r}: must be a boolean")


def _optionalReason(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value != "":
        token(inst, field, value)


searchID = text(32, _SEARCH_ID)
resourceName = text(240, _RESOURCE_NAME)


def newSearchID() -> str:
    return os.urandom(16).hex()


# -- resource records ----------------------------------------------------------


class InvalidRecord(ProtocolError):
    """
    A resource record is malformed or its signature does not verify.
    """


@attrs.frozen
class ResourceRecord:
    """
    An owner-signed statement "node C{owner} offers resource C{name}".
    """

    name: str
    owner: str
    public_key: bytes
    seq: int
    ttl: int
    signature: bytes = b""

    def signedBytes(self) -> bytes:
        return encodeBody(
            {
                "name": self.name,
                "owner": self.owner,
                "public_key": self.public_key,
                "seq": self.seq,
                "ttl": self.ttl,
            }
        )

    def toBlob(self) -> bytes:
        return encodeBody(attrs.asdict(self))

    @classmethod
    def create(cls, identity: Any, name: str, seq: int, ttl: int) -> ResourceRecord:
        unsigned = cls(name, identity.nodeID, identity.publicKeyBytes, seq, ttl)
        return attrs.evolve(unsigned, signature=identity.sign(unsigned.signedBytes()))

    @classmethod
    def fromBlob(cls, raw: bytes) -> ResourceRecord:
        """
        Decode and check a record: strict CBOR, exact fields, owner bound to
        the key, signature valid.

        @raise InvalidRecord: saying why.
        """
        if not isinstance(raw, bytes) or len(raw) > MAX_RECORD_SIZE:
            raise InvalidRecord("not bytes, or too long")
        try:
            value = decodeCBOR(raw, 2)
        except ProtocolError as e:
            raise InvalidRecord(str(e)) from None
        fields = {"name", "owner", "public_key", "seq", "ttl", "signature"}
        if not isinstance(value, dict) or set(value) != fields:
            raise InvalidRecord("wrong fields")
        if not validResourceName(value["name"]):
            raise InvalidRecord("bad resource name")
        if not isinstance(value["owner"], str) or not isinstance(value["public_key"], bytes):
            raise InvalidRecord("bad owner or key")
        if not isinstance(value["signature"], bytes):
            raise InvalidRecord("bad signature field")
        for key in ("seq", "ttl"):
            if type(value[key]) is not int or not 0 <= value[key] < 2**63:
                raise InvalidRecord(f"bad {key}")
        if value["ttl"] < 1:
            raise InvalidRecord("bad ttl")
        record = cls(**value)
        if record.toBlob() != raw:
            raise InvalidRecord("not in deterministic CBOR encoding")
        if nodeIDFromSPKI(record.public_key) != record.owner:
            raise InvalidRecord("owner is not the node ID of the record's key")
        if not verifySignature(record.public_key, record.signature, record.signedBytes()):
            raise InvalidRecord("signature does not verify")
        return record

    def asDict(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "seq": self.seq, "ttl": self.ttl}


@attrs.frozen
class LocateResult:
    """
    The answer to a locate: who owns C{name}, with its signed record and, at
    an end node, the route its network-node server chose (else C{None}).
    """

    name: str
    owner: str
    record: dict[str, Any]
    route: list[str] | None = None


# -- control messages ----------------------------------------------------------


@message("RegisterResources", capability="directory")
@attrs.frozen
class RegisterResources(Message):
    """
    End node -> its network-node server, or network node -> the CDS (then
    forwarded hop by hop toward C{target}): the sender's current records,
    replacing everything registered before through C{origin}.
    """

    records: list[bytes] = attrs.field(
        validator=listOf(blob(MAX_RECORD_SIZE), MAX_RECORDS_PER_MESSAGE)
    )
    origin: str = attrs.field(default="", validator=_optionalNodeID)
    target: str = attrs.field(default="", validator=_optionalNodeID)


@message("LocateRequest", capability="directory")
@attrs.frozen
class LocateRequest(Message):
    """
    Find the owner of C{name}.  C{target} empty: broadcast search (or, sent by
    an end node to its server, "run the whole locate for me"); else a
    directed search forwarded hop by hop to C{target}.
    """

    search_id: str = attrs.field(validator=searchID)
    origin: str = attrs.field(validator=nodeID)
    name: str = attrs.field(validator=resourceName)
    hops_left: int = attrs.field(validator=integer(0, 64))
    target: str = attrs.field(default="", validator=_optionalNodeID)
    cos: str = attrs.field(default="interactive", validator=token)


@message("LocateReply", capability="directory")
@attrs.frozen
class LocateReply(Message):
    """
    Records found for a search, travelling the reverse path.  C{final}: the
    sender has nothing more for this search.  C{route}: for an end node's
    locate, the route from it to the owner.  C{reason}: why a final answer is
    empty when that is not simply "not found" (C{busy}, C{no-route}).
    """

    search_id: str = attrs.field(validator=searchID)
    records: list[bytes] = attrs.field(
        factory=list, validator=listOf(blob(MAX_RECORD_SIZE), MAX_RECORDS_PER_ANSWER)
    )
    final: bool = attrs.field(default=True, validator=_boolean)
    route: list[str] = attrs.field(factory=list, validator=listOf(nodeID, MAX_ROUTE_NODES))
    reason: str = attrs.field(default="", validator=_optionalReason)


@message("SearchRequest", capability="directory")
@attrs.frozen
class SearchRequest(Message):
    """
    A plugin keyword search, flooded like a broadcast locate.
    """

    search_id: str = attrs.field(validator=searchID)
    origin: str = attrs.field(validator=nodeID)
    kind: str = attrs.field(validator=token)
    keywords: list[str] = attrs.field(validator=listOf(text(64), 16))
    hops_left: int = attrs.field(validator=integer(0, 64))
    max_results: int = attrs.field(default=100, validator=integer(1, MAX_SEARCH_RESULTS))


@message("SearchReply", capability="directory")
@attrs.frozen
class SearchReply(Message):
    """
    Some results of a keyword search; C{final} as for L{LocateReply}.
    """

    search_id: str = attrs.field(validator=searchID)
    results: list[dict[str, Any]] = attrs.field(
        factory=list, validator=listOf(plainData, _REPLY_CHUNK_ITEMS)
    )
    final: bool = attrs.field(default=True, validator=_boolean)


@message("RouteRequest", capability="directory")
@attrs.frozen
class RouteRequest(Message):
    """
    End node -> its server: the route from the end node to C{destination}.
    """

    request_id: str = attrs.field(validator=searchID)
    destination: str = attrs.field(validator=nodeID)
    cos: str = attrs.field(default="interactive", validator=token)


@message("RouteReply", capability="directory")
@attrs.frozen
class RouteReply(Message):
    """
    The route (node IDs, requester first) or the reason there is none.
    """

    request_id: str = attrs.field(validator=searchID)
    route: list[str] = attrs.field(factory=list, validator=listOf(nodeID, MAX_ROUTE_NODES))
    reason: str = attrs.field(default="", validator=_optionalReason)
    detail: str = attrs.field(default="", validator=text(512))


# -- bookkeeping -----------------------------------------------------------------


@attrs.define
class _Registration:
    record: ResourceRecord
    via: str
    expires: float


@attrs.define
class _CacheEntry:
    records: list[ResourceRecord]
    route: list[str] | None
    fresh: float
    expires: float


@attrs.define(eq=False)
class _Search:
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
    timer: Any = None
    interrupted: bool = False
    done: bool = False
    sentResults: int = 0
    sentBytes: int = 0
    heldRecords: list[bytes] = attrs.field(factory=list)


@attrs.define(eq=False)
class _PendingRoute:
    deferred: Deferred[list[str]]
    request: RouteRequest
    timer: Any


# -- the directory ------------------------------------------------------------------


class Directory(Service):
    """
    A node's directory services (see the module docstring).

    @ivar serverNodeID: at an end node, the node ID of the current
        network-node server (C{None} while it has none).
    @ivar stats: counters, named after VTAM's directory statistics where
        they match (found-local, found-cache, found-directed, found-cds,
        found-broadcast, not-found) plus the fault counters.
    """

    log = Logger()

    def __init__(
        self,
        node: Any,
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
    ) -> None:
        self.node = node
        self.reactor = node.reactor
        self.isCDS = cds
        self.cdsNode = None if cds else cdsNode
        self.recordTTL = recordTTL
        self.cacheFresh = cacheFresh
        self.cacheTTL = cacheTTL
        self.negativeTTL = negativeTTL
        self.locateTimeout = locateTimeout
        self.searchTimeout = searchTimeout
        self.requestTimeout = requestTimeout
        self.maxHops = maxHops
        self.neighbourRate = neighbourRate
        self.neighbourBurst = neighbourBurst
        self.searchTableSize = searchTableSize
        self.searchTableTTL = searchTableTTL
        self.cacheSize = cacheSize
        #: Records are refreshed (re-registered, re-pushed) three times per TTL.
        self.tickInterval = tickInterval or max(1.0, recordTTL / 3)
        self.serverNodeID: str | None = None
        self.stats: Counter[str] = Counter()
        self._registered: set[str] = set()
        self._own: dict[str, ResourceRecord] = {}
        self._seq = 0
        self._registry: dict[str, dict[str, _Registration]] = {}
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._searches: OrderedDict[str, _Search] = OrderedDict()
        self._attached: dict[str, ControlPoint] = {}
        self._routes: dict[str, _PendingRoute] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._overall = TokenBucket(overallRate, overallBurst, self.reactor.seconds())
        self._lastLimited = -1e18
        self._limitedInBurst = 0
        self._loop: LoopingCall | None = None
        self._pushScheduled: Any = None

    @property
    def role(self) -> str:
        return str(self.node.role)

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.tickInterval, now=False)
        for cp in list(self.node.links.values()):
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
        for name in list(self._registry):
            owners = self._registry[name]
            for owner in [o for o, r in owners.items() if r.expires <= now]:
                del owners[owner]
                self.stats["records-expired"] += 1
            if not owners:
                del self._registry[name]
        for name in [n for n, e in self._cache.items() if e.expires <= now]:
            del self._cache[name]
        for name in [n for n, t in self._negative.items() if t <= now]:
            del self._negative[name]
        for sid in [s for s, e in self._searches.items() if e.expires <= now]:
            self._finishOrigin(self._searches.pop(sid))
        self._refreshRegistrations()

    # -- own resources ---------------------------------------------------------

    def register(self, name: str) -> None:
        """
        Offer C{name} from this node (besides what its plugins offer).
        """
        if not validResourceName(name):
            raise ValueError(f"resource names are <kind>:<name>, not {name!r}")
        if name not in self._registered:
            self._registered.add(name)
            self._refreshRegistrations()

    def unregister(self, name: str) -> None:
        if name in self._registered:
            self._registered.discard(name)
            self._own.pop(name, None)
            self._refreshRegistrations()

    def localResources(self) -> list[str]:
        """
        The resources this node offers: C{node:<CP name>} (so any node can
        find another by name, end nodes included), registered names, its
        plugins' C{resources()}, and C{echo:<CP name>} with the echo plugin.
        """
        names = set(self._registered)
        names.add(f"node:{self.node.name}")
        for plugin in self.node.plugins.values():
            try:
                offered = list(plugin.resources())
            except Exception:
                self.log.failure("plugin {plugin} failed to list its resources", plugin=plugin.name)
                continue
            names.update(n for n in offered if validResourceName(n))
        if "echo" in self.node.plugins:
            names.add(f"echo:{self.node.name}")
        return sorted(names)

    def _ownRecord(self, name: str) -> ResourceRecord:
        record = self._own.get(name)
        if record is None:
            self._seq = max(self._seq + 1, int(self.reactor.seconds() * 1000))
            record = ResourceRecord.create(self.node.identity, name, self._seq, self.recordTTL)
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
        now = self.reactor.seconds()
        for reg in self._registry.get(name, {}).values():
            if reg.expires > now:
                out.append(reg.record)
        return out[:MAX_RECORDS_PER_ANSWER]

    # -- registration ------------------------------------------------------------

    def _refreshRegistrations(self) -> None:
        if self.role == "end":
            server = self._serverCP()
            if server is not None:
                self._send(
                    server,
                    RegisterResources(
                        records=[r.toBlob() for r in self._ownRecords()][:MAX_RECORDS_PER_MESSAGE]
                    ),
                )
        else:
            self._pushToCDS()

    def _schedulePush(self) -> None:
        if self.cdsNode is None or (self._pushScheduled and self._pushScheduled.active()):
            return
        self._pushScheduled = self.reactor.callLater(0, self._pushToCDS)

    def _pushToCDS(self) -> None:
        """
        Central resource registration: send this node's records and its end
        nodes' to the CDS, hop by hop.
        """
        if self.cdsNode is None or self.role != "network" or not self.running:
            return
        blobs = [r.toBlob() for r in self._ownRecords()]
        for owners in self._registry.values():
            blobs.extend(
                reg.record.toBlob() for reg in owners.values() if reg.via in self._attached
            )
        msg = RegisterResources(
            records=blobs[:MAX_RECORDS_PER_MESSAGE], origin=self.node.nodeID, target=self.cdsNode
        )
        nextHop = self._nextHop(self.cdsNode)
        if nextHop is None:
            self.stats["cds-unreachable"] += 1
            return
        self._send(nextHop, msg)

    def _registerReceived(self, cp: ControlPoint, msg: RegisterResources) -> None:
        peerRole = self._peerRole(cp)
        if msg.target and msg.target != self.node.nodeID:
            nextHop = self._nextHop(msg.target) if self.role == "network" else None
            if nextHop is None or nextHop is cp:
                self.stats["registrations-dropped"] += 1
            else:
                self._send(nextHop, msg)
            return
        if self.role != "network":
            self.stats["registrations-dropped"] += 1
            return
        fromEndNode = peerRole == "end"
        origin = msg.origin or cp.peerNodeID
        if fromEndNode and origin != cp.peerNodeID:
            self.stats["registrations-dropped"] += 1
            return
        if not fromEndNode and not self.isCDS:
            self.stats["registrations-dropped"] += 1
            return
        records = []
        for raw in msg.records:
            try:
                record = ResourceRecord.fromBlob(raw)
            except InvalidRecord:
                self.stats["forged-records"] += 1
                continue
            if fromEndNode and record.owner != cp.peerNodeID:
                # Squatting: an end node registers only what it signed.
                self.stats["squatting-refused"] += 1
                continue
            records.append(record)
        self._replaceRegistrations(origin, records[:MAX_RECORDS_PER_REGISTRANT])
        if fromEndNode:
            new = cp.peerNodeID not in self._attached
            self._attached[cp.peerNodeID] = cp
            if new:
                self.log.info(
                    "end node {peer} ({name}) registered {count} resources",
                    peer=cp.peerNodeID,
                    name=cp.peerName,
                    count=len(records),
                )
                self._attachedChanged()
            self._schedulePush()

    def _replaceRegistrations(self, via: str, records: list[ResourceRecord]) -> None:
        now = self.reactor.seconds()
        for name in list(self._registry):
            owners = self._registry[name]
            for owner in [o for o, r in owners.items() if r.via == via]:
                del owners[owner]
            if not owners:
                del self._registry[name]
        total = sum(len(o) for o in self._registry.values())
        for record in records:
            if total >= MAX_REGISTRY:
                self.stats["registry-full"] += 1
                break
            owners = self._registry.setdefault(record.name, {})
            existing = owners.get(record.owner)
            if existing is not None and existing.record.seq > record.seq:
                continue
            owners[record.owner] = _Registration(record, via, now + min(record.ttl, MAX_TTL))
            total += 1
            # A registration supersedes what we had learnt about the name.
            self._negative.pop(record.name, None)

    def _attachedChanged(self) -> None:
        topology = self.node.topology
        if topology is not None:
            topology.setAttachedEndNodes(sorted(self._attached))

    # -- links ----------------------------------------------------------------------

    def _peerRole(self, cp: ControlPoint) -> str:
        return cp.peerHello.role if cp.peerHello is not None else ""

    def _networkNeighbours(self) -> list[ControlPoint]:
        return [cp for cp in self.node.links.values() if self._peerRole(cp) == "network"]

    def _serverCP(self) -> ControlPoint | None:
        if self.serverNodeID is None:
            return None
        cp: ControlPoint | None = self.node.links.get(self.serverNodeID)
        return cp

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

    # -- sending and admission ------------------------------------------------------

    def _send(self, cp: ControlPoint, msg: Message) -> None:
        self.stats["messages-sent"] += 1
        cp.send(msg)

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
        links = self.node.links
        if target in links:
            cp: ControlPoint = links[target]
            return cp
        topology = self.node.topology
        if topology is None:
            return None
        try:
            hops = topology.selectRoute(self.node.nodeID, target, "control").hops
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
        topology = self.node.topology
        if topology is None or owner in self.node.links:
            return owner
        try:
            if owner in topology.networkNodes():
                return owner
            server = topology.servingNode(owner)
        except Exception:
            return owner
        return str(server) if server else owner

    # -- the search table -------------------------------------------------------------

    def _remember(self, entry: _Search) -> None:
        self._searches[entry.searchID] = entry
        while len(self._searches) > self.searchTableSize:
            _, old = self._searches.popitem(last=False)
            self.stats["search-table-evictions"] += 1
            self._finishOrigin(old)

    def _newOrigin(
        self, kind: str, pending: set[str], timeout: float, name: str = "", maxResults: int = 1
    ) -> _Search:
        if not self.running:
            raise ResourceNotFound(f"{name or 'search'} (this node is stopping)")
        now = self.reactor.seconds()
        entry = _Search(
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

    def _timedOut(self, entry: _Search) -> None:
        entry.timer = None
        self.stats["search-timeouts"] += 1
        self._finishOrigin(entry)

    def _finishOrigin(self, entry: _Search) -> None:
        """
        At the requester: hand over what was collected (once).
        """
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        waiter, entry.waiter = entry.waiter, None
        if waiter is not None:
            waiter.callback(entry.collected[: entry.maxResults])

    def _complete(self, entry: _Search) -> None:
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

    # -- locate: requester side -----------------------------------------------------------

    def locate(self, name: str, cos: str = "interactive") -> Any:
        """
        Find the owner of C{name} (an awaitable; wrap it with
        C{Deferred.fromCoroutine} where a Deferred is wanted).

        @return: a L{LocateResult}.
        @raise ResourceNotFound: if no node answers for it.
        """
        return self._locate(name, cos)

    async def _locate(self, name: str, cos: str) -> LocateResult:
        if not validResourceName(name):
            raise ResourceNotFound(f"{name!r} is not a resource name (<kind>:<name>)")
        if name in self.localResources():
            self.stats["found-local"] += 1
            return self._result(name, [self._ownRecord(name)], None)
        if self.role == "end":
            return await self._locateThroughServer(name, cos)
        records, route = await self._locateForNetwork(name, cos)
        return self._result(name, records, None)

    def _result(
        self, name: str, records: list[ResourceRecord], route: list[str] | None
    ) -> LocateResult:
        record = records[0]
        return LocateResult(name, record.owner, record.asDict(), route or None)

    def _cached(self, name: str) -> tuple[_CacheEntry | None, bool]:
        """
        (cache entry or None, is it fresh?); raises for a cached miss.
        """
        now = self.reactor.seconds()
        entry = self._cache.get(name)
        if entry is not None and entry.expires <= now:
            del self._cache[name]
            entry = None
        if entry is not None:
            self._cache.move_to_end(name)
            return entry, entry.fresh > now
        missUntil = self._negative.get(name)
        if missUntil is not None:
            if missUntil > now:
                self.stats["found-negative-cache"] += 1
                raise ResourceNotFound(f"{name} (a recent search found nothing)")
            del self._negative[name]
        return None, False

    def _cacheResult(
        self, name: str, records: list[ResourceRecord], route: list[str] | None
    ) -> None:
        now = self.reactor.seconds()
        ttl = min([self.cacheTTL] + [r.ttl for r in records])
        self._cache[name] = _CacheEntry(records, route, now + min(self.cacheFresh, ttl), now + ttl)
        self._cache.move_to_end(name)
        self._negative.pop(name, None)
        while len(self._cache) > self.cacheSize:
            self._cache.popitem(last=False)

    def _cacheMiss(self, name: str) -> None:
        self._negative[name] = self.reactor.seconds() + self.negativeTTL
        self._negative.move_to_end(name)
        while len(self._negative) > self.cacheSize:
            self._negative.popitem(last=False)

    def _verified(self, name: str, blobs: list[bytes]) -> list[ResourceRecord]:
        """
        The records of an answer that check out at the requester.
        """
        out = []
        for raw in blobs:
            try:
                record = ResourceRecord.fromBlob(raw)
            except InvalidRecord as e:
                self.stats["forged-records"] += 1
                self.log.warn("dropped an invalid record for {name}: {why}", name=name, why=str(e))
                continue
            if record.name != name:
                self.stats["forged-records"] += 1
                continue
            out.append(record)
        return out

    async def _locateForNetwork(self, name: str, cos: str) -> tuple[list[ResourceRecord], str]:
        """
        The network-node locate: local, cache, directed, CDS, broadcast.
        """
        records = self._authoritative(name)
        if records:
            self.stats["found-local"] += 1
            return records, "local"
        cached, fresh = self._cached(name)
        if cached is not None and fresh:
            self.stats["found-cache"] += 1
            return cached.records, "cache"
        if cached is not None:
            target = self._directoryNodeFor(cached.records[0].owner)
            records = await self._directed(name, target, cos)
            if records:
                self.stats["found-directed"] += 1
                self._cacheResult(name, records, None)
                return records, "directed"
            self._cache.pop(name, None)
        if self.cdsNode is not None:
            records = await self._directed(name, self.cdsNode, cos)
            if records:
                self.stats["found-cds"] += 1
                self._cacheResult(name, records, None)
                return records, "cds"
        records = await self._broadcast(name, cos)
        if records:
            self.stats["found-broadcast"] += 1
            self._cacheResult(name, records, None)
            return records, "broadcast"
        self.stats["not-found"] += 1
        self._cacheMiss(name)
        raise ResourceNotFound(name)

    async def _directed(self, name: str, target: str, cos: str) -> list[ResourceRecord]:
        if target == self.node.nodeID:
            return self._authoritative(name)
        nextHop = self._nextHop(target)
        if nextHop is None:
            self.stats["directed-no-route"] += 1
            return []
        entry = self._newOrigin("locate", {nextHop.peerNodeID}, self.locateTimeout, name)
        self.stats["directed-searches"] += 1
        self._send(
            nextHop,
            LocateRequest(
                search_id=entry.searchID,
                origin=self.node.nodeID,
                name=name,
                hops_left=min(self.maxHops, MAX_ROUTE_NODES),
                target=target,
                cos=cos,
            ),
        )
        assert entry.waiter is not None
        result: list[ResourceRecord] = await entry.waiter
        return result

    async def _broadcast(self, name: str, cos: str) -> list[ResourceRecord]:
        targets = self._forwardTargets(None, self.node.nodeID, self.maxHops + 1)
        if not targets:
            return []
        entry = self._newOrigin("locate", {t.peerNodeID for t in targets}, self.locateTimeout, name)
        self.stats["broadcast-searches"] += 1
        msg = LocateRequest(
            search_id=entry.searchID,
            origin=self.node.nodeID,
            name=name,
            hops_left=self.maxHops,
            cos=cos,
        )
        for cp in targets:
            self._send(cp, msg)
        assert entry.waiter is not None
        result: list[ResourceRecord] = await entry.waiter
        return result

    async def _locateThroughServer(self, name: str, cos: str) -> LocateResult:
        cached, fresh = self._cached(name)
        if cached is not None and fresh:
            self.stats["found-cache"] += 1
            return self._result(name, cached.records, cached.route)
        for _attempt in range(2):
            server = self._serverCP()
            if server is None:
                raise ResourceNotFound(f"{name} (this end node has no network-node server)")
            entry = self._newOrigin("locate", {server.peerNodeID}, self.requestTimeout, name)
            entry.maxResults = MAX_RECORDS_PER_ANSWER
            self._send(
                server,
                LocateRequest(
                    search_id=entry.searchID,
                    origin=self.node.nodeID,
                    name=name,
                    hops_left=self.maxHops,
                    cos=cos,
                ),
            )
            assert entry.waiter is not None
            records: list[ResourceRecord] = await entry.waiter
            if records:
                self.stats["found-server"] += 1
                route = list(entry.route) or None
                self._cacheResult(name, records, route)
                return self._result(name, records, route)
            if not entry.interrupted:
                break
            # The server went away mid-locate: ask the next one.
        self.stats["not-found"] += 1
        self._cacheMiss(name)
        raise ResourceNotFound(name)

    # -- locate: serving side -------------------------------------------------------------

    def _locateRequestReceived(self, cp: ControlPoint, msg: LocateRequest) -> None:
        if not self._admit(cp):
            self._send(cp, LocateReply(search_id=msg.search_id, reason=Reason.BUSY.value))
            return
        if msg.search_id in self._searches:
            self.stats["duplicate-searches"] += 1
            self._send(cp, LocateReply(search_id=msg.search_id))
            return
        if self.role == "end":
            # End nodes relay nothing; they answer only for themselves.
            self.stats["searches-processed"] += 1
            records = [r.toBlob() for r in self._authoritative(msg.name)]
            self._send(cp, LocateReply(search_id=msg.search_id, records=records))
            return
        now = self.reactor.seconds()
        entry = _Search(msg.search_id, "locate", cp, set(), now + self.searchTableTTL)
        self._remember(entry)
        self.stats["searches-processed"] += 1
        if self._peerRole(cp) == "end" and not msg.target:
            self._serveEndNodeLocate(cp, msg, entry)
        elif msg.target:
            self._directedReceived(cp, msg, entry)
        else:
            self._broadcastReceived(cp, msg, entry)

    def _serveEndNodeLocate(self, cp: ControlPoint, msg: LocateRequest, entry: _Search) -> None:
        entry.done = True  # answered by hand below
        d = Deferred.fromCoroutine(self._locateForNetwork(msg.name, msg.cos))

        def found(result: tuple[list[ResourceRecord], str]) -> None:
            records = result[0][:MAX_RECORDS_PER_ANSWER]
            route: list[str] = []
            topology = self.node.topology
            if topology is not None:
                try:
                    hops = list(topology.selectRoute(cp.peerNodeID, records[0].owner, msg.cos).hops)
                    if len(hops) <= MAX_ROUTE_NODES:
                        route = hops
                except Exception:
                    self.stats["route-failures"] += 1
            self._send(
                cp,
                LocateReply(
                    search_id=msg.search_id, records=[r.toBlob() for r in records], route=route
                ),
            )

        def notFound(failure: Any) -> None:
            failure.trap(ResourceNotFound)
            self._send(cp, LocateReply(search_id=msg.search_id))

        d.addCallbacks(found, notFound)
        d.addErrback(lambda f: self.log.failure("locate for an end node failed", f))

    def _directedReceived(self, cp: ControlPoint, msg: LocateRequest, entry: _Search) -> None:
        if msg.target == self.node.nodeID or msg.target in self._attached:
            entry.done = True
            records = [r.toBlob() for r in self._authoritative(msg.name)]
            self._send(cp, LocateReply(search_id=msg.search_id, records=records))
            return
        nextHop = self._nextHop(msg.target)
        if nextHop is None or nextHop is cp or msg.hops_left <= 1:
            entry.done = True
            self.stats["directed-no-route"] += 1
            self._send(cp, LocateReply(search_id=msg.search_id, reason=Reason.NO_ROUTE.value))
            return
        entry.pending = {nextHop.peerNodeID}
        self._send(nextHop, attrs.evolve(msg, hops_left=msg.hops_left - 1))

    def _broadcastReceived(self, cp: ControlPoint, msg: LocateRequest, entry: _Search) -> None:
        records = [r.toBlob() for r in self._authoritative(msg.name)]
        targets = self._forwardTargets(cp, msg.origin, msg.hops_left)
        entry.pending = {t.peerNodeID for t in targets}
        if not targets:
            entry.done = True
            self._send(cp, LocateReply(search_id=msg.search_id, records=records))
            return
        if records:
            self._send(cp, LocateReply(search_id=msg.search_id, records=records, final=False))
        forwarded = attrs.evolve(msg, hops_left=msg.hops_left - 1)
        for target in targets:
            self._send(target, forwarded)

    def _locateReplyReceived(self, cp: ControlPoint, msg: LocateReply) -> None:
        entry = self._searches.get(msg.search_id)
        if entry is None or entry.kind != "locate" or cp.peerNodeID not in entry.pending:
            self.stats["stray-replies"] += 1
            return
        if msg.final:
            entry.pending.discard(cp.peerNodeID)
        if msg.records:
            if entry.parent is None:
                verified = self._verified(entry.name, list(msg.records))
                entry.collected.extend(verified)
                if msg.route:
                    entry.route = list(msg.route)
                if verified and entry.maxResults == 1:
                    self._finishOrigin(entry)
            elif entry.pending and not entry.done:
                self._send(
                    entry.parent,
                    LocateReply(search_id=msg.search_id, records=msg.records, final=False),
                )
            else:
                entry.heldRecords = list(msg.records)
        if msg.final and not entry.pending:
            self._complete(entry)

    # -- routes -----------------------------------------------------------------------------

    def requestRoute(self, destination: str, cos: str = "interactive") -> Any:
        """
        The route (node IDs, this node first) to C{destination} for C{cos}
        (an awaitable).  End nodes ask their server.

        @raise NoRoute: if there is none.
        """
        return self._requestRoute(destination, cos)

    async def _requestRoute(self, destination: str, cos: str) -> list[str]:
        if self.role == "network":
            if self.node.topology is None:
                raise NoRoute(f"{destination}: this node has no topology database")
            return list(self.node.topology.selectRoute(self.node.nodeID, destination, cos).hops)
        server = self._serverCP()
        if server is None:
            raise NoRoute(f"{destination}: this end node has no network-node server")
        request = RouteRequest(request_id=newSearchID(), destination=destination, cos=cos)
        d: Deferred[list[str]] = Deferred()
        pending = _PendingRoute(d, request, None)
        pending.timer = self.reactor.callLater(
            self.requestTimeout, self._failRoute, pending, "the server did not answer in time"
        )
        self._routes[request.request_id] = pending
        self._send(server, request)
        return await d

    def _failRoute(self, pending: _PendingRoute, why: str) -> None:
        self._routes.pop(pending.request.request_id, None)
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        if not pending.deferred.called:
            pending.deferred.errback(NoRoute(f"{pending.request.destination}: {why}"))

    def _routeRequestReceived(self, cp: ControlPoint, msg: RouteRequest) -> None:
        if not self._admit(cp):
            self._send(cp, RouteReply(request_id=msg.request_id, reason=Reason.BUSY.value))
            return
        topology = self.node.topology
        try:
            if self.role != "network" or topology is None:
                raise NoRoute("this node computes no routes")
            hops = list(topology.selectRoute(cp.peerNodeID, msg.destination, msg.cos).hops)
            if len(hops) > MAX_ROUTE_NODES:
                raise NoRoute(f"the route has {len(hops)} nodes, over {MAX_ROUTE_NODES}")
        except NoRoute as e:
            self._send(
                cp,
                RouteReply(
                    request_id=msg.request_id, reason=Reason.NO_ROUTE.value, detail=str(e)[:512]
                ),
            )
            return
        self._send(cp, RouteReply(request_id=msg.request_id, route=hops))

    def _routeReplyReceived(self, cp: ControlPoint, msg: RouteReply) -> None:
        pending = self._routes.get(msg.request_id)
        if pending is None or cp.peerNodeID != self.serverNodeID:
            self.stats["stray-replies"] += 1
            return
        del self._routes[msg.request_id]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        if msg.route:
            pending.deferred.callback(list(msg.route))
        else:
            pending.deferred.errback(
                NoRoute(f"{pending.request.destination}: {msg.reason} {msg.detail}".strip())
            )

    # -- keyword search ------------------------------------------------------------------------

    def search(
        self, kind: str, keywords: list[str], maxResults: int = 100
    ) -> Deferred[list[dict[str, Any]]]:
        """
        Ask every reachable node's plugins offering C{kind} resources for
        C{keywords}; fires with at most C{maxResults} result dicts (each with
        the answering node's ID under C{"node"}) when enough arrived, every
        node answered, or C{searchTimeout} passed.
        """
        maxResults = max(1, min(int(maxResults), MAX_SEARCH_RESULTS))
        if not self.running:
            return fail(ResourceNotFound(f"{kind} search (this node is stopping)"))
        keywords = [k[:64] for k in keywords[:16]]
        local = self._localSearch(kind, keywords, maxResults)
        if self.role == "end":
            server = self._serverCP()
            targets = [server] if server is not None else []
        else:
            targets = self._forwardTargets(None, self.node.nodeID, self.maxHops + 1)
            targets += [c for c in self._attached.values() if c not in targets]
        if len(local) >= maxResults or not targets:
            d: Deferred[list[dict[str, Any]]] = Deferred()
            d.callback(local[:maxResults])
            return d
        entry = self._newOrigin(
            "search", {t.peerNodeID for t in targets}, self.searchTimeout, maxResults=maxResults
        )
        entry.collected.extend(local)
        msg = SearchRequest(
            search_id=entry.searchID,
            origin=self.node.nodeID,
            kind=kind,
            keywords=keywords,
            hops_left=self.maxHops,
            max_results=maxResults,
        )
        for cp in targets:
            self._send(cp, msg)
        assert entry.waiter is not None
        return entry.waiter

    def _localSearch(self, kind: str, keywords: list[str], limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for plugin in self.node.plugins.values():
            method = getattr(plugin, "search", None)
            if method is None or not self._offersKind(plugin, kind):
                continue
            try:
                results = list(method(list(keywords)))
            except Exception:
                self.log.failure("plugin {plugin} failed a keyword search", plugin=plugin.name)
                continue
            for result in results:
                if len(out) >= limit:
                    return out
                if not isinstance(result, dict):
                    continue
                result = {**result, "node": self.node.nodeID}
                try:
                    SearchReply(search_id="0" * 32, results=[result])
                    size = len(encodeBody(result))
                except Exception:
                    self.stats["search-results-dropped"] += 1
                    continue
                if size > MAX_RESULT_SIZE:
                    self.stats["search-results-dropped"] += 1
                    continue
                out.append(result)
        return out

    def _offersKind(self, plugin: Any, kind: str) -> bool:
        if plugin.name == kind:
            return True
        try:
            return any(str(r).startswith(kind + ":") for r in plugin.resources())
        except Exception:
            return False

    def _sendResults(
        self, cp: ControlPoint, entry: _Search, results: list[dict[str, Any]], final: bool
    ) -> None:
        """
        Stream results to C{cp} in chunks, within the entry's count and byte
        budget; the last chunk carries C{final}.
        """
        chunk: list[dict[str, Any]] = []
        chunkBytes = 0
        for result in results:
            size = len(encodeBody(result))
            if entry.sentResults >= entry.maxResults or entry.sentBytes + size > MAX_SEARCH_BYTES:
                self.stats["search-results-dropped"] += 1
                continue
            if chunk and (
                len(chunk) >= _REPLY_CHUNK_ITEMS or chunkBytes + size > _REPLY_CHUNK_BYTES
            ):
                self._send(cp, SearchReply(search_id=entry.searchID, results=chunk, final=False))
                chunk, chunkBytes = [], 0
            chunk.append(result)
            chunkBytes += size
            entry.sentResults += 1
            entry.sentBytes += size
        if chunk or final:
            self._send(cp, SearchReply(search_id=entry.searchID, results=chunk, final=final))

    def _searchRequestReceived(self, cp: ControlPoint, msg: SearchRequest) -> None:
        if not self._admit(cp):
            self._send(cp, SearchReply(search_id=msg.search_id))
            return
        if msg.search_id in self._searches:
            self.stats["duplicate-searches"] += 1
            self._send(cp, SearchReply(search_id=msg.search_id))
            return
        now = self.reactor.seconds()
        entry = _Search(
            msg.search_id,
            "search",
            cp,
            set(),
            now + self.searchTableTTL,
            maxResults=msg.max_results,
        )
        self._remember(entry)
        self.stats["searches-processed"] += 1
        results = self._localSearch(msg.kind, list(msg.keywords), msg.max_results)
        targets: list[ControlPoint] = []
        if self.role == "network":
            targets = self._forwardTargets(cp, msg.origin, msg.hops_left)
            targets += [
                c for c in self._attached.values() if c is not cp and c.peerNodeID != msg.origin
            ]
        entry.pending = {t.peerNodeID for t in targets}
        if not targets:
            entry.done = True
            self._sendResults(cp, entry, results, final=True)
            return
        if results:
            self._sendResults(cp, entry, results, final=False)
        forwarded = attrs.evolve(msg, hops_left=max(0, msg.hops_left - 1))
        for target in targets:
            self._send(target, forwarded)

    def _searchReplyReceived(self, cp: ControlPoint, msg: SearchReply) -> None:
        entry = self._searches.get(msg.search_id)
        if entry is None or entry.kind != "search" or cp.peerNodeID not in entry.pending:
            self.stats["stray-replies"] += 1
            return
        if msg.final:
            entry.pending.discard(cp.peerNodeID)
        if msg.results:
            if entry.parent is None:
                room = entry.maxResults - len(entry.collected)
                entry.collected.extend(list(msg.results)[: max(0, room)])
                if len(entry.collected) >= entry.maxResults:
                    self._finishOrigin(entry)
            elif not entry.done:
                self._sendResults(entry.parent, entry, list(msg.results), final=False)
        if msg.final and not entry.pending:
            self._complete(entry)

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
            "registered": {
                name: [
                    {"owner": o, "via": r.via, "expires_in": round(r.expires - now, 1)}
                    for o, r in sorted(owners.items())
                ]
                for name, owners in sorted(self._registry.items())
            },
            "attached_end_nodes": sorted(self._attached),
            "cache": {
                name: {
                    "owners": [r.owner for r in e.records],
                    "expires_in": round(e.expires - now, 1),
                }
                for name, e in self._cache.items()
            },
            "negative_cache": sorted(self._negative),
            "stats": dict(sorted(self.stats.items())),
        }


def installDirectory(
    node: Any, cds: bool = False, cdsNode: str | None = None, **options: Any
) -> Directory:
    """
    Give C{node} directory services (C{node.directory}); C{cds=True} makes it
    a central directory server, C{cdsNode} names the CDS other nodes register
    with and ask first.  C{options} are L{Directory}'s tunables.
    """
    directory = Directory(node, cds=cds, cdsNode=cdsNode, **options)
    node.directory = directory
    handlers: dict[type[Any], Callable[[ControlPoint, Any], None]] = {
        RegisterResources: directory._registerReceived,
        LocateRequest: directory._locateRequestReceived,
        LocateReply: directory._locateReplyReceived,
        SearchRequest: directory._searchRequestReceived,
        SearchReply: directory._searchReplyReceived,
        RouteRequest: directory._routeRequestReceived,
        RouteReply: directory._routeReplyReceived,
    }
    node.controlHandlers.update(handlers)
    node.addObserver(directory)
    directory.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    return directory
