"""
Downloads: the engine against fake sources (chunk verification, several
sources, a bad source, a stalled source, resume, the bandwidth limit, a
full disk), then whole nodes on an in-memory network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

from appnpy_files import partial as P
from appnpy_files.download import STALL_TIMEOUT, Transfer, TransferFailed, synchronous
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

CHUNK = 1 << 20


def content(size: int, seed: int = 1) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest() * 1024
        counter += 1
    return bytes(out[:size])


def chunkList(data: bytes) -> bytes:
    return b"".join(
        hashlib.sha256(data[i : i + CHUNK]).digest() for i in range(0, len(data), CHUNK)
    )


class FakeSource:
    """
    A source answering from memory; C{hold} keeps reads unanswered (a stall),
    C{corrupt} flips a byte of the named chunks, C{fails} fails every read.
    """

    def __init__(
        self,
        nodeID: str,
        data: bytes,
        corrupt: set[int] = frozenset(),
        hold: bool = False,
        fails: bool = False,
    ) -> None:  # type: ignore[assignment]
        self.nodeID = nodeID
        self.data = data
        self.corrupt = set(corrupt)
        self.hold = hold
        self.fails = fails
        self.reads: list[int] = []
        self.held: list[tuple[int, Deferred[bytes]]] = []
        self.closed = False

    def chunkHashes(self, sha256: str, start: int, count: int) -> Deferred[bytes]:
        return succeed(chunkList(self.data)[start * 32 : (start + count) * 32])

    def read(self, sha256: str, index: int) -> Deferred[bytes]:
        self.reads.append(index)
        if self.fails:
            return fail(ConnectionError("gone"))
        piece = self.data[index * CHUNK : (index + 1) * CHUNK]
        if index in self.corrupt:
            piece = bytes([piece[0] ^ 1]) + piece[1:]
        if self.hold:
            d: Deferred[bytes] = Deferred()
            self.held.append((index, d))
            return d
        return succeed(piece)

    def release(self) -> None:
        held, self.held = self.held, []
        for index, d in held:
            d.callback(self.data[index * CHUNK : (index + 1) * CHUNK])

    def close(self) -> None:
        self.closed = True


class EngineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.dir, ignore_errors=True))
        self.target = os.path.join(self.dir, "out.bin")

    def transfer(self, data: bytes, *sources: FakeSource, limit: float | None = None) -> Transfer:
        t = Transfer(
            self.clock,
            synchronous,
            hashlib.sha256(data).hexdigest(),
            len(data),
            self.target,
            limit=limit,
        )
        for s in sources:
            t.addSource(s)
        self.done = t.whenDone()
        Deferred.fromCoroutine(t.run())
        return t

    def readTarget(self) -> bytes:
        with open(self.target, "rb") as f:
            return f.read()

    def test_single_source(self) -> None:
        """A file of several chunks arrives whole, under its final name only at the end."""
        data = content(5 * CHUNK + 123)
        t = self.transfer(data, FakeSource("a", data))
        self.successResultOf(self.done)
        self.assertEqual(t.state, "complete")
        self.assertEqual(self.readTarget(), data)
        self.assertFalse(os.path.exists(P.partialPath(self.target)))
        self.assertFalse(os.path.exists(P.sidecarPath(self.target)))

    def test_empty_file(self) -> None:
        """A zero-length file has no chunks and still ends verified and in place."""
        self.transfer(b"", FakeSource("a", b""))
        self.successResultOf(self.done)
        self.assertEqual(self.readTarget(), b"")

    def test_two_sources_share_the_work(self) -> None:
        """With two sources, both serve chunks and the file is whole."""
        data = content(40 * CHUNK)
        a, b = FakeSource("a", data, hold=True), FakeSource("b", data, hold=True)
        t = self.transfer(data, a, b)
        while a.held or b.held:
            a.release()
            b.release()
        self.successResultOf(self.done)
        self.assertEqual(self.readTarget(), data)
        self.assertTrue(a.reads and b.reads)
        self.assertEqual(sorted(set(a.reads) | set(b.reads)), list(range(40)))
        self.assertEqual(t.describe()["done_bytes"], len(data))

    def test_bad_chunk_dropped_and_refetched(self) -> None:
        """A source sending a chunk that fails its hash is dropped; another source supplies it."""
        data = content(6 * CHUNK)
        bad = FakeSource("bad", data, corrupt={0, 1, 2, 3, 4, 5})
        good = FakeSource("good", data, hold=True)
        t = self.transfer(data, bad, good)
        while good.held:
            good.release()
        self.successResultOf(self.done)
        self.assertEqual(self.readTarget(), data)
        self.assertTrue(bad.closed)
        self.assertGreaterEqual(t.badChunks, 1)
        desc = {s["node"]: s for s in t.describe()["sources"]}
        self.assertIn("hash", desc["bad"]["dropped"])

    def test_only_source_bad_fails_and_keeps_partial(self) -> None:
        """With no other source, a bad source fails the download; no file appears under the final name."""
        data = content(3 * CHUNK)
        self.transfer(data, FakeSource("bad", data, corrupt={1}))
        f = self.failureResultOf(self.done, TransferFailed)
        self.assertEqual(f.value.code, "no-source")
        self.assertFalse(os.path.exists(self.target))
        self.assertTrue(os.path.exists(P.partialPath(self.target)))

    def test_stalled_source_dropped(self) -> None:
        """A source that stops answering is dropped after the stall timeout and its chunks go elsewhere."""
        data = content(8 * CHUNK)
        stuck = FakeSource("stuck", data, hold=True)
        t = self.transfer(data, stuck)
        self.assertNoResult(self.done)
        t.addSource(FakeSource("late", data))
        self.clock.advance(STALL_TIMEOUT + 10)
        self.successResultOf(self.done)
        self.assertEqual(self.readTarget(), data)
        self.assertTrue(stuck.closed)

    def test_end_game_duplicates_the_slow_tail(self) -> None:
        """When nothing is left to ask for, an idle source duplicates a chunk still outstanding elsewhere."""
        data = content(4 * CHUNK)
        slow = FakeSource("slow", data, hold=True)
        fast = FakeSource("fast", data)
        t = Transfer(
            self.clock, synchronous, hashlib.sha256(data).hexdigest(), len(data), self.target
        )
        t.addSource(slow)
        done = t.whenDone()
        Deferred.fromCoroutine(t.run())
        t.addSource(fast)
        self.successResultOf(done)
        self.assertEqual(self.readTarget(), data)
        self.assertTrue(set(fast.reads) & set(slow.reads))
        slow.release()  # late copies are ignored

    def test_resume_from_partial(self) -> None:
        """A download cut half-way resumes from the verified chunks on disk, not from zero."""
        data = content(10 * CHUNK)
        cutter = FakeSource("a", data, hold=True)
        t = self.transfer(data, cutter)
        # Let five chunks through, then lose the source (as if killed).
        for index, d in cutter.held[:5]:
            d.callback(data[index * CHUNK : (index + 1) * CHUNK])
        cutter.held = []
        t.cancel()
        self.failureResultOf(self.done, TransferFailed)
        self.assertTrue(os.path.exists(P.sidecarPath(self.target)))
        fresh = FakeSource("b", data)
        t2 = self.transfer(data, fresh)
        self.successResultOf(self.done)
        self.assertEqual(t2.resumedBytes, 5 * CHUNK)
        self.assertEqual(sorted(fresh.reads), list(range(5, 10)))
        self.assertEqual(self.readTarget(), data)

    def test_resume_reverifies_corrupted_partial(self) -> None:
        """A chunk damaged in the partial file while nothing ran is found by re-hashing and fetched again."""
        data = content(4 * CHUNK)
        cutter = FakeSource("a", data, hold=True)
        t = self.transfer(data, cutter)
        for index, d in cutter.held:
            d.callback(data[index * CHUNK : (index + 1) * CHUNK])
        self.successResultOf(self.done)
        os.rename(self.target, P.partialPath(self.target))
        P._writeSidecar(self.target, P.Layout(t.sha256, len(data), CHUNK, chunkList(data)))
        with open(P.partialPath(self.target), "r+b") as f:
            f.seek(2 * CHUNK + 7)
            f.write(b"X")
        src = FakeSource("b", data)
        t2 = self.transfer(data, src)
        self.successResultOf(self.done)
        self.assertEqual(src.reads, [2])
        self.assertEqual(t2.resumedBytes, 3 * CHUNK)
        self.assertEqual(self.readTarget(), data)

    def test_wrong_chunk_list_caught_by_whole_hash(self) -> None:
        """A source whose chunk list and chunks agree but are not the content is caught by the whole-file hash."""
        data = content(2 * CHUNK)
        other = content(2 * CHUNK, seed=2)
        liar = FakeSource("liar", other)
        t = Transfer(
            self.clock, synchronous, hashlib.sha256(data).hexdigest(), len(data), self.target
        )
        t.addSource(liar)
        done = t.whenDone()
        Deferred.fromCoroutine(t.run())
        f = self.failureResultOf(done, TransferFailed)
        self.assertEqual(f.value.code, "bad-content")
        self.assertFalse(os.path.exists(self.target))
        self.assertFalse(os.path.exists(P.partialPath(self.target)))

    def test_bandwidth_limit(self) -> None:
        """With a limit of one chunk per second, ten chunks take about ten seconds of the clock."""
        data = content(10 * CHUNK)
        self.transfer(data, FakeSource("a", data), limit=CHUNK)
        self.clock.advance(5)
        self.assertNoResult(self.done)
        for _ in range(20):
            self.clock.advance(1)
        self.successResultOf(self.done)
        self.assertEqual(self.readTarget(), data)

    def test_target_exists(self) -> None:
        """An existing file under the target name is never replaced."""
        data = content(100)
        with open(self.target, "wb") as f:
            f.write(b"mine")
        self.transfer(data, FakeSource("a", data))
        f = self.failureResultOf(self.done, TransferFailed)
        self.assertEqual(f.value.code, "target-exists")
        self.assertEqual(self.readTarget(), b"mine")

    def test_disk_full(self) -> None:
        """A write that fails with ENOSPC ends the download with a clear error and no final file."""
        data = content(3 * CHUNK)
        import errno

        real = os.pwrite

        def full(fd: int, buf: Any, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(P.os, "pwrite", full)
        self.transfer(data, FakeSource("a", data))
        f = self.failureResultOf(self.done, TransferFailed)
        self.assertEqual(f.value.code, "disk-full")
        self.assertIn("no space left", f.value.message)
        self.assertFalse(os.path.exists(self.target))
        del real

    def test_read_only_directory(self) -> None:
        """A target in a directory that cannot be written gives a clear error."""
        if os.geteuid() == 0:
            # root writes anyway: simulate the file system's answer.
            import errno

            def ro(*a: Any, **k: Any) -> int:
                raise OSError(errno.EROFS, "Read-only file system")

            self.patch(P.os, "open", ro)
        else:
            os.chmod(self.dir, 0o500)
            self.addCleanup(os.chmod, self.dir, 0o700)
        data = content(10)
        self.transfer(data, FakeSource("a", data))
        f = self.failureResultOf(self.done, TransferFailed)
        self.assertIn(f.value.code, ("read-only", "permission-denied"))
        self.assertFalse(os.path.exists(self.target))


# -- whole nodes on an in-memory network ---------------------------------------------


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class NetworkDownloadTests(SynchronousTestCase):
    """
    A - B - C and B - D: C and D share the same file; A downloads it.
    """

    def setUp(self) -> None:
        from .memnet import FilesNet

        self.fn = FilesNet(self)
        self.b = self.fn.addNode("LAB.B")
        self.a = self.fn.addNode("LAB.A")
        self.c = self.fn.addNode("LAB.C")
        self.d = self.fn.addNode("LAB.D")
        self.fn.link(self.a, self.b)
        self.fn.link(self.c, self.b)
        self.fn.link(self.d, self.b)
        self.data = content(6 * CHUNK + 999, seed=7)
        self.sha = hashlib.sha256(self.data).hexdigest()
        for node in (self.c, self.d):
            shared = self.fn.directory(node.name)
            _write(os.path.join(shared, "video", "talk.mkv"), self.data)
            self.serve(node).shares.add("talks", shared)
        for node in (self.c, self.d):
            self.fn.indexed(node)
        self.out = os.path.join(self.fn.root, "downloads")
        os.makedirs(self.out)

    def serve(self, node: Any) -> Any:
        serve = self.fn.plugin(node).serve
        assert serve is not None
        return serve

    def transfers(self, node: Any) -> Any:
        t = self.fn.plugin(node).transfers
        assert t is not None
        return t

    def finish(self, transfer: Transfer) -> None:
        self.fn.settle(lambda: transfer.ended is not None)

    def test_multi_source_by_hash(self) -> None:
        """A download by hash finds both holders (two hops away) and takes chunks from both."""
        target = os.path.join(self.out, "talk.mkv")
        t = self.fn.wait(Deferred.fromCoroutine(self.transfers(self.a).getByHash(self.sha, target)))
        self.finish(t)
        self.assertEqual(t.state, "complete", t.describe())
        with open(target, "rb") as f:
            self.assertEqual(f.read(), self.data)
        used = {s["node"] for s in t.describe()["sources"] if s["bytes"]}
        self.assertEqual(used, {self.c.nodeID, self.d.nodeID})
        # The page section and the metrics show it.
        plugin = self.fn.plugin(self.a)
        section = plugin.pageSection()
        assert section is not None
        self.assertEqual(section.rows[0][:3], ["talk.mkv", "complete", "100.0 %"])
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        plugin.registerMetrics(registry)
        text = generate_latest(registry).decode()
        self.assertIn('appn_files_transfers_total{outcome="complete"} 1.0', text)
        received = [
            line
            for line in text.splitlines()
            if line.startswith("appn_files_received_bytes_total ")
        ]
        self.assertEqual(float(received[0].split()[1]), len(self.data))

    def test_named_after_the_hit(self) -> None:
        """Given a directory, a download by hash is named after the file the hit names."""
        t = self.fn.wait(
            Deferred.fromCoroutine(
                self.transfers(self.a).getByHash(
                    self.sha, lambda name: os.path.join(self.out, name)
                )
            )
        )
        self.finish(t)
        self.assertEqual(t.target, os.path.join(self.out, "talk.mkv"))

    def test_corrupting_source_detected(self) -> None:
        """A source that sends a chunk not matching its hash is dropped; the other supplies it; the file is right."""
        index = self.serve(self.d).index
        real = index.readChunk

        def corrupt(entry: Any, i: int) -> Deferred[bytes]:
            return real(entry, i).addCallback(lambda data: bytes([data[0] ^ 0xFF]) + data[1:])

        index.readChunk = corrupt
        target = os.path.join(self.out, "talk.mkv")
        t = self.fn.wait(Deferred.fromCoroutine(self.transfers(self.a).getByHash(self.sha, target)))
        self.finish(t)
        self.assertEqual(t.state, "complete", t.describe())
        with open(target, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha)
        self.assertGreaterEqual(t.badChunks, 1)
        bad = [s for s in t.describe()["sources"] if s["node"] == self.d.nodeID][0]
        self.assertIn("hash", bad["dropped"])

    def test_by_path_routed(self) -> None:
        """A download by NODE:SHARE/PATH from a node two hops away is routed through B."""
        self.assertNotIn(self.c.nodeID, self.a.neighbours())
        target = os.path.join(self.out, "x.mkv")
        t = self.fn.wait(
            Deferred.fromCoroutine(
                self.transfers(self.a).getByPath(self.c.nodeID, "talks", "video/talk.mkv", target)
            )
        )
        self.finish(t)
        self.assertEqual(t.state, "complete", t.describe())
        with open(target, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_resume_after_cancel(self) -> None:
        """A download cancelled half-way resumes from its verified chunks on the next get."""
        target = os.path.join(self.out, "talk.mkv")
        t = self.fn.wait(
            Deferred.fromCoroutine(
                self.transfers(self.a).getByPath(
                    self.c.nodeID, "talks", "video/talk.mkv", target, limit=CHUNK
                )
            )
        )
        self.fn.settle(lambda: t.doneBytes >= 3 * CHUNK)
        t.cancel()
        self.finish(t)
        self.assertEqual(t.state, "cancelled")
        self.assertFalse(os.path.exists(target))
        t2 = self.fn.wait(
            Deferred.fromCoroutine(
                self.transfers(self.a).getByPath(self.c.nodeID, "talks", "video/talk.mkv", target)
            )
        )
        self.finish(t2)
        self.assertEqual(t2.state, "complete")
        self.assertGreaterEqual(t2.resumedBytes, 3 * CHUNK)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), self.data)

    def test_protected_share(self) -> None:
        """A protected share refuses a download without its password and serves it with the password."""
        from appnpy_files.shares import hashPassword
        from appnpy_files.transfers import GetError

        secret = self.fn.directory("secret")
        _write(os.path.join(secret, "plans.txt"), b"the plans" * 500)
        self.serve(self.c).shares.add("vault", secret, hashPassword("s3cret", n=2**4))
        self.fn.settle()
        self.fn.indexed(self.c)
        target = os.path.join(self.out, "plans.txt")
        get = self.transfers(self.a).getByPath
        with self.assertRaises(GetError) as e:
            self.fn.wait(Deferred.fromCoroutine(get(self.c.nodeID, "vault", "plans.txt", target)))
        self.assertEqual(e.exception.code, "password-required")
        with self.assertRaises(GetError) as e:
            self.fn.wait(
                Deferred.fromCoroutine(
                    get(self.c.nodeID, "vault", "plans.txt", target, password="zebra-77")
                )
            )
        self.assertEqual(e.exception.code, "bad-password")
        self.assertNotIn("zebra-77", e.exception.message)
        t = self.fn.wait(
            Deferred.fromCoroutine(
                get(self.c.nodeID, "vault", "plans.txt", target, password="s3cret")
            )
        )
        self.finish(t)
        self.assertEqual(t.state, "complete", t.describe())
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"the plans" * 500)

    def test_not_found(self) -> None:
        """A hash no node holds is a clear not-found."""
        from appnpy_files.transfers import GetError

        with self.assertRaises(GetError) as e:
            self.fn.wait(
                Deferred.fromCoroutine(
                    self.transfers(self.a).getByHash("ab" * 32, os.path.join(self.out, "nothing"))
                )
            )
        self.assertEqual(e.exception.code, "not-found")

    def test_source_link_lost(self) -> None:
        """When one source's link goes down mid-download, the other finishes the file."""
        target = os.path.join(self.out, "talk.mkv")
        t = self.fn.wait(
            Deferred.fromCoroutine(
                self.transfers(self.a).getByHash(self.sha, target, limit=2 * CHUNK)
            )
        )
        self.fn.settle(
            lambda: len([p for p in t.peers if p.dropped is None]) == 2 and t.doneBytes >= CHUNK
        )
        for link in self.fn.net.links:
            if self.d in (link.dialer, link.listener):
                link.cut()
        self.finish(t)
        self.assertEqual(t.state, "complete", t.describe())
        with open(target, "rb") as f:
            self.assertEqual(f.read(), self.data)


