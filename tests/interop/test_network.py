"""
Network services across real C{twist appnnode} processes, driven with the
C{appn} client: sessions to a resource by name through intermediate nodes,
routing around a failed node, a clear refusal when no route is left, and an
end node failing over to a second network-node server.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.harness import NodeHarness, NodeProcess


def run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


async def appn(node: NodeProcess, *args: str) -> tuple[int, Any, str]:
    """
    Run C{appn --data-dir <node's> --json ARGS}; its exit code, parsed JSON
    output (or None) and standard error.
    """
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "appnpy.cli", "--data-dir", node.dataDir, "--json", *args],
        env=dict(os.environ),
    )
    try:
        parsed = json.loads(out)
    except ValueError:
        parsed = None
    return code, parsed, err.decode("utf-8", "replace")


def topology(node: NodeProcess, reachable: int, links: int | None = None) -> Deferred[Any]:
    """
    Wait for a topology summary line logged from now on saying the node
    reaches C{reachable} network nodes (itself included) over routable
    links (and knows C{links} routable links, if given).  Records of dead
    nodes stay until they age out, but they are not reachable.
    """
    before = {id(e) for e in node.events}

    def predicate(event: dict[str, Any]) -> bool:
        return (
            id(event) not in before
            and event.get("log_format", "").startswith("topology: {nodes}")
            and event.get("reachable") == reachable
            and (links is None or event.get("links") == links)
        )

    return node.waitFor(predicate, f"{node.label}: {reachable} reachable nodes", 30)


class RoutedNetworkTests(TestCase):
    """
    Four to five network nodes, each its own process.
    """

    timeout = 90

    def test_lineByResourceName(self) -> None:
        """
        In a line A-B-C-D, A reaches the resource echo:LAB.D by name through
        B and C, and D reaches A by CP name; with C killed, sessions route
        around it through E; with D and E gone, a session to D fails with
        the reason no-route.
        """
        return run(self._lineByResourceName())

    async def _lineByResourceName(self) -> None:
        harness = NodeHarness(self, reactor)
        # max-peers 1: each node dials only its bootstrap peer, so peer
        # exchange does not turn the line into a mesh.
        a = await harness.startReady("a", maxPeers=1, extra=["--name", "LAB.A"])
        b = await harness.startReady(
            "b", peers=[a.hostPort()], maxPeers=1, extra=["--name", "LAB.B"]
        )
        c = await harness.startReady(
            "c", peers=[b.hostPort()], maxPeers=1, extra=["--name", "LAB.C"]
        )
        d = harness.start("d", peers=[c.hostPort()], maxPeers=1, extra=["--name", "LAB.D"])
        converged = [topology(a, 4, links=3), topology(d, 4, links=3)]
        await run(d.whenReady())
        await gatherResults(converged)
        self.assertEqual(a.links, {b.nodeID})

        code, route, err = await appn(a, "route", "LAB.D")
        self.assertEqual(code, 0, err)
        self.assertEqual(route["route"]["hops"], [a.nodeID, b.nodeID, c.nodeID, d.nodeID])

        code, echo, err = await appn(a, "echo", "echo:LAB.D", "--count", "3")
        self.assertEqual(code, 0, err)
        self.assertEqual((echo["sent"], echo["received"], echo["node_id"]), (3, 3, d.nodeID))
        code, echo, err = await appn(d, "echo", "LAB.A", "--count", "3")
        self.assertEqual(code, 0, err)
        self.assertEqual((echo["received"], echo["node_id"]), (3, a.nodeID))
        # The relays saw the sessions through; the ends' sessions are gone.
        for relay in (b, c):
            self.assertTrue(any("relaying session" in e["text"] for e in relay.events))

        # A second path B-E-D, then C dies: new sessions go around it.
        fiveLinks = topology(a, 5, links=5)
        e = harness.start(
            "e", peers=[b.hostPort(), d.hostPort()], maxPeers=2, extra=["--name", "LAB.E"]
        )
        await run(e.whenReady())
        await fiveLinks
        cGone = topology(a, 4, links=3)
        c.signal(signal.SIGKILL)
        await c.whenExited()
        await cGone
        code, echo, err = await appn(a, "echo", "echo:LAB.D", "--count", "2")
        self.assertEqual(code, 0, err)
        self.assertEqual(echo["received"], 2)
        self.assertTrue(any("relaying session" in ev["text"] for ev in e.events))

        # No path left (D and E gone; D would otherwise re-link to A by peer
        # exchange): a clear reason, not a hang.
        onlyB = topology(a, 2)
        for victim in (d, e):
            victim.signal(signal.SIGKILL)
            await victim.whenExited()
        await onlyB
        code, echo, err = await appn(a, "echo", "LAB.D", "--count", "1")
        self.assertNotEqual(code, 0)
        # With --json the error is a JSON object with a stable code: no
        # route, or, once D's records are withdrawn (links that go down are
        # announced at once, so that can come first), no such node.
        self.assertIn(echo["error"], ("no-route", "no-such-node"), echo)
        if echo["error"] == "no-route":
            self.assertIn("no route", echo["message"].lower())


class EndNodeTests(TestCase):
    """
    An end node with two network nodes to choose from.
    """

    timeout = 90

    def test_failover(self) -> None:
        """
        An end node links to one network-node server, registers its
        resources there and reaches the network through it; when that
        server dies it fails over to the other and is reachable again.
        """
        return run(self._failover())

    async def _failover(self) -> None:
        harness = NodeHarness(self, reactor)
        n1 = await harness.startReady("n1", maxPeers=2, extra=["--name", "LAB.N1"])
        n2 = await harness.startReady(
            "n2", peers=[n1.hostPort()], maxPeers=2, extra=["--name", "LAB.N2"]
        )
        en = await harness.startReady(
            "en",
            peers=[n1.hostPort(), n2.hostPort()],
            maxPeers=1,
            extra=["--name", "LAB.EN", "--role", "end"],
        )
        await run(en.whenLinked(1))
        (first,) = en.links
        server, other = (n1, n2) if first == n1.nodeID else (n2, n1)
        await server.waitFor(
            lambda ev: (
                "end node {peer}" in ev.get("log_format", "")
                or "registered" in ev.get("log_format", "")
            ),
            "the end node registering",
            30,
        )
        code, echo, err = await appn(other, "echo", "echo:LAB.EN", "--count", "2")
        self.assertEqual(code, 0, err)
        self.assertEqual(echo["node_id"], en.nodeID)

        server.signal(signal.SIGKILL)
        await server.whenExited()
        await en.waitFor(
            lambda ev: (
                ev.get("log_format", "").startswith("link up with")
                and ev.get("peer") == other.nodeID
            ),
            "the end node linking to the other server",
            30,
        )
        code, resources, err = await appn(en, "resources")
        self.assertEqual(code, 0, err)
        self.assertEqual(resources.get("server"), other.nodeID)
        code, echo, err = await appn(en, "echo", other.nodeID, "--count", "2")
        self.assertEqual(code, 0, err)
        self.assertEqual(echo["received"], 2)
