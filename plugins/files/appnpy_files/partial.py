"""
The partial file of a download and its sidecar, on disk.

A download of C{TARGET} writes into C{TARGET.appn-partial} (the full size,
preallocated, chunks written at their offsets as they are verified) and keeps
beside it C{TARGET.appn-partial.json}, the sidecar: the content hash, the size,
the chunk size and the chunk list.  Nothing records which chunks were written:
on resume every chunk of the partial file is hashed again and the ones that
match the chunk list count as done.  So a crash at any moment (SIGKILL of
either side, a power cut in the middle of a write) leaves a state the next
download resumes from, never a wrong byte that would be trusted.

Only when every chunk is there and the whole file's SHA-256 matches is the
partial file fsynced and linked into place under its final name (a hard link:
it never replaces a file that appeared there meanwhile), then the partial name
and the sidecar are removed.

Every function here blocks (disk I/O, hashing): they run in the plugin's
thread pool, never on the reactor thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable

import attrs

PARTIAL_SUFFIX = ".appn-partial"
SIDECAR_SUFFIX = ".appn-partial.json"
SIDECAR_VERSION = 1
#: A sidecar bigger than this is not ours (a 64 GiB file's is about 4 MiB).
MAX_SIDECAR = 16 * 1024 * 1024


class TargetError(Exception):
    """
    The download cannot be written where it was asked to go; the message
    says why in the user's terms (full disk, read-only, exists...).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describeOSError(e: OSError, path: str) -> TargetError:
    """
    One clear sentence for a failed write to C{path}.
    """
    if e.errno == errno.ENOSPC:
        return TargetError("disk-full", f"no space left on the device holding {path}")
    if e.errno == errno.EDQUOT:
        return TargetError("disk-full", f"disk quota exceeded writing {path}")
    if e.errno == errno.EROFS:
        return TargetError("read-only", f"{path} is on a read-only file system")
    if e.errno in (errno.EACCES, errno.EPERM):
        return TargetError("permission-denied", f"no permission to write {path}")
    if e.errno == errno.ENOENT:
        return TargetError("no-such-directory", f"the directory of {path} does not exist")
    if e.errno == errno.EISDIR:
        return TargetError("is-a-directory", f"{path} is a directory")
    return TargetError("io-error", f"cannot write {path}: {e.strerror or e}")


@attrs.frozen
class Layout:
    """
    What the sidecar names: the content and how it is cut.
    """

    sha256: str
    size: int
    chunkSize: int
    #: The chunk list: 32 raw bytes per chunk.
    hashes: bytes

    @property
    def chunkCount(self) -> int:
        return len(self.hashes) // 32

    def chunkLength(self, index: int) -> int:
        return min(self.chunkSize, self.size - index * self.chunkSize)

    def chunkHash(self, index: int) -> bytes:
        return self.hashes[index * 32 : index * 32 + 32]


def partialPath(target: str) -> str:
    return target + PARTIAL_SUFFIX


def sidecarPath(target: str) -> str:
    return target + SIDECAR_SUFFIX