class EndNodeTests(SynchronousTestCase):
    """
    An end node (a leaf, as behind NAT) shares through its network-node
    server: A - B - E, with E an end node attached to B.
    """

    def test_end_node_shares_through_its_server(self) -> None:
        """A finds E's file by a word and downloads it by hash, routed through B."""
        from .memnet import FilesNet

        fn = FilesNet(self)
        b = fn.addNode("LAB.B")
        a = fn.addNode("LAB.A")
        e = fn.addNode("LAB.E", role="end")
        fn.link(a, b)
        fn.link(e, b)
        data = content(3 * CHUNK + 5, seed=3)
        shared = fn.directory("leaf")
        _write(os.path.join(shared, "notes", "leaf-report.pdf"), data)
        serve = fn.plugin(e).serve
        assert serve is not None
        serve.shares.add("docs", shared)
        fn.settle()
        fn.indexed(e)
        searcher = fn.plugin(a).searcher
        transfers = fn.plugin(a).transfers
        assert searcher is not None and transfers is not None
        found: list[Any] = []
        fn.wait(searcher.search(["leaf-report"], found.extend))
        self.assertEqual([(h.node, h.path) for h in found], [(e.nodeID, "notes/leaf-report.pdf")])
        out = os.path.join(fn.root, "got.pdf")
        t = fn.wait(Deferred.fromCoroutine(transfers.getByHash(found[0].sha256, out)))
        fn.settle(lambda: t.ended is not None)
        self.assertEqual(t.state, "complete", t.describe())
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)


