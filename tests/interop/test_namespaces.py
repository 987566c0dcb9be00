"""
Real C{twist appnnode} processes on separate network stacks (DESIGN.md,
"Interop"; shared/reference/robustness.md, "Fault injection on Linux
hosts"): two network namespaces joined by a veth pair, one node in each,
and the link cut by taking one end of the pair down.

    namespace A                         namespace B
    lo 127.0.0.1 (API)                  lo 127.0.0.1 (API)
    veth a0 10.99.0.1/24  <-------->    veth b0 10.99.0.2/24
    node a listens on 10.99.0.1:7700    node b dials 10.99.0.1:7700

Every address the nodes use is one these tests create inside their own
namespaces.  The nodes run with keepalive pings every 0.3 s and a 1.5 s
keepalive timeout (config file), so a short cut is ridden out by TCP and
a long one is detected by both ends, which link again once it heals.

Skipped unless running as root on a host where C{ip netns} works, and
failed instead under CI (C{APPN_CI=1}, L{tests.interop.rings.requireNamespaces}).  The
namespaces (and with them the veth pair) are deleted after every test, once
its node processes have been killed, whatever the outcome.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.harness import Event, NodeHarness, NodeProcess
from tests.interop.rings import appn, requireNamespaces

#: The node addresses, each on its own namespace's end of the veth pair.
ADDRESS_A = "10.99.0.1"
ADDRESS_B = "10.99.0.2"
PORT = 7700
KEEPALIVE_INTERVAL = 0.3
KEEPALIVE_TIMEOUT = 1.5
#: A cut this long is ridden out: the last frame before it is at most one
#: keepalive interval old, and both ends ping again within an interval after.
SHORT_CUT = 0.5
#: Bound for the link to come back after a heal (the dialler redials with
#: an exponential backoff starting at 1 s).
REJOIN = 15.0


def run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


def isLinkEvent(event: Event, kind: str, peer: str | None = None) -> bool:
    return event.get("log_format", "").startswith(f"link {kind} with") and (
        peer is None or event.get("peer") == peer
    )


def linkEvents(process: NodeProcess, since: int = 0) -> list[str]:
    return [
        e["text"] for e in process.events[since:] if isLinkEvent(e, "up") or isLinkEvent(e, "down")
    ]


def _ipSync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _ipOrFail(*args: str) -> None:
    result = _ipSync(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class NamespaceHarness(TestCase):
    """
    Two nodes, each its own process in its own network namespace.
    """

    timeout = 60

    def setUp(self) -> None:
        requireNamespaces(iptables=False)
        tag = f"appn-{os.getpid()}-{id(self) % 10000}"
        self.nsA, self.nsB = f"{tag}-a", f"{tag}-b"
        # Registered before the harness, so it runs after the harness has
        # killed and reaped the node processes (cleanups run last-in
        # first-out).
        self.namespaces: list[str] = []
        self.addCleanup(self.deleteNamespaces)
        for ns in (self.nsA, self.nsB):
            _ipOrFail("netns", "add", ns)
            self.namespaces.append(ns)
            _ipOrFail("-n", ns, "link", "set", "lo", "up")
        # Made in A with its peer end placed straight into B.
        _ipOrFail(
            "-n",
            self.nsA,
            "link",
            "add",
            "a0",
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "netns",
            self.nsB,
        )
        _ipOrFail("-n", self.nsA, "addr", "add", f"{ADDRESS_A}/24", "dev", "a0")
        _ipOrFail("-n", self.nsB, "addr", "add", f"{ADDRESS_B}/24", "dev", "b0")
        _ipOrFail("-n", self.nsA, "link", "set", "a0", "up")
        _ipOrFail("-n", self.nsB, "link", "set", "b0", "up")
        self.addCleanup(self.assertNoSurvivors)
        self.harness = NodeHarness(self, reactor)
        self.config = os.path.join(self.harness.root, "keepalive.toml")
        with open(self.config, "w") as f:
            f.write(
                f"[node]\nkeepalive-interval = {KEEPALIVE_INTERVAL}\n"
                f"keepalive-timeout = {KEEPALIVE_TIMEOUT}\n"
            )

    def deleteNamespaces(self) -> None:
        failures = []
        for ns in self.namespaces:
            result = _ipSync("netns", "del", ns)
            if result.returncode != 0:
                failures.append(f"{ns}: {result.stderr.strip()}")
        self.namespaces = []
        self.assertEqual(failures, [], "namespaces left behind")

    def assertNoSurvivors(self) -> None:
        for process in self.harness.processes:
            self.assertTrue(process.ended, f"{process.label} is still running")
            self.assertIsNone(process.transport.pid, f"{process.label} was not reaped")

    async def ip(self, *args: str) -> None:
        out, err, code = await getProcessOutputAndValue(
            shutil.which("ip") or "ip", list(args), env=dict(os.environ)
        )
        if code != 0:
            self.fail(f"ip {' '.join(args)} exited {code}: {err.decode('utf-8', 'replace')}")

    def startNode(self, label: str, ns: str, address: str, peers: list[str]) -> NodeProcess:
        return self.harness.start(
            label,
            peers=peers,
            wrap=["ip", "netns", "exec", ns],
            listen=f"tcp:{PORT}:interface={address}",
            extra=["--config", self.config],
        )

    async def linkedPair(self) -> tuple[NodeProcess, NodeProcess]:
        """
        Node a listening in namespace A, node b in B dialling it there; both
        report the link.
        """
        a = await self.startNode("a", self.nsA, ADDRESS_A, []).whenReady()
        self.assertIn(f"appn://{a.nodeID}@{ADDRESS_A}:{PORT}", a.addresses)
        b = await self.startNode("b", self.nsB, ADDRESS_B, [f"{ADDRESS_A}:{PORT}"]).whenReady()
        await a.waitFor(lambda e: isLinkEvent(e, "up", b.nodeID), "link up with b")
        await b.waitFor(lambda e: isLinkEvent(e, "up", a.nodeID), "link up with a")
        self.assertEqual((a.links, b.links), ({b.nodeID}, {a.nodeID}))
        return a, b

    def assertNoTracebacks(self, *processes: NodeProcess) -> None:
        for process in processes:
            texts = [e["text"] for e in process.events if "Traceback" in e["text"]]
            self.assertEqual(texts, [], process.label)
            self.assertNotIn(b"Traceback", process.stderr, process.label)


class NamespaceLinkTests(NamespaceHarness):
    """
    The link between the namespaces, and cuts the fast keepalive finds.
    """

    def test_linkAcrossNamespaces(self) -> None:
        """
        A node in one namespace dials a node in another at the address of
        its veth end; both log the link up, each naming the other's node ID
        and the address in the other namespace.
        """
        return run(self._linkAcrossNamespaces())

    async def _linkAcrossNamespaces(self) -> None:
        a, b = await self.linkedPair()
        [upA] = [e for e in a.events if isLinkEvent(e, "up", b.nodeID)]
        [upB] = [e for e in b.events if isLinkEvent(e, "up", a.nodeID)]
        self.assertEqual(upB["direction"], "dialled")
        self.assertIn(f"{ADDRESS_A}:{PORT}", str(upB["address"]))
        self.assertEqual(upA["direction"], "accepted")
        self.assertIn(ADDRESS_B, str(upA["address"]))
        self.assertNoTracebacks(a, b)

    def test_shortCutKeepsLink(self) -> None:
        """
        The veth pair cut for 0.5 s, less than the 1.5 s keepalive timeout:
        TCP delivers what was sent during the cut once it heals, so neither
        node logs the link down or up again over twice the timeout, and the
        same link later carries the node's shutting-down.
        """
        return run(self._shortCutKeepsLink())

    async def _shortCutKeepsLink(self) -> None:
        a, b = await self.linkedPair()
        seenA, seenB = len(a.events), len(b.events)
        await self.ip("-n", self.nsB, "link", "set", "b0", "down")
        try:
            # The fault lasts this long; nothing else is waited for here.
            await deferLater(reactor, SHORT_CUT, lambda: None)
        finally:
            await self.ip("-n", self.nsB, "link", "set", "b0", "up")
        # Absence of an event needs a window: twice the keepalive timeout,
        # so a link declared dead by either side would show here.
        await deferLater(reactor, 2 * KEEPALIVE_TIMEOUT, lambda: None)
        self.assertEqual(linkEvents(a, seenA) + linkEvents(b, seenB), [])
        self.assertEqual((a.links, b.links), ({b.nodeID}, {a.nodeID}))
        # And the link still carries messages: b's goodbye reaches a on it.
        down = a.waitFor(
            lambda e: isLinkEvent(e, "down", b.nodeID) and e.get("reason") == "shutting-down",
            "shutting-down from b",
        )
        b.signal(signal.SIGTERM)
        await b.whenExited(timeout=10)
        await down
        self.assertNoTracebacks(a, b)

    def test_longCutDeclaredDeadAndHeals(self) -> None:
        """
        The veth pair cut for longer than the keepalive timeout: both nodes
        declare the link dead (keepalive timeout) while it is cut; once it
        heals, they link again, with the same node IDs, over the namespace
        addresses.
        """
        return run(self._longCutDeclaredDeadAndHeals())

    async def _longCutDeclaredDeadAndHeals(self) -> None:
        a, b = await self.linkedPair()
        idA, idB = a.nodeID, b.nodeID
        before = {id(e) for e in a.events + b.events}
        cutAt = reactor.seconds()
        await self.ip("-n", self.nsA, "link", "set", "a0", "down")
        try:
            # Declared dead within the timeout plus scheduling slack.
            downA = await a.waitFor(lambda e: isLinkEvent(e, "down", idB), "a: b dead", 6.0)
            downB = await b.waitFor(lambda e: isLinkEvent(e, "down", idA), "b: a dead", 6.0)
        finally:
            await self.ip("-n", self.nsA, "link", "set", "a0", "up")
        healedAt = reactor.seconds()
        # Not before the timeout: the link was not closed by anything else.
        self.assertGreaterEqual(healedAt - cutAt, KEEPALIVE_TIMEOUT)
        for down in (downA, downB):
            self.assertIn("keepalive", down["text"])
        self.assertEqual((a.links, b.links), (set(), set()))

        # Both ends redial (b its --peer, a the address b gave in its Hello),
        # so the two may dial at once; the contest is settled by node ID,
        # and the end that activated the losing link first logs it down
        # (duplicate-link) and the winner up.  Wait until both ends hold
        # the same connection: one dialled it, the other accepted it.
        deadline = reactor.seconds() + REJOIN
        while not self.sameLink(a, b, before):
            await self.nextEvent(a, b, deadline - reactor.seconds())
        self.assertEqual((a.nodeID, b.nodeID), (idA, idB))
        self.assertEqual((a.links, b.links), ({idB}, {idA}))
        for process, other, address in ((a, b, ADDRESS_B), (b, a, ADDRESS_A)):
            up = self.lastUp(process, other.nodeID, before)
            self.assertIsNotNone(up)
            if up["direction"] == "dialled":
                self.assertIn(f"{address}:{PORT}", str(up["address"]))
            else:
                self.assertTrue(str(up["address"]).startswith(f"{address}:"), up["address"])
            # After the keepalive down, nothing but that contest.
            downs = [e for e in process.events if id(e) not in before and isLinkEvent(e, "down")]
            self.assertTrue(downs and "keepalive" in downs[0]["text"], linkEvents(process, 0))
            for extra in downs[1:]:
                self.assertEqual(extra.get("reason"), "duplicate-link", extra["text"])
        self.assertNoTracebacks(a, b)

    @staticmethod
    def lastUp(process: NodeProcess, peer: str | None, before: set[int]) -> Event | None:
        ups = [e for e in process.events if id(e) not in before and isLinkEvent(e, "up", peer)]
        return ups[-1] if ups else None

    def sameLink(self, a: NodeProcess, b: NodeProcess, before: set[int]) -> bool:
        """
        Whether both nodes now hold a link to each other, made after
        C{before}, and it is one connection: one end dialled it and the
        other accepted it.
        """
        if a.links != {b.nodeID} or b.links != {a.nodeID}:
            return False
        upA, upB = self.lastUp(a, b.nodeID, before), self.lastUp(b, a.nodeID, before)
        if upA is None or upB is None:
            return False
        return {upA["direction"], upB["direction"]} == {"dialled", "accepted"}

    async def nextEvent(self, a: NodeProcess, b: NodeProcess, timeout: float) -> None:
        """
        Wait for the next log event of either node (at most C{timeout}).
        """
        seen = {id(e) for e in a.events + b.events}
        waits = [
            p.waitFor(lambda e: id(e) not in seen, "a rejoin of both ends", max(timeout, 0.0))
            for p in (a, b)
        ]
        try:
            await DeferredList(
                waits, fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
            )
        finally:
            for d in waits:
                if not d.called:
                    d.cancel()


class SilentCutTests(NamespaceHarness):
    """
    The same two namespaces, nodes with the default slow keepalive (15 s
    pings, 60 s timeout): failure detection, not the keepalive, finds a cut
    link that a session open waits on.
    """

    def setUp(self) -> None:
        super().setUp()
        with open(self.config, "w") as f:
            f.write("[node]\n")

    def test_cutFoundInSeconds(self) -> None:
        """
        With the veth pair cut, an echo session opened from a waits for its
        BIND answer: a declares the link dead by failure detection within a
        few seconds (3 s on this fast path, plus scheduling slack), far
        before the 60 s keepalive timeout, and the echo fails.
        """
        return run(self._cutFoundInSeconds())

    async def _cutFoundInSeconds(self) -> None:
        a, b = await self.linkedPair()
        await self.ip("-n", self.nsB, "link", "set", "b0", "down")
        cutAt = reactor.seconds()
        # Inside A's namespace: a's API listens on that namespace's loopback.
        echo = run(appn(["ip", "netns", "exec", self.nsA], a, "echo", b.nodeID, "--count", "1"))
        down = await a.waitFor(lambda e: isLinkEvent(e, "down", b.nodeID), "a: b dead", 10.0)
        foundAfter = reactor.seconds() - cutAt
        self.assertIn("failure detection", down["text"])
        self.assertLess(foundAfter, 10.0)
        code, result, err = await echo
        # The node answered (an error from its API, not an unreachable one).
        self.assertNotEqual(code, 0, result)
        self.assertIsNotNone(result, err)
        self.assertIn("error", result)
        self.assertNoTracebacks(a, b)
