"""
Keyword search for plugins: C{search(kind, keywords, maxResults)} floods
C{SearchRequest} like a broadcast locate; each node asks its plugins that
offer resources of C{kind} and provide L{IKeywordSearchable}:

    plugin.search(keywords: list[str]) -> list[dict]

returning plain CBOR data (text-keyed maps of text, bytes, numbers, lists).
Each result gets the answering node's ID under C{"node"}.  Results stream
back in C{SearchReply} messages, capped in count and bytes at every node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail

from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import encodeBody
from appnpy.errors import ResourceNotFound
from appnpy.interfaces import IKeywordSearchable, ISessionPlugin
from appnpy.net.directory._core import DirectoryBase, SearchEntry
from appnpy.net.directory.messages import (
    MAX_SEARCH_RESULTS,
    REPLY_CHUNK_BYTES,
    REPLY_CHUNK_ITEMS,
    SearchReply,
    SearchRequest,
)

#: Keyword search caps: encoded bytes one node forwards for one search, and
#: the size of one result.
MAX_SEARCH_BYTES = 256 * 1024
MAX_RESULT_SIZE = 4096


class SearchMixin(DirectoryBase):
    """
    Both sides of a keyword search (a part of L{service.Directory}).
    """

    def search(
        self,
        kind: str,
        keywords: list[str],
        maxResults: int = 100,
        onResults: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """
        Ask every reachable node's plugins offering C{kind} resources for
        C{keywords}; fires with at most C{maxResults} result dicts (each with
        the answering node's ID under C{"node"}) when enough arrived, every
        node answered, or C{searchTimeout} passed.

        @param onResults: called with each batch of results as it arrives
            (this node's own first), before the Deferred fires with them all.
        """
        maxResults = max(1, min(int(maxResults), MAX_SEARCH_RESULTS))
        if not self.running:
            return fail(ResourceNotFound(f"{kind} search (this node is stopping)"))
        keywords = [k[:64] for k in keywords[:16]]
        local = self._localSearch(kind, keywords, maxResults)
        if local and onResults is not None:
            self._tell(onResults, local[:maxResults])
        if self.role == "end":
            server = self._serverCP()
            targets = [server] if server is not None else []
        else:
            targets = self._forwardTargets(None, self.nodeID, self.maxHops + 1)
            targets += [c for c in self._attached.values() if c not in targets]
        if len(local) >= maxResults or not targets:
            d: Deferred[list[dict[str, Any]]] = Deferred()
            d.callback(local[:maxResults])
            return d
        entry = self._newOrigin(
            "search", {t.peerNodeID for t in targets}, self.searchTimeout, maxResults=maxResults
        )
        entry.collected.extend(local)
        entry.onResults = onResults
        msg = SearchRequest(
            search_id=entry.searchID,
            origin=self.nodeID,
            kind=kind,
            keywords=keywords,
            hops_left=self.maxHops,
            max_results=maxResults,
        )
        for cp in targets:
            self._send(cp, msg)
        assert entry.waiter is not None
        return entry.waiter

    def _localSearch(self, kind: str, keywords: list[str], limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for plugin in self.plugins.values():
            if not IKeywordSearchable.providedBy(plugin) or not self._offersKind(plugin, kind):
                continue
            try:
                results = list(IKeywordSearchable(plugin).search(list(keywords)))
            except Exception:
                self.log.failure("plugin {plugin} failed a keyword search", plugin=plugin.name)
                continue
            for result in results:
                if len(out) >= limit:
                    return out
                if not isinstance(result, dict):
                    continue
                result = {**result, "node": self.nodeID}
                try:
                    SearchReply(search_id="0" * 32, results=[result])
                    size = len(encodeBody(result))
                except Exception:
                    self.stats["search-results-dropped"] += 1
                    continue
                if size > MAX_RESULT_SIZE:
                    self.stats["search-results-dropped"] += 1
                    continue
                out.append(result)
        return out

    def _tell(
        self, onResults: Callable[[list[dict[str, Any]]], object], batch: list[dict[str, Any]]
    ) -> None:
        # A caller's callback that raises must not break the search for the
        # other replies (nor the reply handler that called it).
        try:
            onResults(list(batch))
        except Exception:
            self.log.failure("a keyword search's onResults callback failed")

    def _offersKind(self, plugin: ISessionPlugin, kind: str) -> bool:
        if plugin.name == kind:
            return True
        try:
            return any(str(r).startswith(kind + ":") for r in plugin.resources())
        except Exception:
            return False

    def _sendResults(
        self, cp: ControlPoint, entry: SearchEntry, results: list[dict[str, Any]], final: bool
    ) -> None:
        """
        Stream results to C{cp} in chunks, within the entry's count and byte
        budget; the last chunk carries C{final}.
        """
        chunk: list[dict[str, Any]] = []
        chunkBytes = 0
        for result in results:
            size = len(encodeBody(result))
            if entry.sentResults >= entry.maxResults or entry.sentBytes + size > MAX_SEARCH_BYTES:
                self.stats["search-results-dropped"] += 1
                continue
            if chunk and (len(chunk) >= REPLY_CHUNK_ITEMS or chunkBytes + size > REPLY_CHUNK_BYTES):
                self._send(cp, SearchReply(search_id=entry.searchID, results=chunk, final=False))
                chunk, chunkBytes = [], 0
            chunk.append(result)
            chunkBytes += size
            entry.sentResults += 1
            entry.sentBytes += size
        if chunk or final:
            self._send(cp, SearchReply(search_id=entry.searchID, results=chunk, final=final))

    def _searchRequestReceived(self, cp: ControlPoint, msg: SearchRequest) -> None:
        if not self._admit(cp):
            self._send(cp, SearchReply(search_id=msg.search_id))
            return
        if msg.search_id in self._searches:
            self.stats["duplicate-searches"] += 1
            self._send(cp, SearchReply(search_id=msg.search_id))
            return
        now = self.reactor.seconds()
        entry = SearchEntry(
            msg.search_id,
            "search",
            cp,
            set(),
            now + self.searchTableTTL,
            maxResults=msg.max_results,
        )
        self._remember(entry)
        self.stats["searches-processed"] += 1
        results = self._localSearch(msg.kind, list(msg.keywords), msg.max_results)
        targets: list[ControlPoint] = []
        if self.role == "network":
            targets = self._forwardTargets(cp, msg.origin, msg.hops_left)
            targets += [
                c for c in self._attached.values() if c is not cp and c.peerNodeID != msg.origin
            ]
        entry.pending = {t.peerNodeID for t in targets}
        if not targets:
            entry.done = True
            self._sendResults(cp, entry, results, final=True)
            return
        if results:
            self._sendResults(cp, entry, results, final=False)
        forwarded = attrs.evolve(msg, hops_left=max(0, msg.hops_left - 1))
        for target in targets:
            self._send(target, forwarded)

    def _searchReplyReceived(self, cp: ControlPoint, msg: SearchReply) -> None:
        entry = self._searches.get(msg.search_id)
        if entry is None or entry.kind != "search" or cp.peerNodeID not in entry.pending:
            self.stats["stray-replies"] += 1
            return
        if msg.final:
            entry.pending.discard(cp.peerNodeID)
        if msg.results:
            if entry.parent is None:
                room = entry.maxResults - len(entry.collected)
                batch = list(msg.results)[: max(0, room)]
                entry.collected.extend(batch)
                if batch and entry.onResults is not None and entry.waiter is not None:
                    self._tell(entry.onResults, batch)
                if len(entry.collected) >= entry.maxResults:
                    self._finishOrigin(entry)
            elif not entry.done:
                self._sendResults(entry.parent, entry, list(msg.results), final=False)
        if msg.final and not entry.pending:
            self._complete(entry)
