"""
Flooding: sending records to neighbouring network nodes, and the
per-neighbour rate limit on what they send us.

A change (applied from a neighbour, or originated here) is forwarded once to
every other network-node neighbour, batched into as few L{TopologyUpdate}
messages as the size limits allow, each claiming the FRSN range it completes.
Incoming records are charged twice: to the token bucket of the neighbour
that sent them, and to that of the node that I{originated} them (their
owner, L{OwnerBuckets}).  Past either, records are dropped (and the sender's
FRSN does not advance, so the next sync fills the gap); only a neighbour
whose I{own} records keep being dropped past the abuse limit is
disconnected with reason C{rate-limited}: an honest forwarder relaying
another node's flood is never cut off for it.

Per-neighbour state is kept across link outages (for the FRSN resync) but
pruned: a neighbour not linked for C{forgetAfter} seconds is forgotten, and
at most L{MAX_NEIGHBOURS} are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import attrs
from twisted.logger import Logger

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.errors import Reason
from appnpy.link.ratelimit import TokenBucket
from appnpy.net.topology.database import Entry, RecordStore
from appnpy.net.topology.records import (
    MAX_RECORDS_PER_MESSAGE,
    MESSAGE_BUDGET,
    TopologyRecord,
    TopologyUpdate,
)

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["Neighbour", "Flooder", "OwnerBuckets", "isNetworkPeer", "MAX_NEIGHBOURS"]

#: Most per-neighbour states kept (linked ones are never pruned).
MAX_NEIGHBOURS = 1024
#: Most per-owner buckets kept (the least recently charged go first).
MAX_OWNER_BUCKETS = 20_000


def isNetworkPeer(cp: ControlPoint) -> bool:
    """
    Whether C{cp} leads to a network node (only those keep a topology).
    """
    return cp.peerHello is not None and cp.peerHello.role == "network"


@attrs.define
class Neighbour:
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
    #: The FRSN up to which this neighbour has had every change it needs
    #: from us, while the link is up and synced; None otherwise.
    sentUpTo: int | None = None
    #: Whether a link to it is up, and when it last went down.
    linked: bool = False
    lastLinked: float = 0.0
    #: When we last asked it again for records we had to drop.
    lastResync: float = -1e18


class OwnerBuckets:
    """
    A token bucket per record owner: what an originator may make the
    network carry, whichever neighbours forward it.  Bounded (least
    recently charged forgotten first: a forgotten owner starts full again,
    which is what a fresh identity gets anyway).
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, owner: str, now: float) -> bool:
        bucket = self._buckets.get(owner)
        if bucket is None:
            bucket = self._buckets[owner] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > MAX_OWNER_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(owner)
        return bucket.take(now)


class Flooder:
    """
    Sends records to the neighbours and keeps their L{Neighbour} state.

    @ivar neighbours: by node ID.
    """

    log = Logger()

    def __init__(
        self,
        links: ILinkRegistry,
        store: RecordStore,
        stats: dict[str, int],
        rate: float,
        burst: float,
        abuseLimit: int,
        abuseWindow: float,
    ) -> None:
        self.links = links
        self.store = store
        self.stats = stats
        self.rate = rate
        self.burst = burst
        self.abuseLimit = abuseLimit
        self.abuseWindow = abuseWindow
        self.neighbours: dict[str, Neighbour] = {}

    def neighbour(self, peer: str, now: float) -> Neighbour:
        ns = self.neighbours.get(peer)
        if ns is None:
            ns = self.neighbours[peer] = Neighbour(TokenBucket(self.rate, self.burst, now))
        return ns

    def prune(self, now: float, forgetAfter: float) -> int:
        """
        Forget neighbours not linked for C{forgetAfter} seconds, and the
        longest unlinked past L{MAX_NEIGHBOURS}; returns how many.
        """
        unlinked = sorted(
            (ns.lastLinked, peer) for peer, ns in self.neighbours.items() if not ns.linked
        )
        excess = len(self.neighbours) - MAX_NEIGHBOURS
        gone = [
            peer for i, (at, peer) in enumerate(unlinked) if i < excess or now - at > forgetAfter
        ]
        for peer in gone:
            del self.neighbours[peer]
        return len(gone)

    def send(
        self, cp: ControlPoint, records: list[TopologyRecord], frsnFrom: int, frsnTo: int
    ) -> None:
        cp.send(
            TopologyUpdate(
                epoch=self.store.epoch,
                frsn_from=frsnFrom,
                frsn_to=frsnTo,
                records=[r.raw for r in records],
            )
        )
        self.stats["sent"] += len(records)

    def sendEntries(self, cp: ControlPoint, entries: list[Entry], since: int, upTo: int) -> None:
        """
        Send entries (sorted by FRSN) in as many messages as needed, each
        claiming the FRSN range it completes.
        """
        batch: list[Entry] = []
        size = 0
        start = since
        for e in entries:
            n = len(e.record.raw) + 8
            if batch and (size + n > MESSAGE_BUDGET or len(batch) >= MAX_RECORDS_PER_MESSAGE):
                end = batch[-1].frsn
                self.send(cp, [b.record for b in batch], start, end)
                start, batch, size = end, [], 0
            batch.append(e)
            size += n
        self.send(cp, [b.record for b in batch], start, max(upTo, start))

    def flood(self, entries: list[Entry], source: str | None, now: float) -> None:
        """
        Send C{entries} to every network-node neighbour but C{source}.
        """
        entries = sorted(entries, key=lambda e: e.frsn)
        since = entries[0].frsn - 1
        upTo = entries[-1].frsn
        for peer, cp in list(self.links.links.items()):
            if peer == source or not isNetworkPeer(cp):
                continue
            ns = self.neighbour(peer, now)
            # Every change since the last message to a synced neighbour was
            # either sent to it or came from it: claim the whole range.
            start = since if ns.sentUpTo is None else min(ns.sentUpTo, since)
            self.sendEntries(cp, entries, start, upTo)
            if ns.sentUpTo is not None:
                ns.sentUpTo = upTo
            if source is not None:
                self.stats["forwarded"] += len(entries)

    def rateLimited(
        self, cp: ControlPoint, ns: Neighbour, count: int, own: int, now: float
    ) -> None:
        """
        C{count} records from C{cp} were dropped for want of tokens, C{own}
        of them its own: log the start of a burst, and refuse the link when
        its own records dropped pass the abuse limit.
        """
        self.stats["rate_limited"] += count
        if now - ns.droppedWindowStart > self.abuseWindow:
            ns.droppedWindowStart, ns.dropped = now, 0
        ns.dropped += own
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
