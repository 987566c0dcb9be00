"""
FRSN resynchronisation between neighbouring network nodes.

When a link comes up each side sends L{TopologySync} with the last FRSN it
received from the other (and the other's epoch); the other answers with the
records changed since, or everything if its epoch is not the one named (its
database was rebuilt, so FRSNs from before mean nothing).  A receiver
advances its "last FRSN from you" only over a complete, contiguous range, so
a gap (lost or rate-limited records) is filled at the next link-up.

A record whose owner's key is not known yet (its node record is further on
in the sync, in another message) is I{held} (L{HeldRecords}), not dropped,
and applied once the owner's node record arrives.  The hold is bounded; a
record pushed out of it un-applied moves the sender's "last FRSN" back to
where that record came in, so the next sync sends it again: the FRSN never
passes a record dropped for its order.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from appnpy.net.topology.database import Entry, RecordStore
from appnpy.net.topology.flooding import Neighbour
from appnpy.net.topology.records import Key, TopologyRecord, TopologySync, TopologyUpdate

__all__ = ["syncRequest", "changesSince", "advance", "HeldRecords", "Held", "rewind"]


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


@attrs.frozen
class Held:
    """
    A record held for its owner's key: whence it came, and the FRSN its
    message started from in the sender's epoch.
    """

    record: TopologyRecord
    source: str
    epoch: str
    frsnFrom: int


class HeldRecords:
    """
    Records waiting for their owner's node record, oldest first, bounded in
    count and bytes.
    """

    def __init__(self, maxRecords: int, maxBytes: int) -> None:
        self.maxRecords = maxRecords
        self.maxBytes = maxBytes
        self.bytes = 0
        self._held: OrderedDict[Key, Held] = OrderedDict()
        self._byOwner: dict[str, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, held: Held) -> list[Held]:
        """
        Keep C{held} (replacing an older version of its key); returns what
        was pushed out to make room.
        """
        record = held.record
        old = self._held.get(record.key)
        if old is not None:
            if old.record.rsn >= record.rsn:
                return []
            self._drop(record.key)
        self._held[record.key] = held
        self._byOwner.setdefault(record.owner, set()).add(record.key)
        self.bytes += len(record.raw)
        out = []
        while len(self._held) > self.maxRecords or self.bytes > self.maxBytes:
            out.append(self._drop(next(iter(self._held))))
        return out

    def _drop(self, key: Key) -> Held:
        held = self._held.pop(key)
        self.bytes -= len(held.record.raw)
        keys = self._byOwner[key[1]]
        keys.discard(key)
        if not keys:
            del self._byOwner[key[1]]
        return held

    def release(self, owner: str) -> list[Held]:
        """
        Take out everything held for C{owner} (its key is known now).
        """
        return [self._drop(k) for k in sorted(self._byOwner.get(owner, ()))]


def rewind(ns: Neighbour, held: Held) -> None:
    """
    C{held} was dropped un-applied: make the next sync from its sender start
    no later than the message it came in.
    """
    if held.epoch == ns.epoch:
        ns.lastFRSN = min(ns.lastFRSN, held.frsnFrom)
