"""
A verified, resumable download from one or several sources.

A L{Transfer} takes the content hash and size of a file and any number of
sources (L{ChunkSource}: a files session to a node that holds the file).  It
fetches the chunk list from the first source, opens the partial file (which
finds the chunks already verified by an earlier, interrupted download), then
pulls the missing chunks:

  - each source has a pipeline of up to L{PIPELINE} reads outstanding, so a
    fast source takes more chunks than a slow one without any estimate;
  - when no chunk is left unrequested, an idle source duplicates a chunk
    still outstanding at another (the end game), so one slow source does not
    hold back the end; the first verified copy wins;
  - every chunk is hashed and compared with the chunk list before it is
    written; a source that sends a bad chunk is dropped and its chunks go to
    the others; a source that errs, closes or stalls for L{STALL_TIMEOUT}
    seconds is dropped the same way;
  - the whole file's SHA-256 is computed as the verified prefix grows, and
    compared with the content hash at the end; only then is the file linked
    into place.

If every source is gone the transfer fails, keeping its partial file: the
next download of the same content to the same target resumes from it.

The disk work (hashing, writing) runs through C{blocking}, the plugin's
thread pool, so the reactor thread only moves bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy_files.partial import Layout, PartialFile, TargetError, openPartial

#: Reads outstanding per source (a files session allows 16 requests).
PIPELINE = 8
#: A source that answers nothing for this long is dropped.
STALL_TIMEOUT = 30.0
#: How often the stall watchdog looks.
WATCH_INTERVAL = 5.0
#: Chunk hashes fetched per request (the protocol's maximum is 16384).
HASH_PAGE = 16384
#: Verified chunks kept in memory, ahead of the whole-file hash, before it
#: reads them back from disk instead.
HOLD_CHUNKS = 32
#: The most a progress rate is averaged over, in seconds.
RATE_WINDOW = 5.0

#: Runs a blocking function in the plugin's thread pool.
Blocking = Callable[..., Deferred[Any]]


class ChunkSource(Protocol):
    """
    One node that holds the content, reached over a files session.
    """

    nodeID: str

    def chunkHashes(self, sha256: str, start: int, count: int) -> Deferred[bytes]: ...

    def read(self, sha256: str, index: int) -> Deferred[bytes]: ...

    def close(self) -> None: ...


class TransferFailed(Exception):
    """
    A download ended without the file; C{code} is stable, C{message} for users.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Peer:
    """
    What a transfer knows about one of its sources.
    """

    def __init__(self, source: ChunkSource, now: float) -> None:
        self.source = source
        self.nodeID = source.nodeID
        self.inflight: dict[int, float] = {}
        self.bytes = 0
        self.chunks = 0
        self.lastAnswer = now
        self.dropped: str | None = None


