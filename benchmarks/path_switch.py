"""
Path switch of a live routed session, five real node processes on five hosts.

Five network namespaces in a ring 1-2-3-4-5-1, a C{twist appnnode} in each
(tests/interop/rings.py builds them; needs root, ip netns and iptables).
Every run, node 1 downloads a file from node 3 (the files plugin, rate
limited so that it is mid-stream), routed 1-2-3, and then, alternating:

  cut    link 1-2 is cut silently: iptables drops its packets on both ends
         (no reset, no FIN; both kernels keep the TCP connection);
  kill   node 2's process is SIGKILLed (its kernel closes its connections).

Figures, each a median over the runs of its kind:

  first_byte_s   the cut (or kill) to the first byte over the new path:
                 node 1's "resumed on path" log event, when the destination's
                 RESUME arrives on the new path with its retransmission behind
                 it (wall clock; the cut's clock starts before its iptables
                 commands run, so this errs long)
  detect_s       the cut to node 1 declaring its link dead (failure detection)
  new_session_s  the cut to the first NEW session from 1 to 3 answered (echo
                 sessions opened one after another from node 1's API)
  lost_bytes     bytes of the file missing or wrong at the end (sha256 and
                 length against the source; must be 0)

After each run the cut is healed (or node 2 restarted) and the next run waits
until node 1 routes 1-2-3 again.  One JSON line at the end.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common as C  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

from tests.interop import rings  # noqa: E402
from tests.interop.harness import NodeHarness, NodeProcess  # noqa: E402

KINDS = ("cut", "kill")
GOALS = {"cut": 5.0, "kill": 1.0}
#: Seconds any one wait may take.
WAIT = 60.0
#: A download in these states has not ended yet (verifying: every byte is in,
#: the whole-file hash is being checked).
UNDER_WAY = ("preparing", "downloading", "verifying")


class Bench:
    def __init__(self, reactor: Any, size: int, rate: str) -> None:
        self.reactor = reactor
        self.size = size
        self.rate = rate
        self.cleanups = rings.Cleanups()
        self.ring = rings.Ring(f"appn-bench-{os.getpid()}")
        # Registered first, so it runs last: after every process is reaped.
        self.cleanups.addCleanup(self.deleteNamespaces)
        self.harness = NodeHarness(self.cleanups, reactor)
        self.nodes: list[NodeProcess] = []
        self.ids: list[str] = []

    def deleteNamespaces(self) -> None:
        failures = self.ring.delete()
        if failures:
            C.log(f"path_switch: namespaces left behind: {failures}")

    def node(self, k: int) -> NodeProcess:
        return self.nodes[k - 1]

    async def appn(self, k: int, *args: str) -> Any:
        code, answer, err = await rings.appn(self.ring.wrap(k), self.node(k), *args)
        if code != 0:
            raise RuntimeError(f"appn {' '.join(args)} on node {k}: {answer} {err}")
        return answer

    async def until(self, what: str, check: Any, seconds: float = WAIT) -> Any:
        deadline = self.reactor.seconds() + seconds
        while True:
            result = await check()
            if result:
                return result
            if self.reactor.seconds() > deadline:
                raise RuntimeError(f"timed out: {what}")
            await deferLater(self.reactor, 0.2, lambda: None)

    async def setUp(self) -> None:
        self.ring.create()
        self.config = rings.writeConfig(os.path.join(self.harness.root, "ring.toml"))
        self.nodes = await rings.startNodes(self.harness, self.ring, self.config)
        self.ids = [n.nodeID or "" for n in self.nodes]
        shared = os.path.join(self.harness.root, "shared")
        os.makedirs(shared)
        self.data = os.urandom(self.size)
        self.sha = hashlib.sha256(self.data).hexdigest()
        with open(os.path.join(shared, "stream.bin"), "wb") as f:
            f.write(self.data)
        await self.appn(3, "files", "share", "add", "media", shared)

        async def indexed() -> bool:
            shares = await self.appn(3, "files", "share", "list")
            return any(s["name"] == "media" and s["files"] == 1 for s in shares["shares"])

        await self.until("the share indexed", indexed)
        await self.routedVia2()

    async def routedVia2(self) -> None:
        """
        Wait until node 1 routes 1-2-3 (after a heal or a restart): checked
        at once and after each topology change node 1 logs.  A restarted
        node 2 announces its links with unmeasured characteristics first,
        which weigh more than the long way round until its measurements
        are announced.
        """
        n1 = self.node(1)
        deadline = self.reactor.seconds() + WAIT
        while True:
            before = {id(e) for e in n1.events}
            code, answer, err = await rings.appn(self.ring.wrap(1), n1, "route", self.ids[2])
            if code == 0 and answer["route"]["hops"] == self.ids[:3]:
                return
            left = deadline - self.reactor.seconds()
            if left <= 0:
                raise RuntimeError(f"node 1 never routed 1-2-3 again: {answer} {err}")
            await n1.waitFor(
                lambda e, before=before: (
                    id(e) not in before and e.get("log_format", "").startswith("topology: {nodes}")
                ),
                "a topology change",
                left,
            )

    async def transfer(self, tid: str) -> dict[str, Any]:
        answer = await self.appn(1, "files", "transfers")
        [mine] = [t for t in answer["transfers"] if t["id"] == tid]
        return dict(mine)

    async def startStream(self, target: str) -> tuple[str, str]:
        """
        Start node 1's download and wait until it is under way; its
        transfer ID and the session ID node 2 relays it under.
        """
        n2 = self.node(2)
        before = len(rings.relayed(n2, self.ids[0], self.ids[2]))
        started = await self.appn(
            1, "files", "get", f"{self.ids[2]}:media/stream.bin", "-o", target,
            "--limit", self.rate, "--no-wait",
        )  # fmt: skip
        relayed = await n2.waitFor(
            lambda e: len(rings.relayed(n2, self.ids[0], self.ids[2])) > before,
            "the download relayed by node 2",
        )
        sid = rings.relayed(n2, self.ids[0], self.ids[2])[-1]["sid"]
        del relayed

        async def underway() -> bool:
            t = await self.transfer(started["id"])
            if t["state"] not in UNDER_WAY:
                raise RuntimeError(f"the download ended before the fault: {t}")
            return bool(t["done_bytes"] >= self.size // 8)

        await self.until("the download under way", underway)
        return started["id"], sid

    async def finish(self, tid: str, target: str) -> int:
        """
        Wait for the download to end; the bytes lost (missing or wrong).
        """

        async def ended() -> dict[str, Any] | None:
            t = await self.transfer(tid)
            return t if t["state"] not in UNDER_WAY else None

        t = await self.until("the download to end", ended)
        if t["state"] != "complete" or not os.path.exists(target):
            C.log(f"  the download failed: {t}")
            return self.size - int(t["done_bytes"])
        with open(target, "rb") as f:
            got = f.read()
        os.remove(target)
        if hashlib.sha256(got).hexdigest() == self.sha and len(got) == self.size:
            return 0
        same = sum(1 for a, b in zip(got, self.data, strict=False) if a == b)
        return self.size - same

    async def one(self, kind: str, i: int) -> dict[str, float]:
        n1 = self.node(1)
        target = os.path.join(self.harness.root, f"{kind}-{i}.bin")
        # Ready before the stream starts, so that nothing slow comes between
        # the stream under way and the fault.
        loop = await rings.EchoLoop.start(self.ring.wrap(1), n1, self.ids[2], WAIT)
        tid, sid = await self.startStream(target)
        seen = len(n1.events)
        relayedBy5 = len(rings.relayed(self.node(5), self.ids[0], self.ids[2]))
        faultAt = time.time()
        if kind == "cut":
            await self.ring.cut(1)
        else:
            self.node(2).signal(signal.SIGKILL)
        loop.go()
        resumed = await n1.waitFor(
            lambda e: "resumed on path" in e.get("log_format", "") and e.get("sid") == sid,
            f"session {sid} resumed",
        )
        attempts = await loop.done
        if not attempts[-1]["ok"]:
            raise RuntimeError(f"no new session from 1 to 3: {attempts}")
        if len(rings.relayed(self.node(5), self.ids[0], self.ids[2])) <= relayedBy5:
            raise RuntimeError("the new session did not go through node 5")
        lost = await self.finish(tid, target)
        dead = [
            e
            for e in n1.events[seen:]
            if e.get("log_format", "").startswith("link down with") and e.get("peer") == self.ids[1]
        ]
        figures = {
            "first_byte_s": float(resumed["log_time"]) - faultAt,
            "switch_s": float(resumed["pause"]),
            "detect_s": float(dead[0]["log_time"]) - faultAt if dead else float("nan"),
            "new_session_s": float(attempts[-1]["end"]) - faultAt,
            "lost_bytes": float(lost),
        }
        return figures

    async def repair(self, kind: str, i: int) -> None:
        n1 = self.node(1)
        since = time.time()
        if kind == "cut":
            await self.ring.heal(1)
        else:
            old = self.node(2)
            await old.whenExited(WAIT)
            self.nodes[1] = rings.startNode(
                self.harness, self.ring, 2, self.config, label=f"n2-{i}", dataDir=old.dataDir
            )
            await self.node(2).whenReady(WAIT)
        # Node 2 redials node 1 (its --peer) and node 3 redials node 2, each
        # with its backoff.
        await n1.waitFor(
            lambda e: (
                e.get("log_format", "").startswith("link up with")
                and e.get("peer") == self.ids[1]
                and e["log_time"] > since
            ),
            "node 2 linked again",
            WAIT,
        )
        await self.node(2).whenLinked(2, WAIT)
        await self.routedVia2()
        C.log(f"  {kind} repaired in {time.time() - since:.1f} s")


async def main(reactor: Any, args: Any) -> None:
    size = C.pick(args, 48 * C.MIB, 32 * C.MIB, 8 * C.MIB)
    rate = C.pick(args, "8M", "8M", "2M")
    runs = args.runs or C.pick(args, 5, 3, 1)
    bench = Bench(reactor, size, rate)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    # The fault of the last run, repaired before the next (not after the last).
    broken: tuple[str, int] | None = None
    try:
        await bench.setUp()
        for i in range(runs):
            # Alternate the order every run so no kind always goes first.
            order = KINDS if i % 2 == 0 else KINDS[::-1]
            for kind in order:
                if broken is not None:
                    await bench.repair(*broken)
                figures = await bench.one(kind, i)
                broken = (kind, i)
                results[kind].append(figures)
                C.log(
                    f"run {i + 1}/{runs} {kind}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
                )
    except BaseException:
        # The benchmark's logging goes nowhere (quietLogging): say why here.
        C.log(f"path_switch failed:\n{traceback.format_exc()}")
        raise
    finally:
        await bench.cleanups.run()
    keys = ["first_byte_s", "switch_s", "detect_s", "new_session_s", "lost_bytes"]
    med = {kind: {k: C.median([r[k] for r in results[kind]]) for k in keys} for kind in KINDS}
    C.log(f"{'':6} " + " ".join(f"{k:>14}" for k in keys))
    for kind in KINDS:
        C.log(f"{kind:6} " + " ".join(f"{med[kind][k]:>14.3f}" for k in keys))
    figures: dict[str, Any] = {}
    for kind in KINDS:
        for k in keys:
            figures[f"{kind}_{k}"] = round(med[kind][k], 3)
    C.emit(
        {
            "benchmark": "path_switch",
            "bytes": size,
            "rate": rate,
            "runs": runs,
            **figures,
            "goal_cut_first_byte_s": GOALS["cut"],
            "goal_kill_first_byte_s": GOALS["kill"],
            "runs_figures": {
                kind: [{k: round(v, 3) for k, v in r.items()} for r in results[kind]]
                for kind in KINDS
            },
        }
    )


if __name__ == "__main__":
    arguments = C.parseArgs(__doc__.splitlines()[1])
    reason = rings.unavailable()
    if reason is not None:
        C.log(f"path_switch needs root, ip netns and iptables: {reason}")
        sys.exit(2)
    C.runMain(lambda reactor: main(reactor, arguments), arguments)
