"""
The Napster-style index at the central directory server (CDS).

When the network has a CDS (C{node.centralDirectory}), every other node
uploads the signed hits of its open shares to it over a files session
(C{index-upload}, in batches, the last one C{final}), again whenever its
shares or their files change and every L{REUPLOAD_INTERVAL} seconds; and a
search asks the CDS first (C{index-search}) and broadcasts only when the CDS
has no hit (or does not answer).

At the CDS (L{CDSIndex}):

  - a node may upload only hits it signed itself (the hit's node is the
    session's authenticated peer, the signature verifies), so no node can
    plant hits in another's name;
  - a node's hits replace its previous ones only when its upload is final,
    so a search never sees half an upload;
  - at most L{MAX_PER_NODE} hits per node and L{MAX_TOTAL} in all (staged
    uploads count); a node over its share is cut to it, a full index
    refuses new nodes with C{unavailable};
  - a node's hits are dropped after L{TTL} seconds without a new upload
    (its registration gone, it left or crashed), or at once when it
    uploads an empty index;
  - searches are rate-limited per peer (C{slow-down} with C{retry_after}).

Hits stay verifiable end to end: the searcher checks every signature
itself, so a lying CDS can only withhold hits, never forge one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from appnpy.api import INode
from appnpy_files import wire
from appnpy_files.client import FilesClient
from appnpy_files.hits import MAX_HIT, Hit, verifyHit

#: Hits one node may keep in the CDS index, and the index in all.
MAX_PER_NODE = 20000
MAX_TOTAL = 500000
#: Seconds a node's hits live without a new upload.
TTL = 1800.0
#: How often a node uploads its index again (well within L{TTL}).
REUPLOAD_INTERVAL = 600.0
#: Hits per C{index-upload} request (each at most 4 KiB: within a frame).
UPLOAD_BATCH = 200
#: Searches per second (and burst) one peer may ask of the CDS.
SEARCH_RATE = 5.0
SEARCH_BURST = 20.0
#: Hits one C{index-search} answers at most.
SEARCH_LIMIT = 200
#: Seconds to wait for the CDS to answer a search before broadcasting.
SEARCH_TIMEOUT = 5.0


class CDSRefused(Exception):
    """
    An index request refused, answered as the error C{code}.
    """

    def __init__(self, code: str, message: str, retryAfter: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryAfter = retryAfter


class _Entry:
    __slots__ = ("hit", "raw", "words")

    def __init__(self, hit: Hit, raw: dict[str, Any]) -> None:
        self.hit = hit
        self.raw = raw
        self.words = hit.path.lower()


class CDSIndex:
    """
    The index a CDS keeps of its registered nodes' open shares.
    """

    log = Logger(namespace="appnpy.files.cds")

    def __init__(
        self,
        reactor: IReactorTime,
        maxPerNode: int = MAX_PER_NODE,
        maxTotal: int = MAX_TOTAL,
        ttl: float = TTL,
    ) -> None:
        self.reactor = reactor
        self.maxPerNode = maxPerNode
        self.maxTotal = maxTotal
        self.ttl = ttl
        self._nodes: dict[str, list[_Entry]] = {}
        self._uploaded: dict[str, float] = {}
        self._staging: dict[str, list[_Entry]] = {}
        self._byHash: dict[str, list[_Entry]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self.rejected = 0
        self.searches = 0

    # -- size --

    def total(self) -> int:
        return sum(len(v) for v in self._nodes.values()) + sum(
            len(v) for v in self._staging.values()
        )

    def nodes(self) -> int:
        return len(self._nodes)

    def nodeHits(self, nodeID: str) -> int:
        return len(self._nodes.get(nodeID, ()))

    # -- uploads --

    def upload(self, peer: str, hits: Iterable[dict[str, Any]], final: bool) -> None:
        """
        Take part of C{peer}'s index; on C{final}, it replaces what the CDS
        held for C{peer}.

        @raise CDSRefused: the index is full (C{unavailable}), or a hit is
            not C{peer}'s own (C{bad-request}: the whole upload is dropped).
        """
        self._expire()
        staged = self._staging.setdefault(peer, [])
        room = self.maxTotal - self.total()
        if not staged and peer not in self._nodes and room <= 0:
            del self._staging[peer]
            raise CDSRefused(wire.UNAVAILABLE, "the index is full")
        for raw in hits:
            hit = verifyHit(raw, peer)
            if hit is None:
                self.rejected += 1
                del self._staging[peer]
                raise CDSRefused(wire.BAD_REQUEST, "a hit that is not signed by the uploading node")
            if len(staged) >= self.maxPerNode or room <= 0:
                continue
            staged.append(_Entry(hit, raw))
            room -= 1
        if final:
            entries = self._staging.pop(peer, [])
            self._replace(peer, entries)
            self.log.info("index of {peer} replaced: {count} hits", peer=peer, count=len(entries))

    def _replace(self, peer: str, entries: list[_Entry]) -> None:
        for old in self._nodes.pop(peer, []):
            bucket = self._byHash.get(old.hit.sha256)
            if bucket is not None:
                bucket[:] = [e for e in bucket if e is not old]
                if not bucket:
                    del self._byHash[old.hit.sha256]
        self._uploaded.pop(peer, None)
        if not entries:
            return
        self._nodes[peer] = entries
        self._uploaded[peer] = self.reactor.seconds()
        for e in entries:
            self._byHash.setdefault(e.hit.sha256, []).append(e)

    def drop(self, peer: str) -> None:
        """
        Forget C{peer}'s hits (it is gone).
        """
        self._staging.pop(peer, None)
        self._replace(peer, [])

    def _expire(self) -> None:
        now = self.reactor.seconds()
        for peer, at in list(self._uploaded.items()):
            if now - at > self.ttl:
                self.log.info("index of {peer} expired", peer=peer)
                self._replace(peer, [])

    # -- searches --

    def allow(self, peer: str) -> int | None:
        """
        The per-peer search rate: None when C{peer} may search now, else the
        seconds to wait.
        """
        now = self.reactor.seconds()
        tokens, at = self._buckets.get(peer, (SEARCH_BURST, now))
        tokens = min(SEARCH_BURST, tokens + (now - at) * SEARCH_RATE)
        if tokens < 1:
            self._buckets[peer] = (tokens, now)
            return max(1, int((1 - tokens) / SEARCH_RATE + 0.999))
        if len(self._buckets) > 10000:
            self._buckets.clear()
        self._buckets[peer] = (tokens - 1, now)
        return None

    def searchFor(self, peer: str, keywords: list[str]) -> list[dict[str, Any]]:
        """
        C{index-search} from C{peer}.

        @raise CDSRefused: C{slow-down} when C{peer} searches too often.
        """
        wait = self.allow(peer)
        if wait is not None:
            raise CDSRefused(wire.SLOW_DOWN, "too many searches", wait)
        return self.search(keywords, SEARCH_LIMIT)

    def search(self, keywords: list[str], limit: int) -> list[dict[str, Any]]:
        """
        The signed hits matching every word (a case-insensitive substring of
        the path; a 64-hex word matches the content hash exactly).
        """
        self._expire()
        self.searches += 1
        words = [w.lower() for w in keywords if w]
        hashes = [w for w in words if wire.SHA256_HEX.fullmatch(w)]
        others = [w for w in words if not wire.SHA256_HEX.fullmatch(w)]
        if hashes:
            if len(set(hashes)) > 1:
                return []
            candidates: Iterable[_Entry] = list(self._byHash.get(hashes[0], ()))
        else:
            candidates = (e for entries in self._nodes.values() for e in entries)
        out = []
        for e in candidates:
            if all(w in e.words for w in others):
                out.append(e.raw)
                if len(out) >= limit:
                    break
        return out


class CDSClient:
    """
    A registered node's side: asks the CDS's index and uploads to it, over
    one files session kept open between uses.
    """

    log = Logger(namespace="appnpy.files.cds")

    def __init__(
        self,
        node: INode,
        cdsNode: str,
        connect: Callable[[INode, str], Deferred[FilesClient]],
    ) -> None:
        self.node = node
        self.cdsNode = cdsNode
        self.connect = connect
        self._client: FilesClient | None = None
        self._uploading = False
        self._again = False
        self._timer: IDelayedCall | None = None
        self.uploads = 0
        self.stopped = False

    async def _session(self) -> FilesClient:
        if self._client is not None and self._client._lost is None:
            return self._client
        self._client = await self.connect(self.node, self.cdsNode)
        return self._client

    async def search(self, keywords: list[str]) -> list[dict[str, Any]]:
        client = await self._session()
        d = client.indexSearch(keywords)
        d.addTimeout(SEARCH_TIMEOUT, self.node.reactor)
        return await d

    def scheduleUpload(
        self, hits: Callable[[], Deferred[list[dict[str, Any]]]], delay: float = 0
    ) -> None:
        """
        Upload the index C{hits()} answers after C{delay} seconds, then
        every L{REUPLOAD_INTERVAL}; a call while one is pending or running
        makes it run again with fresh hits.
        """
        if self.stopped:
            return
        if self._uploading:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.node.reactor.callLater(delay, self._run, hits)

    def _run(self, hits: Callable[[], Deferred[list[dict[str, Any]]]]) -> None:
        self._timer = None
        self._uploading = True

        async def go() -> None:
            items = await hits()
            await self.upload(items)

        d = Deferred.fromCoroutine(go())

        def done(result: object) -> None:
            self._uploading = False
            if isinstance(result, Exception) or hasattr(result, "getErrorMessage"):
                self.log.info(
                    "index upload to the CDS failed: {why}",
                    why=result.getErrorMessage() if hasattr(result, "getErrorMessage") else result,
                )
            again, self._again = self._again, False
            self.scheduleUpload(hits, 0 if again else REUPLOAD_INTERVAL)

        d.addBoth(done)

    async def upload(self, hits: list[dict[str, Any]]) -> None:
        client = await self._session()
        batches = [hits[i : i + UPLOAD_BATCH] for i in range(0, len(hits), UPLOAD_BATCH)] or [[]]
        for i, batch in enumerate(batches):
            await client.indexUpload(batch, final=i == len(batches) - 1)
        self.uploads += 1
        self.log.info("index uploaded to the CDS: {count} hits", count=len(hits))

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._client is not None:
            self._client.close()
            self._client = None


def hitSize(raw: dict[str, Any]) -> int:
    import cbor2

    return len(cbor2.dumps(raw, canonical=True))


__all__ = ["MAX_HIT", "CDSClient", "CDSIndex", "CDSRefused", "hashlib", "hitSize"]
