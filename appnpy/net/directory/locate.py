"""
Locate: which node owns a resource.  At a network node (APPN directory
services):

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

An end node sends its locates to its network-node server, which runs the
whole sequence and adds the route from the end node.

Answers are bounded: every node, intermediate ones too, verifies the records
of a reply before it passes them on (signature, name and the name rules of
L{records.NameRules}) and takes each owner's record once per search; a
search takes at most L{MAX_RECORDS_PER_ANSWER} records, a neighbour may send
at most L{MAX_REPLIES_PER_NEIGHBOUR} record-bearing replies per search and
C{replyRate} records per second overall, and replies to a search that has
ended (the origin's locate returned, or the node sent its final answer) are
dropped unread.

In open trust mode the origin collects every owner until the search is
complete (several are a conflict: L{LocateResult.owners}); in network trust
mode names are bound to keys, so the first verified answer ends the locate.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import MAX_ROUTE_NODES
from appnpy.errors import Reason, ResourceNotFound
from appnpy.net.directory._core import DirectoryBase, SearchEntry
from appnpy.net.directory.messages import MAX_RECORDS_PER_ANSWER, LocateReply, LocateRequest
from appnpy.net.directory.records import (
    InvalidRecord,
    LocateResult,
    ResourceRecord,
    validResourceName,
)

#: Most record-bearing replies one neighbour may send for one search.
MAX_REPLIES_PER_NEIGHBOUR = 4


class LocateMixin(DirectoryBase):
    """
    Both sides of a locate (a part of L{service.Directory}).
    """

    def locate(self, name: str, cos: str = "interactive") -> Coroutine[Any, Any, LocateResult]:
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
        owners = tuple(dict.fromkeys(r.owner for r in records))
        return LocateResult(name, record.owner, record.asDict(), route or None, owners)

    def _verified(self, name: str, blobs: list[bytes]) -> list[ResourceRecord]:
        """
        The records of an answer that check out here: signature, the name
        asked for, and the name rules of the trust mode.
        """
        out = []
        now = self.reactor.seconds()
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
            why = self.names.refusal(record, now)
            if why is not None:
                self.stats["names-refused"] += 1
                self.log.warn(
                    "dropped a record for {name} by {owner}: {why}",
                    name=name,
                    owner=record.owner,
                    why=why,
                )
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
        if cached is not None and len({r.owner for r in cached.records}) == 1:
            # A stale answer with one owner is checked at that owner; a
            # conflict is searched for afresh, so every claimant is heard.
            target = self._directoryNodeFor(cached.records[0].owner)
            records = await self._directed(name, target, cos)
            if records:
                self.stats["found-directed"] += 1
                self.cache.found(name, records, None, self.reactor.seconds())
                return records, "directed"
            self.cache.forget(name)
        if self.cdsNode is not None:
            records = await self._directed(name, self.cdsNode, cos)
            if records:
                self.stats["found-cds"] += 1
                self.cache.found(name, records, None, self.reactor.seconds())
                return records, "cds"
        records = await self._broadcast(name, cos)
        if records:
            self.stats["found-broadcast"] += 1
            self.cache.found(name, records, None, self.reactor.seconds())
            return records, "broadcast"
        self.stats["not-found"] += 1
        self.cache.missed(name, self.reactor.seconds())
        raise ResourceNotFound(name)

    async def _directed(self, name: str, target: str, cos: str) -> list[ResourceRecord]:
        if target == self.nodeID:
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
                origin=self.nodeID,
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
        targets = self._forwardTargets(None, self.nodeID, self.maxHops + 1)
        if not targets:
            return []
        entry = self._newOrigin("locate", {t.peerNodeID for t in targets}, self.locateTimeout, name)
        self.stats["broadcast-searches"] += 1
        msg = LocateRequest(
            search_id=entry.searchID,
            origin=self.nodeID,
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
                    origin=self.nodeID,
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
                self.cache.found(name, records, route, self.reactor.seconds())
                return self._result(name, records, route)
            if not entry.interrupted:
                break
            # The server went away mid-locate: ask the next one.
        self.stats["not-found"] += 1
        self.cache.missed(name, self.reactor.seconds())
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
        entry = SearchEntry(
            msg.search_id, "locate", cp, set(), now + self.searchTableTTL, name=msg.name
        )
        self._remember(entry)
        self.stats["searches-processed"] += 1
        if self._peerRole(cp) == "end" and not msg.target:
            self._serveEndNodeLocate(cp, msg, entry)
        elif msg.target:
            self._directedReceived(cp, msg, entry)
        else:
            self._broadcastReceived(cp, msg, entry)

    def _serveEndNodeLocate(self, cp: ControlPoint, msg: LocateRequest, entry: SearchEntry) -> None:
        entry.done = True  # answered by hand below
        d = Deferred.fromCoroutine(self._locateForNetwork(msg.name, msg.cos))

        def found(result: tuple[list[ResourceRecord], str]) -> None:
            records = result[0][:MAX_RECORDS_PER_ANSWER]
            route: list[str] = []
            topology = self.topology
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

        def notFound(failure: Failure) -> None:
            failure.trap(ResourceNotFound)
            self._send(cp, LocateReply(search_id=msg.search_id))

        d.addCallbacks(found, notFound)
        d.addErrback(lambda f: self.log.failure("locate for an end node failed", f))

    def _directedReceived(self, cp: ControlPoint, msg: LocateRequest, entry: SearchEntry) -> None:
        if msg.target == self.nodeID or msg.target in self._attached:
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

    def _broadcastReceived(self, cp: ControlPoint, msg: LocateRequest, entry: SearchEntry) -> None:
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
            records = self._acceptedRecords(cp, entry, list(msg.records))
            if entry.parent is None:
                entry.collected.extend(records)
                if msg.route:
                    entry.route = list(msg.route)
                if records and self.names.bound:
                    # Names are bound to keys: the first verified owner is the one.
                    self._finishOrigin(entry)
            elif not records:
                pass
            elif entry.pending and not entry.done:
                self._send(
                    entry.parent,
                    LocateReply(
                        search_id=msg.search_id,
                        records=[r.toBlob() for r in records],
                        final=False,
                    ),
                )
            else:
                entry.heldRecords.extend(r.toBlob() for r in records)
        if msg.final and not entry.pending:
            self._complete(entry)

    def _acceptedRecords(
        self, cp: ControlPoint, entry: SearchEntry, blobs: list[bytes]
    ) -> list[ResourceRecord]:
        """
        The records of a reply this node takes for C{entry}: none once the
        search has ended here or over its caps, else the verified records of
        owners not yet seen.
        """
        ended = entry.waiter is None if entry.parent is None else entry.done
        if ended:
            # The origin's locate has returned (or the final answer went to
            # the parent): nothing more is verified or kept for it.
            self.stats["late-replies"] += 1
            return []
        peer = cp.peerNodeID
        entry.repliesFrom[peer] += 1
        room = MAX_RECORDS_PER_ANSWER - len(entry.owners)
        if entry.repliesFrom[peer] > MAX_REPLIES_PER_NEIGHBOUR or room <= 0:
            self.stats["replies-over-cap"] += 1
            return []
        blobs = blobs[:room]
        bucket = self._bucket(self._replyBuckets, peer, self.replyRate, self.replyBurst)
        if not bucket.take(self.reactor.seconds(), len(blobs)):
            self.stats["replies-limited"] += 1
            return []
        out = []
        for record in self._verified(entry.name, blobs):
            if record.owner not in entry.owners:
                entry.owners.add(record.owner)
                out.append(record)
        return out
