"""
A download from two sources that are each rate-limited, vs from one of them.

Two node processes share the same file, each with the same upload limit
(C{[plugin.files] upload-limit}); a third, linked to both, downloads it:

  A. one source: C{NODE:SHARE/PATH} from the first source only
     (C{single_source}: the others holding the content are not used);
  B. two sources: by content hash, which finds both and pulls from both.

Runs alternate A B A B...; each is timed by the receiving node, from the
request to the verified file in place.  The goal: two sources at least
1.6x as fast as one.
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
    size = args.size or C.pick(args, 256 * F.MIB, 96 * F.MIB, 6 * F.MIB)
    limit = args.limit or C.pick(args, 32 * F.MIB, 32 * F.MIB, 8 * F.MIB)
    runs = args.runs or C.pick(args, 5, 3, 1)
    root = F.tempRoot()
    nodes: list[F.Node] = []
    try:
        config = os.path.join(root, "limited.toml")
        with open(config, "w") as f:
            f.write(f"[plugin.files]\nupload-limit = {limit}\n")
        sources = []
        for label in ("s1", "s2"):
            shared = os.path.join(root, f"{label}-shared")
            F.makeFile(os.path.join(shared, "big.bin"), size)
            node = await F.Node(reactor, root, label, config=config).start()
            nodes.append(node)
            sources.append((node, shared))
        # The same content in both (makeFile draws new random bytes).
        with (
            open(os.path.join(sources[0][1], "big.bin"), "rb") as src,
            open(os.path.join(sources[1][1], "big.bin"), "wb") as dst,
        ):
            while block := src.read(16 * F.MIB):
                dst.write(block)
        receiver = await F.Node(reactor, root, "receiver").start([n.address for n, _ in sources])
        nodes.append(receiver)
        for node, shared in sources:
            await receiver.linkedTo(node)
            await node.share("bench", shared, 1)
        listing = await sources[0][0].get("plugins/files/shares")
        del listing
        out = os.path.join(root, "out")
        os.makedirs(out)
        first = sources[0][0]
        one: list[float] = []
        two: list[float] = []
        sha = None
        for i in range(runs):
            target = os.path.join(out, "one.bin")
            t = await receiver.download(
                {
                    "node": first.nodeID,
                    "share": "bench",
                    "path": "big.bin",
                    "target": target,
                    "single_source": True,
                }
            )
            sha = t["sha256"]
            one.append(size / (t["ended"] - t["started"]) / 1e6)
            F.remove(target)
            target = os.path.join(out, "two.bin")
            t = await receiver.download({"sha256": sha, "target": target})
            used = sum(1 for s in t["sources"] if s["bytes"])
            two.append(size / (t["ended"] - t["started"]) / 1e6)
            F.remove(target)
            C.log(
                f"run {i + 1}/{runs}: one source {one[-1]:.1f} MB/s, "
                f"two sources {two[-1]:.1f} MB/s ({used} used)"
            )
    finally:
        for n in nodes:
            await n.stop()
        F.remove(root)
    a, b = C.median(one), C.median(two)
    C.log(f"\nupload limit per source: {limit / 1e6:.1f} MB/s")
    C.log(f"{'one source':16}{a:10.1f} MB/s")
    C.log(f"{'two sources':16}{b:10.1f} MB/s   two/one {b / a:.2f} (goal >= 1.6)")
    C.emit(
        {
            "benchmark": "files_multisource",
            "bytes": size,
            "runs": runs,
            "limit_Bps": limit,
            "one_MBps": round(a, 2),
            "two_MBps": round(b, 2),
            "ratio": round(b / a, 3),
            "goal": 1.6,
            "one_runs": [round(x, 2) for x in one],
            "two_runs": [round(x, 2) for x in two],
        }
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--size", type=F.parseSize, default=None, help="file size, e.g. 64M")
    p.add_argument(
        "--limit", type=F.parseSize, default=None, help="upload limit per source, e.g. 32M"
    )
    p.add_argument("--profile", default=None)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    C.runMain(lambda reactor: main(reactor, arguments), arguments)
