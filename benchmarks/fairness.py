"""
Fairness of 100 sessions pushing at once over one link.

This process opens 100 sink sessions on one link to the peer, then starts
100 push producers together, each sending the same amount in 64 KiB writes.
Each session's throughput is its amount divided by the time until the peer
confirmed receipt of all of it; a starved session finishes late and shows up
as the minimum.  Reported: min / median / max per-session throughput and
min/max (goal >= 0.5), and the aggregate vs one raw TLS 1.3 connection
carrying the same total (same context, writes and producer), runs alternating.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import gatherResults  # noqa: E402

SESSIONS = 100


async def appnRun(reactor: Any, node: Any, peerID: str, each: int) -> tuple[list[float], float]:
    protos = await gatherResults(
        [node.openSession(peerID, "sink", C.SessionClient, {"n": each}) for _ in range(SESSIONS)]
    )
    finished: list[float] = []

    def done(_: Any) -> None:
        finished.append(reactor.seconds())

    answers = [p.answered.addCallback(done) for p in protos]
    start = reactor.seconds()
    for p in protos:
        C.Pusher(p.transport, each).start()
    await gatherResults(answers)
    rates = [each / (t - start) / 1e6 for t in finished]
    aggregate = each * SESSIONS / (max(finished) - start) / 1e9
    for p in protos:
        p.transport.loseConnection()
    await gatherResults([p.lost for p in protos])
    return rates, aggregate


async def main(reactor: Any, args: Any) -> None:
    each = C.pick(args, 8 * C.MIB, 2 * C.MIB, 256 * 1024)
    runs = args.runs or C.pick(args, 5, 3, 1)
    peer, ready = await C.spawnPeer(reactor, "--mode", "listen", *args.peerArgs)
    try:
        node = C.makeNode(reactor)
        cp = await node.connect(ready["appn"])
        ctx = C.tlsContext()
        mins, meds, maxs, fair, agg, tls = [], [], [], [], [], []
        for i in range(runs):
            rates, aggregate = await appnRun(reactor, node, cp.peerNodeID, each)
            mins.append(min(rates))
            meds.append(C.median(rates))
            maxs.append(max(rates))
            fair.append(min(rates) / max(rates))
            agg.append(aggregate)
            total = each * SESSIONS
            tls.append(total / await C.tlsBulkRun(reactor, ctx, ready["tls"], total) / 1e9)
            C.log(
                f"run {i + 1}/{runs}: per-session MB/s min {mins[-1]:.1f} "
                f"median {meds[-1]:.1f} max {maxs[-1]:.1f}, min/max {fair[-1]:.3f}, "
                f"aggregate {agg[-1]:.3f} GB/s, tls {tls[-1]:.3f} GB/s"
            )
        await cp.close()
    finally:
        await peer.stop()
    C.emit(
        {
            "benchmark": "fairness",
            "sessions": SESSIONS,
            "bytes_each": each,
            "runs": runs,
            "min_MBps": round(C.median(mins), 2),
            "median_MBps": round(C.median(meds), 2),
            "max_MBps": round(C.median(maxs), 2),
            "min_max_ratio": round(C.median(fair), 3),
            "goal": 0.5,
            "aggregate_GBps": round(C.median(agg), 4),
            "tls_GBps": round(C.median(tls), 4),
            "aggregate_ratio_to_tls": round(C.median(agg) / C.median(tls), 3),
        }
    )


if __name__ == "__main__":
    args = C.parseArgs(__doc__.splitlines()[1])
    args.peerArgs = ["--profile", args.profile + ".peer"] if args.profile else []
    C.runMain(lambda reactor: main(reactor, args), args)
