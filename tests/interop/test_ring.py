"""
Sessions that survive a silent cut, with real C{twist appnnode} processes
on five hosts: five network namespaces in a ring (L{tests.interop.rings}).

While node 1 downloads a file from node 3 (C{appn files get}) and runs an
echo session to it (C{appn echo}), both routed 1-2-3, the link 1-2 is cut
by dropping its packets in both namespaces: no reset, no FIN, the TCP
connection stays established for both kernels.  Failure detection finds
the cut link because the sessions wait on it; node 1 switches both
sessions to 1-5-4-3 and they go on.  The same for a download and an echo
session from node 1 to its neighbour node 2 on the link's own streams
(adjacent sessions): they move to 1-5-4-3-2.

Skipped unless running as root with C{ip netns}, veth pairs and iptables;
under CI (C{APPN_CI=1}) it fails instead.  The namespaces are deleted after
the test, once its node processes have been killed, whatever the outcome.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.interop import rings
from tests.interop.harness import NodeHarness, NodeProcess

MIB = 1024 * 1024
#: The nodes' keepalive, the defaults: before failure detection, a cut
#: link was found only by the keepalive timeout, 60 s of silence.
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_TIMEOUT = 60.0
#: Generous bounds, far above the goals (a pause under 5 s, new sessions
#: around the cut within about 3 s; benchmarks/path_switch.py measures
#: them) and far below the keepalive timeout: on two shared cores five
#: node processes and the test compete, but a regression to keepalive
#: detection would take at least KEEPALIVE_TIMEOUT.
PAUSE_BOUND = 20.0
REROUTE_BOUND = 20.0
#: Waits before the cut (a share indexed, the sessions under way): only
#: slow when the two cores are shared with other tests, never measured.
SETUP_BOUND = 90.0
#: The download is rate limited, so that it is surely running at the cut
#: and after the switch, whatever the machine's speed.
FILE_SIZE = 32 * MIB + 4321
RATE = "3M"
#: Echo round trips, back to back: enough to run through the cut and the
#: pause, few enough to finish within the API's 30 s for an echo; large
#: enough that the session is still echoing when the test, which polls the
#: node's API (a process each time), sees it echo and cuts.
ECHOES = 1000
ECHO_SIZE = 128 * 1024
#: Adjacent echoes (no relay before the cut) go about twice as fast.
ADJACENT_ECHO_SIZE = 2 * ECHO_SIZE


def run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


def pause(seconds: float) -> Deferred[None]:
    """
    The pause between two polls of a node's API (every poll loop has a
    deadline).
    """
    return deferLater(reactor, seconds, lambda: None)


class SilentCutRingTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        rings.requireRing()
        self.ring = rings.Ring(f"appn-{os.getpid()}-{id(self) % 10000}")
        # Registered before the harness, so it runs after the harness has
        # killed and reaped the node processes (cleanups run last-in
        # first-out).
        self.addCleanup(self.deleteNamespaces)
        self.ring.create()
        self.harness = NodeHarness(self, reactor)
        self.config = rings.writeConfig(
            os.path.join(self.harness.root, "ring.toml"),
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )

    def deleteNamespaces(self) -> None:
        self.assertEqual(self.ring.delete(), [], "namespaces left behind")

    async def appnOK(self, k: int, node: NodeProcess, *args: str) -> Any:
        code, answer, err = await rings.appn(self.ring.wrap(k), node, *args)
        self.assertEqual(code, 0, f"appn {' '.join(args)}: {answer} {err}")
        return answer

    async def transfer(self, node: NodeProcess, tid: str) -> dict[str, Any]:
        answer = await self.appnOK(1, node, "files", "transfers")
        [mine] = [t for t in answer["transfers"] if t["id"] == tid]
        return dict(mine)

    async def until(self, what: str, seconds: float, check: Any) -> Any:
        deadline = reactor.seconds() + seconds
        while True:
            result = await check()
            if result:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"timed out: {what}")
            await pause(0.25)

    def test_silentCutSessionsSurvive(self) -> None:
        """
        A download and an echo session from node 1 to node 3, both relayed
        by node 2, survive the silent cut of link 1-2: the file arrives
        whole and unchanged, every echo comes back right, each session is
        resumed on 1-5-4-3 after a pause far below the keepalive timeout,
        and a new session opened after the cut goes 1-5-4-3.
        """
        return run(self._sessionsSurvive(3))

    def test_silentCutAdjacentSessionsSurvive(self) -> None:
        """
        The same for sessions from node 1 to its neighbour node 2, on their
        link's own streams (adjacent, no relay): cut, they are re-bound on
        1-5-4-3-2 and go on.
        """
        return run(self._sessionsSurvive(2))

    async def _sessionsSurvive(self, dest: int) -> None:
        """
        Sessions from node 1 to node C{dest} (2: adjacent; 3: relayed by
        node 2) through the cut of link 1-2.
        """
        nodes = await rings.startNodes(self.harness, self.ring, self.config)
        n1, n2, n3, n4, n5 = nodes
        ids = [n.nodeID or "" for n in nodes]
        nd, dst = nodes[dest - 1], ids[dest - 1]
        # The way back round: 1-5-4-3, and on to 2.
        around = [ids[0], ids[4], ids[3], ids[2], ids[1]][: 7 - dest]
        relays = nodes[1 : dest - 1]
        echoSize = ECHO_SIZE if relays else ADJACENT_ECHO_SIZE
        route = await self.appnOK(1, n1, "route", dst)
        self.assertEqual(route["route"]["hops"], ids[:dest])

        shared = os.path.join(self.harness.root, "shared")
        os.makedirs(shared)
        data = os.urandom(FILE_SIZE)
        with open(os.path.join(shared, "big.bin"), "wb") as f:
            f.write(data)
        await self.appnOK(dest, nd, "files", "share", "add", "media", shared)

        async def indexed() -> bool:
            shares = await self.appnOK(dest, nd, "files", "share", "list")
            return any(s["name"] == "media" and s["files"] == 1 for s in shares["shares"])

        await self.until("the share indexed", SETUP_BOUND, indexed)

        # Ready before the transfers start (nothing slow between them and the cut).
        loop = await rings.EchoLoop.start(self.ring.wrap(1), n1, dst, 60)
        target = os.path.join(self.harness.root, "big.bin")
        started = await self.appnOK(
            1, n1, "files", "get", f"{dst}:media/big.bin", "-o", target,
            "--limit", RATE, "--no-wait",
        )  # fmt: skip

        async def downloading() -> bool:
            t = await self.transfer(n1, started["id"])
            self.assertIn(t["state"], ("preparing", "downloading"), t)
            return bool(t["done_bytes"] >= 2 * MIB)

        await self.until("the download under way", SETUP_BOUND, downloading)
        before = [len(rings.relayed(n, ids[0], dst)) for n in relays]
        self.assertTrue(all(before), "the download not relayed by node 2")

        echo = run(
            rings.appn(
                self.ring.wrap(1),
                n1,
                "echo",
                dst,
                "--count",
                str(ECHOES),
                "--size",
                str(echoSize),
            )
        )
        # The echo session bound through node 2 (its BIND went by), and
        # echoes: a session cut before its BIND is answered is refused, not
        # switched.
        for n, seen in zip(relays, before, strict=True):
            await n.waitFor(
                lambda e, n=n, seen=seen: len(rings.relayed(n, ids[0], dst)) > seen,
                "the echo session relayed",
            )

        async def echoing() -> bool:
            sessions = await self.appnOK(1, n1, "sessions")
            return any(s["plugin"] == "echo" and s["bytes_in"] > 0 for s in sessions)

        await self.until("the echo session echoing", SETUP_BOUND, echoing)

        if not relays:
            # Adjacent sessions: no node relayed them.
            self.assertEqual([n.label for n in nodes if rings.relayed(n, ids[0], dst)], [])
        cutAt = time.time()
        await self.ring.cut(1)
        loop.go()
        attempts = await loop.done
        rerouted = attempts[-1]["end"] - cutAt
        self.assertTrue(attempts[-1]["ok"], attempts)
        # New sessions from 1 to the destination now go the other way round.
        for n in nodes:
            if n.nodeID in around[1:-1]:
                self.assertTrue(rings.relayed(n, ids[0], dst), f"no session relayed by {n.label}")

        code, answer, err = await echo
        self.assertEqual(code, 0, f"{answer} {err}")
        self.assertEqual((answer["sent"], answer["received"]), (ECHOES, ECHOES), answer)

        async def complete() -> bool:
            t = await self.transfer(n1, started["id"])
            self.assertIn(t["state"], ("downloading", "verifying", "complete"), t)
            return bool(t["state"] == "complete")

        await self.until("the download complete", 60, complete)
        with open(target, "rb") as f:
            got = f.read()
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())

        # Both sessions moved, neither ended; the download never lost its
        # only source (it would have failed).
        switched = [e for e in rings.resumed(n1) if e["log_time"] > cutAt]
        self.assertEqual(len(switched), 2, [e["text"] for e in rings.resumed(n1)])
        for event in switched:
            self.assertEqual(event["route"], around, event["text"])
        for node in (n1, nd):
            self.assertEqual(rings.sessionFailures(node), [], node.label)
        dropped = [
            e["text"] for e in n1.events if e.get("log_format", "").startswith("source {peer}")
        ]
        self.assertEqual(dropped, [])
        pauses = [float(e["pause"]) for e in switched]
        echoPause = max(answer["rtt_ms"]) / 1000
        # The figures, for whoever reads the test log.
        print(
            f"\nsilent cut: sessions resumed after {', '.join(f'{p:.2f}' for p in pauses)} s "
            f"(from the path failing), {max(e['log_time'] for e in switched) - cutAt:.2f} s "
            f"after the cut; longest echo {echoPause:.2f} s of {sum(answer['rtt_ms']) / 1000:.2f} s "
            f"echoing; a new session answered "
            f"{rerouted:.2f} s after the cut ({len(attempts)} attempts)"
        )
        for p in [*pauses, echoPause]:
            self.assertLess(p, PAUSE_BOUND)
        self.assertLess(rerouted, REROUTE_BOUND)
        for node in (n1, n2, n3, n4, n5):
            texts = [e["text"] for e in node.events if "Traceback" in e["text"]]
            self.assertEqual(texts, [], node.label)
