"""
Two nodes of an open network that both call themselves LAB.D (issue: name
squatting).  Both are real nodes with real keys; neither is believed over
the other: the conflict is reported, and a session by the name is refused.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from appnpy.errors import SessionRefused
from appnpy.testing import MemoryNetwork


class NameConflictTests(TestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.addCleanup(self.net.stop)
        self.a = self.net.addNode("LAB.A")
        b = self.net.addNode("LAB.B")
        self.d1 = self.net.addNode("LAB.D")
        self.d2 = self.net.addNode("LAB.D")
        self.net.link(self.a, b)
        self.net.link(b, self.d1)
        self.net.link(b, self.d2)
        self.net.flush(advance=10)

    def test_locateListsEveryOwner(self) -> None:
        """
        Locating C{node:LAB.D} finds both owners: a conflict.
        """
        d = Deferred.fromCoroutine(self.a.directory.locate("node:LAB.D"))
        self.net.flush()
        found = self.successResultOf(d)
        self.assertTrue(found.conflict)
        self.assertEqual(sorted(found.owners), sorted([self.d1.nodeID, self.d2.nodeID]))

    def test_sessionByAmbiguousNameRefused(self) -> None:
        """
        A session to C{LAB.D} is refused with C{ambiguous-name}, the detail
        naming both node IDs; a session by node ID still works.
        """
        d = self.a.openSession("LAB.D", "echo", lambda info: Protocol())
        self.net.flush()
        error = self.failureResultOf(d, SessionRefused).value
        self.assertEqual(error.reason, "ambiguous-name")
        self.assertIn(self.d1.nodeID, str(error))
        self.assertIn(self.d2.nodeID, str(error))
        ok = self.a.openSession(self.d2.nodeID, "echo", lambda info: Protocol())
        self.net.flush()
        self.successResultOf(ok)
