"""
Flooding: sending records to neighbouring network nodes, and the
per-neighbour rate limit on what they send us.

A change (applied from a neighbour, or originated here) is forwarded once to
every other network-node neighbour, batched into as few L{TopologyUpdate}
messages as the size limits allow, each claiming the FRSN range it completes.
Incoming records are charged to the sender's token bucket; a neighbour that
keeps flooding past it is disconnected with reason C{rate-limited}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.logger import Logger

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.errors import Reason
from appnpy.net.ratelimit import TokenBucket
from appnpy.net.topology.database import Entry, RecordStore
from appnpy.net.topology.records import (
    MAX_RECORDS_PER_MESSAGE,
    MESSAGE_BUDGET,
    TopologyRecord,
    TopologyUpdate,
)

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["Neighbour", "Flooder", "isNetworkPeer"]


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

    def rateLimited(self, cp: ControlPoint, ns: Neighbour, count: int, now: float) -> None:
        """
        C{count} records from C{cp} were dropped for want of tokens: log the
        start of a burst, and refuse the link past the abuse limit.
        """
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
