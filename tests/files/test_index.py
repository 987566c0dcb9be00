"""
Tests for the files index (appnpy_files.index): chunking, hashing off the
reactor thread, the cache, change detection, search and listing.  They run
on the real reactor (the index hashes in threads) and wait on Deferreds,
never on time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from typing import Any

from appnpy_files import index as indexmod
from appnpy_files import shares, wire
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SynchronousTestCase, TestCase

MiB = 1024 * 1024


def chunkDigests(data: bytes) -> bytes:
    return b"".join(
        hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, len(data), MiB)
    )


class IndexTestCase(TestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "share")
        self.data = os.path.join(base, "data")
        os.makedirs(self.root)
        os.makedirs(self.data)
        self.shares = shares.ShareSet()
        self.shares.loadConfig({"pub": self.root})

    def write(self, rel: str, data: bytes) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def started(self, **kw: Any) -> indexmod.Index:
        idx = indexmod.Index(reactor, self.shares, self.data, rescanInterval=0, **kw)
        self.addCleanup(idx.stop)
        await idx.start()
        await idx.whenIndexed()
        return idx


class ChunkingTests(IndexTestCase):
    async def test_sizes(self) -> None:
        """
        Whole-file and chunk digests are right for 0 bytes, 1 byte, exactly
        1 MiB, 1 MiB + 1 and 2.5 MiB; the empty file has no chunks and the
        SHA-256 of nothing.
        """
        cases = {
            "empty": b"",
            "one": b"x",
            "mib": os.urandom(MiB),
            "mibplus": os.urandom(MiB + 1),
            "more": os.urandom(2 * MiB + MiB // 2),
        }
        for name, data in cases.items():
            self.write(name, data)
        idx = await self.started()
        for name, data in cases.items():
            e = idx.entry("pub", name)
            assert e is not None, name
            self.assertEqual(e.sha256, hashlib.sha256(data).hexdigest())
            self.assertEqual(e.size, len(data))
            self.assertEqual(e.chunkCount, wire.chunkCount(len(data)))
            self.assertEqual(await idx.chunkHashes(e, 0, 100), chunkDigests(data))
            for i in range(e.chunkCount):
                self.assertEqual(await idx.readChunk(e, i), data[i * MiB : (i + 1) * MiB])
        empty = idx.entry("pub", "empty")
        assert empty is not None
        self.assertEqual(empty.sha256, hashlib.sha256(b"").hexdigest())
        await self.assertFailure(idx.readChunk(empty, 0), indexmod.FileChanged)

    async def test_chunkHashPages(self) -> None:
        """
        Pages of chunk hashes are clipped to the file; past the end is empty.
        """
        data = os.urandom(5 * MiB)
        self.write("f", data)
        idx = await self.started()
        e = idx.entry("pub", "f")
        assert e is not None
        digests = chunkDigests(data)
        self.assertEqual(await idx.chunkHashes(e, 1, 2), digests[32:96])
        self.assertEqual(await idx.chunkHashes(e, 4, 10), digests[128:])
        self.assertEqual(await idx.chunkHashes(e, 5, 10), b"")
        self.assertEqual(await idx.chunkHashes(e, 2**62, 10), b"")
        await self.assertFailure(idx.readChunk(e, 5), indexmod.FileChanged)
        await self.assertFailure(idx.readChunk(e, -1), indexmod.FileChanged)

    async def test_over4GiBSparse(self) -> None:
        """
        A sparse file over 4 GiB is indexed with 64-bit offsets: the right
        chunk count, and its last chunk (past 2**32) read and verified.
        """
        size = 4 * 2**30 + MiB + 7
        path = os.path.join(self.root, "big")
        with open(path, "wb") as f:
            f.truncate(size)
            f.seek(size - 7)
            f.write(b"the end")
        idx = await self.started()
        e = idx.entry("pub", "big")
        assert e is not None
        self.assertEqual(e.chunkCount, 4098)
        last = await idx.readChunk(e, 4097)
        self.assertEqual(last, b"the end")
        self.assertEqual(len(await idx.readChunk(e, 4096)), MiB)
        self.assertEqual(
            (await idx.chunkHashes(e, 4097, 1)), hashlib.sha256(last).digest()
        )


class ReactorTests(IndexTestCase):
    async def test_reactorKeepsRunning(self) -> None:
        """
        While a 256 MiB file is hashed, the reactor keeps running: a
        LoopingCall ticks meanwhile.
        """
        path = os.path.join(self.root, "big")
        with open(path, "wb") as f:
            block = os.urandom(MiB)
            for _ in range(256):
                f.write(block)
        ticks = []
        loop = LoopingCall(lambda: ticks.append(1))
        loop.start(0.001)
        self.addCleanup(lambda: loop.running and loop.stop())
        idx = indexmod.Index(reactor, self.shares, self.data, rescanInterval=0)
        self.addCleanup(idx.stop)
        await idx.start()
        before = len(ticks)
        await idx.whenIndexed()
        during = len(ticks) - before
        self.assertIsNotNone(idx.entry("pub", "big"))
        self.assertGreater(during, 0)

    async def test_stopAbandonsHashing(self) -> None:
        """
        Stopping while a big file is hashed returns without hashing it all.
        """
        path = os.path.join(self.root, "big")
        with open(path, "wb") as f:
            f.truncate(2 * 2**30)
        idx = indexmod.Index(reactor, self.shares, self.data, rescanInterval=0)
        await idx.start()
        waiter = idx.whenIndexed()
        await idx.stop()
        self.assertLess(idx.progress.hashedBytes, 2 * 2**30)
        await self.assertFailure(waiter, indexmod.Stopped)


class WhenIndexedTests(IndexTestCase):
    async def test_askedBeforeLoaded(self) -> None:
        """
        whenIndexed asked right after start (before the cache has loaded
        and the first scan begun) waits for the files to be hashed.
        """
        self.write("a", b"hello")
        idx = indexmod.Index(reactor, self.shares, self.data, rescanInterval=0)
        self.addCleanup(idx.stop)
        idx.start()
        await idx.whenIndexed()
        self.assertIsNotNone(idx.entry("pub", "a"))


class CacheTests(IndexTestCase):
    async def test_restartReusesCache(self) -> None:
        """
        A restarted index hashes nothing that did not change; one changed
        file is hashed again, alone.
        """
        for i in range(5):
            self.write(f"d/f{i}", os.urandom(100_000))
        idx = await self.started()
        first = {e.path: e for e in idx.search(["f"], 100)}
        self.assertEqual(len(first), 5)
        await idx.stop()
        again = await self.started()
        self.assertEqual(again.progress.hashedBytes, 0)
        self.assertEqual({e.path: e for e in again.search(["f"], 100)}, first)
        await again.stop()
        self.write("d/f3", b"changed")
        third = await self.started()
        self.assertEqual(third.progress.hashedBytes, len(b"changed"))
        e = third.entry("pub", "d/f3")
        assert e is not None
        self.assertEqual(e.sha256, hashlib.sha256(b"changed").hexdigest())
        self.assertEqual(await third.chunkHashes(e, 0, 1), hashlib.sha256(b"changed").digest())

    async def test_corruptCache(self) -> None:
        """
        A cache file that is not a database is rebuilt, not fatal.
        """
        self.write("a", b"hello")
        with open(os.path.join(self.data, indexmod.DATABASE_FILE), "wb") as f:
            f.write(b"garbage" * 1000)
        idx = await self.started()
        self.assertIsNotNone(idx.entry("pub", "a"))

    async def test_tamperedCacheRows(self) -> None:
        """
        Cache rows with a bad hash, a chunk list of the wrong length or an
        unsafe path are dropped and the files hashed again.
        """
        self.write("a", b"hello")
        self.write("b", b"world")
        idx = await self.started()
        await idx.stop()
        db = sqlite3.connect(os.path.join(self.data, indexmod.DATABASE_FILE))
        db.execute("UPDATE files SET chunks = x'00' WHERE path = 'a'")
        db.execute("UPDATE files SET sha256 = 'zz' WHERE path = 'b'")
        db.execute(
            "INSERT INTO files SELECT share, '../etc/passwd', size, mtime_ns, dev, inode, sha256, chunks FROM files WHERE path = 'a'"
        )
        db.commit()
        db.close()
        again = await self.started()
        self.assertEqual(again.progress.hashedBytes, 10)
        self.assertIsNone(again.entry("pub", "../etc/passwd"))
        a = again.entry("pub", "a")
        assert a is not None
        self.assertEqual(await again.readChunk(a, 0), b"hello")

    async def test_noDataDirectory(self) -> None:
        """
        Without a data directory the index works from memory.
        """
        self.write("a", b"hello")
        idx = indexmod.Index(reactor, self.shares, None, rescanInterval=0)
        self.addCleanup(idx.stop)
        await idx.start()
        await idx.whenIndexed()
        a = idx.entry("pub", "a")
        assert a is not None
        self.assertEqual(await idx.readChunk(a, 0), b"hello")


class ChangeTests(IndexTestCase):
    async def test_rescanSeesChanges(self) -> None:
        """
        A rescan indexes new files, re-hashes changed ones (a new size, or
        the same size and a new mtime) and forgets removed ones.
        """
        self.write("keep", b"same")
        self.write("grow", b"short")
        self.write("touch", b"aaaa")
        self.write("gone", b"bye")
        idx = await self.started()
        self.write("grow", b"longer now")
        self.write("touch", b"bbbb")
        st = os.stat(os.path.join(self.root, "touch"))
        os.utime(os.path.join(self.root, "touch"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        os.unlink(os.path.join(self.root, "gone"))
        self.write("new", b"fresh")
        await idx.rescan()
        await idx.whenIndexed()
        sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
        self.assertEqual(idx.entry("pub", "grow").sha256, sha(b"longer now"))  # type: ignore[union-attr]
        self.assertEqual(idx.entry("pub", "touch").sha256, sha(b"bbbb"))  # type: ignore[union-attr]
        self.assertIsNone(idx.entry("pub", "gone"))
        self.assertIsNone(idx.byHash(sha(b"bye")))
        self.assertEqual(idx.entry("pub", "new").sha256, sha(b"fresh"))  # type: ignore[union-attr]
        self.assertEqual(idx.shareCounts("pub"), (4, 4 + 10 + 4 + 5))

    async def test_periodicRescan(self) -> None:
        """
        With a rescan interval, a new file is indexed without being asked.
        """
        idx = indexmod.Index(reactor, self.shares, self.data, rescanInterval=0.01)
        self.addCleanup(idx.stop)
        await idx.start()
        await idx.whenIndexed()
        self.write("later", b"x")
        found = []
        while not found:
            await idx.whenIndexed()
            found = idx.search(["later"])
            if not found:
                await _later(0.01)
        self.assertEqual(found[0].path, "later")

    async def test_changedUnderneathIsRefused(self) -> None:
        """
        A file rewritten in place with its size and mtime kept is caught
        by the chunk hash on read; one replaced by another file (a new
        inode) or by a symlink is caught by the inode check.
        """
        data = b"a" * 1000
        path = self.write("f", data)
        self.write("g", b"other")
        idx = await self.started()
        e = idx.entry("pub", "f")
        g = idx.entry("pub", "g")
        assert e is not None and g is not None
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b"b")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        await self.assertFailure(idx.readChunk(e, 0), indexmod.FileChanged)
        gpath = os.path.join(self.root, "g")
        os.unlink(gpath)
        os.symlink("/etc/passwd", gpath)
        await self.assertFailure(idx.readChunk(g, 0), indexmod.FileChanged)
        idx.reindex(e)
        self.assertIsNone(idx.entry("pub", "f"))
        await idx.whenIndexed()
        self.assertEqual(idx.entry("pub", "f").sha256, hashlib.sha256(b"b" + data[1:]).hexdigest())  # type: ignore[union-attr]

    async def test_shareRemovedAndAdded(self) -> None:
        """
        Removing a share drops its files; adding one indexes it.
        """
        s = shares.ShareSet(self.data)
        other = os.path.join(os.path.dirname(self.root), "other")
        os.makedirs(other)
        with open(os.path.join(other, "x.txt"), "wb") as f:
            f.write(b"x")
        self.shares = s
        idx = await self.started()
        s.add("o", other)
        await idx.whenIndexed()
        while idx.entry("o", "x.txt") is None:
            await _later(0.01)
            await idx.whenIndexed()
        s.remove("o")
        self.assertIsNone(idx.entry("o", "x.txt"))
        self.assertEqual(idx.search(["x"]), [])


class ViewTests(IndexTestCase):
    async def test_whatIsNotIndexed(self) -> None:
        """
        Symlinks (to files or directories, inside or out), hardlinks, FIFOs,
        names that are not UTF-8, reserved or with control characters are
        not indexed; hardlinks are with allow-hardlinks.
        """
        self.write("ok.txt", b"ok")
        outside = os.path.join(os.path.dirname(self.root), "outside")
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(outside, "secret"), os.path.join(self.root, "link"))
        os.symlink(outside, os.path.join(self.root, "dirlink"))
        os.symlink("ok.txt", os.path.join(self.root, "alias"))
        os.link(os.path.join(outside, "secret"), os.path.join(self.root, "hard"))
        os.mkfifo(os.path.join(self.root, "fifo"))
        for name in (b"bad\xff", b"CON", b"ctl\x1b[31m", b"trail."):
            with open(os.path.join(os.fsencode(self.root), name), "wb") as f:
                f.write(b"z")
        idx = await self.started()
        self.assertEqual([e.path for e in idx.search(["."])] + [e.path for e in idx.search(["a"])], ["ok.txt"])
        self.assertEqual(idx.shareCounts("pub"), (1, 2))
        await idx.stop()
        self.shares = shares.ShareSet()
        self.shares.loadConfig({"pub": {"path": self.root, "allow-hardlinks": True}})
        idx = await self.started()
        self.assertIsNotNone(idx.entry("pub", "hard"))

    async def test_searchAndHash(self) -> None:
        """
        Search matches every word as a case-insensitive substring of the
        path, or a 64-hex word as the content hash; protected shares only
        when unlocked; at most the limit.
        """
        secret = os.path.join(os.path.dirname(self.root), "secret")
        os.makedirs(secret)
        with open(os.path.join(secret, "Holiday Photo.jpg"), "wb") as f:
            f.write(b"private")
        self.shares.loadConfig({"priv": {"path": secret, "password-hash": shares.hashPassword("pw", n=2**4)}})
        self.write("Music/Holiday Song.MP3", b"song")
        self.write("Music/other.mp3", b"other")
        for i in range(10):
            self.write(f"many/file{i}.txt", str(i).encode())
        idx = await self.started()
        self.assertEqual([e.path for e in idx.search(["holiday", "mp3"])], ["Music/Holiday Song.MP3"])
        self.assertEqual([e.path for e in idx.search(["HOLIDAY"])], ["Music/Holiday Song.MP3"])
        self.assertEqual(len(idx.search(["file"], limit=3)), 3)
        self.assertEqual(idx.search([]), [])
        sha = hashlib.sha256(b"song").hexdigest()
        self.assertEqual([e.path for e in idx.search([sha.upper()])], ["Music/Holiday Song.MP3"])
        self.assertEqual(idx.byHash(sha).path, "Music/Holiday Song.MP3")  # type: ignore[union-attr]
        privSha = hashlib.sha256(b"private").hexdigest()
        self.assertIsNone(idx.byHash(privSha))
        self.assertEqual(idx.search(["photo"]), [])
        self.assertEqual(len(idx.search(["photo"], unlocked={"priv"})), 1)
        self.assertEqual(idx.byHash(privSha, unlocked={"priv"}).share, "priv")  # type: ignore[union-attr]

    async def test_listDir(self) -> None:
        """
        Directories list sorted, subdirectories included (empty ones too),
        in pages with a cursor; a missing directory is None.
        """
        self.write("a/x", b"1")
        self.write("a/y", b"22")
        self.write("b.txt", b"333")
        os.makedirs(os.path.join(self.root, "empty"))
        idx = await self.started()
        entries, nxt = idx.listDir("pub", "")  # type: ignore[misc]
        self.assertEqual([(e.name, e.dir) for e in entries], [("a", True), ("b.txt", False), ("empty", True)])
        self.assertIsNone(nxt)
        self.assertEqual(entries[1].sha256, hashlib.sha256(b"333").hexdigest())
        page, nxt = idx.listDir("pub", "a", 0, limit=1)  # type: ignore[misc]
        self.assertEqual(([e.name for e in page], nxt), (["x"], 1))
        page, nxt = idx.listDir("pub", "a", 1, limit=1)  # type: ignore[misc]
        self.assertEqual(([e.name for e in page], nxt), (["y"], None))
        self.assertEqual(idx.listDir("pub", "empty"), ([], None))
        self.assertIsNone(idx.listDir("pub", "nope"))
        self.assertIsNone(idx.listDir("nope", ""))
        self.assertEqual(idx.listDir("pub", "a", 99), ([], None))

    async def test_manyFiles(self) -> None:
        """
        5,000 files in one directory: all indexed, listed in pages of
        1000, counted.
        """
        d = os.path.join(self.root, "many")
        os.makedirs(d)
        for i in range(5000):
            with open(os.path.join(d, f"{i:05}"), "wb") as f:
                f.write(b"%d" % i)
        idx = await self.started(hashThreads=2)
        self.assertEqual(idx.shareCounts("pub")[0], 5000)
        cursor: int | None = 0
        names = []
        while cursor is not None:
            page, cursor = idx.listDir("pub", "many", cursor)  # type: ignore[misc]
            self.assertLessEqual(len(page), wire.MAX_LIST_ENTRIES)
            names.extend(e.name for e in page)
        self.assertEqual(names, [f"{i:05}" for i in range(5000)])
        wire.encodeFrame(wire.ListAnswer(1, tuple(idx.listDir("pub", "many")[0]), 1000).toWire())  # type: ignore[index]


def _later(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


class HashFileTests(SynchronousTestCase):
    @settings(max_examples=25, deadline=None)
    @given(st.integers(0, 3 * MiB + 5))
    def test_anySize(self, size: int) -> None:
        """
        hashFile gives hashlib's whole-file digest and the per-chunk
        digests for any size around the chunk boundaries.
        """
        import concurrent.futures

        root = os.path.abspath(self.mktemp())
        os.makedirs(root, exist_ok=True)
        data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(data)
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            st, sha, chunks = indexmod.hashFile(root, "f", False, ex)
        self.assertEqual(sha, hashlib.sha256(data).hexdigest())
        self.assertEqual(chunks, chunkDigests(data))
        self.assertEqual(st.st_size, size)


class BenchmarkSmokeTests(SynchronousTestCase):
    def test_filesIndexBenchmark(self) -> None:
        """
        C{python benchmarks/files_index.py --smoke} runs and ends with its
        JSON figures (never asserted: timings drift).
        """
        import json
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result = subprocess.run(
            [sys.executable, os.path.join(root, "benchmarks", "files_index.py"), "--smoke"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(figures["benchmark"], "files_index")
        for key in ("hashlib_MiBps", "index_MiBps", "ratio", "many_files_per_s"):
            self.assertIsInstance(figures[key], (int, float))
