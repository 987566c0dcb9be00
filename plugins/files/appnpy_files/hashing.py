"""
The blocking work of the index, run in its threads: walking a share and
hashing a file (whole-file SHA-256 and per-chunk digests in parallel), and
reading one chunk back verified.  Nothing here touches the reactor or the
index's state; index.py calls these through its thread pools.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from appnpy_files import safety, wire

CHUNK_SIZE = wire.CHUNK_SIZE


class FileChanged(Exception):
    """
    The file on disk is no longer the indexed one (other size, mtime or
    inode, or a chunk that no longer matches its hash).
    """


class Stopped(Exception):
    """
    The index is stopping; work in progress was abandoned.
    """




class Indexed(Protocol):
    """
    What reading a chunk back needs of an index entry.
    """

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtimeNs(self) -> int: ...
    @property
    def device(self) -> int: ...
    @property
    def inode(self) -> int: ...




@attrs.frozen
class Scanned:
    """
    What a walk of one share found that the index does not know yet.
    """

    changed: list[tuple[str, int, int, int, int]]  # path, size, mtime_ns, dev, ino
    removed: list[str]
    dirs: dict[str, tuple[int, list[str]]]  # dir path -> (mtime, subdir names)
    skipped: int


def walk(
    root: str,
    allowHardlinks: bool,
    known: dict[str, tuple[int, int, int, int]],
    stopping: Callable[[], bool],
) -> Scanned:
    """
    Walk a share with directory descriptors (never following a symlink),
    and compare what is there with C{known}.  Blocking.
    """
    changed: list[tuple[str, int, int, int, int]] = []
    present: set[str] = set()
    dirs: dict[str, tuple[int, list[str]]] = {}
    skipped = 0
    try:
        rootFD = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        # A share whose directory is gone: it holds nothing now.
        return Scanned([], list(known), {}, 0)

    def visit(fd: int, rel: str, depth: int) -> None:
        nonlocal skipped
        if stopping():
            raise Stopped()
        subdirs: list[str] = []
        try:
            entries = list(os.scandir(fd))
        except OSError:
            skipped += 1
            return
        for entry in entries:
            name = entry.name
            path = f"{rel}/{name}" if rel else name
            if safety.nameProblem(name) is not None or len(path.encode("utf-8")) > safety.MAX_PATH_BYTES:
                skipped += 1
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                skipped += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 >= safety.MAX_DEPTH:
                    skipped += 1
                    continue
                try:
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError:
                    skipped += 1
                    continue
                subdirs.append(name)
                try:
                    dirs[path] = (st.st_mtime_ns // 1_000_000_000, [])
                    visit(child, path, depth + 1)
                finally:
                    os.close(child)
            elif stat.S_ISREG(st.st_mode) and (st.st_nlink == 1 or allowHardlinks):
                present.add(path)
                stamp = (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
                if known.get(path) != stamp:
                    changed.append((path, *stamp))
            else:
                skipped += 1  # symlinks, devices, FIFOs, sockets, hardlinks
        mtime = dirs.get(rel, (0, []))[0]
        dirs[rel] = (mtime, subdirs)

    try:
        rootStat = os.fstat(rootFD)
        dirs[""] = (rootStat.st_mtime_ns // 1_000_000_000, [])
        visit(rootFD, "", 0)
    finally:
        os.close(rootFD)
    removed = [path for path in known if path not in present]
    return Scanned(changed, removed, dirs, skipped)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hashFile(
    root: str,
    path: str,
    allowHardlinks: bool,
    digests: concurrent.futures.Executor,
    stopping: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[os.stat_result, str, bytes]:
    """
    Hash one file of a share: the whole-file SHA-256 and the digest of every
    1 MiB chunk, the chunk digests computed on C{digests} while this thread
    reads and feeds the whole-file hash.  Blocking.

    @return: the file's stat at open, the hex SHA-256, the chunk digests.
    @raise FileChanged: if the file changed while it was read.
    @raise safety.NotServable: if it cannot be opened safely.
    """
    checked = safety.openInShare(root, safety.splitPath(path), allowHardlinks=allowHardlinks)
    fd = checked.fd
    try:
        before = os.fstat(fd)
        whole = hashlib.sha256()
        pending: deque[concurrent.futures.Future[bytes]] = deque()
        chunks: list[bytes] = []
        remaining = before.st_size
        while remaining > 0:
            if stopping():
                raise Stopped()
            data = os.read(fd, min(CHUNK_SIZE, remaining))
            if len(data) != min(CHUNK_SIZE, remaining):
                # Shorter than the stat said: short reads do not happen on
                # regular files except at EOF, so it shrank.
                if not data:
                    raise FileChanged(path)
                data += _readFull(fd, min(CHUNK_SIZE, remaining) - len(data), path)
            if before.st_size <= CHUNK_SIZE:
                # One chunk: its digest is the whole file's, hashed once.
                whole.update(data)
                chunks.append(whole.digest())
            else:
                pending.append(digests.submit(_sha256, data))
                whole.update(data)
            remaining -= len(data)
            progress(len(data))
            # Two chunks in flight at most: memory stays at a few MiB.
            while len(pending) > 2:
                chunks.append(pending.popleft().result())
        while pending:
            chunks.append(pending.popleft().result())
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise FileChanged(path)
        return before, whole.hexdigest(), b"".join(chunks)
    finally:
        os.close(fd)


def _readFull(fd: int, n: int, path: str) -> bytes:
    parts = []
    while n > 0:
        data = os.read(fd, n)
        if not data:
            raise FileChanged(path)
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def readVerified(
    root: str, entry: Indexed, index: int, chunkHash: bytes, allowHardlinks: bool
) -> bytes:
    """
    Read chunk C{index} of the indexed file C{entry} describes and check it
    against C{chunkHash}.  Blocking.

    @raise FileChanged: if the file is not the indexed one any more or the
        bytes do not match.
    @raise safety.NotServable: if it cannot be opened safely.
    """
    try:
        checked = safety.openInShare(
            root,
            safety.splitPath(entry.path),
            expect=(entry.device, entry.inode),
            allowHardlinks=allowHardlinks,
        )
    except safety.NotServable:
        # Swapped, gone, now a symlink or a hardlink: not the indexed file.
        raise FileChanged(entry.path) from None
    try:
        if (checked.size, checked.mtimeNs) != (entry.size, entry.mtimeNs):
            raise FileChanged(entry.path)
        data = _readChunk(checked.fd, entry, index)
    finally:
        os.close(checked.fd)
    if hashlib.sha256(data).digest() != chunkHash:
        raise FileChanged(entry.path)
    return data


class OpenFiles:
    """
    Descriptors of the files being served, kept open across their chunks so
    a download of a big file opens it (component by component, through
    L{safety.openInShare}) about once per C{maxAge} seconds rather than once
    per chunk.  Every read still C{fstat}s the descriptor against the index
    entry and hashes the chunk against its indexed digest; a descriptor
    older than C{maxAge} is reopened by path, so a file renamed away or
    replaced stops being served within that time.  Thread-safe: reads run
    in the index's I/O threads, several on one descriptor at once.
    """

    def __init__(self, maxOpen: int = 16, maxAge: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxOpen = maxOpen
        self.maxAge = maxAge
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [fd, opened at, users, evicted]
        self._open: OrderedDict[tuple[str, str, int, int], list[Any]] = OrderedDict()

    def read(self, root: str, entry: Indexed, index: int, chunkHash: bytes, allowHardlinks: bool) -> bytes:
        """
        L{readVerified}, through the cache.  Blocking.
        """
        key = (root, entry.path, entry.device, entry.inode)
        slot = self._acquire(key)
        if slot is None:
            slot = self._opened(key, root, entry, allowHardlinks)
        try:
            st = os.fstat(slot[0])
            if (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino) != (
                entry.size,
                entry.mtimeNs,
                entry.device,
                entry.inode,
            ):
                self._evict(key, slot)
                raise FileChanged(entry.path)
            data = _readChunk(slot[0], entry, index)
        finally:
            self._release(slot)
        if hashlib.sha256(data).digest() != chunkHash:
            raise FileChanged(entry.path)
        return data

    def _acquire(self, key: tuple[str, str, int, int]) -> list[Any] | None:
        with self._lock:
            slot = self._open.get(key)
            if slot is None:
                return None
            if self.clock() - slot[1] > self.maxAge:
                self._evictLocked(key, slot)
                return None
            slot[2] += 1
            self._open.move_to_end(key)
            return slot

    def _opened(self, key: tuple[str, str, int, int], root: str, entry: Indexed, allowHardlinks: bool) -> list[Any]:
        try:
            checked = safety.openInShare(
                root,
                safety.splitPath(entry.path),
                expect=(entry.device, entry.inode),
                allowHardlinks=allowHardlinks,
            )
        except safety.NotServable:
            # Swapped, gone, now a symlink or a hardlink: not the indexed file.
            raise FileChanged(entry.path) from None
        slot: list[Any] = [checked.fd, self.clock(), 1, False]
        with self._lock:
            old = self._open.pop(key, None)
            if old is not None:
                self._evictLocked(key, old, popped=True)
            self._open[key] = slot
            while len(self._open) > self.maxOpen:
                k, s = next(iter(self._open.items()))
                self._evictLocked(k, s)
        return slot

    def _evict(self, key: tuple[str, str, int, int], slot: list[Any]) -> None:
        with self._lock:
            self._evictLocked(key, slot)

    def _evictLocked(self, key: tuple[str, str, int, int], slot: list[Any], popped: bool = False) -> None:
        if not popped and self._open.get(key) is slot:
            del self._open[key]
        if not slot[3]:
            slot[3] = True
            if slot[2] == 0:
                os.close(slot[0])

    def _release(self, slot: list[Any]) -> None:
        with self._lock:
            slot[2] -= 1
            if slot[3] and slot[2] == 0:
                os.close(slot[0])

    def closeAll(self) -> None:
        with self._lock:
            for key, slot in list(self._open.items()):
                self._evictLocked(key, slot)


def _readChunk(fd: int, entry: Indexed, index: int) -> bytes:
    offset = index * CHUNK_SIZE
    want = min(CHUNK_SIZE, entry.size - offset)
    data = os.pread(fd, want, offset)
    if len(data) < want:
        data += _preadFull(fd, want - len(data), offset + len(data), entry.path)
    return data


def _preadFull(fd: int, n: int, offset: int, path: str) -> bytes:
    parts = []
    while n > 0:
        data = os.pread(fd, n, offset)
        if not data:
            raise FileChanged(path)
        parts.append(data)
        n -= len(data)
        offset += len(data)
    return b"".join(parts)
