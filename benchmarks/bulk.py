"""
Bulk transfer over one APPN session vs one raw Twisted TLS 1.3 connection.

This process sends, the peer process receives and answers C{!} once it has
everything.  Both sides: the same mutual TLS 1.3 context (Ed25519 node
certificates through LinkContextFactory), the same 64 KiB writes from the same
push producer, the same sink.  The clock runs from the first write (session
accepted / TLS handshake done) to the receiver's answer.  Runs alternate
APPN, TLS, APPN, TLS... over fresh sessions / connections; the APPN link is
set up once.

With C{--path-switch} both nodes run their network services and a third kind
alternates with the two: an adjacent session that can switch paths
(docs/protocol.md 15.9: the plugin's bytes numbered and kept until
acknowledged), so its cost on the direct path shows beside the ordinary
session's in the same run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


async def appnRun(
    reactor: Any, node: Any, peerID: str, total: int, pathSwitch: bool | None = None
) -> float:
    if pathSwitch is not None:
        # Whether the adjacent BIND asks for path switch (the origin's setting).
        node.routedSessions.pathSwitch = pathSwitch
    proto = await node.openSession(peerID, "sink", C.SessionClient, {"n": total})
    if pathSwitch is not None:
        kind = type(proto.transport).__name__
        assert (kind == "SwitchableSession") == pathSwitch, kind
    return await C.timedPush(reactor, proto, total)


async def main(reactor: Any, args: Any) -> None:
    total = C.pick(args, 1024 * C.MIB, 256 * C.MIB, 8 * C.MIB)
    runs = args.runs or C.pick(args, 5, 3, 1)
    switch = args.path_switch
    services = ["--services"] if switch else []
    peer, ready = await C.spawnPeer(reactor, "--mode", "listen", *services, *args.peerArgs)
    try:
        node = C.makeNode(reactor, services=switch)
        cp = await node.connect(ready["appn"])
        ctx = C.tlsContext()
        appn: list[float] = []
        tls: list[float] = []
        switched: list[float] = []
        # CPU seconds per GB: [sender, receiver], per run.
        cpu: dict[str, list[list[float]]] = {"appn": [], "tls": [], "switch": []}
        pid = ready["pid"]
        plain = False if switch else None
        kinds = [
            ("appn", appn, lambda: appnRun(reactor, node, cp.peerNodeID, total, plain)),
            ("tls", tls, lambda: C.tlsBulkRun(reactor, ctx, ready["tls"], total)),
        ]
        if switch:
            kinds.append(
                ("switch", switched, lambda: appnRun(reactor, node, cp.peerNodeID, total, True))
            )
        for i in range(runs):
            for name, out, run in kinds:
                s0, r0 = C.cpuSeconds(), C.cpuSeconds(pid)
                t = await run()
                s1, r1 = C.cpuSeconds(), C.cpuSeconds(pid)
                out.append(total / t / 1e9)
                cpu[name].append([(s1 - s0) / total * 1e9, (r1 - r0) / total * 1e9])
            C.log(
                f"run {i + 1}/{runs}: appn {appn[-1]:.3f} GB/s, tls {tls[-1]:.3f} GB/s; "
                f"CPU s/GB sender/receiver appn {cpu['appn'][-1][0]:.2f}/{cpu['appn'][-1][1]:.2f}"
                f" tls {cpu['tls'][-1][0]:.2f}/{cpu['tls'][-1][1]:.2f}"
                + (
                    f"; switchable {switched[-1]:.3f} GB/s, CPU s/GB "
                    f"{cpu['switch'][-1][0]:.2f}/{cpu['switch'][-1][1]:.2f}"
                    if switch
                    else ""
                )
            )
        await cp.close()
    finally:
        await peer.stop()
    a, b = C.median(appn), C.median(tls)
    extra: dict[str, Any] = {}
    if switch:
        w = C.median(switched)
        extra = {
            "switch_GBps": round(w, 4),
            "switch_to_appn": round(w / a, 3),
            "cpu_s_per_GB_sender_switch": round(C.median([c[0] for c in cpu["switch"]]), 3),
            "cpu_s_per_GB_receiver_switch": round(C.median([c[1] for c in cpu["switch"]]), 3),
            "switch_runs": [round(x, 4) for x in switched],
        }
    C.emit(
        {
            "benchmark": "bulk",
            "bytes": total,
            "runs": runs,
            "appn_GBps": round(a, 4),
            "tls_GBps": round(b, 4),
            "ratio": round(a / b, 3),
            "goal": 0.85,
            "cpu_s_per_GB_sender_appn": round(C.median([c[0] for c in cpu["appn"]]), 3),
            "cpu_s_per_GB_receiver_appn": round(C.median([c[1] for c in cpu["appn"]]), 3),
            "cpu_s_per_GB_sender_tls": round(C.median([c[0] for c in cpu["tls"]]), 3),
            "cpu_s_per_GB_receiver_tls": round(C.median([c[1] for c in cpu["tls"]]), 3),
            "appn_runs": [round(x, 4) for x in appn],
            "tls_runs": [round(x, 4) for x in tls],
            **extra,
        }
    )


if __name__ == "__main__":
    args = C.parseArgs(
        __doc__.splitlines()[1],
        [
            (
                ("--path-switch",),
                {
                    "action": "store_true",
                    "help": "also time adjacent sessions that can switch paths",
                },
            )
        ],
    )
    args.peerArgs = ["--profile", args.profile + ".peer"] if args.profile else []
    C.runMain(lambda reactor: main(reactor, args), args)
