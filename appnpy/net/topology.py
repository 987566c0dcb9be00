"""
The topology database of a network node (APPN Topology and Routing Services).

Every network node keeps a replica of the network's topology: one I{node
record} per network node and one I{link record} per (owner, neighbour) link,
each signed by its owner and stamped with a resource sequence number (RSN)
that only the owner raises.  Records travel as opaque signed blobs in
L{TopologyUpdate} messages (APPN's TDUs) between neighbouring network nodes:

  - a newer RSN is applied and forwarded once to the other network-node
    neighbours; an equal one is dropped; an older one is answered with our
    newer copy; a record that is oversized, malformed, badly signed, or whose
    owner's key is unknown is dropped and counted in L{TopologyDatabase.stats};
  - every change to the database gets a local flow-reduction sequence number
    (FRSN).  When a link comes up each side sends L{TopologySync} with the
    last FRSN it received from the other (and the other's epoch); the other
    answers with the records changed since, or everything if its epoch
    (a random value per database instance) is not the one named;
  - owners re-issue their records every C{refreshInterval}; records not
    refreshed within C{maxAge} (local receive time) age out;
  - incoming records are rate-limited per neighbour by a token bucket; a
    neighbour that keeps flooding is disconnected with reason C{rate-limited}.

A link counts for routing only when both its ends announce it up.  The own
RSN is persisted (C{topology.json} in C{stateDir}) in reserved blocks, so a
restart never reuses one; a node that lost its state learns its old RSN from
the neighbours' "newer copy" answers and jumps past it.

Wire form of a record: the deterministic CBOR map
C{{kind, owner, subject, rsn, body, sig}}; the signature covers the same map
without C{sig}.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from zope.interface import implementer

from appnpy.cp.messages import (
    MAX_MESSAGE_SIZE,
    Message,
    blob,
    decodeCBOR,
    encodeBody,
    integer,
    listOf,
    message,
    text,
)
from appnpy.errors import ConfigurationError, NoRoute, ProtocolError, Reason
from appnpy.link.identity import Identity, isNodeID, nodeIDFromSPKI, validateCPName, verifySignature
from appnpy.net.directory._interfaces import IRouteSource
from appnpy.net.ratelimit import TokenBucket
from appnpy.net.routing import (
    BUILTIN_COS,
    TLS_SECURITY,
    ClassOfService,
    LinkCharacteristics,
    NodeCharacteristics,
    Route,
    RouteExplanation,
    TopologyGraph,
    explainRoute,
    leastWeightRoute,
)

__all__ = [
    "TopologyUpdate",
    "TopologySync",
    "TopologyRecord",
    "TopologyDatabase",
    "installTopology",
    "BadRecord",
]

#: Largest signed record accepted.
MAX_RECORD_BYTES = 4096
#: Most records in one TopologyUpdate.
MAX_RECORDS_PER_MESSAGE = 256
#: Most link records one owner may have in the database.
MAX_LINKS_PER_ORIGIN = 256
#: Most end nodes one node record may list.
MAX_END_NODES = 64
#: Most node records kept (a backbone is tens to a few thousand nodes).
MAX_NODES = 10_000
#: Highest RSN accepted; RSNs are 64-bit and never wrap (see module doc).
MAX_RSN = 2**62
#: Bytes of records per message, under the control-message limit.
_MESSAGE_BUDGET = MAX_MESSAGE_SIZE - 4096
#: RSNs reserved per write of the state file; a restart continues above.
RSN_RESERVE = 1000
STATE_FILE = "topology.json"
#: RTT announced for a link not measured yet.
DEFAULT_RTT_MS = 100
#: Throughput announced for a link with no observed traffic (bytes/s).
DEFAULT_THROUGHPUT = 1_000_000

_RECORD_KEYS = frozenset({"kind", "owner", "subject", "rsn", "body", "sig"})
NODE, LINK = "node", "link"
Key = tuple[str, str, str]


#: Seconds of quiet after a change before the database logs its summary.
SUMMARY_DELAY = 1.0


class BadRecord(Exception):
    """
    A topology record that cannot be used; C{counter} names the statistic.
    """

    def __init__(self, counter: str, detail: str) -> None:
        super().__init__(detail)
        self.counter = counter


# -- messages ---------------------------------------------------------------------

_EPOCH = text(32)


@message("TopologyUpdate", capability="topology")
@attrs.frozen
class TopologyUpdate(Message):
    """
    A TDU: signed topology records.  C{frsn_from}/C{frsn_to} say which range
    of the sender's FRSNs this message completes (C{frsn_from} > the
    receiver's last FRSN from us means a gap: the receiver does not advance);
    both 0 for an answer that makes no such claim.  Records are size-checked
    one by one by the database (an oversized one is dropped, not fatal).
    """

    epoch: str = attrs.field(validator=_EPOCH)
    frsn_from: int = attrs.field(validator=integer(0, 2**63 - 1))
    frsn_to: int = attrs.field(validator=integer(0, 2**63 - 1))
    records: list[bytes] = attrs.field(
        validator=listOf(blob(MAX_MESSAGE_SIZE), MAX_RECORDS_PER_MESSAGE)
    )


@message("TopologySync", capability="topology")
@attrs.frozen
class TopologySync(Message):
    """
    Sent when a link between network nodes comes up: "the last FRSN I
    received from you was C{frsn}, in your epoch C{epoch}" (empty: none).
    """

    epoch: str = attrs.field(validator=_EPOCH)
    frsn: int = attrs.field(validator=integer(0, 2**63 - 1))


# -- records ----------------------------------------------------------------------


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = body.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise BadRecord("malformed", f"{key} must be an integer in {lo}..{hi}")
    return v


def _bool(body: dict[str, Any], key: str) -> bool:
    v = body.get(key)
    if type(v) is not bool:
        raise BadRecord("malformed", f"{key} must be a boolean")
    return v


def _checkNodeBody(body: dict[str, Any]) -> None:
    name = body.get("name")
    if not isinstance(name, str) or len(name) > 17:
        raise BadRecord("malformed", "name must be a CP name")
    try:
        validateCPName(name)
    except Exception:
        raise BadRecord("malformed", f"invalid CP name {name[:20]!r}") from None
    if body.get("role") != "network":
        raise BadRecord("malformed", "node records are for network nodes")
    pk = body.get("public_key")
    if not isinstance(pk, bytes) or len(pk) > 256:
        raise BadRecord("malformed", "public_key must be bytes")
    _int(body, "resistance", 0, 255)
    _int(body, "load", 0, 255)
    _bool(body, "cds")
    ends = body.get("end_nodes")
    if (
        not isinstance(ends, list)
        or len(ends) > MAX_END_NODES
        or not all(isNodeID(e) for e in ends)
    ):
        raise BadRecord("malformed", f"end_nodes must be up to {MAX_END_NODES} node IDs")


def _checkLinkBody(body: dict[str, Any]) -> None:
    _int(body, "rtt_ms", 0, 2**31 - 1)
    _int(body, "throughput", 0, 2**63 - 1)
    _int(body, "cost", 0, 255)
    _int(body, "security", 0, 255)
    _bool(body, "up")


@attrs.frozen
class TopologyRecord:
    """
    One signed node or link record, with its wire form C{raw}.
    """

    kind: str
    owner: str
    subject: str
    rsn: int
    body: dict[str, Any] = attrs.field(eq=False, repr=False)
    signature: bytes = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False, eq=False)

    @property
    def key(self) -> Key:
        return (self.kind, self.owner, self.subject)

    @staticmethod
    def signedBytes(kind: str, owner: str, subject: str, rsn: int, body: dict[str, Any]) -> bytes:
        return encodeBody(
            {"kind": kind, "owner": owner, "subject": subject, "rsn": rsn, "body": body}
        )

    @classmethod
    def create(
        cls, identity: Identity, kind: str, subject: str, rsn: int, body: dict[str, Any]
    ) -> TopologyRecord:
        """
        Make and sign a record owned by C{identity}.
        """
        owner = identity.nodeID
        signature = identity.sign(cls.signedBytes(kind, owner, subject, rsn, body))
        raw = encodeBody(
            {
                "kind": kind,
                "owner": owner,
                "subject": subject,
                "rsn": rsn,
                "body": body,
                "sig": signature,
            }
        )
        return cls(kind, owner, subject, rsn, body, signature, raw)

    @classmethod
    def decode(cls, raw: bytes) -> TopologyRecord:
        """
        Decode and check the form of a record (not its signature).

        @raise BadRecord: C{oversized} or C{malformed}.
        """
        if not isinstance(raw, bytes) or len(raw) > MAX_RECORD_BYTES:
            raise BadRecord("oversized", f"record over {MAX_RECORD_BYTES} bytes")
        try:
            value = decodeCBOR(raw, 6)
        except ProtocolError as e:
            raise BadRecord("malformed", str(e)) from None
        if not isinstance(value, dict) or set(value) != _RECORD_KEYS:
            raise BadRecord("malformed", "not a topology record")
        kind, owner, subject, rsn = value["kind"], value["owner"], value["subject"], value["rsn"]
        body, sig = value["body"], value["sig"]
        if kind not in (NODE, LINK) or not isNodeID(owner):
            raise BadRecord("malformed", "bad kind or owner")
        if type(rsn) is not int or not 0 <= rsn <= MAX_RSN:
            raise BadRecord("malformed", "bad RSN")
        if not isinstance(sig, bytes) or len(sig) > 128 or not isinstance(body, dict):
            raise BadRecord("malformed", "bad signature or body")
        if not all(isinstance(k, str) for k in body):
            raise BadRecord("malformed", "body keys must be text")
        if kind == NODE:
            if subject != "":
                raise BadRecord("malformed", "a node record has no subject")
            _checkNodeBody(body)
        else:
            if not isNodeID(subject) or subject == owner:
                raise BadRecord("malformed", "a link record's subject is a neighbour's node ID")
            _checkLinkBody(body)
        try:
            canonical = encodeBody(value)
        except Exception:  # pragma: no cover
            raise BadRecord("malformed", "unencodable") from None
        if canonical != raw:
            raise BadRecord("malformed", "not in deterministic CBOR encoding")
        return cls(kind, owner, subject, rsn, body, sig, raw)

    def verify(self, publicKey: bytes) -> bool:
        return verifySignature(
            publicKey,
            self.signature,
            self.signedBytes(self.kind, self.owner, self.subject, self.rsn, self.body),
        )

    def asDict(self) -> dict[str, Any]:
        body = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in self.body.items()}
        return {
            "kind": self.kind,
            "owner": self.owner,
            "subject": self.subject,
            "rsn": self.rsn,
            "body": body,
        }


@attrs.define
class _Entry:
    record: TopologyRecord
    frsn: int
    receivedAt: float
    #: The neighbour it came from; None for our own records.
    source: str | None


@attrs.define
class _Neighbour:
    """
    What we keep per neighbouring network node, across link outages.
    """

    bucket: TokenBucket
    #: Their epoch and the last of their FRSNs we hold everything up to.
    epoch: str = ""
    lastFRSN: int = 0
    lastCredit: float = -1e18
    dropped: int = 0
    droppedWindowStart: float = 0.0
    inBurst: bool = False
    recordsSent: int = 0
    recordsReceived: int = 0
    #: The FRSN up to which this neighbour has had every change it needs
    #: from us, while the link is up and synced; None otherwise.
    sentUpTo: int | None = None


@attrs.define
class _OwnLink:
    cost: int = 0
    security: int = TLS_SECURITY
    up: bool = False
    downSince: float | None = None
    rttMs: int | None = None
    peakThroughput: float = 0.0
    lastBytes: int = 0
    lastSample: float | None = None
    announced: dict[str, Any] | None = None


def _nodeChars(record: TopologyRecord) -> NodeCharacteristics:
    return NodeCharacteristics(record.body["resistance"], record.body["load"])


def _linkChars(record: TopologyRecord) -> LinkCharacteristics:
    b = record.body
    return LinkCharacteristics(b["rtt_ms"], b["throughput"], b["cost"], b["security"])


@implementer(IRouteSource)
class TopologyDatabase(Service):
    """
    The replicated topology database of one network node; see the module
    docstring.  C{stats} counts every record received, applied, forwarded
    and dropped (by reason).
    """

    log = Logger()

    def __init__(
        self,
        node: Any,
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
        linkCost: int = 0,
        linkSecurity: int = TLS_SECURITY,
        rttChange: float = 0.5,
    ) -> None:
        self.node = node
        self.reactor = node.reactor
        self.nodeID: str = node.nodeID
        self.cosTables: dict[str, ClassOfService] = dict(BUILTIN_COS)
        self.cosTables.update(cosTables or {})
        self.stateDir = stateDir
        self.refreshInterval = refreshInterval
        self.maxAge = maxAge if maxAge is not None else 2 * refreshInterval + 600.0
        self.damping = damping
        self.measureInterval = measureInterval
        self.rate = rate
        self.burst = burst
        self.syncCredit = syncCredit
        self.abuseLimit = abuseLimit
        self.abuseWindow = abuseWindow
        self.rttChange = rttChange
        self.linkCost = linkCost
        self.linkSecurity = linkSecurity
        #: Characteristics of this node's own record.
        self.resistance = resistance
        self.load = 0
        self.cds = cds
        self.endNodes: list[str] = []
        #: A random value per database instance: FRSNs are only comparable
        #: within one epoch.
        self.epoch = secrets.token_hex(8)
        self.frsn = 0
        self.stats: dict[str, int] = dict.fromkeys(
            (
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
            ),
            0,
        )
        self._records: dict[Key, _Entry] = {}
        self._linkCount: dict[str, int] = {}
        self._neighbours: dict[str, _Neighbour] = {}
        self._ownLinks: dict[str, _OwnLink] = {}
        self._linkConfig: dict[str, dict[str, int]] = {}
        self._dirty: set[Key] = set()
        self._lastAnnounce: float | None = None
        self._announceCall: Any = None
        self._timers: dict[str, Any] = {}
        self._observers: list[Callable[[], None]] = []
        self._graph: TopologyGraph | None = None
        self._rsn = 0
        self._reserved = 0
        self._loadRSN()

    # -- RSN persistence ----------------------------------------------------

    @property
    def statePath(self) -> str | None:
        return os.path.join(self.stateDir, STATE_FILE) if self.stateDir else None

    def _loadRSN(self) -> None:
        path = self.statePath
        start = 0
        if path is not None and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
                reserved = state["reserved_rsn"]
                if type(reserved) is not int or not 0 <= reserved <= MAX_RSN:
                    raise ValueError("reserved_rsn out of range")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigurationError(f"{path}: unreadable topology state ({e})") from None
            # Everything up to the reserved value may have been used.
            start = reserved + 2
        elif path is None:
            # No state: a value that grows with time, so a restart is very
            # unlikely to reuse one; the neighbours' newer copies fix the rest.
            start = int(self.reactor.seconds() * 100)
        self._rsn = start + (start % 2)
        self._reserved = self._rsn
        if path is not None:
            self._reserve()

    def _reserve(self) -> None:
        self._reserved = self._rsn + RSN_RESERVE
        path = self.statePath
        if path is None:
            return
        os.makedirs(self.stateDir or ".", exist_ok=True)
        data = json.dumps({"reserved_rsn": self._reserved, "version": 1}).encode()
        tmp = f"{path}.{secrets.token_hex(6)}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _nextRSN(self) -> int:
        self._rsn += 2
        if self._rsn >= self._reserved:
            self._reserve()
        return self._rsn

    @property
    def currentRSN(self) -> int:
        return self._rsn

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        node = self.node
        node.controlHandlers[TopologyUpdate] = self.updateReceived
        node.controlHandlers[TopologySync] = self.syncReceived
        self._dirty.add((NODE, self.nodeID, ""))
        self._every("refresh", self.refreshInterval, self.refresh)
        self._every("age", min(self.maxAge / 4, 300.0), self.ageOut)
        if self.measureInterval > 0:
            self._every("measure", self.measureInterval, self.measureLinks)
        for cp in list(getattr(node, "links", {}).values()):
            self.linkActive(cp)
        self._announce()

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        for timer in [*self._timers.values(), self._announceCall]:
            if timer is not None and timer.active():
                timer.cancel()
        self._timers.clear()
        self._announceCall = None
        self.node.controlHandlers.pop(TopologyUpdate, None)
        self.node.controlHandlers.pop(TopologySync, None)
        return None

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
        self._graph = None
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
        reachable = {self.node.nodeID}
        frontier = [self.node.nodeID]
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

    # -- link events (node observer) ------------------------------------------

    def _isNetworkPeer(self, cp: Any) -> bool:
        hello = getattr(cp, "peerHello", None)
        return hello is not None and hello.role == "network"

    def _neighbour(self, peer: str) -> _Neighbour:
        ns = self._neighbours.get(peer)
        if ns is None:
            ns = self._neighbours[peer] = _Neighbour(
                TokenBucket(self.rate, self.burst, self.reactor.seconds())
            )
        return ns

    def linkActive(self, cp: Any) -> None:
        if not self.running or not self._isNetworkPeer(cp):
            return
        peer = cp.peerNodeID
        ns = self._neighbour(peer)
        now = self.reactor.seconds()
        # One initial-exchange allowance per link-up, at most once per window,
        # so a neighbour cannot reconnect its way around the rate limit.
        if now - ns.lastCredit >= self.abuseWindow:
            ns.bucket.credit(self.syncCredit, now + self.abuseWindow)
            ns.lastCredit = now
        ns.sentUpTo = None
        cp.send(TopologySync(epoch=ns.epoch, frsn=ns.lastFRSN))
        own = self._ownLinks.get(peer)
        if own is None:
            cfg = self._linkConfig.get(peer, {})
            own = self._ownLinks[peer] = _OwnLink(
                cost=cfg.get("cost", self.linkCost), security=cfg.get("security", self.linkSecurity)
            )
        own.up = True
        own.downSince = None
        own.lastSample = now
        own.lastBytes = _bytes(cp)
        self._markDirty((LINK, self.nodeID, peer))

    def linkLost(self, cp: Any, why: Any) -> None:
        ns = self._neighbours.get(cp.peerNodeID)
        if ns is not None:
            ns.sentUpTo = None
        own = self._ownLinks.get(cp.peerNodeID)
        if not self.running or own is None or not own.up:
            return
        own.up = False
        own.downSince = self.reactor.seconds()
        self._markDirty((LINK, self.nodeID, cp.peerNodeID))

    def setLinkCharacteristics(
        self, peer: str, cost: int | None = None, security: int | None = None
    ) -> None:
        """
        Configure the cost and security level (0-255) this node announces
        for its link to C{peer}.
        """
        cfg = self._linkConfig.setdefault(peer, {})
        own = self._ownLinks.get(peer)
        for name, value in (("cost", cost), ("security", security)):
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= 255:
                raise ConfigurationError(f"link {name} must be 0..255")
            cfg[name] = value
            if own is not None:
                setattr(own, name, value)
        if own is not None:
            self._markDirty((LINK, self.nodeID, peer))

    def setNodeCharacteristics(
        self, resistance: int | None = None, load: int | None = None, cds: bool | None = None
    ) -> None:
        """
        Change what this node's own record announces (0-255 each).
        """
        for name, value in (("resistance", resistance), ("load", load)):
            if value is not None:
                if type(value) is not int or not 0 <= value <= 255:
                    raise ConfigurationError(f"{name} must be 0..255")
                setattr(self, name, value)
        if cds is not None:
            self.cds = bool(cds)
        self._markDirty((NODE, self.nodeID, ""))

    def setAttachedEndNodes(self, ids: Iterable[str]) -> None:
        """
        The end nodes this node serves (called by the directory); announced
        in this node's node record.  At most L{MAX_END_NODES} are announced.
        """
        ends = sorted(set(ids))
        if len(ends) > MAX_END_NODES:
            self.log.warn(
                "{count} end nodes attached; only {max} are announced in the topology",
                count=len(ends),
                max=MAX_END_NODES,
            )
            ends = ends[:MAX_END_NODES]
        if ends != self.endNodes:
            self.endNodes = ends
            self._markDirty((NODE, self.nodeID, ""))

    # -- originating our own records --------------------------------------------

    def _markDirty(self, key: Key) -> None:
        self._dirty.add(key)
        if not self.running or self._announceCall is not None:
            return
        now = self.reactor.seconds()
        delay = 0.0
        if self._lastAnnounce is not None:
            delay = max(0.0, self._lastAnnounce + self.damping - now)
        self._announceCall = self.reactor.callLater(delay, self._announce)

    def _ownNodeBody(self) -> dict[str, Any]:
        return {
            "name": self.node.name,
            "role": "network",
            "public_key": self.node.identity.publicKeyBytes,
            "resistance": self.resistance,
            "load": self.load,
            "cds": self.cds,
            "end_nodes": list(self.endNodes),
        }

    def _ownLinkBody(self, peer: str) -> dict[str, Any]:
        own = self._ownLinks[peer]
        return {
            "rtt_ms": own.rttMs if own.rttMs is not None else DEFAULT_RTT_MS,
            "throughput": int(max(DEFAULT_THROUGHPUT, own.peakThroughput)),
            "cost": own.cost,
            "security": own.security,
            "up": own.up,
        }

    def _announce(self) -> None:
        """
        Issue new versions of the dirty own records and flood them (damped:
        at most once per C{damping} seconds).
        """
        self._announceCall = None
        if not self.running:
            return
        self._lastAnnounce = self.reactor.seconds()
        dirty, self._dirty = self._dirty, set()
        self._originate(dirty)

    def _originate(self, keys: Iterable[Key]) -> None:
        entries = []
        now = self.reactor.seconds()
        for kind, _, subject in sorted(keys):
            if kind == NODE:
                body = self._ownNodeBody()
            elif subject in self._ownLinks:
                body = self._ownLinkBody(subject)
                self._ownLinks[subject].announced = body
            else:
                body = {
                    "rtt_ms": DEFAULT_RTT_MS,
                    "throughput": DEFAULT_THROUGHPUT,
                    "cost": 0,
                    "security": 0,
                    "up": False,
                }
            record = TopologyRecord.create(self.node.identity, kind, subject, self._nextRSN(), body)
            entries.append(self._apply(record, None, now))
            self.stats["originated"] += 1
        if entries:
            self._flood(entries, None)
            self._changed()

    def refresh(self) -> None:
        """
        Re-issue every own record (so no other node ages them out), and stop
        announcing links that have been down longer than C{maxAge}.
        """
        now = self.reactor.seconds()
        for peer, own in list(self._ownLinks.items()):
            if not own.up and own.downSince is not None and now - own.downSince > self.maxAge:
                del self._ownLinks[peer]
                self._remove((LINK, self.nodeID, peer))
        keys = {(NODE, self.nodeID, "")} | {(LINK, self.nodeID, p) for p in self._ownLinks}
        self._dirty -= keys
        self._lastAnnounce = self.reactor.seconds()
        self._originate(keys)

    def measureLinks(self) -> None:
        """
        Sample RTT (keepalive pings) and observed throughput of every link
        to a network node; re-announce a link whose RTT moved by more than
        C{rttChange} (relative, and at least 5 ms) or whose throughput band
        changed by a factor of 2.
        """
        now = self.reactor.seconds()
        for peer, own in self._ownLinks.items():
            cp = self.node.links.get(peer)
            if cp is None or not own.up:
                continue
            rtt = getattr(cp.mux, "rtt", None)
            if rtt is not None:
                own.rttMs = int(round(rtt * 1000))
            total = _bytes(cp)
            if own.lastSample is not None and now > own.lastSample:
                rate = (total - own.lastBytes) / (now - own.lastSample)
                own.peakThroughput = max(own.peakThroughput * 0.9, rate)
            own.lastBytes, own.lastSample = total, now
            if own.announced is None:
                continue
            new = self._ownLinkBody(peer)
            old = own.announced
            drtt = abs(new["rtt_ms"] - old["rtt_ms"])
            if drtt > 5 and drtt > self.rttChange * max(old["rtt_ms"], 1):
                self._markDirty((LINK, self.nodeID, peer))
            elif not old["throughput"] / 2 <= new["throughput"] <= old["throughput"] * 2:
                self._markDirty((LINK, self.nodeID, peer))

    # -- the database ---------------------------------------------------------------

    def _apply(self, record: TopologyRecord, source: str | None, now: float) -> _Entry:
        old = self._records.get(record.key)
        if old is None and record.kind == LINK:
            self._linkCount[record.owner] = self._linkCount.get(record.owner, 0) + 1
        self.frsn += 1
        entry = _Entry(record, self.frsn, now, source)
        self._records[record.key] = entry
        return entry

    def _remove(self, key: Key) -> None:
        if self._records.pop(key, None) is not None and key[0] == LINK:
            n = self._linkCount.get(key[1], 1) - 1
            if n:
                self._linkCount[key[1]] = n
            else:
                self._linkCount.pop(key[1], None)

    def ageOut(self) -> None:
        """
        Remove records not refreshed within C{maxAge}; a node record takes
        its owner's link records with it.
        """
        now = self.reactor.seconds()
        stale = [
            k
            for k, e in self._records.items()
            if e.source is not None and now - e.receivedAt > self.maxAge
        ]
        owners = {k[1] for k in stale if k[0] == NODE}
        stale += [k for k in self._records if k[0] == LINK and k[1] in owners and k not in stale]
        for k in stale:
            self._remove(k)
        if stale:
            self.stats["aged_out"] += len(stale)
            self.log.info("topology: {count} records aged out", count=len(stale))
            self._changed()

    def _publicKey(self, owner: str) -> bytes | None:
        entry = self._records.get((NODE, owner, ""))
        return entry.record.body["public_key"] if entry is not None else None

    def _verify(self, record: TopologyRecord) -> None:
        """
        @raise BadRecord: C{bad_signature} or C{unknown_owner_key}.
        """
        if record.kind == NODE:
            pk = record.body["public_key"]
            if nodeIDFromSPKI(pk) != record.owner:
                raise BadRecord("bad_signature", "the record's key is not its owner's")
        else:
            if record.owner == self.nodeID:
                pk = self.node.identity.publicKeyBytes
            else:
                known = self._publicKey(record.owner)
                if known is None:
                    raise BadRecord("unknown_owner_key", "no node record for the owner")
                pk = known
        if not record.verify(pk):
            raise BadRecord("bad_signature", "the signature does not verify")

    def updateReceived(self, cp: Any, msg: TopologyUpdate) -> None:
        """
        Handle a TDU from a neighbour.
        """
        peer = cp.peerNodeID
        if not self._isNetworkPeer(cp):
            self.stats["not_network"] += len(msg.records)
            return
        ns = self._neighbour(peer)
        now = self.reactor.seconds()
        decoded: list[TopologyRecord] = []
        for raw in msg.records:
            self.stats["received"] += 1
            try:
                decoded.append(TopologyRecord.decode(raw))
            except BadRecord as e:
                self.stats[e.counter] += 1
        ns.recordsReceived += len(msg.records)
        # Node records first: they carry the keys that verify link records.
        decoded.sort(key=lambda r: r.kind != NODE)
        applied: list[_Entry] = []
        newer: list[TopologyRecord] = []
        limited = 0
        ownSeen = False
        for rec in decoded:
            current = self._records.get(rec.key)
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
                self._verify(rec)
            except BadRecord as e:
                self.stats[e.counter] += 1
                continue
            if rec.owner == self.nodeID:
                # Our own record, newer than (or as new as) ours: we lost our
                # RSN state.  Jump past it and re-issue.
                self._rsn = max(self._rsn, rec.rsn + (rec.rsn % 2))
                if self._rsn >= self._reserved:
                    self._reserve()
                self.stats["own_rsn_bumped"] += 1
                self._dirty.add(rec.key)
                ownSeen = True
                continue
            if current is None:
                if rec.kind == LINK and self._linkCount.get(rec.owner, 0) >= MAX_LINKS_PER_ORIGIN:
                    self.stats["origin_cap"] += 1
                    continue
                if rec.kind == NODE and self._nodeCount() >= MAX_NODES:
                    self.stats["db_full"] += 1
                    continue
            applied.append(self._apply(rec, peer, now))
        self.stats["applied"] += len(applied)
        if limited:
            self._rateLimited(cp, ns, limited, now)
        elif ns.inBurst and ns.bucket.tokens >= ns.bucket.burst / 2:
            ns.inBurst = False
        # FRSN bookkeeping: advance only over a complete, contiguous range.
        if msg.epoch and msg.frsn_to:
            if msg.epoch != ns.epoch:
                ns.epoch, ns.lastFRSN = msg.epoch, 0
            if msg.frsn_from <= ns.lastFRSN and not limited:
                ns.lastFRSN = max(ns.lastFRSN, msg.frsn_to)
        if newer:
            self._send(cp, [e for e in newer], 0, 0)
        if applied:
            self._flood(applied, peer)
            self._changed()
        if ownSeen:
            self._markDirty((NODE, self.nodeID, ""))

    def _nodeCount(self) -> int:
        return len(self._records) - sum(self._linkCount.values())

    def _rateLimited(self, cp: Any, ns: _Neighbour, count: int, now: float) -> None:
        self.stats["rate_limited"] += count
        if now - ns.droppedWindowStart > self.abuseWindow:
            ns.droppedWindowStart, ns.dropped = now, 0
        ns.dropped += count
        if not ns.inBurst:
            ns.inBurst = True
            self.log.warn(
                "topology: rate-limiting records from {peer}: {count} dropped",
                peer=cp.peerNodeID,
                count=count,
            )
        if ns.dropped > self.abuseLimit:
            self.stats["links_closed_for_abuse"] += 1
            ns.dropped = 0
            cp.refuseLink(
                Reason.RATE_LIMITED,
                f"over {self.abuseLimit} topology records dropped in {self.abuseWindow:g}s",
            )

    def syncReceived(self, cp: Any, msg: TopologySync) -> None:
        """
        A neighbour's link came up: send what changed since the last FRSN
        it holds from us, or everything if it names another epoch.
        """
        if not self._isNetworkPeer(cp):
            self.stats["not_network"] += 1
            return
        self.stats["sync_requests"] += 1
        peer = cp.peerNodeID
        if msg.epoch == self.epoch and msg.frsn <= self.frsn:
            since = msg.frsn
            entries = [e for e in self._records.values() if e.frsn > since and e.source != peer]
        else:
            since = 0
            entries = list(self._records.values())
        entries.sort(key=lambda e: e.frsn)
        self.stats["sync_records_sent"] += len(entries)
        self._sendEntries(cp, entries, since, self.frsn)
        self._neighbour(peer).sentUpTo = self.frsn

    def _sendEntries(self, cp: Any, entries: list[_Entry], since: int, upTo: int) -> None:
        """
        Send entries (sorted by FRSN) in as many messages as needed, each
        claiming the FRSN range it completes.
        """
        batch: list[_Entry] = []
        size = 0
        start = since
        for e in entries:
            n = len(e.record.raw) + 8
            if batch and (size + n > _MESSAGE_BUDGET or len(batch) >= MAX_RECORDS_PER_MESSAGE):
                end = batch[-1].frsn
                self._send(cp, [b.record for b in batch], start, end)
                start, batch, size = end, [], 0
            batch.append(e)
            size += n
        self._send(cp, [b.record for b in batch], start, max(upTo, start))

    def _send(self, cp: Any, records: list[TopologyRecord], frsnFrom: int, frsnTo: int) -> None:
        cp.send(
            TopologyUpdate(
                epoch=self.epoch,
                frsn_from=frsnFrom,
                frsn_to=frsnTo,
                records=[r.raw for r in records],
            )
        )
        self.stats["sent"] += len(records)
        ns = self._neighbours.get(cp.peerNodeID)
        if ns is not None:
            ns.recordsSent += len(records)

    def _flood(self, entries: list[_Entry], source: str | None) -> None:
        entries = sorted(entries, key=lambda e: e.frsn)
        since = entries[0].frsn - 1
        upTo = entries[-1].frsn
        for peer, cp in list(self.node.links.items()):
            if peer == source or not self._isNetworkPeer(cp):
                continue
            ns = self._neighbour(peer)
            # Every change since the last message to a synced neighbour was
            # either sent to it or came from it: claim the whole range.
            start = since if ns.sentUpTo is None else min(ns.sentUpTo, since)
            self._sendEntries(cp, entries, start, upTo)
            if ns.sentUpTo is not None:
                ns.sentUpTo = upTo
            if source is not None:
                self.stats["forwarded"] += len(entries)

    # -- queries ------------------------------------------------------------------------

    def records(self) -> list[TopologyRecord]:
        return [e.record for e in self._records.values()]

    def record(self, kind: str, owner: str, subject: str = "") -> TopologyRecord | None:
        e = self._records.get((kind, owner, subject))
        return e.record if e is not None else None

    def __len__(self) -> int:
        return len(self._records)

    def digest(self) -> str:
        """
        SHA-256 over the sorted (kind, owner, subject, RSN) of every record:
        equal on two nodes when their databases hold the same versions.
        """
        h = hashlib.sha256()
        for kind, owner, subject, rsn in sorted(
            (*k, e.record.rsn) for k, e in self._records.items()
        ):
            h.update(f"{kind} {owner} {subject} {rsn}\n".encode())
        return h.hexdigest()

    def nodeRecord(self, nodeID: str) -> dict[str, Any] | None:
        """
        The node record of C{nodeID} as a dict (C{asDict} form), or C{None}.
        """
        e = self._records.get((NODE, nodeID, ""))
        return e.record.asDict() if e is not None else None

    def nodeName(self, nodeID: str) -> str | None:
        e = self._records.get((NODE, nodeID, ""))
        return e.record.body["name"] if e is not None else None

    def networkNodes(self) -> list[str]:
        return sorted(k[1] for k in self._records if k[0] == NODE)

    def servingNode(self, endNodeID: str) -> str | None:
        """
        The network node whose node record lists C{endNodeID} as attached
        (the lowest node ID if several do, so every node agrees).
        """
        servers = sorted(
            k[1]
            for k, e in self._records.items()
            if k[0] == NODE and endNodeID in e.record.body["end_nodes"]
        )
        return servers[0] if servers else None

    def graph(self) -> TopologyGraph:
        """
        The routing graph: every network node with a node record, and every
        link both of whose ends announce it up (characteristics: the worse
        of the two announcements).
        """
        if self._graph is not None:
            return self._graph
        g = TopologyGraph()
        for (kind, owner, _), e in self._records.items():
            if kind == NODE:
                g.addNode(owner, _nodeChars(e.record))
        for (kind, owner, subject), e in self._records.items():
            if kind != LINK or not owner < subject or not e.record.body["up"]:
                continue
            back = self._records.get((LINK, subject, owner))
            if back is None or not back.record.body["up"]:
                continue
            if owner not in g.nodes or subject not in g.nodes:
                continue
            g.addLink(
                owner,
                subject,
                LinkCharacteristics.combine(_linkChars(e.record), _linkChars(back.record)),
            )
        self._graph = g
        return g

    def classOfService(self, name: str | None) -> ClassOfService:
        cos = self.cosTables.get(name or "interactive")
        if cos is None:
            raise NoRoute(f"unknown class of service {name!r}")
        return cos

    def _endpoints(self, origin: str, destination: str) -> tuple[str, str, str | None, str | None]:
        g = self.graph()
        first = last = None
        if origin not in g.nodes:
            server = self.servingNode(origin)
            if server is not None:
                first, origin = origin, server
        if destination not in g.nodes:
            server = self.servingNode(destination)
            if server is not None:
                last, destination = destination, server
        return origin, destination, first, last

    def selectRoute(self, origin: str, destination: str, cos: str | None = None) -> Route:
        """
        The least-weight route for C{cos}; an end node at either end is
        reached through its serving network node (that hop weighs 0).

        @raise NoRoute: when none qualifies.
        """
        table = self.classOfService(cos)
        if origin == destination:
            return Route([origin], 0.0, [], table.name)
        o, d, first, last = self._endpoints(origin, destination)
        if o == d:
            route = Route([o], 0.0, [], table.name)
        else:
            route = leastWeightRoute(self.graph(), o, d, table)
        return _extend(route, first, last)

    def explainRoute(
        self, origin: str, destination: str, cos: str | None = None
    ) -> RouteExplanation:
        table = self.classOfService(cos)
        o, d, first, last = self._endpoints(origin, destination)
        explanation = explainRoute(self.graph(), o, d, table)
        if explanation.route is not None:
            explanation.route = _extend(explanation.route, first, last)
        explanation.origin, explanation.destination = origin, destination
        return explanation

    def asDict(self) -> dict[str, Any]:
        """
        The database for C{appn topology}.
        """
        now = self.reactor.seconds()
        g = self.graph()
        nodes = []
        links = []
        for (kind, owner, subject), e in sorted(self._records.items()):
            r = e.record
            age = now - e.receivedAt
            if kind == NODE:
                nodes.append(
                    {
                        "node_id": owner,
                        "name": r.body["name"],
                        "rsn": r.rsn,
                        "resistance": r.body["resistance"],
                        "load": r.body["load"],
                        "cds": r.body["cds"],
                        "end_nodes": list(r.body["end_nodes"]),
                        "age": age,
                    }
                )
            else:
                links.append(
                    {
                        "owner": owner,
                        "peer": subject,
                        "rsn": r.rsn,
                        "age": age,
                        "routable": subject in g.adjacency.get(owner, {}),
                        **{
                            k: r.body[k] for k in ("rtt_ms", "throughput", "cost", "security", "up")
                        },
                    }
                )
        return {
            "node_id": self.nodeID,
            "digest": self.digest(),
            "epoch": self.epoch,
            "frsn": self.frsn,
            "rsn": self._rsn,
            "records": len(self._records),
            "nodes": nodes,
            "links": links,
            "stats": dict(self.stats),
            "cos": sorted(self.cosTables),
        }


def _extend(route: Route, first: str | None, last: str | None) -> Route:
    hops, weights = list(route.hops), list(route.hopWeights)
    if first is not None:
        hops.insert(0, first)
        weights.insert(0, 0.0)
    if last is not None:
        hops.append(last)
        weights.append(0.0)
    return Route(hops, route.weight, weights, route.cos)


def _bytes(cp: Any) -> int:
    mux = getattr(cp, "mux", None)
    return int(getattr(mux, "bytesSent", 0) + getattr(mux, "bytesReceived", 0))


def installTopology(
    node: Any,
    cosTables: dict[str, ClassOfService] | None = None,
    stateDir: str | None = None,
    **options: Any,
) -> TopologyDatabase | None:
    """
    Give a network node its topology database (C{node.topology}); end nodes
    keep none (they ask their network-node server for routes), so for them
    this does nothing and returns C{None}.

    @param cosTables: classes of service added to (or replacing) the
        built-in ones, by name.
    @param stateDir: where the own RSN is persisted (C{topology.json}).
    @param options: tuning, see L{TopologyDatabase}.
    """
    if node.role != "network":
        return None
    db = TopologyDatabase(node, cosTables, stateDir, **options)
    node.topology = db
    node.addObserver(db)
    if isinstance(node, MultiService):
        db.setServiceParent(node)  # type: ignore[no-untyped-call]  # unannotated Twisted method
    else:
        db.startService()
    return db
