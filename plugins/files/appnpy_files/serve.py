"""
The plugin's view of the serving side: one object that owns the shares, the
index and the attempt limiter, and builds the server protocol for each
session a peer opens.  The plugin object talks to this, never to the
serving modules' internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from appnpy.api import APIError, INode, ISessionInfo
from appnpy_files.download import Blocking
from appnpy_files.index import FileEntry, Index
from appnpy_files.shares import AttemptLimiter, ServeSettings, ShareError, ShareSet, hashPassword

#: Open-share files uploaded to the CDS at most (its per-node cap).
MAX_ANNOUNCED = 20000


class ServeSide:
    log = Logger(namespace="appnpy.files")

    @staticmethod
    def checkConfig(section: dict[str, Any]) -> None:
        """
        @raise appnpy.api.ConfigurationError: for a bad shares table.
        """
        ShareSet(None).loadConfig(section.get("shares"))

    def __init__(
        self,
        node: INode,
        section: dict[str, Any],
        settings: ServeSettings,
        directory: str | None,
        blocking: Blocking,
    ) -> None:
        self.node = node
        self.settings = settings
        self.blocking = blocking
        self.shares = ShareSet(directory)
        self.shares.loadConfig(section.get("shares"))
        self.shares.loadPersisted()
        self.index = Index(
            node.reactor,
            self.shares,
            directory,
            hashThreads=settings.hashThreads,
            rescanInterval=settings.rescanInterval,
        )
        self.limiter = AttemptLimiter(node.reactor.seconds)
        self.server: Any = None
        self._indexListeners: list[Callable[[], None]] = []
        self.shares.onChange(self._sharesChanged)

    # -- lifecycle --

    def start(self) -> None:
        if not IReactorFromThreads.providedBy(self.node.reactor):
            # A node on a test clock has no threads to hash in: it shares
            # nothing (its shares are still listed).
            self.log.warn("the files index needs a reactor with threads; not indexing")
            return
        d = self.index.start()
        d.addCallback(lambda _: self._whenIndexed())
        d.addErrback(lambda f: self.log.failure("the files index failed to start", f))

    def _whenIndexed(self) -> None:
        def indexed(_: object) -> None:
            for listener in list(self._indexListeners):
                listener()

        self.index.whenIndexed().addCallbacks(indexed, lambda f: None)

    def stop(self) -> Deferred[None]:
        return self.index.stop()

    def onSharesChanged(self, listener: Callable[[], None]) -> None:
        self.shares.onChange(listener)

    def onIndexChanged(self, listener: Callable[[], None]) -> None:
        """
        C{listener()} after the index settles (the first scan, and after
        each change of the shares).
        """
        self._indexListeners.append(listener)

    def _sharesChanged(self) -> None:
        self.node.reactor.callLater(0, self._whenIndexed)

    # -- shares --

    def shareNames(self) -> list[str]:
        return self.shares.names()

    def describeShares(self) -> list[dict[str, Any]]:
        out = []
        for share in self.shares:
            files, size = self.index.shareCounts(share.name)
            out.append({**share.describe(), "files": files, "bytes": size})
        return out

    async def addShare(self, name: str, directory: str, password: str | None) -> dict[str, Any]:
        passwordHash = None
        if password is not None:
            if not password:
                raise APIError(400, "bad-request", "an empty password protects nothing")
            # scrypt takes tens of milliseconds: off the reactor thread.
            passwordHash = await self.blocking(hashPassword, password)
        try:
            share = self.shares.add(name, directory, passwordHash)
        except ShareError as e:
            raise APIError(400, "bad-share", str(e)) from None
        return share.describe()

    def removeShare(self, name: str) -> None:
        try:
            self.shares.remove(name)
        except ShareError as e:
            raise APIError(400, "bad-share", str(e)) from None

    # -- the index --

    def search(self, words: list[str], limit: int) -> list[FileEntry]:
        return self.index.search(words, limit)

    def openEntries(self) -> list[FileEntry]:
        """
        Every file of the open shares (the empty word is in every path).
        """
        return self.index.search([""], MAX_ANNOUNCED)

    # -- sessions --

    def buildProtocol(self, session: ISessionInfo, cds: Any) -> object:
        if self.server is None:
            from appnpy_files.server import FilesServerFactory

            self.server = FilesServerFactory(
                self.node.reactor, self.shares, self.index, self.limiter, self.settings
            )
        return self.server.buildProtocol(session, cds)

    def metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        progress = self.index.progress
        files = GaugeMetricFamily("appn_files_indexed_files", "Files in the index")
        files.add_metric([], progress.files)
        yield files
        size = GaugeMetricFamily("appn_files_indexed_bytes", "Bytes of the indexed files")
        size.add_metric([], progress.bytes)
        yield size
        pending = GaugeMetricFamily("appn_files_index_pending_bytes", "Bytes waiting to be hashed")
        pending.add_metric([], progress.pendingBytes)
        yield pending
        shares = GaugeMetricFamily("appn_files_shares", "Shares of this node")
        shares.add_metric([], len(self.shares))
        yield shares
        server = self.server
        if server is not None and hasattr(server, "metrics"):
            yield from server.metrics()
