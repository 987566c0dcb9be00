"""
Tests for L{appnpy_files.hashing.OpenFiles}: the descriptors kept open
across the chunks of a file being served, and every check a read still
makes through them.
"""

from __future__ import annotations

import hashlib
import os
import types

from appnpy_files.hashing import CHUNK_SIZE, FileChanged, OpenFiles
from twisted.trial.unittest import SynchronousTestCase

from tests.files.test_index import IndexTestCase


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entryFor(root: str, rel: str) -> types.SimpleNamespace:
    st = os.stat(os.path.join(root, rel))
    return types.SimpleNamespace(
        path=rel, size=st.st_size, mtimeNs=st.st_mtime_ns, device=st.st_dev, inode=st.st_ino
    )


class OpenFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.clock = Clock()
        self.files = OpenFiles(maxOpen=2, maxAge=1.0, clock=self.clock)
        self.addCleanup(self.files.closeAll)

    def write(self, rel: str, data: bytes) -> str:
        path = os.path.join(self.root, rel)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def digest(self, data: bytes, index: int) -> bytes:
        return hashlib.sha256(data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]).digest()

    def read(self, entry: types.SimpleNamespace, index: int, data: bytes) -> bytes:
        return self.files.read(self.root, entry, index, self.digest(data, index), False)

    def test_chunksThroughOneDescriptor(self) -> None:
        """
        The chunks of a file are read through one descriptor, opened once.
        """
        data = os.urandom(2 * CHUNK_SIZE + 5)
        self.write("f", data)
        e = entryFor(self.root, "f")
        for i in range(3):
            self.assertEqual(self.read(e, i, data), data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        self.assertEqual(len(self.files._open), 1)

    def test_rewrittenInPlace(self) -> None:
        """
        Bytes changed under a kept descriptor, size and mtime kept, are
        caught by the chunk hash.
        """
        data = b"a" * 1000
        path = self.write("f", data)
        e = entryFor(self.root, "f")
        self.assertEqual(self.read(e, 0, data), data)
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b"b")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertRaises(FileChanged, self.read, e, 0, data)

    def test_grownUnderneath(self) -> None:
        """
        A file whose size changed is refused by the per-read fstat, and its
        descriptor is dropped.
        """
        data = b"a" * 1000
        path = self.write("f", data)
        e = entryFor(self.root, "f")
        self.read(e, 0, data)
        with open(path, "ab") as f:
            f.write(b"more")
        self.assertRaises(FileChanged, self.read, e, 0, data)
        self.assertEqual(len(self.files._open), 0)

    def test_replacedIsNoticedAfterMaxAge(self) -> None:
        """
        A file replaced by another under its name is served no more once
        the kept descriptor is older than C{maxAge}: it is reopened by
        path, and the new inode is refused.
        """
        data = b"a" * 1000
        path = self.write("f", data)
        e = entryFor(self.root, "f")
        self.read(e, 0, data)
        os.rename(path, path + ".old")
        self.write("f", data)
        self.clock.now += 1.5
        self.assertRaises(FileChanged, self.read, e, 0, data)

    def test_symlinkRefused(self) -> None:
        """
        A name that became a symlink is refused when it is reopened.
        """
        data = b"a" * 10
        path = self.write("f", data)
        e = entryFor(self.root, "f")
        os.unlink(path)
        os.symlink("/etc/passwd", path)
        self.assertRaises(FileChanged, self.read, e, 0, data)

    def test_boundedAndClosed(self) -> None:
        """
        At most C{maxOpen} descriptors are kept; L{OpenFiles.closeAll}
        closes them.
        """
        entries = []
        for name in "abc":
            self.write(name, name.encode() * 10)
            entries.append((entryFor(self.root, name), name.encode() * 10))
        for e, data in entries:
            self.read(e, 0, data)
        self.assertEqual(len(self.files._open), 2)
        fds = [slot[0] for slot in self.files._open.values()]
        self.files.closeAll()
        self.assertEqual(len(self.files._open), 0)
        for fd in fds:
            self.assertRaises(OSError, os.fstat, fd)


class ServedReadTests(IndexTestCase):
    async def test_keptStateNeverServesChangedBytes(self) -> None:
        """
        After chunks of a file were served (its chunk list and descriptor
        kept), bytes rewritten in place are refused, and once the file is
        indexed again the new bytes are served against the new digests.
        """
        data = os.urandom(CHUNK_SIZE + 10)
        path = self.write("f", data)
        idx = await self.started()
        e = idx.entry("pub", "f")
        assert e is not None
        self.assertEqual(await idx.readChunk(e, 0), data[:CHUNK_SIZE])
        self.assertEqual(await idx.readChunk(e, 1), data[CHUNK_SIZE:])
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.seek(CHUNK_SIZE)
            f.write(b"X")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        await self.assertFailure(idx.readChunk(e, 1), FileChanged)
        idx.reindex(e)
        await idx.whenIndexed()
        again = idx.entry("pub", "f")
        assert again is not None
        self.assertNotEqual(again.sha256, e.sha256)
        self.assertEqual(await idx.readChunk(again, 1), b"X" + data[CHUNK_SIZE + 1 :])