class Transfer:
    """
    One download.  Created by the plugin's transfers table; L{start} runs it.

    @ivar state: C{preparing}, C{downloading}, C{verifying}, C{complete},
        C{failed} or C{cancelled}.
    @ivar resumedBytes: bytes found verified in a partial file at the start.
    """

    log = Logger(namespace="appnpy.files.download")

    def __init__(
        self,
        reactor: IReactorTime,
        blocking: Blocking,
        sha256: str,
        size: int,
        target: str,
        name: str = "",
        limit: float | None = None,
        chunkSize: int = 1 << 20,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.reactor = reactor
        self.blocking = blocking
        self.sha256 = sha256
        self.size = size
        self.target = target
        self.name = name
        self.limit = limit
        self.chunkSize = chunkSize
        self.state = "preparing"
        self.error: TransferFailed | None = None
        self.started = reactor.seconds()
        self.ended: float | None = None
        #: When every byte was there and verified (before the fsync).
        self.verifiedAt: float | None = None
        self.resumedBytes = 0
        self.doneBytes = 0
        self.badChunks = 0
        self.peers: list[_Peer] = []
        self.layout: Layout | None = None
        self.partial: PartialFile | None = None
        self._done: set[int] = set()
        self._pending: list[int] = []
        self._waiting: list[Deferred[None]] = []
        self._held: dict[int, bytes] = {}
        self._hashCursor = 0
        self._hasher = hashlib.sha256()
        self._hashing = False
        self._tokens = 0.0
        self._tokensAt = reactor.seconds()
        self._refill: IDelayedCall | None = None
        self._watch: IDelayedCall | None = None
        self._samples: list[tuple[float, int]] = [(self.started, 0)]
        self._writes = 0
        self._finishing = False

    # -- what the table shows --

    @property
    def chunkCount(self) -> int:
        return -(-self.size // self.chunkSize)

    def rate(self) -> float:
        """
        Bytes per second over the last few seconds.
        """
        now = self.ended if self.ended is not None else self.reactor.seconds()
        recent = [(t, b) for t, b in self._samples if now - t <= RATE_WINDOW] or self._samples[-1:]
        t0, b0 = recent[0]
        if now - t0 <= 0:
            return 0.0
        return (self.doneBytes - b0) / (now - t0)

    def describe(self) -> dict[str, Any]:
        rate = self.rate()
        left = self.size - self.doneBytes
        return {
            "id": self.id,
            "sha256": self.sha256,
            "name": self.name,
            "target": self.target,
            "size": self.size,
            "done_bytes": self.doneBytes,
            "resumed_bytes": self.resumedBytes,
            "state": self.state,
            "rate": round(rate, 1),
            "eta": round(left / rate, 1) if rate > 0 and self.state == "downloading" else None,
            "limit": self.limit,
            "bad_chunks": self.badChunks,
            "sources": [
                {
                    "node": p.nodeID,
                    "bytes": p.bytes,
                    "active": p.dropped is None,
                    **({"dropped": p.dropped} if p.dropped else {}),
                }
                for p in self.peers
            ],
            "error": self.error.code if self.error else None,
            "message": self.error.message if self.error else None,
            "started": self.started,
            "verified": self.verifiedAt,
            "ended": self.ended,
        }

    # -- running --

    def addSource(self, source: ChunkSource) -> None:
        """
        Use C{source} too (may be called at any time before the end).
        """
        if self.state not in ("preparing", "downloading") or any(
            p.nodeID == source.nodeID and p.dropped is None for p in self.peers
        ):
            source.close()
            return
        self.peers.append(_Peer(source, self.reactor.seconds()))
        if self.state == "downloading":
            self._fill()

    def whenDone(self) -> Deferred[None]:
        """
        Fires when the file is in place; fails with L{TransferFailed}.
        """
        d: Deferred[None] = Deferred()
        if self.state == "complete":
            d.callback(None)
        elif self.error is not None:
            d.errback(Failure(self.error))
        else:
            self._waiting.append(d)
        return d

    async def run(self) -> None:
        """
        Fetch the chunk list, open the partial file, download, verify, and
        put the file in place.  Fails with L{TransferFailed}.
        """
        try:
            hashes = await self._chunkList()
            if self.state != "preparing":
                return
            layout = Layout(self.sha256, self.size, self.chunkSize, hashes)
            self.layout = layout
            self.partial = await self.blocking(openPartial, self.target, layout)
        except TargetError as e:
            self._fail(e.code, e.message)
            return
        except TransferFailed as e:
            self._fail(e.code, e.message)
            return
        if self.state != "preparing":
            assert self.partial is not None
            await self.blocking(self.partial.close)
            return
        self._done = set(self.partial.verified)
        self.resumedBytes = sum(layout.chunkLength(i) for i in self._done)
        self.doneBytes = self.resumedBytes
        self._samples = [(self.reactor.seconds(), self.doneBytes)]
        if self._done:
            self.log.info(
                "resuming {name} from {resumed} verified bytes of {size}",
                name=self.name or self.sha256,
                resumed=self.resumedBytes,
                size=self.size,
            )
        self._pending = [i for i in range(layout.chunkCount) if i not in self._done]
        self.state = "downloading"
        self._watch = self.reactor.callLater(WATCH_INTERVAL, self._watchdog)
        self._advanceHash()
        self._fill()
        self._maybeFinish()

    async def _chunkList(self) -> bytes:
        count = self.chunkCount
        parts: list[bytes] = []
        while True:
            live = [p for p in self.peers if p.dropped is None]
            if not live:
                raise TransferFailed("no-source", self._noSourceMessage())
            peer = live[0]
            try:
                parts = []
                for start in range(0, count, HASH_PAGE):
                    n = min(HASH_PAGE, count - start)
                    page = await peer.source.chunkHashes(self.sha256, start, n)
                    if len(page) != 32 * n:
                        raise TransferFailed(
                            "bad-source", f"{peer.nodeID} sent a chunk list of the wrong length"
                        )
                    parts.append(page)
                return b"".join(parts)
            except Exception as e:
                self._drop(peer, _reasonOf(e))
                if self.state != "preparing":
                    raise TransferFailed("cancelled", "cancelled") from None

    def cancel(self) -> None:
        """
        Stop now; the partial file stays for a later resume.
        """
        if self.state in ("complete", "failed", "cancelled"):
            return
        self._end("cancelled", TransferFailed("cancelled", "the download was cancelled"))

    # -- scheduling --

    def _live(self) -> list[_Peer]:
        return [p for p in self.peers if p.dropped is None]

    def _fill(self) -> None:
        if self.state != "downloading":
            return
        live = self._live()
        if not live:
            if self._pending or self._outstanding():
                self._fail("no-source", self._noSourceMessage())
            return
        progressed = True
        while progressed:
            progressed = False
            for peer in live:
                if peer.dropped is not None or len(peer.inflight) >= PIPELINE:
                    continue
                index = self._nextFor(peer)
                if index is None:
                    continue
                if not self._takeTokens(index):
                    return
                self._request(peer, index)
                progressed = True

    def _nextFor(self, peer: _Peer) -> int | None:
        if self._pending:
            return self._pending.pop(0)
        # End game: duplicate the oldest chunk outstanding elsewhere, at most
        # once, and only from an idle source.
        if peer.inflight:
            return None
        best: tuple[float, int] | None = None
        for other in self._live():
            if other is peer:
                continue
            for index, asked in other.inflight.items():
                if index in self._done or self._copies(index) > 1:
                    continue
                if best is None or asked < best[0]:
                    best = (asked, index)
        return best[1] if best else None

    def _requeue(self, index: int) -> None:
        """
        Put a chunk back at the front, unless it is done, queued already, or
        still asked of another source.
        """
        if index not in self._done and index not in self._pending and self._copies(index) == 0:
            self._pending.insert(0, index)

    def _copies(self, index: int) -> int:
        return sum(1 for p in self._live() if index in p.inflight)

    def _outstanding(self) -> set[int]:
        return {i for p in self._live() for i in p.inflight}

    def _takeTokens(self, index: int) -> bool:
        """
        The bandwidth limit: a token bucket of one chunk, refilled at
        C{limit} bytes per second, charged when a chunk is asked for.
        """
        if not self.limit:
            return True
        assert self.layout is not None
        now = self.reactor.seconds()
        burst = float(self.chunkSize)
        self._tokens = min(burst, self._tokens + (now - self._tokensAt) * self.limit)
        self._tokensAt = now
        if self._tokens < 0:
            self._pending.insert(0, index)
            if self._refill is None or not self._refill.active():
                self._refill = self.reactor.callLater(-self._tokens / self.limit, self._fill)
            return False
        self._tokens -= self.layout.chunkLength(index)
        return True

    def _request(self, peer: _Peer, index: int) -> None:
        peer.inflight[index] = self.reactor.seconds()
        d = peer.source.read(self.sha256, index)
        d.addCallbacks(
            lambda data: self._received(peer, index, data),
            lambda f: self._readFailed(peer, index, f),
        )

    def _received(self, peer: _Peer, index: int, data: bytes) -> None:
        peer.lastAnswer = self.reactor.seconds()
        if peer.inflight.pop(index, None) is None or self.state != "downloading":
            return
        if index in self._done:
            self._fill()
            return
        assert self.partial is not None
        self._writes += 1
        d = self.blocking(self.partial.writeChunk, index, data)
        d.addCallbacks(
            lambda ok: self._written(peer, index, data, ok),
            self._writeFailed,
        )
        d.addErrback(self._unexpected)
        # Ask for the next chunk now: the write runs meanwhile.
        self._fill()

    def _written(self, peer: _Peer, index: int, data: bytes, ok: bool) -> None:
        self._writes -= 1
        if self.state != "downloading":
            self._maybeFinish()
            return
        if not ok:
            self.badChunks += 1
            self.log.warn(
                "chunk {index} of {sha256} from {peer} does not match its hash: source dropped",
                index=index,
                sha256=self.sha256,
                peer=peer.nodeID,
            )
            self._drop(peer, "sent a chunk that does not match its hash")
            self._requeue(index)
            self._fill()
            return
        if index not in self._done:
            self._done.add(index)
            assert self.layout is not None
            length = self.layout.chunkLength(index)
            self.doneBytes += length
            peer.bytes += length
            peer.chunks += 1
            self._sample()
            if index - self._hashCursor < HOLD_CHUNKS:
                self._held[index] = data
            self._advanceHash()
        self._fill()
        self._maybeFinish()

    def _writeFailed(self, failure: Failure) -> None:
        self._writes -= 1
        if isinstance(failure.value, TargetError):
            self._fail(failure.value.code, failure.value.message)
        else:
            self._fail("io-error", f"writing {self.target} failed: {failure.getErrorMessage()}")

    def _readFailed(self, peer: _Peer, index: int, failure: Failure) -> None:
        if peer.inflight.pop(index, None) is None:
            return
        self._requeue(index)
        self._drop(peer, _reasonOf(failure.value))
        self._fill()

    def _drop(self, peer: _Peer, reason: str) -> None:
        if peer.dropped is not None:
            return
        peer.dropped = reason
        indexes = sorted(peer.inflight, reverse=True)
        peer.inflight.clear()
        for index in indexes:
            self._requeue(index)
        self.log.info(
            "source {peer} of {sha256} dropped: {reason}",
            peer=peer.nodeID,
            sha256=self.sha256,
            reason=reason,
        )
        peer.source.close()

    def _watchdog(self) -> None:
        self._watch = None
        if self.state != "downloading":
            return
        now = self.reactor.seconds()
        for peer in self._live():
            if peer.inflight and now - max(peer.lastAnswer, min(peer.inflight.values())) > (
                STALL_TIMEOUT
            ):
                self._drop(peer, f"answered nothing for {STALL_TIMEOUT:.0f} s")
        self._fill()
        if self.state == "downloading":
            self._watch = self.reactor.callLater(WATCH_INTERVAL, self._watchdog)

    def _noSourceMessage(self) -> str:
        reasons = "; ".join(f"{p.nodeID[:12]}: {p.dropped}" for p in self.peers if p.dropped)
        return "no source left for the file" + (f" ({reasons})" if reasons else "")

    def _sample(self) -> None:
        now = self.reactor.seconds()
        self._samples.append((now, self.doneBytes))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW:
            self._samples.pop(0)

    # -- the whole-file hash --

    def _advanceHash(self) -> None:
        """
        Feed the whole-file hash with the verified chunks that now extend
        its prefix, one batch at a time in the thread pool (hashlib objects
        are not shared between threads).
        """
        if self._hashing or self.partial is None:
            return
        batch: list[tuple[int, bytes | None]] = []
        index = self._hashCursor
        while index in self._done and len(batch) < 16:
            batch.append((index, self._held.pop(index, None)))
            index += 1
        if not batch:
            return
        self._hashing = True
        partial = self.partial
        hasher = self._hasher

        def feed() -> None:
            for i, data in batch:
                hasher.update(data if data is not None else partial.readChunk(i))

        def fed(_: object) -> None:
            self._hashing = False
            self._hashCursor += len(batch)
            self._advanceHash()
            self._maybeFinish()

        def failed(failure: Failure) -> None:
            self._hashing = False
            self._fail(
                "io-error", f"reading {self.target} back failed: {failure.getErrorMessage()}"
            )

        d = self.blocking(feed)
        d.addCallbacks(fed, failed)
        d.addErrback(self._unexpected)

    # -- the end --

    def _maybeFinish(self) -> None:
        if self.state != "downloading" or self._finishing or self.layout is None:
            return
        if len(self._done) < self.layout.chunkCount or self._hashing or self._writes:
            return
        if self._hashCursor < self.layout.chunkCount:
            self._advanceHash()
            return
        self._finishing = True
        self.state = "verifying"
        self.verifiedAt = self.reactor.seconds()
        if self._hasher.hexdigest() != self.sha256:
            self.log.error(
                "{target}: every chunk matched the chunk list but the whole file's "
                "SHA-256 does not match {sha256}: the chunk list was wrong",
                target=self.target,
                sha256=self.sha256,
            )
            partial = self.partial
            assert partial is not None
            self.blocking(_discard, partial).addErrback(self._unexpected)
            self._fail("bad-content", "the file's SHA-256 does not match the content hash")
            return
        assert self.partial is not None
        d = self.blocking(self.partial.complete)
        d.addCallbacks(lambda _: self._completed(), self._completeFailed)
        d.addErrback(self._unexpected)

    def _completed(self) -> None:
        self._end("complete", None)
        self.log.info(
            "downloaded {target} ({size} bytes, {sha256}) from {sources} source(s)",
            target=self.target,
            size=self.size,
            sha256=self.sha256,
            sources=sum(1 for p in self.peers if p.bytes),
        )

    def _completeFailed(self, failure: Failure) -> None:
        if isinstance(failure.value, TargetError):
            self._end("failed", TransferFailed(failure.value.code, failure.value.message))
        else:
            self._end("failed", TransferFailed("io-error", failure.getErrorMessage()))

    def _fail(self, code: str, message: str) -> None:
        if self.state in ("complete", "failed", "cancelled"):
            return
        self._end("failed", TransferFailed(code, message))

    def _end(self, state: str, error: TransferFailed | None) -> None:
        self.state = state
        self.error = error
        self.ended = self.reactor.seconds()
        for call in (self._refill, self._watch):
            if call is not None and call.active():
                call.cancel()
        self._refill = self._watch = None
        self._held.clear()
        for peer in self.peers:
            if peer.dropped is None:
                peer.dropped = "finished" if state == "complete" else state
                peer.inflight.clear()
                peer.source.close()
        if self.partial is not None and not self.partial.closed and state != "complete":
            self._closePartialWhenIdle()
        if error is not None and state == "failed":
            self.log.warn(
                "download of {target} failed: {message}", target=self.target, message=error.message
            )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if error is None:
                d.callback(None)
            else:
                d.errback(Failure(error))

    def _closePartialWhenIdle(self) -> None:
        # Writes and hashing may still be running in the pool: close after them.
        partial = self.partial
        assert partial is not None
        if self._writes or self._hashing:
            self.reactor.callLater(0.05, self._closePartialWhenIdle)
            return
        self.blocking(partial.close).addErrback(self._unexpected)

    def _unexpected(self, failure: Failure) -> None:
        self.log.failure("download of {target} broke", failure, target=self.target)
        self._fail("internal", "internal error (see the node's log)")


def _discard(partial: PartialFile) -> None:
    from appnpy_files.partial import discardPartial

    partial.close()
    discardPartial(partial.target)


def _reasonOf(error: BaseException | None) -> str:
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{code}: {message}" if code else message


def synchronous(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    A L{Blocking} that runs C{f} at once (for a node without threads, e.g.
    on a test clock).
    """
    try:
        return succeed(f(*args))
    except BaseException:
        d: Deferred[Any] = Deferred()
        d.errback(Failure())
        return d
