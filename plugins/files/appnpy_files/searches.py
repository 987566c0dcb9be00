"""
Keyword searches for files, and the search jobs the management API polls.

L{Searcher.search} asks the central directory server's index first when
the node has one (Napster's way: one question, no broadcast); when the index
has no hit, or there is no CDS, it runs the directory's keyword broadcast.
Either way every hit is checked (L{hits.verifyHit}): a hit is kept only when
the node it names signed it (and, from the broadcast, is the node the
directory reported), so neither a relay nor the CDS can forge or alter one.

A L{SearchJob} collects one search's hits for the API: C{POST search}
starts one, C{GET search?id=...&after=N} long-polls for hits past the N-th
as they arrive.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.api import INode
from appnpy_files import wire
from appnpy_files.hits import Hit, verifyHit

if TYPE_CHECKING:
    from appnpy_files.cds import CDSClient, CDSIndex

#: Results of one search at most.
MAX_RESULTS = 200
#: Search jobs kept for polling, and how long a finished one is kept.
MAX_JOBS = 32
JOB_TTL = 300.0
#: The longest a poll waits for new hits.
MAX_WAIT = 25.0


def cleanKeywords(words: object) -> list[str]:
    """
    The keywords of a search request, checked: 1 to 16 words of 1 to 64
    characters (as the directory carries them).

    @raise ValueError: saying what is wrong.
    """
    if not isinstance(words, list) or not words:
        raise ValueError("keywords must be a non-empty list of words")
    if len(words) > wire.MAX_KEYWORDS:
        raise ValueError(f"at most {wire.MAX_KEYWORDS} keywords")
    out = []
    for w in words:
        if type(w) is not str or not w.strip():
            raise ValueError("every keyword must be non-empty text")
        w = w.strip()
        if len(w) > wire.MAX_KEYWORD_LENGTH:
            raise ValueError(f"a keyword is at most {wire.MAX_KEYWORD_LENGTH} characters")
        out.append(w)
    return out


class Searcher:
    """
    Runs searches for one node's files plugin.

    @ivar cdsClient: asks the CDS's index (set by the plugin when a CDS is
        configured and this node is not it).
    @ivar cdsIndex: the index this node keeps as the CDS (when it is one).
    """

    log = Logger(namespace="appnpy.files.search")

    def __init__(self, node: INode) -> None:
        self.node = node
        self.cdsClient: CDSClient | None = None
        self.cdsIndex: CDSIndex | None = None
        #: Counters for the metrics and tests.
        self.searches = 0
        self.broadcasts = 0
        self.cdsAnswers = 0
        self.rejectedHits = 0

    def search(
        self,
        keywords: list[str],
        onHits: Callable[[list[Hit]], object],
        maxResults: int = 100,
    ) -> Deferred[None]:
        """
        Search for C{keywords}; C{onHits} hears every batch of verified hits
        as it arrives.  Fires when the search is over.
        """
        self.searches += 1
        return Deferred.fromCoroutine(self._search(keywords, onHits, min(maxResults, MAX_RESULTS)))

    async def _search(
        self, keywords: list[str], onHits: Callable[[list[Hit]], object], maxResults: int
    ) -> None:
        seen: set[tuple[str, str, str]] = set()

        def deliver(raw: list[dict[str, Any]], viaDirectory: bool) -> int:
            batch = []
            for item in raw:
                hit = verifyHit(item, item.get("node") if viaDirectory else None)
                if hit is None:
                    self.rejectedHits += 1
                    continue
                key = (hit.node, hit.share, hit.path)
                if key in seen or len(seen) >= maxResults:
                    continue
                seen.add(key)
                batch.append(hit)
            if batch:
                try:
                    onHits(batch)
                except Exception:
                    self.log.failure("a search's listener failed")
            return len(batch)

        if self.cdsIndex is not None:
            # This node is the CDS: its index holds every registered node's hits.
            found = deliver(self.cdsIndex.search(keywords, maxResults), False)
            if found:
                self.cdsAnswers += 1
                return
        elif self.cdsClient is not None:
            try:
                raw = await self.cdsClient.search(keywords)
            except Exception as e:
                self.log.info("the CDS index did not answer ({why}); broadcasting", why=str(e))
            else:
                if deliver(raw, False):
                    self.cdsAnswers += 1
                    return
        self.broadcasts += 1
        d = self.node.search(
            "files",
            keywords,
            maxResults=maxResults,
            onResults=lambda batch: deliver(batch, True),
        )
        try:
            await d  # type: ignore[misc]
        except Exception as e:
            self.log.info("search for {words} ended: {why}", words=keywords, why=str(e))


class SearchJob:
    """
    One search's hits, kept for the API to poll.
    """

    def __init__(self, keywords: list[str], now: float) -> None:
        self.id = secrets.token_hex(8)
        self.keywords = keywords
        self.hits: list[Hit] = []
        self.done = False
        self.started = now
        self.ended: float | None = None
        self._waiters: list[Deferred[None]] = []

    def add(self, batch: list[Hit]) -> None:
        self.hits.extend(batch)
        self._wake()

    def finish(self, now: float) -> None:
        self.done = True
        self.ended = now
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def changed(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d


class SearchJobs:
    """
    The API's search jobs: started, polled, forgotten after L{JOB_TTL}.
    """

    def __init__(self, node: INode, searcher: Searcher) -> None:
        self.node = node
        self.searcher = searcher
        self.jobs: OrderedDict[str, SearchJob] = OrderedDict()

    def start(self, keywords: list[str], maxResults: int = 100) -> SearchJob:
        now = self.node.reactor.seconds()
        for key, job in list(self.jobs.items()):
            if job.ended is not None and now - job.ended > JOB_TTL:
                del self.jobs[key]
        while len(self.jobs) >= MAX_JOBS:
            self.jobs.popitem(last=False)
        job = SearchJob(keywords, now)
        self.jobs[job.id] = job
        d = self.searcher.search(keywords, job.add, maxResults)

        def ended(result: object) -> None:
            job.finish(self.node.reactor.seconds())
            if isinstance(result, Failure):
                self.searcher.log.failure("search failed", result)

        d.addBoth(ended)
        return job

    async def poll(self, jobID: str, after: int, wait: float) -> dict[str, Any]:
        job = self.jobs.get(jobID)
        if job is None:
            raise KeyError(jobID)
        wait = max(0.0, min(wait, MAX_WAIT))
        if len(job.hits) <= after and not job.done and wait > 0:
            changed = job.changed()
            timer: IDelayedCall = self.node.reactor.callLater(wait, _fire, changed)
            await changed
            if timer.active():
                timer.cancel()
        return {
            "id": job.id,
            "keywords": job.keywords,
            "results": [
                h.toJSON() | {"node_name": self.node.nodeName(h.node)} for h in job.hits[after:]
            ],
            "next": len(job.hits),
            "done": job.done,
        }


def _fire(d: Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


__all__ = ["SearchJob", "SearchJobs", "Searcher", "cleanKeywords", "succeed"]
