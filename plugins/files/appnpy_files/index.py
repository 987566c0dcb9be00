"""
The index of the shared files: what each share holds, with the SHA-256 of
every file and of every 1 MiB chunk.

Work is split by thread:

 - the reactor thread holds the in-memory view that searches, listings and
   lookups read (one small L{FileEntry} per file; chunk lists stay on disk)
   and decides what to hash;
 - a thread pool (C{hash-threads} threads) hashes files (hashing.py): within
   a file, chunk digests run on a second executor while the reading thread
   feeds the whole-file hash, so both hashes cost about one (hashlib
   releases the GIL);
 - a pool of I/O threads walks the shares, reads chunks for peers and checks
   passwords, so none of that waits behind a 10 GB file being hashed;
 - one database thread owns the sqlite cache (C{index.sqlite} in the
   plugin's data directory, in memory without one): a restart re-hashes
   only files whose size, mtime, device or inode changed.

Nothing a peer sends reaches this module unchecked: the server looks files
up by their hash or by a path that safety.splitPath accepted.
"""

from __future__ import annotations

import concurrent.futures
import os
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from appnpy_files import safety, wire
from appnpy_files.hashing import FileChanged, OpenFiles, Scanned, Stopped, hashFile, walk
from appnpy_files.shares import Share, ShareSet

CHUNK_SIZE = wire.CHUNK_SIZE
DATABASE_FILE = "index.sqlite"
_SCHEMA_VERSION = "1"
#: Rows written to the cache per transaction at most.
_WRITE_BATCH = 500
#: Chunk lists of served files kept in memory (bytes, all files together):
#: a download asks for one chunk at a time, and each needs its digest.
_CHUNK_LISTS_BYTES = 16 * 1024 * 1024
#: Times a file that keeps changing while it is hashed is retried per scan.
_RETRIES = 3
#: Seconds hashed files wait at most to be written to the cache.
_FLUSH_SECONDS = 5.0

T = TypeVar("T")

__all__ = ["FileChanged", "FileEntry", "Index", "Progress", "Stopped", "hashFile"]


@attrs.frozen
class FileEntry:
    """
    One indexed file.  C{path} is POSIX, relative to the share's root.
    """

    share: str
    path: str
    size: int
    mtimeNs: int
    sha256: str
    chunkCount: int
    device: int
    inode: int
    # The lowercased path searches match against, computed once.
    lowered: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "lowered", self.path.lower())

    @property
    def mtime(self) -> int:
        """
        Whole seconds since the epoch, as the wire carries it.
        """
        return self.mtimeNs // 1_000_000_000

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def info(self) -> wire.FileInfo:
        return wire.FileInfo(
            self.share, self.path, self.size, self.mtime, self.sha256, CHUNK_SIZE, self.chunkCount
        )


@attrs.frozen
class Progress:
    """
    How far indexing is: files and bytes in the index, files and bytes
    waiting to be hashed, whether a scan runs, bytes hashed since start.
    """

    files: int
    bytes: int
    pendingFiles: int
    pendingBytes: int
    scanning: bool
    hashedBytes: int


# -- the cache -----------------------------------------------------------------


def _signed(n: int) -> int:
    # sqlite integers are signed 64-bit; st_dev and st_ino are unsigned.
    return n - 2**64 if n >= 2**63 else n


def _unsigned(n: int) -> int:
    return n + 2**64 if n < 0 else n


