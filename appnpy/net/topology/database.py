"""
The record store of the topology database: the newest version of every
record, with the flow-reduction sequence number (FRSN) of each change.

Every change to the store gets the next local FRSN, so a neighbour that
names the last FRSN it received can be sent just the changes since
(L{appnpy.net.topology.sync}).  FRSNs are only comparable within one
I{epoch}, a random value per store instance.

The store checks signatures against the owners' keys in their node records,
counts link records per owner (for the per-origin cap), computes the digest
operators compare across nodes, ages out records that were not refreshed,
and builds the routing graph: every network node with a node record, and
every link both of whose ends announce it up.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import attrs

from appnpy.link.identity import nodeIDFromSPKI
from appnpy.net.routing import LinkCharacteristics, NodeCharacteristics, TopologyGraph
from appnpy.net.topology.records import LINK, NODE, BadRecord, Key, TopologyRecord

__all__ = ["Entry", "RecordStore"]


@attrs.define
class Entry:
    """
    One record in the store and when and whence it came.
    """

    record: TopologyRecord
    frsn: int
    receivedAt: float
    #: The neighbour it came from; None for our own records.
    source: str | None


def _nodeChars(record: TopologyRecord) -> NodeCharacteristics:
    return NodeCharacteristics(record.body["resistance"], record.body["load"])


def _linkChars(record: TopologyRecord) -> LinkCharacteristics:
    b = record.body
    return LinkCharacteristics(b["rtt_ms"], b["throughput"], b["cost"], b["security"])


class RecordStore:
    """
    The records of one topology database by (kind, owner, subject).

    @ivar entries: the records, by key.
    @ivar frsn: the FRSN of the latest change.
    @ivar epoch: the random value that scopes C{frsn}.
    """

    def __init__(self, nodeID: str, ownPublicKey: bytes) -> None:
        self.nodeID = nodeID
        self.ownPublicKey = ownPublicKey
        self.epoch = secrets.token_hex(8)
        self.frsn = 0
        self.entries: dict[Key, Entry] = {}
        self._linkCount: dict[str, int] = {}
        #: The routing graph, built on demand; None after any change.
        self.cachedGraph: TopologyGraph | None = None

    def __len__(self) -> int:
        return len(self.entries)

    # -- changes ---------------------------------------------------------------

    def apply(self, record: TopologyRecord, source: str | None, now: float) -> Entry:
        """
        Store C{record} (already checked) under the next FRSN.
        """
        old = self.entries.get(record.key)
        if old is None and record.kind == LINK:
            self._linkCount[record.owner] = self._linkCount.get(record.owner, 0) + 1
        self.frsn += 1
        entry = Entry(record, self.frsn, now, source)
        self.entries[record.key] = entry
        return entry

    def remove(self, key: Key) -> None:
        if self.entries.pop(key, None) is not None and key[0] == LINK:
            n = self._linkCount.get(key[1], 1) - 1
            if n:
                self._linkCount[key[1]] = n
            else:
                self._linkCount.pop(key[1], None)

    def ageOut(self, now: float, maxAge: float) -> int:
        """
        Remove records received more than C{maxAge} ago and not refreshed
        since; a node record takes its owner's link records with it.  Own
        records never age.  Returns how many were removed.
        """
        stale = [
            k
            for k, e in self.entries.items()
            if e.source is not None and now - e.receivedAt > maxAge
        ]
        owners = {k[1] for k in stale if k[0] == NODE}
        stale += [k for k in self.entries if k[0] == LINK and k[1] in owners and k not in stale]
        for k in stale:
            self.remove(k)
        return len(stale)

    # -- checks ----------------------------------------------------------------

    def linkCount(self, owner: str) -> int:
        return self._linkCount.get(owner, 0)

    def nodeCount(self) -> int:
        return len(self.entries) - sum(self._linkCount.values())

    def verify(self, record: TopologyRecord) -> None:
        """
        Check the signature: a node record against the key it carries (which
        must be its owner's), a link record against its owner's node record.

        @raise BadRecord: C{bad_signature} or C{unknown_owner_key}.
        """
        if record.kind == NODE:
            pk = record.body["public_key"]
            if nodeIDFromSPKI(pk) != record.owner:
                raise BadRecord("bad_signature", "the record's key is not its owner's")
        elif record.owner == self.nodeID:
            pk = self.ownPublicKey
        else:
            entry = self.entries.get((NODE, record.owner, ""))
            if entry is None:
                raise BadRecord("unknown_owner_key", "no node record for the owner")
            pk = entry.record.body["public_key"]
        if not record.verify(pk):
            raise BadRecord("bad_signature", "the signature does not verify")

    # -- queries ---------------------------------------------------------------

    def records(self) -> list[TopologyRecord]:
        return [e.record for e in self.entries.values()]

    def record(self, kind: str, owner: str, subject: str = "") -> TopologyRecord | None:
        e = self.entries.get((kind, owner, subject))
        return e.record if e is not None else None

    def digest(self) -> str:
        """
        SHA-256 over the sorted (kind, owner, subject, RSN) of every record:
        equal on two nodes when their databases hold the same versions.
        """
        h = hashlib.sha256()
        for kind, owner, subject, rsn in sorted(
            (*k, e.record.rsn) for k, e in self.entries.items()
        ):
            h.update(f"{kind} {owner} {subject} {rsn}\n".encode())
        return h.hexdigest()

    def nodeName(self, nodeID: str) -> str | None:
        e = self.entries.get((NODE, nodeID, ""))
        return e.record.body["name"] if e is not None else None

    def networkNodes(self) -> list[str]:
        return sorted(k[1] for k in self.entries if k[0] == NODE)

    def servingNode(self, endNodeID: str) -> str | None:
        """
        The network node whose node record lists C{endNodeID} as attached
        (the lowest node ID if several do, so every node agrees).
        """
        servers = sorted(
            k[1]
            for k, e in self.entries.items()
            if k[0] == NODE and endNodeID in e.record.body["end_nodes"]
        )
        return servers[0] if servers else None

    def graph(self) -> TopologyGraph:
        """
        The routing graph: every network node with a node record, and every
        link both of whose ends announce it up (characteristics: the worse
        of the two announcements).  Cached until the next change.
        """
        if self.cachedGraph is not None:
            return self.cachedGraph
        g = TopologyGraph()
        for (kind, owner, _), e in self.entries.items():
            if kind == NODE:
                g.addNode(owner, _nodeChars(e.record))
        for (kind, owner, subject), e in self.entries.items():
            if kind != LINK or not owner < subject or not e.record.body["up"]:
                continue
            back = self.entries.get((LINK, subject, owner))
            if back is None or not back.record.body["up"]:
                continue
            if owner not in g.nodes or subject not in g.nodes:
                continue
            g.addLink(
                owner,
                subject,
                LinkCharacteristics.combine(_linkChars(e.record), _linkChars(back.record)),
            )
        self.cachedGraph = g
        return g

    def describe(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """
        The node and link records, in key order, as the management API
        shows them (with their age and whether each link is routable).
        """
        g = self.graph()
        nodes = []
        links = []
        for (kind, owner, subject), e in sorted(self.entries.items()):
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
        return nodes, links
