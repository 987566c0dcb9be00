"""
Real C{twist appnnode} processes on loopback: bootstrap from a seed, peer
exchange up to max-peers, restart after SIGKILL, graceful SIGTERM, pinned
node IDs, and the data directory lock.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from appnpy.link.identity import generateIdentity
from tests.interop.harness import NodeHarness, exitedCleanly


def run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


class NodeProcessTests(TestCase):
    """
    Several real nodes, each its own process.
    """

    timeout = 60

    def test_networkFromOneSeed(self) -> None:
        """
        Four nodes given only a seed's address each reach max-peers links by
        peer exchange; one killed with SIGKILL and restarted without --peer
        comes back as the same node and rejoins from peers.json; one stopped
        with SIGTERM exits 0 and its neighbours log reason shutting-down.
        """
        return run(self._networkFromOneSeed())

    async def _networkFromOneSeed(self) -> None:
        harness = NodeHarness(self, reactor)
        seed = await harness.startReady("seed", maxPeers=3)
        nodes = [harness.start(f"n{i}", peers=[seed.hostPort()], maxPeers=3) for i in range(4)]
        await gatherResults([run(n.whenReady()) for n in nodes])
        await gatherResults([run(n.whenLinked(3)) for n in [seed, *nodes]])
        everyone = {seed.nodeID} | {n.nodeID for n in nodes}
        self.assertEqual(len(everyone), 5)
        for n in nodes:
            self.assertLessEqual(n.links, everyone - {n.nodeID})

        # SIGKILL, then restart with no --peer: same identity, rejoins.
        victim = nodes[0]
        await victim.waitFor(
            lambda e: e.get("log_format", "").startswith("saved {count}") and e["count"] >= 3,
            "peers.json saved",
        )
        victim.signal(signal.SIGKILL)
        await victim.whenExited()
        self.assertEqual(victim.exitSignal, signal.SIGKILL)
        again = await harness.startReady("n0-again", dataDir=victim.dataDir, maxPeers=3)
        self.assertEqual(again.nodeID, victim.nodeID)
        self.assertNotEqual(again.addresses, victim.addresses)
        await run(again.whenLinked(3))
        self.assertTrue(again.links <= everyone)

        # SIGTERM: exit 0 within a few seconds; a neighbour hears why.
        leaving = nodes[1]
        neighbour = seed
        await leaving.whenLinked(1)
        heard = neighbour.waitFor(
            lambda e: (
                e.get("log_format", "").startswith("link down with")
                and e.get("peer") == leaving.nodeID
                and e.get("reason") == "shutting-down"
            ),
            "shutting-down from the stopping node",
        )
        self.assertIn(neighbour.nodeID, leaving.links)
        leaving.signal(signal.SIGTERM)
        await leaving.whenExited(timeout=10)
        self.assertTrue(exitedCleanly(leaving), (leaving.exitCode, leaving.exitSignal))
        await heard
        self.assertTrue(os.path.exists(os.path.join(leaving.dataDir, "peers.json")))

    def test_refusals(self) -> None:
        """
        A node dialling an address pinned to the wrong node ID refuses the
        link (one log line); a second node on a locked data directory exits
        non-zero with the lock message.
        """
        return run(self._refusals())

    async def _refusals(self) -> None:
        harness = NodeHarness(self, reactor)
        seed = await harness.startReady("seed")
        wrongID = generateIdentity().nodeID
        dialler = harness.start("dialler", peers=[f"appn://{wrongID}@{seed.hostPort()}"])
        twin = harness.start("twin", dataDir=seed.dataDir)
        refused = await dialler.waitFor(
            lambda e: e.get("log_format", "").startswith("refused link from"),
            "the refusal of the wrong node",
        )
        self.assertIn(wrongID, refused["text"])
        self.assertEqual(dialler.links, set())
        await twin.whenExited()
        self.assertNotEqual(twin.exitCode, 0)
        message = twin.stderr.decode("utf-8", "replace")
        self.assertIn("ERROR: Another node is already running on this data directory", message)
        self.assertNotIn("Traceback", message)
        self.assertIsNone(twin.nodeID)


class SecretsTests(TestCase):
    """
    What a node writes to its log.
    """

    timeout = 60

    def test_secretsNeverLogged(self) -> None:
        """
        After the management API has been used, neither the API token nor
        any part of the node's private key appears in the node's log.
        """
        return run(self._secretsNeverLogged())

    async def _secretsNeverLogged(self) -> None:
        from twisted.internet.utils import getProcessOutputAndValue

        harness = NodeHarness(self, reactor)
        node = await harness.startReady("quiet")
        for args in (["status"], ["peers"], ["sessions"], ["connect", "127.0.0.1:1"]):
            await getProcessOutputAndValue(
                sys.executable,
                ["-m", "appnpy.cli", "--data-dir", node.dataDir, *args],
                env=dict(os.environ),
            )
        with open(os.path.join(node.dataDir, "api-token")) as f:
            token = f.read().strip()
        with open(os.path.join(node.dataDir, "node.key")) as f:
            keyLines = [line.strip() for line in f if line.strip() and not line.startswith("-----")]
        self.assertTrue(token)
        self.assertTrue(keyLines)
        node.signal(signal.SIGTERM)
        await node.whenExited(timeout=10)
        with open(os.path.join(harness.root, "quiet.log"), encoding="utf-8", errors="replace") as f:
            log = f.read()
        self.assertIn("ready", log)
        self.assertNotIn(token, log)
        for line in keyLines:
            self.assertNotIn(line, log)