class _Cache:
    """
    The sqlite cache; every method runs on the database thread only.
    """

    log = Logger()

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            # A corrupt cache is only a cache: start afresh.
            self.log.warn("index cache {path} unusable ({error}); rebuilding", path=self.path, error=str(e))
            self.close()
            if self.path is not None:
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(self.path + suffix)
                    except FileNotFoundError:
                        pass
            self._open()

    def _open(self) -> None:
        db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None)
        self.db = db
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        wanted = f"{_SCHEMA_VERSION}/{CHUNK_SIZE}"
        if row is None or row[0] != wanted:
            db.execute("DROP TABLE IF EXISTS files")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (wanted,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS files ("
            " share TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,"
            " mtime_ns INTEGER NOT NULL, dev INTEGER NOT NULL, inode INTEGER NOT NULL,"
            " sha256 TEXT NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY (share, path))"
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def load(self, shares: Collection[str]) -> list[FileEntry]:
        assert self.db is not None
        out = []
        stale = []
        for share, path, size, mtimeNs, dev, ino, sha, nchunks in self.db.execute(
            "SELECT share, path, size, mtime_ns, dev, inode, sha256, length(chunks) FROM files"
        ):
            ok = (
                share in shares
                and type(size) is int
                and size >= 0
                and type(sha) is str
                and wire.SHA256_HEX.fullmatch(sha) is not None
                and nchunks == 32 * wire.chunkCount(size)
                and type(path) is str
            )
            if ok:
                try:
                    safety.splitPath(path)
                except safety.UnsafePath:
                    ok = False
            if ok:
                out.append(FileEntry(share, path, size, mtimeNs, sha, wire.chunkCount(size), _unsigned(dev), _unsigned(ino)))
            else:
                stale.append((share, path))
        if stale:
            self.db.executemany("DELETE FROM files WHERE share = ? AND path = ?", stale)
        return out

    def write(self, upserts: list[tuple[FileEntry, bytes]], deletes: list[tuple[str, str]]) -> None:
        assert self.db is not None
        self.db.execute("BEGIN")
        try:
            self.db.executemany("DELETE FROM files WHERE share = ? AND path = ?", deletes)
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.share, e.path, e.size, e.mtimeNs, _signed(e.device), _signed(e.inode), e.sha256, chunks)
                    for e, chunks in upserts
                ],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def dropShare(self, share: str) -> None:
        assert self.db is not None
        self.db.execute("DELETE FROM files WHERE share = ?", (share,))

    def chunkHashes(self, share: str, path: str, sha: str, start: int, count: int) -> bytes | None:
        assert self.db is not None
        row = self.db.execute(
            "SELECT substr(chunks, ?, ?) FROM files WHERE share = ? AND path = ? AND sha256 = ?",
            (start * 32 + 1, count * 32, share, path, sha),
        ).fetchone()
        return None if row is None else bytes(row[0])


# -- the in-memory view --------------------------------------------------------


@attrs.define
class _Dir:
    mtime: int
    subdirs: list[str]
    files: set[str] = attrs.Factory(set)
    sortedNames: list[tuple[str, bool]] | None = None

    def listing(self) -> list[tuple[str, bool]]:
        if self.sortedNames is None:
            self.sortedNames = sorted(
                [(n, True) for n in self.subdirs] + [(n, False) for n in self.files]
            )
        return self.sortedNames


