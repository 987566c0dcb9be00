"""
A neighbour of the central directory server that lies about whose
registration it sends (issue: CDS spoofing).  It speaks the real protocol
with real signatures: its own key, or the victim's message replayed.
"""

from __future__ import annotations

import attrs

from appnpy.net.directory.messages import RegisterResources
from tests.test_directory import DirectoryTestCase


class CDSSpoofingTests(DirectoryTestCase):
    def setUp(self) -> None:
        self.labs = self.lab()
        lab = self.labs
        self.cds = lab.node("LAB.CDS", cds=True)
        self.a = lab.node("LAB.A", cdsNode=self.cds.nodeID)
        self.evil = lab.node("LAB.EVIL", cdsNode=self.cds.nodeID)
        self.d = lab.node("LAB.D", cdsNode=self.cds.nodeID)
        lab.net.link(self.a, self.cds)
        self.evilLink = lab.net.link(self.evil, self.cds)
        lab.net.link(self.cds, self.d)
        self.d.directory.register("rpc:calc")
        lab.net.flush()
        self.assertIn("rpc:calc", self.cds.directory.asDict()["registered"])

    def assertStillD(self, refused: str) -> None:
        self.labs.net.flush()
        self.assertEqual(self.cds.directory.stats[refused], 1)
        self.assertIn("rpc:calc", self.cds.directory.asDict()["registered"])
        self.assertEqual(self.labs.locate(self.a, "rpc:calc").owner, self.d.nodeID)

    def send(self, msg: RegisterResources) -> None:
        self.evilLink.send(msg)
        self.labs.net.flush()

    def test_ownSignatureForAnotherOrigin(self) -> None:
        """
        A registration signed by the neighbour's own key, claiming origin D
        and carrying no records (which would wipe D's), changes nothing.
        """
        unsigned = RegisterResources(
            records=[],
            origin=self.d.nodeID,
            seq=2**62,
            public_key=self.evil.identity.publicKeyBytes,
        )
        forged = attrs.evolve(unsigned, signature=self.evil.identity.sign(unsigned.signedBytes()))
        self.send(forged)
        self.assertStillD("registrations-forged")

    def test_victimsKeyWithOwnSignature(self) -> None:
        """
        D's public key with a signature by another key does not verify.
        """
        unsigned = RegisterResources(
            records=[],
            origin=self.d.nodeID,
            seq=2**62,
            public_key=self.d.identity.publicKeyBytes,
        )
        forged = attrs.evolve(unsigned, signature=self.evil.identity.sign(unsigned.signedBytes()))
        self.send(forged)
        self.assertStillD("registrations-forged")

    def test_ownRecordsUnderOwnName(self) -> None:
        """
        The neighbour may register its own record for the same name: in open
        trust mode that makes two owners (a conflict), never a takeover of
        D's registration.
        """
        self.evil.directory.register("rpc:calc")
        self.labs.net.flush()
        registered = self.cds.directory.asDict()["registered"]["rpc:calc"]
        self.assertIn(self.d.nodeID, str(registered))

    def test_replayOfAnOlderRegistration(self) -> None:
        """
        D's own signed registration with no records, replayed after D sent a
        newer one, changes nothing (the seq must be newer).
        """
        old = RegisterResources.create(self.d.identity, [], seq=1, target=self.cds.nodeID)
        self.send(old)
        self.assertStillD("registrations-replayed")
