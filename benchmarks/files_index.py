"""
Indexing rate of the files plugin's index vs plain hashlib.sha256 reading the same files.

The baseline (A) is what a user would write: open each file, read it in 1 MiB
pieces, feed hashlib.sha256, one thread.  The index (B) does more: it walks
the share, opens each file safely, computes the whole-file SHA-256 and the
SHA-256 of every 1 MiB chunk, and writes both to its sqlite cache; a fresh
cache each run, so every byte is hashed.  Both read the same files, which
sit in the page cache after they are written (the figure is about CPU, not
the disk).  Runs alternate A B A B; the table shows medians and the ratio
B/A (goal 0.8).

With --many N, it also indexes N small files in one share and reports
files per second (the 100,000-file case).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins", "files"))

MIB = 1024 * 1024


def makeFiles(root: str, totalMiB: int, files: int) -> int:
    """
    C{files} files of about C{totalMiB / files} MiB each, distinct content.
    """
    block = bytearray(os.urandom(MIB))
    per = max(1, totalMiB // files)
    total = 0
    for i in range(files):
        with open(os.path.join(root, f"file{i:03}.bin"), "wb") as f:
            for j in range(per):
                block[:16] = (i * 1_000_003 + j).to_bytes(16, "big")
                f.write(block)
                total += MIB
    return total


def plainHashlib(root: str) -> int:
    total = 0
    for name in sorted(os.listdir(root)):
        h = hashlib.sha256()
        with open(os.path.join(root, name), "rb") as f:
            while True:
                data = f.read(MIB)
                if not data:
                    break
                h.update(data)
                total += len(data)
        h.hexdigest()
    return total


async def indexOnce(reactor: Any, root: str, hashThreads: int) -> tuple[float, int]:
    from appnpy_files.index import Index
    from appnpy_files.shares import ShareSet

    data = tempfile.mkdtemp(prefix="files-index-bench-")
    try:
        shares = ShareSet()
        shares.loadConfig({"bench": root})
        index = Index(reactor, shares, data, hashThreads=hashThreads, rescanInterval=0)
        t0 = time.perf_counter()
        await index.start()
        await index.whenIndexed()
        elapsed = time.perf_counter() - t0
        progress = index.progress
        await index.stop()
        return elapsed, progress.files
    finally:
        shutil.rmtree(data, ignore_errors=True)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def rssKiB() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    sizeMiB = args.size if args.size else (8 if args.smoke else 256 if args.quick else 2048)
    runs = args.runs or (1 if args.smoke else 5)
    files = args.files or (2 if args.smoke else 8)
    work = tempfile.mkdtemp(prefix="files-index-bench-data-")
    result: dict[str, Any] = {"benchmark": "files_index"}
    try:
        root = os.path.join(work, "share")
        os.makedirs(root)
        total = makeFiles(root, sizeMiB, files)
        plainHashlib(root)  # warm the page cache for both sides alike
        a: list[float] = []
        b: list[float] = []
        # CPU seconds per GiB too: the wall-clock ratio depends on a free
        # second core (the index hashes twice, in parallel); CPU cost does not.
        cpuA: list[float] = []
        cpuB: list[float] = []
        for i in range(runs):
            t0, c0 = time.perf_counter(), cpu()
            plainHashlib(root)
            a.append(total / (time.perf_counter() - t0) / MIB)
            cpuA.append((cpu() - c0) / (total / 2**30))
            c0 = cpu()
            elapsed, indexed = await indexOnce(reactor, root, args.hash_threads)
            cpuB.append((cpu() - c0) / (total / 2**30))
            assert indexed == files, (indexed, files)
            b.append(total / elapsed / MIB)
            print(
                f"run {i + 1}/{runs}: hashlib {a[-1]:.0f} MiB/s ({cpuA[-1]:.2f} CPU s/GiB), "
                f"index {b[-1]:.0f} MiB/s ({cpuB[-1]:.2f} CPU s/GiB)",
                file=sys.stderr,
                flush=True,
            )
        ma, mb = sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
        load = os.getloadavg()[0]
        print(f"\n{'':24}{'median MiB/s':>14}")
        print(f"{'hashlib.sha256 (A)':24}{ma:>14.0f}")
        print(f"{'files index (B)':24}{mb:>14.0f}")
        print(f"{'ratio B/A':24}{mb / ma:>14.3f}   (goal >= 0.8)")
        print(
            f"CPU s/GiB: hashlib {statistics.median(cpuA):.2f}, index {statistics.median(cpuB):.2f}; "
            f"{total // MIB} MiB in {files} files, {runs} runs each, hash-threads {args.hash_threads}, "
            f"{os.cpu_count()} CPUs, load average {load:.1f} at the end\n"
        )
        result.update(
            {
                "bytes": total,
                "files": files,
                "runs": runs,
                "hashlib_MiBps": round(ma, 1),
                "index_MiBps": round(mb, 1),
                "ratio": round(mb / ma, 3),
                "goal": 0.8,
                "hashlib_cpu_s_per_GiB": round(statistics.median(cpuA), 3),
                "index_cpu_s_per_GiB": round(statistics.median(cpuB), 3),
                "load_average": round(load, 2),
                "hashlib_runs": [round(x, 1) for x in a],
                "index_runs": [round(x, 1) for x in b],
            }
        )
        shutil.rmtree(root)
        many = args.many if args.many is not None else (200 if args.smoke else 0)
        if many:
            os.makedirs(root)
            for i in range(many):
                sub = os.path.join(root, f"d{i // 1000:03}")
                if i % 1000 == 0:
                    os.makedirs(sub)
                with open(os.path.join(sub, f"f{i:06}.txt"), "wb") as f:
                    f.write(b"%d\n" % i)
            rss0 = rssKiB()
            elapsed, indexed = await indexOnce(reactor, root, args.hash_threads)
            assert indexed == many, (indexed, many)
            print(f"{many} small files indexed in {elapsed:.1f} s: {many / elapsed:.0f} files/s (RSS +{(rssKiB() - rss0) // 1024} MiB after the index stopped)")
            result.update({"many_files": many, "many_files_per_s": round(many / elapsed, 1)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=None, help="MiB of files (default 2048; --quick 256)")
    parser.add_argument("--files", type=int, default=None, help="how many files share the size (default 8)")
    parser.add_argument("--runs", type=int, default=None, help="runs per side (default 5)")
    parser.add_argument("--hash-threads", type=int, default=2, help="the index's hash-threads (default 2)")
    parser.add_argument("--many", type=int, default=None, help="also index this many small files")
    parser.add_argument("--quick", action="store_true", help="256 MiB")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run (for tests)")
    args = parser.parse_args()

    import json

    from twisted.internet.defer import Deferred
    from twisted.internet.task import react
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    def start(r: Any) -> Deferred[None]:
        # The one JSON line a benchmark ends with (react exits the process).
        return Deferred.fromCoroutine(main(r, args)).addCallback(
            lambda result: print(json.dumps(result), flush=True)
        )

    react(start)