def readSidecar(target: str) -> Layout | None:
    """
    The layout a previous download of C{target} left, or L{None} when there
    is none or it is not a sidecar this version wrote.
    """
    try:
        with open(sidecarPath(target), "rb") as f:
            raw = f.read(MAX_SIDECAR + 1)
        if len(raw) > MAX_SIDECAR:
            return None
        doc = json.loads(raw)
        if doc.get("v") != SIDECAR_VERSION:
            return None
        layout = Layout(
            sha256=str(doc["sha256"]),
            size=int(doc["size"]),
            chunkSize=int(doc["chunk_size"]),
            hashes=bytes.fromhex(doc["chunks"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return layout


def _writeSidecar(target: str, layout: Layout) -> None:
    doc = {
        "v": SIDECAR_VERSION,
        "sha256": layout.sha256,
        "size": layout.size,
        "chunk_size": layout.chunkSize,
        "chunks": layout.hashes.hex(),
    }
    path = sidecarPath(target)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _writeAll(fd, json.dumps(doc).encode("ascii"), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _writeAll(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


@attrs.define
class PartialFile:
    """
    An open partial file.

    @ivar verified: the chunk indexes already on disk and verified (found
        on resume).
    """

    target: str
    layout: Layout
    fd: int
    verified: set[int]
    closed: bool = False

    def writeChunk(self, index: int, data: bytes) -> bool:
        """
        Verify C{data} against chunk C{index}'s hash and, only if it
        matches, write it at its offset.  Answers whether it matched.

        @raise TargetError: the write failed (full disk...).
        """
        if len(data) != self.layout.chunkLength(index):
            return False
        if hashlib.sha256(data).digest() != self.layout.chunkHash(index):
            return False
        try:
            _writeAll(self.fd, data, index * self.layout.chunkSize)
        except OSError as e:
            raise describeOSError(e, self.target) from None
        return True

    def readChunk(self, index: int) -> bytes:
        return os.pread(self.fd, self.layout.chunkLength(index), index * self.layout.chunkSize)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def complete(self) -> None:
        """
        Make the verified partial file the target: fsync it, link it under
        the final name (never replacing an existing file), remove the
        partial name and the sidecar, fsync the directory.

        @raise TargetError: the target appeared meanwhile, or the disk failed.
        """
        partial = partialPath(self.target)
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise describeOSError(e, self.target) from None
        self.close()
        try:
            os.link(partial, self.target)
        except FileExistsError:
            raise TargetError("target-exists", f"{self.target} appeared meanwhile") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise describeOSError(e, self.target) from None
            # A file system without hard links: rename, after checking again.
            if os.path.lexists(self.target):
                raise TargetError("target-exists", f"{self.target} appeared meanwhile") from None
            os.rename(partial, self.target)
        else:
            os.unlink(partial)
        try:
            os.unlink(sidecarPath(self.target))
        except FileNotFoundError:
            pass
        _fsyncDirectory(os.path.dirname(self.target) or ".")


def _fsyncDirectory(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def openPartial(target: str, layout: Layout) -> PartialFile:
    """
    Open (or create) the partial file for downloading C{layout} to
    C{target}, and find which of its chunks are already there and right.

    A sidecar for other content is discarded with its partial file (both are
    ours: nobody else names files C{*.appn-partial}).

    @raise TargetError: the target exists already, or the partial file
        cannot be created (read-only, full disk, no such directory...).
    """
    if os.path.lexists(target):
        raise TargetError("target-exists", f"{target} exists already; choose another target")
    partial = partialPath(target)
    previous = readSidecar(target)
    resume = (
        previous is not None
        and previous.sha256 == layout.sha256
        and previous.size == layout.size
        and previous.chunkSize == layout.chunkSize
        and os.path.isfile(partial)
    )
    try:
        if resume:
            fd = os.open(partial, os.O_RDWR | os.O_NOFOLLOW)
        else:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise describeOSError(e, target) from None
    pf = PartialFile(target, layout, fd, set())
    try:
        size = os.fstat(fd).st_size
        if size > layout.size:
            os.ftruncate(fd, layout.size)
        _reserve(fd, layout.size)
        if previous != layout:
            _writeSidecar(target, layout)
        if resume:
            pf.verified = set(_verifiedChunks(pf, min(size, layout.size)))
    except OSError as e:
        pf.close()
        if not resume:
            # Nothing of value in it: give the space back (a full disk).
            discardPartial(target)
        raise describeOSError(e, target) from None
    except BaseException:
        pf.close()
        raise
    return pf


def _reserve(fd: int, size: int) -> None:
    """
    Take the whole file's space now, so a full disk is one clear error at
    the start rather than a failure half-way.
    """
    if size == 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            os.ftruncate(fd, size)
        else:
            raise


def _verifiedChunks(pf: PartialFile, onDisk: int) -> Iterable[int]:
    layout = pf.layout
    for index in range(layout.chunkCount):
        if index * layout.chunkSize >= onDisk:
            break
        data = pf.readChunk(index)
        if len(data) == layout.chunkLength(index) and (
            hashlib.sha256(data).digest() == layout.chunkHash(index)
        ):
            yield index


def discardPartial(target: str) -> None:
    """
    Remove a download's partial file and sidecar (a cancelled download that
    the user does not want to resume).
    """
    for path in (partialPath(target), sidecarPath(target)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
