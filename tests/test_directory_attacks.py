"""
Hostile directory nodes speaking the real protocol with real signatures: a
neighbour of the central directory server that lies about whose
registration it sends (its own key, the victim's key, the victim's message
replayed), and a node that floods a locate with valid replies.
"""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import Message, MessageReader, decodeBody, encodeBody, encodeMessage
from appnpy.errors import ProtocolError
from appnpy.link.identity import generateIdentity
from appnpy.net.directory.messages import LocateReply, RegisterResources, newSearchID
from appnpy.net.directory.records import InvalidRecord, ResourceRecord
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


class ReplyAmplificationTests(DirectoryTestCase):
    def test_floodOfValidReplies(self) -> None:
        """
        A node that answers one locate with 50 non-final replies of 16 valid
        records each (800 records) makes the intermediate node verify and
        pass on at most the per-search cap, and the requester keep at most
        that; replies after the locate returned are dropped unread.
        """
        from appnpy.net.directory.locate import MAX_RECORDS_PER_ANSWER
        from tests.hostile.directory import amplify

        lab = self.lab()
        a, b, c = lab.line(3)
        seen = amplify(c)
        found = lab.locate(a, "rpc:calc")
        self.assertLessEqual(len(found.owners), MAX_RECORDS_PER_ANSWER)
        self.assertGreater(b.directory.stats["replies-over-cap"], 0)
        self.assertEqual(b.directory.stats["replies-over-cap"], 49)
        # After the search ended at B, more replies are dropped unread.
        [request] = seen
        records = [ResourceRecord.create(c.identity, "rpc:calc", 1, 300).toBlob()]
        for _ in range(10):
            reply = LocateReply(search_id=request.search_id, records=records, final=False)
            c.links[b.nodeID].sendControl(reply)
        lab.net.flush()
        dropped = b.directory.stats["stray-replies"] + b.directory.stats["late-replies"]
        self.assertEqual(dropped, 10)


_SAMPLE_IDS = [generateIdentity().nodeID for _ in range(3)]
_directoryMessages = st.one_of(
    st.builds(
        RegisterResources,
        records=st.lists(st.binary(max_size=64), max_size=4),
        origin=st.sampled_from(_SAMPLE_IDS),
        seq=st.integers(0, 2**63 - 1),
        public_key=st.binary(max_size=64),
        target=st.sampled_from(["", *_SAMPLE_IDS]),
        signature=st.binary(max_size=64),
    ),
    st.builds(
        LocateReply,
        search_id=st.sampled_from([newSearchID() for _ in range(3)]),
        records=st.lists(st.binary(max_size=64), max_size=4),
        final=st.booleans(),
        route=st.lists(st.sampled_from(_SAMPLE_IDS), max_size=4),
    ),
)


class DirectoryDecoderTests(SynchronousTestCase):
    @given(_directoryMessages, st.data())
    def test_roundTripAndTruncation(self, msg: Message, data: st.DataObject) -> None:
        """
        Every directory message decodes to itself; any truncation of its
        body is a ProtocolError, never anything else.
        """
        self.assertEqual(MessageReader().feed(encodeMessage(msg)), [msg])
        body = encodeBody(msg.toWire())
        cut = data.draw(st.integers(0, len(body) - 1))
        self.assertRaises(ProtocolError, decodeBody, body[:cut])

    @given(st.binary(max_size=600))
    def test_recordGarbage(self, junk: bytes) -> None:
        """
        Arbitrary bytes as a resource record are refused with InvalidRecord.
        """
        try:
            ResourceRecord.fromBlob(junk)
        except InvalidRecord:
            pass
