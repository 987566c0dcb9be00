"""
Bootstrap and peer exchange: how a node finds its neighbours and keeps
C{max-peers} links to them.

The L{PeerManager} dials the configured peers, then learns further nodes
from its neighbours through the C{PeerAddresses} control message.  Each
address record is signed by the node it describes, so a neighbour can relay
records but cannot forge or alter one (see L{appnpy.net.addresses}).  A record that fails any check is dropped (and counted in one log line); the
link stays up, since the sender may only be relaying it.

Records flood: a node sends its own record and what it knows to each new
neighbour, and forwards every record that was new to it to its other
neighbours (an equal or older C{seq} stops the flood).  Known records are
kept in C{peers.json} in the data directory (written atomically, on change
after a short delay, and at stop), so a restarted node rejoins without
C{--peer}.  The file is JSON an operator can read: per record its node ID,
addresses and C{seq} in words, beside C{signed}, the record exactly as its
node signed it (base64 of the CBOR).  Loading reads only C{signed} and
verifies it again; the readable fields are never trusted.

Bookkeeping is bounded: at most L{MAX_KNOWN} records, and a backoff entry
only for a node worth redialling (a configured peer, or one with a known
record); the entry of any other node is dropped when its link is lost or
its record forgotten.

When listening on a wildcard address (C{0.0.0.0} or C{::}) a node cannot
know which of its addresses a neighbour can reach; it advertises to each
neighbour the local address of the link to that neighbour (the address the
neighbour reached it at, or the interface it dialled out from).  Behind NAT
neither is reachable from outside: listen on, and so advertise, the public
address instead.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable, Iterable

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import ILinkObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.errors import Reason
from appnpy.link.statefile import writeAtomically
from appnpy.link.tls import LinkAddress, parseAddress
from appnpy.net._interfaces import IPeerHost
from appnpy.net.addresses import MAX_RECORDS, AddressRecord, BadAddressRecord, PeerAddresses

#: Most records a node keeps (the oldest are forgotten first).
MAX_KNOWN = 1024
#: Budget for the records of one message, under the control message limit.
_MESSAGE_BUDGET = 60 * 1024
#: Inbound links accepted beyond max-peers before new ones are shed.
DEFAULT_SLACK = 2
PEERS_FILE = "peers.json"
_FILE_VERSION = 2
_WILDCARDS = frozenset({"0.0.0.0", "::"})


@attrs.define
class _Backoff:
    attempts: int = 0
    notBefore: float = 0.0


@implementer(ILinkObserver)
class PeerManager(Service):
    """
    Keeps a node linked to C{maxPeers} neighbours: dials the configured
    peers, learns others by peer exchange, redials lost links with
    exponential backoff and jitter, sheds inbound links beyond
    C{maxPeers + slack}, and remembers known peers in C{peers.json}.

    @param node: the node whose links are kept (see L{IPeerHost}).
    @param dial: how to dial an address (default C{node.connect}); tests
        substitute an in-memory dialler.
    @param addresses: this node's advertised addresses (default
        C{node.advertisedAddresses}).
    @param rng: the source of backoff jitter and dial order; seed it in tests.
    """

    log = Logger()

    def __init__(
        self,
        node: IPeerHost,
        dataDir: str | None = None,
        bootstrap: Iterable[str | LinkAddress] = (),
        maxPeers: int = 8,
        slack: int = DEFAULT_SLACK,
        rng: random.Random | None = None,
        dial: Callable[[LinkAddress], Deferred[ControlPoint]] | None = None,
        addresses: Callable[[], list[str]] | None = None,
        backoffBase: float = 1.0,
        backoffCap: float = 300.0,
        saveDelay: float = 2.0,
        tickInterval: float = 30.0,
        stableAfter: float = 30.0,
    ) -> None:
        self.node = node
        self.reactor = node.reactor
        self.dataDir = dataDir
        self.bootstrap = [parseAddress(a) if isinstance(a, str) else a for a in bootstrap]
        self.maxPeers = maxPeers
        self.slack = slack
        self.rng = rng or random.Random()
        self._dial = dial or node.connect
        self._addresses = addresses or node.advertisedAddresses
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.saveDelay = saveDelay
        self.tickInterval = tickInterval
        self.stableAfter = stableAfter
        #: Verified records of other nodes, by node ID.
        self.records: dict[str, AddressRecord] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._dialling: set[str] = set()
        self._bootstrapIDs: dict[str, str] = {}
        self._upSince: dict[str, float] = {}
        self._ownRecords: dict[tuple[str, ...], AddressRecord] = {}
        self._lastSeq = 0
        self._tick: IDelayedCall | None = None
        self._saveTimer: IDelayedCall | None = None
        self._observing = False

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.load()
        self.node.addControlHandler(PeerAddresses, self.peerAddressesReceived)
        if not self._observing:
            self.node.addLinkObserver(self)
            self._observing = True
        # The node starts listening after its children start; dial once it
        # has, so the first neighbours learn our addresses.
        self._schedule(0)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        for timer in (self._tick, self._saveTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._tick = self._saveTimer = None
        self.node.removeControlHandler(PeerAddresses)
        self.save()

    # -- persistence ---------------------------------------------------------

    @property
    def path(self) -> str | None:
        return os.path.join(self.dataDir, PEERS_FILE) if self.dataDir else None

    def load(self) -> None:
        """
        Read C{peers.json}; every record is verified again, so a damaged or
        edited file cannot introduce a forged address.
        """
        path = self.path
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
            # Version 1 kept bare base64 strings; version 2 objects with the
            # signed record under "signed" and readable copies of its fields.
            raws = [
                base64.b64decode(r if isinstance(r, str) else r["signed"], validate=True)
                for r in document["records"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log.warn("ignoring unreadable {path}: {why}", path=path, why=str(e))
            return
        bad = 0
        for raw in raws:
            try:
                self._learn(AddressRecord.fromBytes(raw))
            except BadAddressRecord:
                bad += 1
        self.log.info("loaded {count} known peers from {path}", count=len(self.records), path=path)
        if bad:
            self.log.warn("ignored {bad} invalid records in {path}", bad=bad, path=path)

    def save(self) -> None:
        """
        Write C{peers.json} atomically (temporary file, fsync, rename).
        """
        path = self.path
        if path is None:
            return
        if self._saveTimer is not None and self._saveTimer.active():
            self._saveTimer.cancel()
        self._saveTimer = None
        document = {
            "version": _FILE_VERSION,
            "records": [
                {
                    "node_id": r.node_id,
                    "addresses": list(r.addresses),
                    "seq": r.seq,
                    "signed": base64.b64encode(r.raw).decode("ascii"),
                }
                for r in sorted(self.records.values(), key=lambda r: r.node_id)
            ],
        }
        try:
            writeAtomically(path, json.dumps(document, indent=1).encode("utf-8"), 0o600)
        except OSError as e:
            self.log.warn("could not save {path}: {why}", path=path, why=str(e))
            return
        self.log.info("saved {count} known peers to {path}", count=len(self.records), path=path)

    def _scheduleSave(self) -> None:
        if self.path is None or not self.running:
            return
        if self._saveTimer is None or not self._saveTimer.active():
            self._saveTimer = self.reactor.callLater(self.saveDelay, self.save)

    # -- records -------------------------------------------------------------

    def ownRecord(self, cp: ControlPoint | None = None) -> AddressRecord | None:
        """
        This node's signed record as advertised to the neighbour on C{cp};
        L{None} when the node listens nowhere.
        """
        addresses = []
        local = _localHost(cp) if cp is not None else None
        for text in self._addresses():
            addr = parseAddress(text)
            if addr.host in _WILDCARDS:
                if local is None:
                    continue
                addr = attrs.evolve(addr, host=local)
            addresses.append(str(addr))
        if not addresses:
            return None
        key = tuple(addresses)
        record = self._ownRecords.get(key)
        if record is None:
            seq = max(self._lastSeq + 1, int(self.reactor.seconds() * 1000))
            self._lastSeq = seq
            record = AddressRecord.create(self.node.identity, addresses, seq)
            self._ownRecords[key] = record
        return record

    def _learn(self, record: AddressRecord) -> bool:
        if record.node_id == self.node.nodeID:
            return False
        old = self.records.get(record.node_id)
        if old is not None and old.seq >= record.seq:
            return False
        self.records[record.node_id] = record
        if len(self.records) > MAX_KNOWN:
            spare = [r for r in self.records.values() if r.node_id not in self.node.links]
            oldest = min(spare or self.records.values(), key=lambda r: r.seq)
            del self.records[oldest.node_id]
            self._pruneBackoff()
        return True

    def _send(self, cp: ControlPoint, records: list[AddressRecord]) -> None:
        batch: list[bytes] = []
        size = 0
        for record in records:
            if len(batch) == MAX_RECORDS or size + len(record.raw) > _MESSAGE_BUDGET:
                cp.send(PeerAddresses(records=batch))
                batch, size = [], 0
            batch.append(record.raw)
            size += len(record.raw) + 3
        if batch:
            cp.send(PeerAddresses(records=batch))

    def _recordsFor(self, cp: ControlPoint) -> list[AddressRecord]:
        own = self.ownRecord(cp)
        others = sorted(
            (r for r in self.records.values() if r.node_id != cp.peerNodeID),
            key=lambda r: r.seq,
            reverse=True,
        )
        return ([own] if own is not None else []) + others[: MAX_RECORDS - 1]

    def peerAddressesReceived(self, cp: ControlPoint, msg: PeerAddresses) -> None:
        """
        Verify and learn the records a neighbour sent; forward the new ones.
        """
        fresh: list[AddressRecord] = []
        bad: list[str] = []
        for raw in msg.records:
            try:
                record = AddressRecord.fromBytes(raw)
            except BadAddressRecord as e:
                bad.append(str(e.args[0]) if e.args else "invalid")
                continue
            if self._learn(record):
                fresh.append(record)
        if bad:
            self.log.warn(
                "dropped {count} invalid address records from {peer}: {why}",
                count=len(bad),
                peer=cp.peerNodeID,
                why=bad[0],
            )
        if not fresh:
            return
        self.log.debug(
            "learned {count} peer addresses from {peer}", count=len(fresh), peer=cp.peerNodeID
        )
        for other in list(self.node.links.values()):
            if other is not cp:
                self._send(other, [r for r in fresh if r.node_id != other.peerNodeID])
        self._scheduleSave()
        if len(self.node.links) < self.maxPeers:
            self._schedule(0)

    # -- link events (ILinkObserver) -------------------------------------------

    def linkActive(self, cp: ControlPoint) -> None:
        if not self.running:
            return
        self._upSince[cp.peerNodeID] = self.reactor.seconds()
        records = self._recordsFor(cp)
        if not cp.isDialer and len(self.node.links) > self.maxPeers + self.slack:
            # Full: the newcomer still learns where else to go.
            self._send(cp, records)
            self.log.info(
                "shedding link from {peer}: {count} links, max-peers {max}",
                peer=cp.peerNodeID,
                count=len(self.node.links),
                max=self.maxPeers,
            )
            cp.refuseLink(
                Reason.BUSY,
                f"{len(self.node.links) - 1} links (max-peers {self.maxPeers}); "
                "try the addresses sent",
            )
            return
        self._send(cp, records)

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        since = self._upSince.pop(cp.peerNodeID, None)
        if not self.running or self.node.shuttingDown:
            return
        if why[0] == Reason.DUPLICATE_LINK and cp.peerNodeID in self.node.links:
            return
        if cp.peerNodeID in self.records or self._isBootstrap(cp.peerNodeID):
            state = self._backoff.setdefault(cp.peerNodeID, _Backoff())
            if since is not None and self.reactor.seconds() - since >= self.stableAfter:
                state.attempts = 0
            delay = self._fail(cp.peerNodeID)
            self.log.info(
                "will redial {peer} in {delay:.1f} s ({reason})",
                peer=cp.peerNodeID,
                delay=delay,
                reason=why[0],
            )
        else:
            # Never redialled (no address known): keep no entry for it, or
            # every node that ever passed by would leave one behind.
            self._backoff.pop(cp.peerNodeID, None)
        self._schedule(0)

    # -- dialling --------------------------------------------------------------

    def backoffDelay(self, attempts: int) -> float:
        """
        The wait before attempt C{attempts + 1}: exponential from
        C{backoffBase}, capped at C{backoffCap}, with "equal jitter" (a
        uniform draw from the upper half), so failed peers are not redialled
        in lockstep.
        """
        ceiling: float = min(self.backoffCap, self.backoffBase * 2 ** max(attempts - 1, 0))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def _fail(self, key: str) -> float:
        state = self._backoff.setdefault(key, _Backoff())
        state.attempts += 1
        delay = self.backoffDelay(state.attempts)
        state.notBefore = self.reactor.seconds() + delay
        return delay

    def _pruneBackoff(self) -> None:
        """
        Forget the backoff of nodes no longer worth dialling: neither a
        configured peer nor a known record (forgotten as the oldest).
        """
        keep = {self._key(a) for a in self.bootstrap} | set(self.records) | self._dialling
        for key in [k for k in self._backoff if k not in keep and not self._isBootstrap(k)]:
            del self._backoff[key]

    def _isBootstrap(self, nodeID: str) -> bool:
        return any(
            a.nodeID == nodeID or self._bootstrapIDs.get(str(a)) == nodeID for a in self.bootstrap
        )

    def _key(self, address: LinkAddress) -> str:
        return address.nodeID or self._bootstrapIDs.get(str(address)) or f"addr:{address}"

    def candidates(self) -> list[tuple[str, LinkAddress]]:
        """
        Who to dial next, in order: configured peers, then known nodes in
        random order; never a linked node, one being dialled, or one still
        backing off.
        """
        now = self.reactor.seconds()
        out: list[tuple[str, LinkAddress]] = []
        seen: set[str] = set()

        def consider(key: str, address: LinkAddress) -> None:
            state = self._backoff.get(key)
            if (
                key in seen
                or key == self.node.nodeID
                or key in self.node.links
                or key in self._dialling
                or (state is not None and state.notBefore > now)
            ):
                return
            seen.add(key)
            out.append((key, address))

        for address in self.bootstrap:
            consider(self._key(address), address)
        known = sorted(self.records.values(), key=lambda r: r.node_id)
        self.rng.shuffle(known)
        for record in known:
            if record.addresses:
                attempts = self._backoff.get(record.node_id, _Backoff()).attempts
                addresses = record.linkAddresses()
                consider(record.node_id, addresses[attempts % len(addresses)])
        return out

    def maintain(self) -> None:
        """
        Dial candidates until C{maxPeers} links are up or being made, then
        plan the next check.
        """
        self._tick = None
        if not self.running:
            return
        self._pruneBackoff()
        self._trimSurplus()
        candidates = self.candidates()
        # The configured peers are the operator's word: each is dialled (with
        # backoff) until linked, even when inbound links already fill
        # max-peers (nodes started at once would otherwise split: a peer not
        # listening yet refuses the first dial, then an inbound link takes
        # the only place and the node never dials its configured peer again).
        configured = self._configuredKeys()
        room = self.maxPeers + self.slack - len(self.node.links) - len(self._dialling)
        first = [c for c in candidates if c[0] in configured][: max(0, room)]
        for key, address in first:
            self._dialOne(key, address)
        wanted = self.maxPeers - len(self.node.links) - len(self._dialling)
        if wanted > 0:
            # A dial that failed at once is not in _dialling any more: skip
            # what this pass already tried.
            rest = [c for c in candidates if c not in first]
            for key, address in rest[:wanted]:
                self._dialOne(key, address)
        self._planNext()

    def _configuredKeys(self) -> set[str]:
        return {self._key(a) for a in self.bootstrap}

    def _configuredUnlinked(self) -> bool:
        return any(
            k not in self.node.links and k not in self._dialling for k in self._configuredKeys()
        )

    def _trimSurplus(self) -> None:
        """
        Close the newest idle links beyond C{maxPeers + slack} (races of
        simultaneous dials can overshoot), telling their peers we are busy.
        """
        surplus = len(self.node.links) - (self.maxPeers + self.slack)
        if surplus <= 0:
            return
        idle = [cp for cp in self.node.links.values() if not cp.sessions]
        idle.sort(key=lambda cp: self._upSince.get(cp.peerNodeID, 0.0), reverse=True)
        for cp in idle[:surplus]:
            self._send(cp, self._recordsFor(cp))
            cp.refuseLink(Reason.BUSY, f"over max-peers {self.maxPeers}; try the addresses sent")

    def _planNext(self) -> None:
        delay = self.tickInterval
        if len(self.node.links) + len(self._dialling) < self.maxPeers or self._configuredUnlinked():
            now = self.reactor.seconds()
            waits = [s.notBefore - now for s in self._backoff.values() if s.notBefore > now]
            if waits:
                delay = min(delay, min(waits) + 0.001)
        self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        due = self.reactor.seconds() + delay
        if self._tick is not None and self._tick.active():
            if self._tick.getTime() <= due:
                return
            self._tick.cancel()
        self._tick = self.reactor.callLater(delay, self.maintain)

    def _dialOne(self, key: str, address: LinkAddress) -> None:
        self._dialling.add(key)
        self.log.debug("dialling {address}", address=str(address))
        try:
            d = self._dial(address)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addCallbacks(self._dialled, self._dialFailed, (key, address), {}, (key, address))

    def _dialled(self, cp: ControlPoint, key: str, address: LinkAddress) -> None:
        self._dialling.discard(key)
        if address.nodeID is None:
            self._bootstrapIDs[str(address)] = cp.peerNodeID
            if key != cp.peerNodeID:
                self._backoff.pop(key, None)

    def _dialFailed(self, failure: Failure, key: str, address: LinkAddress) -> None:
        self._dialling.discard(key)
        if not self.running:
            return
        delay = self._fail(key)
        self.log.info(
            "could not link to {address}: {why}; next try in {delay:.1f} s",
            address=str(address),
            why=failure.getErrorMessage(),
            delay=delay,
        )
        self._schedule(0)


def _localHost(cp: ControlPoint) -> str | None:
    try:
        # No transport (None) lands in the except below.
        host = cp.link.transport.getHost()
    except Exception:
        return None
    if not isinstance(host, (IPv4Address, IPv6Address)):
        return None
    return host.host if host.host not in _WILDCARDS else None
