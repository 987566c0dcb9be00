"""
The transfers table: starting downloads from a content hash or from a path
on a node, finding and connecting their sources, and keeping them listed.

A download by hash searches for the hash (the central directory server
first when there is one, else the directory's keyword broadcast), keeps the
hits whose signature verifies, and opens a files session to every node that
holds the content (directly to a neighbour, routed through intermediate
nodes otherwise: C{node.openSession} chooses).  The transfer starts as soon
as the first source answers; the others join as they connect.

A download by path asks that node for the file (after the password, for a
protected share), and, when the share is open, also searches for the hash
to add every other holder as a source.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.api import INode
from appnpy_files import wire
from appnpy_files.client import FilesClient, RemoteError, SourceGone
from appnpy_files.download import Blocking, Transfer, TransferFailed
from appnpy_files.hits import Hit

if TYPE_CHECKING:
    from appnpy_files.searches import Searcher

#: Finished transfers kept in the table for C{appn files transfers}.
KEEP_FINISHED = 50
#: Transfers running at once; more are refused with C{busy}.
MAX_ACTIVE = 16
#: Sources one transfer uses at most.
MAX_SOURCES = 8
#: Class of service of a files session: bulk data.
COS = "batch"


def refusalMessage(e: RemoteError) -> str:
    """
    A holder's refusal for the user, with the delay it imposes (wrong
    passwords): without it, "wait" would not say for how long.
    """
    if not e.retryAfter:
        return e.message
    if e.code == wire.SLOW_DOWN:
        return f"{e.message.removesuffix('; wait')}: try again in {e.retryAfter} s"
    return f"{e.message}; the next attempt is possible in {e.retryAfter} s"


class GetError(Exception):
    """
    A download could not start; C{code} is stable, the message for users.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def connect(node: INode, nodeID: str) -> FilesClient:
    """
    A files session to C{nodeID} (direct or routed).
    """
    client: FilesClient = await node.openSession(  # type: ignore[misc]
        nodeID, "files", lambda info: FilesClient(node.reactor, nodeID), {}, COS
    )
    return client