class RealFileSystemTests(SynchronousTestCase):
    """
    A full and a read-only file system for real (small tmpfs mounts; needs
    root, skipped otherwise).
    """

    def mount(self, options: str) -> str:
        import subprocess

        if os.geteuid() != 0:
            raise __import__("unittest").SkipTest("mounting a tmpfs needs root")
        where = tempfile.mkdtemp()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], capture_output=True
        )
        if result.returncode != 0:
            os.rmdir(where)
            raise __import__("unittest").SkipTest(f"cannot mount a tmpfs: {result.stderr!r}")

        def unmount() -> None:
            subprocess.run(["umount", where], capture_output=True)
            os.rmdir(where)

        self.addCleanup(unmount)
        return where

    def download(self, target: str, data: bytes) -> TransferFailed:
        t = Transfer(Clock(), synchronous, hashlib.sha256(data).hexdigest(), len(data), target)
        t.addSource(FakeSource("a", data))
        done = t.whenDone()
        Deferred.fromCoroutine(t.run())
        return self.failureResultOf(done, TransferFailed).value

    def test_full_disk(self) -> None:
        """A file bigger than the free space fails at once with disk-full; no file under the final name."""
        where = self.mount("size=1m")
        target = os.path.join(where, "big.bin")
        error = self.download(target, content(3 * CHUNK))
        self.assertEqual(error.code, "disk-full")
        self.assertIn("no space left", error.message)
        self.assertFalse(os.path.exists(target))
        # The partial file that could not be reserved is not left to hold the space.
        self.assertEqual(os.listdir(where), [])

    def test_read_only(self) -> None:
        """A read-only file system fails with read-only; nothing is created."""
        where = self.mount("ro,size=1m")
        target = os.path.join(where, "x.bin")
        error = self.download(target, content(10))
        self.assertEqual(error.code, "read-only")
        self.assertEqual(os.listdir(where), [])
