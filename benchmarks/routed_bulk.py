"""
Bulk transfer through intermediate nodes vs a direct session, real processes.

This process is node A; three child processes run nodes B, C and D, each a
network node with the relay and routed-session ends installed, listening on
127.0.0.1.  Links: A-B, B-C, C-D, B-D and A-D.  D runs the sink plugin.  Each
round sends the same bytes from A to D three ways, alternating:

  direct   an adjacent session on the A-D link (link TLS only)
  relay1   a routed session A-B-D (one intermediate node; TLS end to end)
  relay2   a routed session A-B-C-D (two intermediate nodes)

The clock runs from the first write (session authenticated) to D's answer
C{!} once it has everything.  Medians of the runs; one JSON line at the end.

Around every timed run each process's CPU seconds (user + system) are read
(A's own from os.times(), the children's through their C{cpu} command), so
the line also gives CPU seconds per GB per process and kind.  Wall clock on
a machine with fewer cores than busy processes mixes their work together;
CPU per byte does not.  With a core per process the busiest process limits
a kind's throughput, so the projected ratio of a relayed kind to direct is
(the largest direct CPU s/GB) / (the largest CPU s/GB of that kind).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

HERE = os.path.abspath(__file__)

if os.environ.get("APPN_BENCH_HIGH_WATER"):
    # Experiment knob (every process): how much a relay buffers per
    # direction of a spliced session before it pauses the other side.
    import appnpy.net.relay as _relay

    _relay.RELAY_SEND_HIGH_WATER = int(os.environ["APPN_BENCH_HIGH_WATER"])


# -- the child processes ------------------------------------------------------------


class _ChildCommands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, node: Any, done: Deferred[None]) -> None:
        self.node = node
        self.done = done

    def lineReceived(self, line: bytes) -> None:
        cmd = json.loads(line)
        if cmd["cmd"] == "connect":
            d = self.node.connect(cmd["target"])
            d.addCallbacks(
                lambda cp: self.reply({"linked": cp.peerNodeID}),
                lambda f: self.reply({"error": f.getErrorMessage()}),
            )
        elif cmd["cmd"] == "cpu":
            t = os.times()
            self.reply({"cpu": t.user + t.system})
        elif cmd["cmd"] == "state":
            self.reply(
                {
                    "relay": len(self.node.relay.table),
                    "sessions": len(self.node.sessions()),
                }
            )

    def reply(self, msg: dict[str, Any]) -> None:
        self.transport.write(json.dumps(msg).encode() + b"\n")

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)


async def child(reactor: Any) -> None:
    node = C.makeNode(reactor, listen=[C.LISTEN], services=True)
    node.startService()
    while not node.ports:
        d: Deferred[None] = Deferred()
        reactor.callLater(0, d.callback, None)
        await d
    done: Deferred[None] = Deferred()
    proto = _ChildCommands(node, done)
    StandardIO(proto, reactor=reactor)
    proto.reply({"appn": node.advertisedAddresses()[0], "id": node.nodeID, "pid": os.getpid()})
    await done


async def spawnChild(reactor: Any, profile: str | None) -> tuple[C.PeerProcess, dict[str, Any]]:
    proto = C.PeerProcess()
    args = [sys.executable, HERE, "--child"]
    if profile:
        args += ["--profile", profile]
    reactor.spawnProcess(
        proto, sys.executable, args, env=os.environ, childFDs={0: "w", 1: "r", 2: 2}
    )
    ready = await proto.ready
    return proto, ready


# -- the measuring process ----------------------------------------------------------------


PROCESSES = "ABCD"


async def cpuNow(children: list[tuple[C.PeerProcess, dict[str, Any]]]) -> list[float]:
    """
    CPU seconds so far of A (this process), B, C and D.
    """
    answers = [await proc.request(cmd="cpu") for proc, _ in children]
    return [C.cpuSeconds(), *(a["cpu"] for a in answers)]


async def run(reactor: Any, node: Any, kind: str, route: list[str], total: int) -> float:
    if kind == "direct":
        d = node.openSession(route[-1], "sink", C.SessionClient, {"n": total})
    else:
        d = node.routedSessions.open(route[-1], "sink", C.SessionClient, {"n": total}, route=route)
    return await C.timedPush(reactor, await d, total)


def cpuFigures(cpu: dict[str, list[list[float]]], total: int) -> dict[str, Any]:
    """
    Median CPU seconds per GB of every process per kind, and each relayed
    kind's projected ratio to direct with a core per process.
    """
    perGB = {
        kind: {
            name: round(C.median([run[i] for run in runs]) / (total / 1e9), 3)
            for i, name in enumerate(PROCESSES)
        }
        for kind, runs in cpu.items()
    }
    figures: dict[str, Any] = {"cpu_s_per_GB": perGB}
    for kind in ("relay1", "relay2"):
        if kind in perGB and "direct" in perGB:
            figures[f"ratio_{kind}_core_per_process"] = round(
                max(perGB["direct"].values()) / max(perGB[kind].values()), 3
            )
    return figures


async def main(reactor: Any, args: argparse.Namespace) -> None:
    total = C.pick(args, 512 * C.MIB, 256 * C.MIB, 8 * C.MIB)
    runs = args.runs or C.pick(args, 5, 3, 1)
    children = []
    try:
        for name in "BCD":
            prof = f"{args.profile}.{name}" if args.profile else None
            children.append(await spawnChild(reactor, prof))
        (pb, b), (pc, c), (pd, d) = children
        node = C.makeNode(reactor, services=True)
        await node.connect(b["appn"])
        await node.connect(d["appn"])
        for proc, target in ((pb, c), (pc, d), (pb, d)):
            answer = await proc.request(cmd="connect", target=target["appn"])
            if "error" in answer:
                raise RuntimeError(answer["error"])
        routes = {
            "direct": [node.nodeID, d["id"]],
            "relay1": [node.nodeID, b["id"], d["id"]],
            "relay2": [node.nodeID, b["id"], c["id"], d["id"]],
        }
        if args.kinds:
            routes = {k: routes[k] for k in args.kinds.split(",")}
        results: dict[str, list[float]] = {k: [] for k in routes}
        # Per kind and run: CPU seconds each process spent on the run.
        cpu: dict[str, list[list[float]]] = {k: [] for k in routes}
        for i in range(runs):
            # Alternate the order every run so no kind always goes first.
            order = list(routes) if i % 2 == 0 else list(routes)[::-1]
            for kind in order:
                before = await cpuNow(children)
                t = await run(reactor, node, kind, routes[kind], total)
                after = await cpuNow(children)
                results[kind].append(total / t / 1e9)
                cpu[kind].append([b - a for a, b in zip(before, after, strict=True)])
            C.log(
                f"run {i + 1}/{runs}: "
                + ", ".join(
                    f"{k} {results[k][-1]:.3f} GB/s (CPU s/GB "
                    + " ".join(
                        f"{p}{c / (total / 1e9):.2f}"
                        for p, c in zip(PROCESSES, cpu[k][-1], strict=True)
                    )
                    + ")"
                    for k in routes
                )
            )
        leftovers = [await p.request(cmd="state") for p, _ in children]
        for cp in list(node.links.values()):
            await cp.close()
    finally:
        for proc, _ in children:
            await proc.stop()
    med = {k: C.median(v) for k, v in results.items()}
    figures: dict[str, Any] = {f"{k}_GBps": round(v, 4) for k, v in med.items()}
    for k in ("relay1", "relay2"):
        if k in med and "direct" in med:
            figures[f"ratio_{k}"] = round(med[k] / med["direct"], 3)
    C.emit(
        {
            "benchmark": "routed_bulk",
            "bytes": total,
            "runs": runs,
            **figures,
            "goal_relay1": 0.5,
            **cpuFigures(cpu, total),
            "runs_GBps": {k: [round(x, 4) for x in v] for k, v in results.items()},
            "leftover_state": leftovers,
        }
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--child", action="store_true")
        p.add_argument("--profile", default=None)
        a = p.parse_args()
        C.runMain(child, a)
    else:
        args = C.parseArgs(
            __doc__.splitlines()[1],
            extra=[
                (
                    ("--kinds",),
                    {"default": None, "help": "comma-separated subset of direct,relay1,relay2"},
                )
            ],
        )
        C.runMain(lambda reactor: main(reactor, args), args)
