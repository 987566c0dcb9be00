"""
The files plugin object: configuration, lifecycle and the glue between the
serving side (shares, index, server) and the fetching side (search hits,
transfers, the CDS index), plus its API routes, page section, metrics and
C{appn files} commands.

One L{FilesPlugin} belongs to one node: the entry point's object serves the
node C{twist appnnode} runs; tests make one per node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from appnpy.api import (
    ConfigurationError,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IKeywordSearchable,
    IMetricsPlugin,
    INode,
    IPluginLifecycle,
    IResourceDirectory,
    ISessionInfo,
    ISessionPlugin,
    IStatusPagePlugin,
    PageSection,
    PluginRequest,
    implementer,
)
from appnpy_files import __version__
from appnpy_files.cds import CDSClient, CDSIndex
from appnpy_files.cli import FilesCommands, _sourceCount, formatSize
from appnpy_files.download import Blocking, synchronous
from appnpy_files.hits import makeHit
from appnpy_files.routes import FilesAPI
from appnpy_files.searches import Searcher, SearchJobs
from appnpy_files.serve import ServeSide
from appnpy_files.shares import SERVE_KEYS, ServeSettings
from appnpy_files.transfers import Transfers

#: The keys of [plugin.files] the fetching side and the glue read.
FETCH_KEYS = frozenset({"session-limit", "download-threads", "search-hits"})
#: Hits one node answers to one keyword search at most.
DEFAULT_SEARCH_HITS = 50
#: Keyword searches per second this node answers (all peers together: the
#: directory limits each neighbour's requests; this bounds the signing).
SEARCH_RATE = 50.0


class _TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@implementer(
    ISessionPlugin,
    IPluginLifecycle,
    IKeywordSearchable,
    IAPIRoutesPlugin,
    IStatusPagePlugin,
    IMetricsPlugin,
    ICommandPlugin,
)
class FilesPlugin:
    """
    Shares, search and verified downloads.

    @param dataDirectory: where the plugin keeps its state when the node
        has no data directory (in-memory tests).
    @param threads: C{False} runs disk work inline (a node on a test clock
        has no threads).
    """

    name = "files"
    version = __version__
    defaultCOS = "batch"

    log = Logger(namespace="appnpy.files")

    def __init__(self, dataDirectory: str | None = None) -> None:
        self.sessionLimit = 32
        self.fallbackDirectory = dataDirectory
        self.section: dict[str, Any] = {}
        self.settings = ServeSettings()
        self.searchHits = DEFAULT_SEARCH_HITS
        self.downloadThreads = 4
        self.node: INode | None = None
        self.serve: ServeSide | None = None
        self.searcher: Searcher | None = None
        self.transfers: Transfers | None = None
        self.jobs: SearchJobs | None = None
        self.cdsIndex: CDSIndex | None = None
        self.cdsClient: CDSClient | None = None
        self.pool: ThreadPool | None = None
        self.blocking: Blocking = synchronous
        self.api = FilesAPI(self)
        self.commands = FilesCommands()
        self._searchBucket: _TokenBucket | None = None
        self._signed: dict[tuple[str, str, int, str, int], dict[str, Any]] = {}
        self.searchesAnswered = 0
        self.searchesRefused = 0

    # -- ISessionPlugin --

    def configure(self, section: dict[str, object]) -> None:
        unknown = sorted(set(section) - SERVE_KEYS - FETCH_KEYS)
        if unknown:
            raise ConfigurationError(
                f"[plugin.files] has no key{'s' if len(unknown) > 1 else ''} "
                + ", ".join(repr(k) for k in unknown)
                + f" (known: {', '.join(sorted(SERVE_KEYS | FETCH_KEYS))})"
            )
        self.settings = ServeSettings.fromSection(dict(section))
        limit = section.get("session-limit", 32)
        if type(limit) is not int or not 0 <= limit <= 1024:
            raise ConfigurationError("[plugin.files] session-limit must be a whole number 0..1024")
        hits = section.get("search-hits", DEFAULT_SEARCH_HITS)
        if type(hits) is not int or not 1 <= hits <= 200:
            raise ConfigurationError("[plugin.files] search-hits must be 1..200")
        threads = section.get("download-threads", 4)
        if type(threads) is not int or not 1 <= threads <= 64:
            raise ConfigurationError("[plugin.files] download-threads must be 1..64")
        self.sessionLimit = limit
        self.searchHits = hits
        self.downloadThreads = threads
        self.section = dict(section)
        # Check the shares table now, so a bad one stops the node at start.
        ServeSide.checkConfig(self.section)

    def resources(self) -> list[str]:
        if self.serve is None:
            return []
        return [f"files:{name}" for name in self.serve.shareNames()]

    def buildProtocol(self, session: ISessionInfo) -> object:
        if self.serve is None:
            return None
        return self.serve.buildProtocol(session, self._cdsHandler())

    # -- IPluginLifecycle --

    def attach(self, node: INode) -> None:
        if self.node is not None:
            # The hooks (resources(), search()) carry no node: one object
            # serves one node at a time, the last attached.
            self.log.warn(
                "the files plugin moves from node {old} to node {new}",
                old=self.node.nodeID,
                new=node.nodeID,
            )
            self.detach()
        self.node = node
        directory = node.dataDirectory(self.name) or self.fallbackDirectory
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if IReactorFromThreads.providedBy(node.reactor):
            self.pool = ThreadPool(
                0, self.downloadThreads + self.settings.hashThreads, "appnpy-files"
            )
            self.pool.start()
            pool = self.pool

            def blocking(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(node.reactor, pool, f, *args)

            self.blocking = blocking
        self._searchBucket = _TokenBucket(SEARCH_RATE, SEARCH_RATE, node.reactor.seconds())
        self.serve = ServeSide(node, self.section, self.settings, directory, self.blocking)
        self.serve.onSharesChanged(self._sharesChanged)
        self.serve.onIndexChanged(self._indexChanged)
        self.searcher = Searcher(node)
        self.transfers = Transfers(node, self.blocking, self.searcher)
        self.jobs = SearchJobs(node, self.searcher)
        self.serve.start()
        node.reactor.callLater(0, self._setUpCDS)

    def detach(self) -> None:
        if self.transfers is not None:
            self.transfers.cancelAll()
        if self.cdsClient is not None:
            self.cdsClient.stop()
        if self.serve is not None:
            self.serve.stop()
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        self.blocking = synchronous
        self.serve = self.searcher = self.transfers = self.jobs = None
        self.cdsIndex = self.cdsClient = None
        self.node = None

    # -- the CDS --

    def _setUpCDS(self) -> None:
        """
        Take the CDS role this node has: keep the index (it is the CDS), or
        upload to it (it registers with one).
        """
        node = self.node
        if node is None or self.searcher is None:
            return
        cds = node.centralDirectory
        if cds is None:
            return
        if cds == node.nodeID:
            self.cdsIndex = CDSIndex(node.reactor)
            self.searcher.cdsIndex = self.cdsIndex
            self.log.info("this node keeps the files index of the central directory")
        elif self.transfers is not None:
            self.cdsClient = CDSClient(node, cds, self.transfers.connect)
            self.searcher.cdsClient = self.cdsClient
            self.cdsClient.scheduleUpload(self._allHits, delay=1.0)

    def _cdsHandler(self) -> CDSIndex | None:
        return self.cdsIndex

    def uploadIndexNow(self) -> None:
        """
        Upload this node's hits to the CDS now (tests, and after changes).
        """
        if self.cdsClient is not None:
            self.cdsClient.scheduleUpload(self._allHits, delay=0)

    def _allHits(self) -> Deferred[list[dict[str, Any]]]:
        assert self.serve is not None
        entries = self.serve.openEntries()
        return Deferred.fromCoroutine(self._signAll(entries))

    async def _signAll(self, entries: list[Any]) -> list[dict[str, Any]]:
        return [self._hit(e) for e in entries]

    def _sharesChanged(self) -> None:
        node = self.node
        if node is not None and IResourceDirectory.providedBy(node):
            IResourceDirectory(node).resourcesChanged(self)
        self._indexChanged()

    def _indexChanged(self) -> None:
        if self.cdsClient is not None:
            self.cdsClient.scheduleUpload(self._allHits, delay=2.0)

    # -- IKeywordSearchable --

    def search(self, keywords: list[str]) -> list[dict[str, object]]:
        node = self.node
        if node is None or self.serve is None or self._searchBucket is None:
            return []
        if not self._searchBucket.take(node.reactor.seconds()):
            self.searchesRefused += 1
            return []
        self.searchesAnswered += 1
        entries = self.serve.search(keywords, self.searchHits)
        return [self._hit(e) for e in entries]

    def _hit(self, entry: Any) -> dict[str, Any]:
        """
        The signed hit for an index entry; signatures are kept (bounded),
        so answering searches costs no signing for files already announced.
        """
        assert self.node is not None
        mtime = int(entry.mtimeNs // 1_000_000_000)
        key = (entry.share, entry.path, entry.size, entry.sha256, mtime)
        hit = self._signed.get(key)
        if hit is None:
            if len(self._signed) >= 200_000:
                self._signed.clear()
            hit = makeHit(self.node, entry.share, entry.path, entry.size, entry.sha256, mtime)
            self._signed[key] = hit
        return hit

    # -- IAPIRoutesPlugin --

    def apiRoutes(self) -> Mapping[tuple[str, str], Callable[[PluginRequest], object]]:
        return self.api.routes()

    # -- IStatusPagePlugin --

    def pageSection(self) -> PageSection | None:
        if self.transfers is None:
            return None
        rows: list[list[object]] = []
        for t in self.transfers.describe()[:20]:
            pct = 100.0 * t["done_bytes"] / t["size"] if t["size"] else 100.0
            rows.append(
                [
                    t["name"] or t["sha256"][:16],
                    t["state"],
                    f"{pct:.1f} %",
                    formatSize(t["size"]),
                    f"{formatSize(t['rate'])}/s" if t["state"] == "downloading" else "",
                    _sourceCount(t),
                    formatSize(t["resumed_bytes"]) if t["resumed_bytes"] else "",
                    t["message"] or "",
                ]
            )
        shares = self.serve.describeShares() if self.serve is not None else []
        if not rows:
            rows.append(["(no transfers)", "", "", "", "", "", "", ""])
        title = f"Files: {len(shares)} share(s), transfers"
        return PageSection(
            title,
            ["file", "state", "progress", "size", "rate", "sources", "resumed", "note"],
            rows,
        )

    # -- IMetricsPlugin --

    def registerMetrics(self, registry: CollectorRegistry) -> None:
        registry.register(_FilesCollector(self))

    # -- ICommandPlugin --

    def addCommands(self, add: Any) -> None:
        self.commands.addCommands(add)


class _FilesCollector(Collector):
    """
    Reads the plugin's state at scrape time.
    """

    def __init__(self, plugin: FilesPlugin) -> None:
        self.plugin = plugin

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = self.plugin
        t = p.transfers
        active = GaugeMetricFamily("appn_files_transfers_active", "Downloads running")
        active.add_metric([], len(t.active()) if t else 0)
        yield active
        done = CounterMetricFamily(
            "appn_files_transfers", "Downloads ended, by outcome", labels=["outcome"]
        )
        done.add_metric(["complete"], t.completed if t else 0)
        done.add_metric(["failed"], t.failed if t else 0)
        yield done
        received = CounterMetricFamily(
            "appn_files_received_bytes", "Verified bytes downloaded (finished transfers)"
        )
        received.add_metric([], t.receivedBytes if t else 0)
        yield received
        bad = CounterMetricFamily("appn_files_bad_chunks", "Chunks that failed their hash")
        bad.add_metric([], t.badChunks if t else 0)
        yield bad
        searches = CounterMetricFamily(
            "appn_files_searches_answered", "Keyword searches answered by this node"
        )
        searches.add_metric([], p.searchesAnswered)
        yield searches
        refused = CounterMetricFamily(
            "appn_files_searches_refused", "Keyword searches not answered (rate limit)"
        )
        refused.add_metric([], p.searchesRefused)
        yield refused
        if p.serve is not None:
            yield from p.serve.metrics()
        if p.cdsIndex is not None:
            hits = GaugeMetricFamily("appn_files_cds_hits", "Hits in the CDS index")
            hits.add_metric([], p.cdsIndex.total())
            yield hits
