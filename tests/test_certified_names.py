"""
Network trust mode: the CA certifies each node's CP name, so a node that
holds a real CA certificate for LAB.E cannot link, or offer names, as LAB.D.
"""

from __future__ import annotations

import os
import time

from twisted.trial.unittest import TestCase

from appnpy.errors import ConfigurationError
from appnpy.link.identity import createNetworkCA, loadOrCreateIdentity, signNodeCertificate
from appnpy.link.tls import loadTrustPolicy
from appnpy.net.directory.records import ResourceRecord
from appnpy.node import Node
from appnpy.testing import MemoryNetwork


class CertifiedNameTests(TestCase):
    def setUp(self) -> None:
        self.base = self.mktemp()
        self.caDir = os.path.join(self.base, "ca")
        createNetworkCA(self.caDir, "LAB")
        self.net = MemoryNetwork()
        # Certificates are checked for validity now: a clock at 1970 would
        # refuse every one, the honest too.
        self.net.clock.advance(time.time())
        self.addCleanup(self.net.stop)

    def member(self, certified: str, name: str | None = None) -> Node:
        dataDir = os.path.join(self.base, certified)
        loadOrCreateIdentity(dataDir)
        signNodeCertificate(self.caDir, dataDir, cpName=certified)
        return self.net.addNode(
            name or certified,
            identity=loadOrCreateIdentity(dataDir),
            trust=loadTrustPolicy("network", dataDir),
        )

    def test_uncertifiedNameRefusedLocally(self) -> None:
        """
        A node does not start under a CP name its certificate does not name.
        """
        self.assertRaises(ConfigurationError, self.member, "LAB.E", "LAB.D")

    def test_helloClaimingAnotherNameRefused(self) -> None:
        """
        A liar with a real certificate for LAB.E that says LAB.D in its
        signed Hello is refused by an honest member: no link.
        """
        honest = self.member("LAB.A")
        liar = self.member("LAB.E")
        liar.name = "LAB.D"
        self.net.connect(liar, honest)
        self.net.flush()
        self.assertNotIn(liar.nodeID, honest.links)
        self.assertNotIn(honest.nodeID, liar.links)
        other = self.member("LAB.B")
        self.net.connect(other, honest)
        self.net.flush()
        self.assertIn(other.nodeID, honest.links)

    def test_recordUnderAnotherCPNameRefused(self) -> None:
        """
        A record for C{echo:LAB.A} signed by LAB.E's key, with LAB.E's
        certificate, is refused by the name rule; LAB.A's own one passes.
        """
        a = self.member("LAB.A")
        e = self.member("LAB.E")
        self.net.link(e, a)
        self.net.flush()
        rules = a.directory.names  # type: ignore[union-attr]
        now = a.reactor.seconds()
        forged = ResourceRecord.create(e.identity, "echo:LAB.A", 1, 300, withCertificate=True)
        own = ResourceRecord.create(a.identity, "echo:LAB.A", 1, 300, withCertificate=True)
        self.assertIsNone(rules.refusal(own, now))
        why = rules.refusal(forged, now)
        self.assertIsNotNone(why)
        self.assertNotIn("no valid certificate", str(why))
