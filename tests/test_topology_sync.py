"""
The full sync cannot lose records: a joiner of a 1,000-record network, every
split of the sync messages, a hold too small for the sync, and property
tests of the record and message decoders.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import MessageReader, decodeCBOR, encodeBody, encodeMessage
from appnpy.errors import ProtocolError
from appnpy.net.topology import (
    MAX_RECORD_BYTES,
    BadRecord,
    TopologyDatabase,
    TopologyRecord,
    TopologySync,
    TopologyUpdate,
)
from appnpy.net.topology.database import Entry
from tests.hostile.topology import FreshIdentity, linkBody, nodeBody
from tests.test_topology import Net, databaseFor, push


def syntheticNetwork(
    count: int, chords: int = 7
) -> tuple[list[TopologyRecord], list[TopologyRecord]]:
    """
    The records of C{count} (valid, really signed) nodes in a ring with
    chords, every link announced up by both ends, and a re-issue of the
    node records (RSN 4): a database that applies the re-issue last gives
    every link record a lower FRSN than its owner's node record, the order
    that made a joiner lose links.  Returns the first issue and the re-issue.
    """
    ids = [FreshIdentity() for _ in range(count)]
    records = [
        TopologyRecord.create(f, "node", "", 2, nodeBody(f, f"SYN.N{i}")) for i, f in enumerate(ids)
    ]
    for i, f in enumerate(ids):
        for j in {(i + 1) % count, (i + chords) % count, (i - 1) % count, (i - chords) % count}:
            records.append(TopologyRecord.create(f, "link", ids[j].nodeID, 2, linkBody()))
    again = [
        TopologyRecord.create(f, "node", "", 4, nodeBody(f, f"SYN.N{i}", load=1))
        for i, f in enumerate(ids)
    ]
    return records, again


def inject(t: Net, issues: tuple[list[TopologyRecord], list[TopologyRecord]]) -> None:
    """
    Node 0 hands node 1 the first issue, then the re-issue, 200 records per
    message.
    """
    cp = t.nodes[0].links[t.id(1)]
    for records in issues:
        for i in range(0, len(records), 200):
            push(cp, records[i : i + 200])
            t.net.flush()


class JoinTests(SynchronousTestCase):
    def test_joinThousandRecords(self) -> None:
        """
        A node joining a network of over 1,000 records gets every record:
        the same digest as its neighbour, every routable link.
        """
        t = Net(3)
        t.link(0, 1)
        t.link(1, 2)
        t.settle()
        inject(t, syntheticNetwork(200))
        t.settle()
        self.assertGreaterEqual(len(t.dbs[1]), 1000)
        # (node 0 handed them over: nothing is flooded back to it)
        self.assertEqual(len(t.digests(t.dbs[1:])), 1)
        joiner = t.add("LAB.J")
        t.link(3, 2)
        t.settle()
        self.assertEqual(t.dbs[3].digest(), t.dbs[2].digest())
        self.assertEqual(len(t.dbs[3]), len(t.dbs[2]))
        links = len(list(t.dbs[2].graph().links()))
        self.assertEqual(len(list(t.dbs[3].graph().links())), links)
        self.assertGreater(t.dbs[3].stats["held"], 0)
        self.assertEqual(len(t.dbs[3].held), 0)
        self.assertIsNotNone(joiner)

    def test_holdTooSmallStillConverges(self) -> None:
        """
        With a hold far smaller than what arrives ahead of its owners' keys,
        records pushed out of it rewind the sender's FRSN and are asked for
        again: the joiner still converges.
        """
        t = Net(3, holdRecords=8)
        t.link(0, 1)
        t.link(1, 2)
        t.settle()
        inject(t, syntheticNetwork(80))
        t.settle()
        t.add("LAB.J")
        t.link(3, 2)
        t.settle()
        self.assertGreater(t.dbs[3].stats["held_dropped"], 0)
        self.assertEqual(t.dbs[3].digest(), t.dbs[2].digest())


class SplitTests(SynchronousTestCase):
    """
    The sync answer of a neighbour, cut into messages at every boundary this
    test enumerates, fed to a fresh database: it always ends up with the
    neighbour's digest and its FRSN, never past a record it could not apply.
    """

    def setUp(self) -> None:
        self.t = Net(2)
        self.t.link(0, 1)
        self.t.settle()
        inject(self.t, syntheticNetwork(8, chords=3))
        self.t.settle()
        self.sender = self.t.dbs[1]
        self.entries = sorted(self.sender.store.entries.values(), key=lambda e: e.frsn)
        self.cp = self.t.nodes[0].links[self.t.id(1)]

    def feed(self, cuts: list[int], entries: list[Entry] | None = None) -> TopologyDatabase:
        entries = entries or self.entries
        db = databaseFor(self.t.nodes[0])
        start = 0
        for a, b in zip([0, *cuts], [*cuts, len(entries)], strict=True):
            chunk = entries[a:b]
            end = chunk[-1].frsn if b < len(entries) else self.sender.frsn
            db.updateReceived(
                self.cp,
                TopologyUpdate(
                    epoch=self.sender.epoch,
                    frsn_from=start,
                    frsn_to=end,
                    records=[e.record.raw for e in chunk],
                ),
            )
            start = end
        return db

    def check(self, db: TopologyDatabase) -> None:
        theirs = {r.key: r.rsn for r in self.sender.records() if r.owner != self.t.id(0)}
        mine = {r.key: r.rsn for r in db.records() if r.owner != self.t.id(0)}
        self.assertEqual(mine, theirs)
        ns = db.flooder.neighbours[self.t.id(1)]
        self.assertEqual((ns.epoch, ns.lastFRSN), (self.sender.epoch, self.sender.frsn))

    def test_everySingleCut(self) -> None:
        """
        Two messages, cut at every position.
        """
        n = len(self.entries)
        self.assertGreater(n, 40)
        for cut in range(1, n):
            self.check(self.feed([cut]))

    def test_everyMessageSize(self) -> None:
        """
        Messages of every size from one record to all of them.
        """
        n = len(self.entries)
        for size in range(1, n + 1):
            self.check(self.feed(list(range(size, n, size))))

    def test_reversedOrder(self) -> None:
        """
        Every record before its owner's node record (the worst order), one
        per message.
        """
        worst = sorted(self.entries, key=lambda e: e.record.kind == "node")
        self.check(self.feed(list(range(1, len(worst))), worst))


# -- property tests of the decoders -----------------------------------------------

_keys = [FreshIdentity() for _ in range(4)]
rsns = st.integers(0, 2**40).map(lambda n: 2 * n)
nodeIDs = st.sampled_from([k.nodeID for k in _keys])
names = st.from_regex(r"[A-Z]{1,8}\.[A-Z]{1,8}", fullmatch=True)


@st.composite
def records(draw: Any) -> TopologyRecord:
    """
    Valid signed records of every kind, with every optional body key.
    """
    owner = draw(st.sampled_from(_keys))
    other = draw(st.sampled_from([k for k in _keys if k is not owner]))
    kind = draw(st.sampled_from(["node", "link", "end"]))
    if kind == "node":
        extra = draw(st.fixed_dictionaries({}, optional={"cert": st.binary(max_size=2048)}))
        body = nodeBody(
            owner,
            draw(names),
            resistance=draw(st.integers(0, 255)),
            load=draw(st.integers(0, 255)),
            cds=draw(st.booleans()),
            end_nodes=draw(st.lists(nodeIDs, max_size=8)),
            **extra,
        )
        return TopologyRecord.create(owner, kind, "", draw(rsns), body)
    if kind == "end":
        body = {"name": draw(names), "public_key": owner.publicKeyBytes}
        return TopologyRecord.create(owner, kind, other.nodeID, draw(rsns), body)
    body = linkBody(
        rtt_ms=draw(st.integers(0, 2**31 - 1)),
        throughput=draw(st.integers(0, 2**63 - 1)),
        cost=draw(st.integers(0, 255)),
        security=draw(st.integers(0, 255)),
        up=draw(st.booleans()),
    )
    return TopologyRecord.create(owner, kind, other.nodeID, draw(rsns), body)


epochs = st.text("0123456789abcdef", max_size=16)
frsns = st.integers(0, 2**63 - 1)
updates = st.builds(
    TopologyUpdate,
    epoch=epochs,
    frsn_from=frsns,
    frsn_to=frsns,
    records=st.lists(records().map(lambda r: r.raw), max_size=4),
)
syncs = st.builds(TopologySync, epoch=epochs, frsn=frsns)


class DecoderProperties(SynchronousTestCase):
    @settings(max_examples=60)
    @given(records())
    def test_recordRoundTrip(self, record: TopologyRecord) -> None:
        """
        A valid record decodes to itself, and its signature verifies.
        """
        back = TopologyRecord.decode(record.raw)
        self.assertEqual(back, record)
        self.assertEqual(back.body, record.body)
        key = next(k for k in _keys if k.nodeID == record.owner)
        self.assertTrue(back.verify(key.publicKeyBytes))

    @settings(max_examples=60)
    @given(records(), st.data())
    def test_mutatedRecord(self, record: TopologyRecord, data: st.DataObject) -> None:
        """
        A record with any byte changed either fails to decode with
        BadRecord, or decodes to a record whose signature fails (or, rarely,
        an equivalent one): never another exception.
        """
        i = data.draw(st.integers(0, len(record.raw) - 1))
        flip = data.draw(st.integers(1, 255))
        raw = record.raw[:i] + bytes([record.raw[i] ^ flip]) + record.raw[i + 1 :]
        try:
            back = TopologyRecord.decode(raw)
        except BadRecord:
            return
        key = next((k for k in _keys if k.nodeID == back.owner), None)
        if key is not None and back.signature == record.signature:
            self.assertFalse(back.verify(key.publicKeyBytes) and back.body != record.body)

    @settings(max_examples=100)
    @given(
        st.dictionaries(
            st.sampled_from(["kind", "owner", "subject", "rsn", "body", "sig", "x"]),
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=60),
                st.binary(max_size=70),
                st.dictionaries(
                    st.text(max_size=12),
                    st.one_of(
                        st.integers(), st.booleans(), st.binary(max_size=50), st.text(max_size=20)
                    ),
                    max_size=9,
                ),
            ),
            max_size=7,
        )
    )
    def test_anyMap(self, value: dict[str, Any]) -> None:
        """
        Any CBOR map raises BadRecord or decodes to a record within bounds.
        """
        raw = encodeBody(value)
        try:
            record = TopologyRecord.decode(raw)
        except BadRecord as e:
            self.assertIn(e.counter, ("malformed", "oversized", "odd_rsn"))
            return
        self.assertEqual(record.rsn % 2, 0)
        self.assertLessEqual(len(record.raw), MAX_RECORD_BYTES)

    @given(st.binary(max_size=400))
    def test_garbage(self, junk: bytes) -> None:
        """
        Arbitrary bytes raise BadRecord, nothing else.
        """
        try:
            TopologyRecord.decode(junk)
        except BadRecord:
            pass

    @settings(max_examples=40)
    @given(st.one_of(updates, syncs))
    def test_messageRoundTrip(self, msg: object) -> None:
        """
        TopologyUpdate and TopologySync decode to equal messages.
        """
        self.assertEqual(MessageReader().feed(encodeMessage(msg)), [msg])  # type: ignore[arg-type]

    @settings(max_examples=40)
    @given(st.one_of(updates, syncs), st.data())
    def test_messageFieldsMangled(self, msg: Any, data: st.DataObject) -> None:
        """
        A topology message with any field replaced by another value is
        refused with ProtocolError or decodes to a message (never anything
        else).
        """
        wire = msg.toWire()
        field = data.draw(st.sampled_from(sorted(wire)))
        wire[field] = data.draw(
            st.one_of(
                st.none(),
                # 2**64 and beyond encode as a bignum tag, which every
                # decoder refuses (tests/test_messages.py TagTests).
                st.integers(-1, 2**64 - 1),
                st.text(max_size=40),
                st.lists(st.binary(max_size=5), max_size=3),
            )
        )
        body = encodeBody(wire)
        try:
            from appnpy.cp.messages import decodeBody

            decodeBody(body)
        except ProtocolError:
            pass
        decodeCBOR(body, 8)
