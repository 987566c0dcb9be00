"""
A file download between two node processes vs HTTPS with curl, and vs raw TLS.

Three things, alternated run by run (A B C A B C...) so the machine's drift
hits them alike:

  A. appn: a receiving node downloads the file from a sharing node (its
     neighbour on loopback) with the files plugin: chunks verified, written
     to disk, the whole file verified, fsynced and linked into place.  Timed
     by the receiving node, from the request to the file in place (durable),
     and also to the moment every chunk was verified and written, before the
     fsync (what curl's figure compares with: curl does not fsync).
  B. https: the same file from a Twisted web server
     (C{twisted.web.static.File} over TLS 1.3, self-signed P-256) fetched by
     C{curl -o} to disk: what a user would otherwise do (no verification).
  C. tls: raw Twisted TLS 1.3 memory-to-memory bulk of the same size
     between two processes (benchmarks/bulk.py's baseline): the ceiling.

The source file is warm in the page cache (every side reads it many times).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _files as F  # noqa: E402


async def main(reactor: Any, args: argparse.Namespace) -> None:
    size = args.size or C.pick(args, 1024 * F.MIB, 256 * F.MIB, 8 * F.MIB)
    runs = args.runs or C.pick(args, 5, 3, 1)
    root = F.tempRoot()
    nodes: list[F.Node] = []
    https = None
    peer = None
    try:
        shared = os.path.join(root, "shared")
        F.makeFile(os.path.join(shared, "big.bin"), size)
        source = await F.Node(reactor, root, "source").start()
        nodes.append(source)
        receiver = await F.Node(reactor, root, "receiver").start([source.address])
        nodes.append(receiver)
        await receiver.linkedTo(source)
        await source.share("bench", shared, 1)
        https = F.HTTPSServer(reactor, shared)
        port = await https.start()
        peer, ready = await C.spawnPeer(reactor, "--mode", "listen")
        ctx = C.tlsContext()
        out = os.path.join(root, "out")
        os.makedirs(out)
        appn: list[float] = []
        durable: list[float] = []
        curl: list[float] = []
        tls: list[float] = []
        cpuSource: list[float] = []
        cpuReceiver: list[float] = []
        for i in range(runs):
            target = os.path.join(out, "appn.bin")
            F.remove(target)
            cpu0 = (source.cpuSeconds(), receiver.cpuSeconds())
            t = await receiver.download(
                {"node": source.nodeID, "share": "bench", "path": "big.bin", "target": target}
            )
            appn.append(size / (t["verified"] - t["started"]) / 1e9)
            durable.append(size / (t["ended"] - t["started"]) / 1e9)
            gib = size / (1024 * F.MIB)
            cpuSource.append((source.cpuSeconds() - cpu0[0]) / gib)
            cpuReceiver.append((receiver.cpuSeconds() - cpu0[1]) / gib)
            F.remove(target)

            target = os.path.join(out, "curl.bin")
            F.remove(target)
            seconds = await F.curl(reactor, f"https://127.0.0.1:{port}/big.bin", target)
            if os.path.getsize(target) != size:
                raise RuntimeError("curl did not fetch the whole file")
            curl.append(size / seconds / 1e9)
            F.remove(target)

            seconds = await C.tlsBulkRun(reactor, ctx, ready["tls"], size)
            tls.append(size / seconds / 1e9)
            C.log(
                f"run {i + 1}/{runs}: appn {appn[-1]:.3f} GB/s (with fsync {durable[-1]:.3f}; "
                f"CPU s/GiB source {cpuSource[-1]:.2f} receiver {cpuReceiver[-1]:.2f}), "
                f"https+curl {curl[-1]:.3f} GB/s, "
                f"raw TLS {tls[-1]:.3f} GB/s"
            )
    finally:
        for n in nodes:
            await n.stop()
        if https is not None:
            await https.stop()
        if peer is not None:
            await peer.stop()
        F.remove(root)
    a, b, c = C.median(appn), C.median(curl), C.median(tls)
    d = C.median(durable)
    C.log(f"\n{'':24}{'median GB/s':>12}")
    C.log(f"{'appn files get':24}{a:12.3f}")
    C.log(f"{'  the same, fsynced':24}{d:12.3f}   appn durable/curl {d / b:.2f}")
    C.log(f"{'https + curl':24}{b:12.3f}   appn/curl {a / b:.2f} (goal >= 1.0)")
    C.log(f"{'raw TLS mem-to-mem':24}{c:12.3f}   appn/tls  {a / c:.2f}")
    cs, cr = C.median(cpuSource), C.median(cpuReceiver)
    C.log(f"CPU seconds per GiB (median): source node {cs:.2f}, receiver node {cr:.2f}")
    C.emit(
        {
            "benchmark": "files_download",
            "bytes": size,
            "runs": runs,
            "appn_GBps": round(a, 4),
            "appn_durable_GBps": round(d, 4),
            "https_curl_GBps": round(b, 4),
            "tls_GBps": round(c, 4),
            "cpu_s_per_GiB_source": round(cs, 3),
            "cpu_s_per_GiB_receiver": round(cr, 3),
            "ratio": round(a / b, 3),
            "ratio_tls": round(a / c, 3),
            "goal": 1.0,
            "appn_runs": [round(x, 4) for x in appn],
            "appn_durable_runs": [round(x, 4) for x in durable],
            "https_curl_runs": [round(x, 4) for x in curl],
            "tls_runs": [round(x, 4) for x in tls],
        }
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--quick", action="store_true", help="256 MiB, 3 runs")
    p.add_argument("--smoke", action="store_true", help="tiny, one run (for tests)")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--size", type=F.parseSize, default=None, help="file size, e.g. 64M, 1G")
    p.add_argument("--profile", default=None)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    C.runMain(lambda reactor: main(reactor, arguments), arguments)
