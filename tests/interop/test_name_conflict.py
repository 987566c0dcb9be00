"""
Two real C{twist appnnode} processes of an open network that both call
themselves LAB.D: a third node sees the conflict in C{appn locate}, and a
session by the name is refused, naming both node IDs.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.harness import NodeHarness
from tests.interop.test_network import appn, topology


class NameConflictProcessTests(TestCase):
    timeout = 60

    def test_sameCPName(self) -> None:
        return Deferred.fromCoroutine(self._sameCPName())

    async def _sameCPName(self) -> None:
        harness = NodeHarness(self, reactor)
        a = await harness.startReady("a", extra=["--name", "LAB.A"])
        converged = topology(a, 3)
        d1 = harness.start("d1", peers=[a.hostPort()], maxPeers=1, extra=["--name", "LAB.D"])
        d2 = harness.start("d2", peers=[a.hostPort()], maxPeers=1, extra=["--name", "LAB.D"])
        await d1.whenReady()
        await d2.whenReady()
        await converged
        code, found, err = await appn(a, "locate", "node:LAB.D")
        self.assertEqual(code, 1, err)
        self.assertTrue(found["conflict"], found)
        self.assertEqual(
            sorted(o["node_id"] for o in found["owners"]), sorted([d1.nodeID, d2.nodeID])
        )
        out, _, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "appnpy.cli", "--data-dir", a.dataDir, "locate", "node:LAB.D"],
            env=dict(os.environ),
        )
        self.assertEqual(code, 1)
        self.assertIn(b"CONFLICT", out)
        code, echo, err = await appn(a, "echo", "LAB.D", "--count", "1")
        self.assertNotEqual(code, 0)
        self.assertEqual(echo["error"], "ambiguous-name", echo)
        self.assertIn(d1.nodeID, echo["message"])
        self.assertIn(d2.nodeID, echo["message"])