class Index:
    """
    The index of every share of a L{ShareSet}.

    C{start()} opens the cache, loads it, scans every share and hashes what
    is new or changed; C{stop()} abandons work in progress and releases the
    threads.  Between the two, the queries answer from memory at once.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        shares: ShareSet,
        dataDirectory: str | None,
        *,
        hashThreads: int = 2,
        rescanInterval: float = 300.0,
    ) -> None:
        self.reactor = reactor
        self.shares = shares
        self.dataDirectory = dataDirectory
        self.hashThreads = hashThreads
        self.rescanInterval = rescanInterval
        self._cache = _Cache(None if dataDirectory is None else os.path.join(dataDirectory, DATABASE_FILE))
        # Hashing has its own threads, so reads for peers and walks of the
        # shares never wait behind a 10 GB file being hashed.
        self._pool = ThreadPool(minthreads=0, maxthreads=hashThreads, name="files-hash")
        self._ioPool = ThreadPool(minthreads=0, maxthreads=4, name="files-io")
        self._dbPool = ThreadPool(minthreads=1, maxthreads=1, name="files-db")
        self._files = OpenFiles()
        self._chunkLists: OrderedDict[tuple[str, str, str, int, int], bytes] = OrderedDict()
        self._chunkListsBytes = 0
        self._digests: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = False
        self._started = False
        self._loading = False
        # The in-memory view.
        self._entries: dict[tuple[str, str], FileEntry] = {}
        self._byHash: dict[str, list[FileEntry]] = {}
        self._dirs: dict[str, dict[str, _Dir]] = {}
        self._counts: dict[str, list[int]] = {}
        # Work.
        self._queue: deque[tuple[str, str, int, int]] = deque()  # share, path, size, tries
        self._queued: set[tuple[str, str]] = set()
        self._inFlight = 0
        self._scanning = 0
        self._rescanAgain: set[str | None] = set()
        self._upserts: list[tuple[FileEntry, bytes]] = []
        self._deletes: list[tuple[str, str]] = []
        self._writing = False
        self._waiters: list[Deferred[None]] = []
        self._hashedBytes = 0
        self._hashedLock = threading.Lock()
        self._lastFlush = 0.0
        self._loop: LoopingCall | None = None
        shares.onChange(self._sharesChanged)

    # -- lifecycle

    def start(self) -> Deferred[None]:
        """
        Start the threads, load the cache and scan every share.  The
        Deferred fires once the cache is loaded (queries answer from it);
        L{whenIndexed} fires when the first scan is hashed.
        """
        self._started = True
        self._stopping = False
        # Until the cache is loaded and the first scan started, the index
        # is not "indexed", however idle it looks.
        self._loading = True
        self._pool.start()
        self._ioPool.start()
        self._dbPool.start()
        self._digests = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.hashThreads, thread_name_prefix="files-chunk"
        )
        known = [s.name for s in self.shares]

        def load() -> list[FileEntry]:
            self._cache.open()
            return self._cache.load(known)

        d = self._inDB(load)

        def loaded(entries: list[FileEntry]) -> None:
            for e in entries:
                if self.shares.get(e.share) is not None:
                    self._add(e)
            self.log.info("files index: {count} files from the cache", count=len(entries))
            self._loading = False
            self.rescan()
            if self.rescanInterval > 0:
                self._loop = LoopingCall(self.rescan)
                self._loop.clock = self.reactor
                self._loop.start(self.rescanInterval, now=False).addErrback(self._logFailure, "rescan loop")

        def unusable(f: Failure) -> None:
            # No cache and no scan: the index serves nothing, says so, and
            # whenIndexed still fires (tests and the plugin do not hang).
            self.log.failure("files index: the cache cannot be opened; nothing is indexed", f)
            self._loading = False
            self._maybeIdle()

        return d.addCallbacks(loaded, unusable)

    def stop(self) -> Deferred[None]:
        """
        Abandon hashing in progress (the threads notice within a chunk),
        write what is hashed to the cache, close it and stop the threads.
        Done by the time it returns (the Deferred has fired): the threads are
        joined here, so nothing depends on the reactor running afterwards.
        """
        if not self._started:
            return succeed(None)
        self._started = False
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._queue.clear()
        self._queued.clear()
        upserts, deletes = self._upserts, self._deletes
        self._upserts, self._deletes = [], []
        cache = self._cache

        def final() -> None:
            try:
                if cache.db is not None and (upserts or deletes):
                    cache.write(upserts, deletes)
            except Exception:
                self.log.failure("files index: writing the cache at stop")
            finally:
                cache.close()

        # Queued behind any write in progress; stop() joins the thread
        # after the queue is done, so the final write is complete below.
        self._dbPool.callInThread(final)
        self._pool.stop()
        self._ioPool.stop()
        self._dbPool.stop()
        self._files.closeAll()
        self._chunkLists.clear()
        self._chunkListsBytes = 0
        if self._digests is not None:
            self._digests.shutdown(wait=True)
            self._digests = None
        for w in self._takeWaiters():
            w.errback(Failure(Stopped()))
        return succeed(None)

    # -- queries (reactor thread, from memory)

    def _visible(self, share: str, unlocked: Collection[str]) -> bool:
        s = self.shares.get(share)
        return s is not None and (not s.protected or share in unlocked)

    def entry(self, share: str, path: str) -> FileEntry | None:
        return self._entries.get((share, path))

    def byHash(self, sha256: str, unlocked: Collection[str] = ()) -> FileEntry | None:
        """
        A file with this content in a share that is open or in C{unlocked}.
        """
        for e in self._byHash.get(sha256, ()):
            if self._visible(e.share, unlocked):
                return e
        return None

    def search(self, words: Iterable[str], limit: int = 100, unlocked: Collection[str] = ()) -> list[FileEntry]:
        """
        Files whose path holds every word (case-insensitive substring), a
        64-hex word matching the SHA-256 exactly instead; protected shares
        only if C{unlocked}.  At most C{limit}.
        """
        hashes: list[str] = []
        texts: list[str] = []
        for w in words:
            low = w.lower()
            (hashes if wire.SHA256_HEX.fullmatch(low) else texts).append(low)
        if not hashes and not texts:
            return []
        if hashes:
            candidates: Iterable[FileEntry] = [
                e for e in self._byHash.get(hashes[0], ()) if all(h == e.sha256 for h in hashes)
            ]
        else:
            candidates = self._entries.values()
        out = []
        visible = {s.name for s in self.shares if not s.protected or s.name in unlocked}
        # The hot loop of a search over 100,000 files: plain loops and
        # precomputed lowercase paths (a generator per entry costs 10x).
        first, rest = (texts[0], texts[1:]) if texts else ("", [])
        for e in candidates:
            low = e.lowered
            if first not in low or e.share not in visible:
                continue
            for t in rest:
                if t not in low:
                    break
            else:
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    def isDir(self, share: str, path: str) -> bool:
        return path in self._dirs.get(share, {})

    def listDir(
        self, share: str, path: str, cursor: int = 0, limit: int = wire.MAX_LIST_ENTRIES
    ) -> tuple[list[wire.ListEntry], int | None] | None:
        """
        One page of a directory, sorted by name: the entries from C{cursor}
        on and the cursor of the next page (None at the end).  None if there
        is no such directory.  Files appear once hashed.
        """
        d = self._dirs.get(share, {}).get(path)
        if d is None:
            return None
        names = d.listing()
        page = names[cursor : cursor + limit]
        out = []
        prefix = f"{path}/" if path else ""
        for name, isDir in page:
            if isDir:
                sub = self._dirs[share].get(prefix + name)
                out.append(wire.ListEntry(name, True, 0, sub.mtime if sub else 0))
            else:
                e = self._entries[(share, prefix + name)]
                out.append(wire.ListEntry(name, False, e.size, e.mtime, e.sha256))
        end = cursor + len(page)
        return out, (end if end < len(names) else None)

    def shareCounts(self, share: str) -> tuple[int, int]:
        """
        Files and bytes indexed in C{share}.
        """
        files, size = self._counts.get(share, [0, 0])
        return files, size

    @property
    def progress(self) -> Progress:
        return Progress(
            len(self._entries),
            sum(c[1] for c in self._counts.values()),
            len(self._queue) + self._inFlight,
            sum(q[2] for q in self._queue),
            self._scanning > 0,
            self._hashedBytes,
        )

    def whenIndexed(self) -> Deferred[None]:
        """
        Fires when no scan or hashing is in progress and the cache is
        written (at once if so now).
        """
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        self._maybeIdle()
        return d

    # -- reading (threads)

    def chunkHashes(self, entry: FileEntry, start: int, count: int) -> Deferred[bytes]:
        """
        Digests C{start} to C{start + count} (clipped to the file) as
        32-byte strings, concatenated.
        """
        start = min(start, entry.chunkCount)
        count = max(0, min(count, entry.chunkCount - start))
        if count == 0:
            return succeed(b"")
        pending = self._pendingChunks(entry)
        if pending is not None:
            return succeed(pending[start * 32 : (start + count) * 32])

        def got(hashes: bytes | None) -> bytes:
            if hashes is None or len(hashes) != count * 32:
                raise FileChanged(entry.path)
            return hashes

        return self._inDB(self._cache.chunkHashes, entry.share, entry.path, entry.sha256, start, count).addCallback(got)

    def readChunk(self, entry: FileEntry, index: int) -> Deferred[bytes]:
        """
        Chunk C{index} of C{entry}'s file, read in a thread and verified
        against its indexed digest.

        @raise FileChanged: (as the Deferred's failure) if the file changed;
            the caller should L{reindex} it.
        """
        share = self.shares.get(entry.share)
        if share is None or not 0 <= index < entry.chunkCount:
            return _failed(FileChanged(entry.path))
        key = (entry.share, entry.path, entry.sha256, entry.mtimeNs, entry.inode)
        hashes = self._chunkLists.get(key)
        if hashes is not None:
            self._chunkLists.move_to_end(key)
            return self._readIn(share, entry, index, hashes[index * 32 : index * 32 + 32])
        d = self.chunkHashes(entry, 0, entry.chunkCount)

        def got(hashes: bytes) -> Deferred[bytes]:
            self._keepChunkList(key, hashes)
            return self._readIn(share, entry, index, hashes[index * 32 : index * 32 + 32])

        d.addCallback(got)
        return d

    def _readIn(self, share: Share, entry: FileEntry, index: int, chunkHash: bytes) -> Deferred[bytes]:
        return deferToThreadPool(
            self.reactor, self._ioPool, self._files.read, share.directory, entry, index, chunkHash, share.allowHardlinks
        )

    def _keepChunkList(self, key: tuple[str, str, str, int, int], hashes: bytes) -> None:
        if len(hashes) > _CHUNK_LISTS_BYTES or key in self._chunkLists:
            return
        self._chunkLists[key] = hashes
        self._chunkListsBytes += len(hashes)
        while self._chunkListsBytes > _CHUNK_LISTS_BYTES:
            _, dropped = self._chunkLists.popitem(last=False)
            self._chunkListsBytes -= len(dropped)

    def _pendingChunks(self, entry: FileEntry) -> bytes | None:
        # Hashed but not yet written to the cache: served from the batch.
        for e, chunks in reversed(self._upserts):
            if e == entry:
                return chunks
        return None

    # -- changes

    def rescan(self, share: str | None = None) -> Deferred[None]:
        """
        Walk C{share} (every share if None) for new, changed and removed
        files; hash what changed.  A rescan asked while one runs runs after
        it.  Fires when the walk is applied (not when hashing is done).
        """
        if not self._started:
            return succeed(None)
        if self._scanning:
            self._rescanAgain.add(share)
            return succeed(None)
        targets = [s for s in self.shares if share is None or s.name == share]
        self._scanning += 1

        async def scan() -> None:
            try:
                for s in targets:
                    await self._scanShare(s)
            except Exception:
                self._logFailure(Failure(), "scanning")
            finally:
                self._scanning -= 1
            again = self._rescanAgain
            self._rescanAgain = set()
            if again:
                self.rescan(None if None in again or len(again) > 1 else next(iter(again)))
            self._pump()
            self._maybeIdle()

        return Deferred.fromCoroutine(scan())

    def reindex(self, entry: FileEntry) -> None:
        """
        The file no longer matches C{entry}: stop serving it and hash it
        again (first in the queue).
        """
        current = self._entries.get((entry.share, entry.path))
        if current is not None and current == entry:
            self._remove(current)
            self._deletes.append((entry.share, entry.path))
        key = (entry.share, entry.path)
        if key not in self._queued and self._started:
            self._queued.add(key)
            self._queue.appendleft((entry.share, entry.path, entry.size, 0))
            self._pump()

    def _scanShare(self, share: Share) -> Deferred[None]:
        known = {
            path: (e.size, e.mtimeNs, e.device, e.inode)
            for (name, path), e in self._entries.items()
            if name == share.name
        }
        d = deferToThreadPool(
            self.reactor, self._ioPool, walk, share.directory, share.allowHardlinks, known, lambda: self._stopping
        )

        def apply(scanned: Scanned) -> None:
            if self.shares.get(share.name) != share or not self._started:
                return
            for path in scanned.removed:
                e = self._entries.get((share.name, path))
                if e is not None:
                    self._remove(e)
                    self._deletes.append((share.name, path))
            dirs: dict[str, _Dir] = {}
            for path, (mtime, subdirs) in scanned.dirs.items():
                dirs[path] = _Dir(mtime, subdirs)
            for (name, path) in self._entries:
                if name == share.name:
                    parent = path.rpartition("/")[0]
                    if parent in dirs:
                        dirs[parent].files.add(path.rpartition("/")[2])
            self._dirs[share.name] = dirs
            for path, size, _mtime, _dev, _ino in scanned.changed:
                key = (share.name, path)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.append((share.name, path, size, 0))
            if scanned.changed or scanned.removed:
                self.log.info(
                    "files index: share {share}: {changed} new or changed, {removed} removed, {skipped} skipped",
                    share=share.name,
                    changed=len(scanned.changed),
                    removed=len(scanned.removed),
                    skipped=scanned.skipped,
                )
            self._pump()

        return d.addCallback(apply)

    def _sharesChanged(self) -> None:
        if not self._started:
            return
        names = {s.name for s in self.shares}
        for name in list(self._dirs) + list(self._counts):
            if name not in names:
                for e in [e for (n, _), e in self._entries.items() if n == name]:
                    self._remove(e)
                self._dirs.pop(name, None)
                self._counts.pop(name, None)
                self._inDB(self._cache.dropShare, name).addErrback(self._logFailure, "dropping a share")
        self.rescan()

    # -- hashing

    def _pump(self) -> None:
        # A few more jobs than threads, so the pool never waits on the
        # reactor between small files; only running jobs hold memory.
        while self._queue and self._inFlight < 4 * self.hashThreads and self._started:
            share, path, size, tries = self._queue.popleft()
            self._inFlight += 1
            self._hashOne(share, path, size, tries)
        self._maybeIdle()

    def _hashOne(self, shareName: str, path: str, size: int, tries: int) -> None:
        share = self.shares.get(shareName)
        if share is None:
            self._hashed(shareName, path)
            return
        assert self._digests is not None

        def progress(n: int) -> None:
            with self._hashedLock:
                self._hashedBytes += n

        d = deferToThreadPool(
            self.reactor,
            self._pool,
            hashFile,
            share.directory,
            path,
            share.allowHardlinks,
            self._digests,
            lambda: self._stopping,
            progress,
        )

        def ok(result: tuple[os.stat_result, str, bytes]) -> None:
            st, sha, chunks = result
            if self.shares.get(shareName) != share or not self._started:
                return
            entry = FileEntry(shareName, path, st.st_size, st.st_mtime_ns, sha, wire.chunkCount(st.st_size), st.st_dev, st.st_ino)
            old = self._entries.get((shareName, path))
            if old is not None:
                self._remove(old)
            self._add(entry)
            self._upserts.append((entry, chunks))
            self._flushSoon()

        def failed(f: Failure) -> None:
            if f.check(Stopped):
                return
            if f.check(FileChanged) and tries + 1 < _RETRIES:
                key = (shareName, path)
                self._queued.add(key)
                self._queue.append((shareName, path, size, tries + 1))
                return
            if f.check(FileChanged, safety.NotServable, safety.UnsafePath, OSError):
                old = self._entries.get((shareName, path))
                if old is not None:
                    self._remove(old)
                    self._deletes.append((shareName, path))
                self.log.info("files index: {share}/{path} skipped: {why}", share=shareName, path=path, why=f.getErrorMessage())
                return
            self.log.failure("hashing {share}/{path}", f, share=shareName, path=path)

        def finished(_: object) -> None:
            self._hashed(shareName, path)

        d.addCallbacks(ok, failed).addErrback(self._logFailure, "indexing a file").addBoth(finished)

    def _hashed(self, share: str, path: str) -> None:
        self._inFlight -= 1
        self._queued.discard((share, path))
        self._pump()

    # -- the view

    def _add(self, e: FileEntry) -> None:
        self._entries[(e.share, e.path)] = e
        self._byHash.setdefault(e.sha256, []).append(e)
        counts = self._counts.setdefault(e.share, [0, 0])
        counts[0] += 1
        counts[1] += e.size
        parent, _, name = e.path.rpartition("/")
        d = self._dirs.get(e.share, {}).get(parent)
        if d is not None:
            d.files.add(name)
            d.sortedNames = None

    def _remove(self, e: FileEntry) -> None:
        if self._entries.get((e.share, e.path)) != e:
            return
        del self._entries[(e.share, e.path)]
        same = self._byHash.get(e.sha256, [])
        if e in same:
            same.remove(e)
        if not same:
            self._byHash.pop(e.sha256, None)
        counts = self._counts.get(e.share)
        if counts is not None:
            counts[0] -= 1
            counts[1] -= e.size
        parent, _, name = e.path.rpartition("/")
        d = self._dirs.get(e.share, {}).get(parent)
        if d is not None:
            d.files.discard(name)
            d.sortedNames = None

    # -- the cache, batched

    def _flushSoon(self) -> None:
        # Batched (one transaction per 500 files), but never more than a few
        # seconds behind, so a killed node keeps most of its work.
        now = self.reactor.seconds()
        if (
            len(self._upserts) >= _WRITE_BATCH
            or not (self._queue or self._inFlight > 1)
            or now - self._lastFlush >= _FLUSH_SECONDS
        ):
            self._lastFlush = now
            self._flush()

    def _flush(self) -> None:
        if self._writing or not (self._upserts or self._deletes) or not self._started:
            return
        upserts, deletes = self._upserts[:_WRITE_BATCH], self._deletes
        self._deletes = []
        self._writing = True

        def written(result: object) -> object:
            self._writing = False
            # Only now drop them: until written, chunkHashes serves them.
            del self._upserts[: len(upserts)]
            if self._upserts or self._deletes:
                self._flush()
            else:
                self._maybeIdle()
            return result

        d = self._inDB(self._cache.write, upserts, deletes)
        d.addBoth(written).addErrback(self._logFailure, "writing the index cache")

    def _maybeIdle(self) -> None:
        if not self._started:
            return  # stop() fails the waiters
        if self._loading or self._scanning or self._queue or self._inFlight or self._writing:
            return
        if self._started and (self._upserts or self._deletes):
            self._flush()
            return
        for w in self._takeWaiters():
            w.callback(None)

    def _takeWaiters(self) -> list[Deferred[None]]:
        waiters, self._waiters = self._waiters, []
        return waiters

    # -- helpers

    def inThread(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run blocking C{f(*args)} in the index's I/O threads (not the hashing
        ones, which a big file may hold for a while).
        """
        return deferToThreadPool(self.reactor, self._ioPool, f, *args)

    def _inDB(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self._dbPool, f, *args)

    def _logFailure(self, f: Failure, what: str) -> None:
        if not f.check(Stopped):
            self.log.failure("files index: {what}", f, what=what)


def _failed(e: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(e))
    return d
