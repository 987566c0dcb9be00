"""
The record store of the topology database: the newest version of every
record, with the flow-reduction sequence number (FRSN) of each change.

Every change to the store gets the next local FRSN, so a neighbour that
names the last FRSN it received can be sent just the changes since
(L{appnpy.net.topology.sync}).  FRSNs are only comparable within one
I{epoch}, a random value per store instance.

The store checks signatures against the owners' keys in their node records
(an end record against the key it carries), counts link records per owner
(for the per-origin cap) and the bytes held (for the budget), computes the
digest operators compare across nodes, ages out records that were not
refreshed, and builds the routing graph: every network node with a node
record, and every link both of whose ends announce it up.

A record removed because it aged out or its node was withdrawn leaves a
I{tombstone}: the highest RSN removed for its key, so a copy replayed later
at that RSN or below is refused (bounded: the oldest tombstones go first).
A withdrawn node's records (nothing announces a link up to it any more) are
also kept I{dormant}, bounded in bytes, outside the database: when a link
to that node is announced up again they come back (a node that moved to
another neighbour does not have to re-issue what it announced already).
When space runs out, L{RecordStore.evictionOrder} says whose records go:
see its docstring.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Container, Iterable
from typing import Any

import attrs

from appnpy.link.identity import nodeIDFromSPKI
from appnpy.net.routing import LinkCharacteristics, NodeCharacteristics, TopologyGraph
from appnpy.net.topology.records import END, LINK, NODE, BadRecord, Key, TopologyRecord

__all__ = ["Entry", "RecordStore", "MAX_TOMBSTONES"]

#: Most tombstones kept (the oldest are forgotten first).
MAX_TOMBSTONES = 20_000
#: Bytes of dormant records kept (the oldest are forgotten first).
MAX_DORMANT_BYTES = 1 << 20


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
        #: The keys held, by owner.
        self._byOwner: dict[str, set[Key]] = {}
        self._nodeCount = 0
        #: Bytes of the records held (their wire form).
        self.bytes = 0
        #: The highest RSN removed, by key (see the module docstring).
        self.tombstones: OrderedDict[Key, int] = OrderedDict()
        #: Owners whose link records announce a link to a node, by that node.
        self._upLinksTo: dict[str, set[str]] = {}
        #: Nodes that lost a link announced up since the last L{takeLost}.
        self._lost: set[str] = set()
        #: Records of withdrawn nodes, by key, and by owner.
        self.dormant: OrderedDict[Key, Entry] = OrderedDict()
        self._dormantBytes = 0
        #: Entries brought back from dormancy since the last L{takeRevived}.
        self._revived: list[Entry] = []
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
        elif old is None and record.kind == NODE:
            self._nodeCount += 1
        if old is not None:
            self.bytes -= len(old.record.raw)
            self._unindex(old.record)
        self.tombstones.pop(record.key, None)
        self.frsn += 1
        entry = Entry(record, self.frsn, now, source)
        self.entries[record.key] = entry
        self._byOwner.setdefault(record.owner, set()).add(record.key)
        self.bytes += len(record.raw)
        self._undorm(record.key)
        if record.kind == LINK and record.body["up"]:
            self._upLinksTo.setdefault(record.subject, set()).add(record.owner)
            if (NODE, record.subject, "") in self.dormant:
                self._revive(record.subject, now)
        return entry

    def _undorm(self, key: Key) -> Entry | None:
        entry = self.dormant.pop(key, None)
        if entry is not None:
            self._dormantBytes -= len(entry.record.raw)
        return entry

    def _revive(self, owner: str, now: float) -> None:
        for key in [k for k in self.dormant if k[1] == owner]:
            entry = self._undorm(key)
            if entry is not None and key not in self.entries:
                self._revived.append(self.apply(entry.record, entry.source, now))

    def takeRevived(self) -> list[Entry]:
        """
        The entries brought back since the last call (to flood on).
        """
        revived, self._revived = self._revived, []
        return revived

    def _unindex(self, record: TopologyRecord, notify: bool = True) -> None:
        if record.kind == LINK and record.body["up"]:
            owners = self._upLinksTo.get(record.subject)
            if owners is not None:
                owners.discard(record.owner)
                if not owners:
                    del self._upLinksTo[record.subject]
            if notify:
                self._lost.add(record.subject)

    def remove(
        self, key: Key, tombstone: bool = False, dormant: bool = False, notify: bool = True
    ) -> None:
        """
        Forget the record under C{key}; with C{tombstone}, refuse its RSN
        and below from now on; with C{dormant} too, keep it to revive.
        Without C{notify}, a link it announced up does not make its
        subject a candidate for withdrawal (L{takeLost}).
        """
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        if dormant and entry.source is not None:
            self.dormant[key] = entry
            self._dormantBytes += len(entry.record.raw)
            while self._dormantBytes > MAX_DORMANT_BYTES:
                self._undorm(next(iter(self.dormant)))
        self.bytes -= len(entry.record.raw)
        self._unindex(entry.record, notify)
        keys = self._byOwner[key[1]]
        keys.discard(key)
        if not keys:
            del self._byOwner[key[1]]
        if tombstone:
            self.tombstones[key] = entry.record.rsn
            self.tombstones.move_to_end(key)
            while len(self.tombstones) > MAX_TOMBSTONES:
                self.tombstones.popitem(last=False)
        if key[0] == NODE:
            self._nodeCount -= 1
        elif key[0] == LINK:
            n = self._linkCount.get(key[1], 1) - 1
            if n:
                self._linkCount[key[1]] = n
            else:
                self._linkCount.pop(key[1], None)

    def removeOwner(
        self, owner: str, tombstone: bool = False, dormant: bool = False, notify: bool = True
    ) -> int:
        """
        Forget every record of C{owner} (see L{remove}); returns how many.
        """
        keys = sorted(self._byOwner.get(owner, ()))
        for k in keys:
            self.remove(k, tombstone, dormant, notify)
        return len(keys)

    def replayed(self, record: TopologyRecord) -> bool:
        """
        Whether C{record} is a version at or below a tombstone's RSN.
        """
        rsn = self.tombstones.get(record.key)
        if rsn is None or record.rsn > rsn:
            return False
        # The same version again is welcome once something ties its owner
        # to the network again (its dormant copy may have been forgotten).
        return record.rsn < rsn or not self._upLinksTo.get(record.owner)

    def takeLost(self) -> set[str]:
        """
        The nodes some link announced up to was withdrawn from since the
        last call (candidates for L{withdrawDead}).
        """
        lost, self._lost = self._lost, set()
        return lost

    def hasLinks(self, nodeID: str) -> bool:
        """
        Whether a link record announced by C{nodeID} is held, or one that
        another node announces up to it.
        """
        return bool(self._linkCount.get(nodeID) or self._upLinksTo.get(nodeID))

    def isCutOff(self, nodeID: str) -> bool:
        """
        Whether no other node announces a link up to C{nodeID} any more
        (while C{nodeID} has a node record): nothing ties it to the network.
        """
        return (NODE, nodeID, "") in self.entries and not self._upLinksTo.get(nodeID)

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
        staleSet = set(stale)
        stale += [k for k in self.entries if k[0] == LINK and k[1] in owners and k not in staleSet]
        for k in stale:
            self.remove(k, tombstone=True)
        return len(stale)

    # -- checks ----------------------------------------------------------------

    def ownerBytes(self, owner: str) -> int:
        return sum(len(self.entries[k].record.raw) for k in self._byOwner.get(owner, ()))

    def linkCount(self, owner: str) -> int:
        return self._linkCount.get(owner, 0)

    def nodeCount(self) -> int:
        return self._nodeCount

    def verify(self, record: TopologyRecord) -> None:
        """
        Check the signature: a node record against the key it carries (which
        must be its owner's), a link record against its owner's node record.

        @raise BadRecord: C{bad_signature} or C{unknown_owner_key}.
        """
        if record.kind in (NODE, END):
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
        The network node serving C{endNodeID}: the one its own (signed)
        C{end} record names, and only while that node's record also lists
        it as attached.  Both ends must say so, as for a link; a node record
        listing an end node that did not name it counts for nothing.
        """
        end = self.entries.get((END, endNodeID, ""))
        if end is None:
            return None
        server = end.record.subject
        node = self.entries.get((NODE, server, ""))
        if node is None or endNodeID not in node.record.body["end_nodes"]:
            return None
        return server

    # -- space -----------------------------------------------------------------

    def withdrawCutOff(self, linked: Container[str]) -> int:
        """
        Withdraw (tombstone, keep dormant) every node that lost a link and
        that no other node announces a link up to any more, unless it is
        C{linked} to us; returns how many records went.
        """
        count = 0
        lost = self.takeLost()
        while lost:
            for node in lost:
                if node != self.nodeID and node not in linked and self.isCutOff(node):
                    count += self.removeOwner(node, tombstone=True, dormant=True)
            lost = self.takeLost()
        return count

    def evict(self, maxBytes: int, maxNodes: int, keep: Iterable[str] = ()) -> int:
        """
        Over C{maxBytes} or C{maxNodes}: drop whole owners in
        L{evictionOrder} until back under 95% of both; returns how many
        records went.  No tombstones (they may come back when there is room)
        and no withdrawals (their links withdraw nobody).
        """
        if self.bytes <= maxBytes and self._nodeCount <= maxNodes:
            return 0
        count = 0
        for owner in self.evictionOrder(keep):
            if self.bytes <= maxBytes * 0.95 and self._nodeCount <= maxNodes * 0.95:
                break
            count += self.removeOwner(owner, notify=False)
        return count

    def reachable(self) -> dict[str, int]:
        """
        The network nodes reachable from this one over links both ends
        announce up, with their distance in hops.
        """
        adjacency = self.graph().adjacency
        seen = {self.nodeID: 0}
        frontier = [self.nodeID]
        while frontier:
            nxt = []
            for n in frontier:
                for peer in adjacency.get(n, {}):
                    if peer not in seen:
                        seen[peer] = seen[n] + 1
                        nxt.append(peer)
            frontier = nxt
        return seen

    def evictionOrder(self, keep: Iterable[str] = ()) -> list[str]:
        """
        The owners whose records go first when the database is full, first
        to go first: (1) owners that nothing ties to this node (no path of
        links confirmed by both ends; an end node counts as tied when its
        named server lists it and is tied), oldest first, so a node that just joined outlives
        the records pushed before it; then (2) tied owners farthest away
        first, the most recently heard first among equals.  This node and
        C{keep} never go.
        """
        distance = self.reachable()
        newest: dict[str, float] = {}
        servers: dict[str, str] = {}
        for owner, keys in self._byOwner.items():
            newest[owner] = max(self.entries[k].receivedAt for k in keys)
            if (END, owner, "") in self.entries:
                # Tied only through a server that lists it, as for routes.
                servers[owner] = self.servingNode(owner) or ""
        protected = set(keep) | {self.nodeID}
        loose: list[tuple[float, str]] = []
        tied: list[tuple[int, float, str]] = []
        for owner, at in newest.items():
            if owner in protected:
                continue
            d = distance.get(servers.get(owner, owner))
            if d is None:
                loose.append((at, owner))
            else:
                tied.append((-d, -at, owner))
        loose.sort()
        tied.sort()
        return [o for _, o in loose] + [o for _, _, o in tied]

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
            elif kind == LINK:
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
