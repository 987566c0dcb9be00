"""
FRSN resynchronisation between neighbouring network nodes.

When a link comes up each side sends L{TopologySync} with the last FRSN it
received from the other (and the other's epoch); the other answers with the
records changed since, or everything if its epoch is not the one named (its
database was rebuilt, so FRSNs from before mean nothing).  A receiver
advances its "last FRSN from you" only over a complete, contiguous range, so
a gap (lost or rate-limited records) is filled at the next link-up.
"""

from __future__ import annotations

from appnpy.net.topology.database import Entry, RecordStore
from appnpy.net.topology.flooding import Neighbour
from appnpy.net.topology.records import TopologySync, TopologyUpdate

__all__ = ["syncRequest", "changesSince", "advance"]


def syncRequest(ns: Neighbour) -> TopologySync:
    """
    What to send a neighbour whose link just came up.
    """
    return TopologySync(epoch=ns.epoch, frsn=ns.lastFRSN)


def changesSince(store: RecordStore, msg: TopologySync, peer: str) -> tuple[list[Entry], int]:
    """
    The entries (sorted by FRSN) to answer C{peer}'s sync with, and the FRSN
    the answer starts from: the changes since the FRSN it names (except
    those it sent us), or everything from 0 when it names another epoch.
    """
    if msg.epoch == store.epoch and msg.frsn <= store.frsn:
        since = msg.frsn
        entries = [e for e in store.entries.values() if e.frsn > since and e.source != peer]
    else:
        since = 0
        entries = list(store.entries.values())
    entries.sort(key=lambda e: e.frsn)
    return entries, since


def advance(ns: Neighbour, msg: TopologyUpdate, limited: bool) -> None:
    """
    After applying C{msg}: move the neighbour's last FRSN over the range it
    completes, if it is contiguous with what we hold and nothing was dropped.
    """
    if msg.epoch and msg.frsn_to:
        if msg.epoch != ns.epoch:
            ns.epoch, ns.lastFRSN = msg.epoch, 0
        if msg.frsn_from <= ns.lastFRSN and not limited:
            ns.lastFRSN = max(ns.lastFRSN, msg.frsn_to)