class Transfers:
    """
    Every download of one node's files plugin.
    """

    log = Logger(namespace="appnpy.files.transfers")

    def __init__(self, node: INode, blocking: Blocking, searcher: Searcher) -> None:
        self.node = node
        self.blocking = blocking
        self.searcher = searcher
        self.table: OrderedDict[str, Transfer] = OrderedDict()
        #: Counters for the metrics.
        self.completed = 0
        self.failed = 0
        self.receivedBytes = 0
        self.badChunks = 0
        self.connect: Callable[[INode, str], Deferred[FilesClient]] = lambda n, i: (
            Deferred.fromCoroutine(connect(n, i))
        )

    def active(self) -> list[Transfer]:
        return [t for t in self.table.values() if t.ended is None]

    def get(self, transferID: str) -> Transfer | None:
        return self.table.get(transferID)

    def describe(self) -> list[dict[str, Any]]:
        return [t.describe() for t in reversed(self.table.values())]

    def cancel(self, transferID: str) -> bool:
        t = self.table.get(transferID)
        if t is None:
            return False
        t.cancel()
        return True

    def cancelAll(self) -> None:
        for t in self.active():
            t.cancel()

    def _check(self, target: str) -> None:
        if len(self.active()) >= MAX_ACTIVE:
            raise GetError("busy", f"{MAX_ACTIVE} downloads are running already")
        if not os.path.isabs(target):
            raise GetError("bad-request", "the target must be an absolute path")
        for t in self.active():
            if t.target == target:
                raise GetError("busy", f"{target} is being downloaded already ({t.id})")

    def _add(self, transfer: Transfer) -> None:
        self.table[transfer.id] = transfer
        finished = [k for k, t in self.table.items() if t.ended is not None]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.table[k]

        def ended(result: object) -> None:
            if transfer.state == "complete":
                self.completed += 1
            elif transfer.state == "failed":
                self.failed += 1
            self.receivedBytes += transfer.doneBytes - transfer.resumedBytes
            self.badChunks += transfer.badChunks
            if isinstance(result, Failure):
                result.trap(TransferFailed)

        transfer.whenDone().addBoth(ended)
        d = Deferred.fromCoroutine(transfer.run())
        d.addErrback(lambda f: self.log.failure("transfer {id} broke", f, id=transfer.id))

    # -- by hash --

    async def getByHash(
        self,
        sha256: str,
        target: str | Callable[[str], str],
        limit: float | None = None,
        name: str = "",
    ) -> Transfer:
        """
        Start downloading the content C{sha256} to C{target} from every node
        a search finds holding it.

        @param target: the path, or a function of the file's name (from the
            first hit) answering it.
        @raise GetError: no node holds it, or none could be reached.
        """
        if isinstance(target, str):
            self._check(target)
        first: Deferred[Hit] = Deferred()
        hits: list[Hit] = []
        transfer: list[Transfer] = []
        seen: set[str] = set()

        def onHits(batch: list[Hit]) -> None:
            for hit in batch:
                if hit.sha256 != sha256 or hit.node in seen or hit.node == self.node.nodeID:
                    continue
                if hits and hit.size != hits[0].size:
                    continue
                seen.add(hit.node)
                hits.append(hit)
                if not first.called:
                    first.callback(hit)
                elif transfer and len(seen) <= MAX_SOURCES:
                    self._connectSource(transfer[0], hit.node)

        searchDone = self.searcher.search([sha256], onHits, maxResults=MAX_SOURCES * 4)

        def noHits(result: object) -> object:
            if not first.called:
                first.errback(Failure(GetError("not-found", f"no reachable node shares {sha256}")))
            return result

        searchDone.addBoth(noHits)
        hit = await first
        if not isinstance(target, str):
            target = target(hit.name)
            self._check(target)
        t = Transfer(
            self.node.reactor,
            self.blocking,
            sha256,
            hit.size,
            target,
            name=name or hit.name,
            limit=limit,
        )
        transfer.append(t)
        # Open the first sessions before the transfer runs (it needs one
        # for the chunk list), then the rest as they connect.
        pending = [self._connectSource(t, h.node) for h in hits[:MAX_SOURCES]]
        sources = await _first(pending)
        if not sources:
            raise GetError("unreachable", f"no node holding {sha256} could be reached")
        self._add(t)
        return t

    def _connectSource(self, transfer: Transfer, nodeID: str) -> Deferred[bool]:
        d = self.connect(self.node, nodeID)

        def connected(client: FilesClient) -> bool:
            transfer.addSource(client)
            return True

        def failed(f: Failure) -> bool:
            self.log.info(
                "could not reach source {node} for {sha256}: {why}",
                node=nodeID,
                sha256=transfer.sha256,
                why=f.getErrorMessage(),
            )
            return False

        return d.addCallbacks(connected, failed)

    # -- by path --

    async def getByPath(
        self,
        nodeID: str,
        share: str,
        path: str,
        target: str,
        limit: float | None = None,
        password: str | None = None,
        singleSource: bool = False,
    ) -> Transfer:
        """
        Start downloading C{share}/C{path} of C{nodeID} to C{target}.

        @param singleSource: only from that node, even when others hold the
            same content.

        @raise GetError: the node cannot be reached, refuses, or has no such file.
        """
        self._check(target)
        try:
            client = await self.connect(self.node, nodeID)
        except Exception as e:
            raise GetError("unreachable", f"cannot reach {nodeID}: {e}") from None
        try:
            if password is not None:
                await client.auth(share, password)
            info = await client.stat(share=share, path=path)
        except RemoteError as e:
            client.close()
            raise GetError(e.code, refusalMessage(e)) from None
        except SourceGone as e:
            raise GetError("unreachable", e.message) from None
        t = Transfer(
            self.node.reactor,
            self.blocking,
            info.sha256,
            info.size,
            target,
            name=path.rsplit("/", 1)[-1],
            limit=limit,
        )
        t.addSource(client)
        self._add(t)
        if password is None and not singleSource and info.size > wire.CHUNK_SIZE:
            # An open share: every other holder of the content helps.
            self._moreSources(t)
        return t

    def _moreSources(self, t: Transfer) -> None:
        seen = {p.nodeID for p in t.peers} | {self.node.nodeID}

        def onHits(batch: list[Hit]) -> None:
            for hit in batch:
                if hit.sha256 != t.sha256 or hit.size != t.size or hit.node in seen:
                    continue
                if len(seen) > MAX_SOURCES or t.ended is not None:
                    return
                seen.add(hit.node)
                self._connectSource(t, hit.node)

        self.searcher.search([t.sha256], onHits, maxResults=MAX_SOURCES * 4).addErrback(
            lambda f: None
        )


async def _first(pending: list[Deferred[bool]]) -> bool:
    """
    True as soon as one of C{pending} connected; False when all failed.
    """
    if not pending:
        return False
    d: Deferred[bool] = Deferred()
    left = [len(pending)]

    def one(ok: bool) -> None:
        left[0] -= 1
        if d.called:
            return
        if ok:
            d.callback(True)
        elif left[0] == 0:
            d.callback(False)

    for p in pending:
        p.addCallback(one)
    return await d
