"""
Search on an in-memory network of files nodes: signed hits found two hops
away, forged and altered hits dropped, results capped, searches limited per
peer, and the Napster-style index at the central directory server.
"""

from __future__ import annotations

import os
from typing import Any

import cbor2
from appnpy_files import hits as H
from appnpy_files.cds import CDSIndex, CDSRefused
from appnpy_files.hits import Hit, makeHit, verifyHit
from appnpy_files.plugin import FilesPlugin
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from appnpy.api import IKeywordSearchable, implementer

from .memnet import FilesNet


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class Collector:
    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.batches = 0

    def __call__(self, batch: list[Hit]) -> None:
        self.batches += 1
        self.hits.extend(batch)


class ThreeNodes:
    """
    A - B - C in a line; C shares a directory with two files.
    """

    def build(self, cds: bool = False) -> None:
        self.fn = FilesNet(self)
        kwargs: dict[str, Any] = {}
        self.b = self.fn.addNode("LAB.B", cds=cds)
        if cds:
            kwargs["cdsNode"] = self.b.nodeID
        self.a = self.fn.addNode("LAB.A", **kwargs)
        self.c = self.fn.addNode("LAB.C", **kwargs)
        self.fn.link(self.a, self.b)
        self.fn.link(self.c, self.b)
        self.shared = self.fn.directory("music")
        write(os.path.join(self.shared, "jazz", "Blue Train.flac"), b"coltrane" * 1000)
        write(os.path.join(self.shared, "Kind of Blue.mp3"), b"davis" * 1000)
        plugin = self.fn.plugin(self.c)
        assert plugin.serve is not None
        plugin.serve.shares.add("music", self.shared)
        self.fn.settle()
        self.fn.indexed(self.c)

    def search(self, node: Any, words: list[str]) -> Collector:
        got = Collector()
        searcher = self.fn.plugin(node).searcher
        assert searcher is not None
        self.fn.wait(searcher.search(words, got))
        return got


class SearchTests(ThreeNodes, TestCase):
    def setUp(self) -> None:
        self.build()

    def test_two_hops(self) -> None:
        """A finds C's file by a word of its path, two hops away, with a verified signature."""
        got = self.search(self.a, ["blue", "TRAIN"])
        self.assertEqual(len(got.hits), 1)
        hit = got.hits[0]
        self.assertEqual(hit.node, self.c.nodeID)
        self.assertEqual((hit.share, hit.path), ("music", "jazz/Blue Train.flac"))
        self.assertEqual(hit.size, 8000)

    def test_by_hash(self) -> None:
        """A content hash is a keyword too: it finds the file exactly."""
        import hashlib

        sha = hashlib.sha256(b"davis" * 1000).hexdigest()
        got = self.search(self.a, [sha])
        self.assertEqual([h.path for h in got.hits], ["Kind of Blue.mp3"])

    def test_protected_share_not_searched(self) -> None:
        """Files of a password-protected share are never search hits."""
        from appnpy_files.shares import hashPassword

        secret = self.fn.directory("secret")
        write(os.path.join(secret, "blueprints.pdf"), b"x" * 100)
        plugin = self.fn.plugin(self.c)
        assert plugin.serve is not None
        plugin.serve.shares.add("secret", secret, hashPassword("pw", n=2**4))
        self.fn.settle()
        self.fn.indexed(self.c)
        got = self.search(self.a, ["blueprints"])
        self.assertEqual(got.hits, [])

    def test_resources(self) -> None:
        """Each share is a files:<share> resource, located from another node."""
        self.assertEqual(self.fn.plugin(self.c).resources(), ["files:music"])
        d = self.a.locate("files:music")
        owners = self.fn.wait(d)
        self.assertEqual(list(owners), [self.c.nodeID])

    def test_results_capped(self) -> None:
        """A node answers at most search-hits hits to one search."""
        for i in range(80):
            write(os.path.join(self.shared, "many", f"blue-{i}.txt"), b"%d" % i)
        self.fn.plugin(self.c).serve.index.rescan()  # type: ignore[union-attr]
        self.fn.settle()
        self.fn.indexed(self.c)
        got = self.search(self.a, ["many/blue"])
        self.assertEqual(len(got.hits), 50)

    def test_search_rate_limited(self) -> None:
        """Past its rate, a node answers searches with nothing (and counts them)."""
        plugin = self.fn.plugin(self.c)
        answered = [len(plugin.search(["blue"])) for _ in range(200)]
        self.assertEqual(answered[0], 2)
        self.assertIn(0, answered)
        self.assertGreater(plugin.searchesRefused, 0)


@implementer(IKeywordSearchable)
class HostilePlugin(FilesPlugin):
    """
    A files node that answers every search with lies: an altered copy of a
    real hit, a genuine hit of another node passed off as its own answer, a
    hit signed for another context, and its own hit claiming another node.
    """

    def __init__(self, victim: dict[str, Any]) -> None:
        super().__init__()
        self.victim = victim

    def search(self, keywords: list[str]) -> list[dict[str, object]]:
        assert self.node is not None
        node = self.node
        altered = dict(self.victim, size=self.victim["size"] + 1)
        stolen = dict(self.victim)  # genuine, but relayed as this node's answer
        fields = {
            k: self.victim[k] for k in ("v", "node", "share", "path", "size", "sha256", "mtime")
        }
        fields["node"] = node.nodeID
        fields["path"] = "blue/malware.exe"
        wrongContext = {
            **fields,
            "key": node.publicKey,
            "sig": node.sign("appnpy-files-other", cbor2.dumps(fields, canonical=True)),
        }
        claimed = makeHit(node, "music", "blue/fake.flac", 1, "0" * 64, 0)
        claimed["node"] = self.victim["node"]
        return [altered, stolen, wrongContext, claimed]


class HostileTests(ThreeNodes, TestCase):
    def setUp(self) -> None:
        self.build()

    def test_forged_hits_dropped(self) -> None:
        """A hostile node's forged, altered, replayed and mis-signed hits are all dropped; the real one stays."""
        real = self.fn.plugin(self.c).search(["blue", "train"])[0]
        hostile = HostilePlugin(dict(real))
        hostile.configure({})
        d = self.fn.net.addNode(
            "LAB.EVIL", plugins=[hostile], dataDir=os.path.join(self.fn.root, "evil")
        )
        self.fn.link(d, self.b)
        searcher = self.fn.plugin(self.a).searcher
        assert searcher is not None
        got = Collector()
        self.fn.wait(searcher.search(["blue"], got))
        # The altered, relayed and mis-signed hits are gone; the hit the
        # hostile node signed in the victim's name stands only as its own
        # (the directory names the answering node, and the signature is its).
        self.assertEqual(
            {(h.node, h.path) for h in got.hits},
            {
                (self.c.nodeID, "jazz/Blue Train.flac"),
                (self.c.nodeID, "Kind of Blue.mp3"),
                (d.nodeID, "blue/fake.flac"),
            },
        )
        self.assertGreaterEqual(searcher.rejectedHits, 3)


class CDSTests(ThreeNodes, TestCase):
    def setUp(self) -> None:
        self.build(cds=True)

    def test_cds_answers_without_broadcast(self) -> None:
        """With a CDS, C uploads its signed hits there and A's search is answered by the CDS, with no broadcast."""
        pc = self.fn.plugin(self.c)
        pb = self.fn.plugin(self.b)
        self.fn.settle(lambda: pb.cdsIndex is not None and pb.cdsIndex.nodeHits(self.c.nodeID) == 2)
        searcher = self.fn.plugin(self.a).searcher
        assert searcher is not None
        got = self.search(self.a, ["blue"])
        self.assertEqual(len(got.hits), 2)
        self.assertEqual(searcher.broadcasts, 0)
        self.assertEqual(searcher.cdsAnswers, 1)
        self.assertIsNotNone(pc.cdsClient)

    def test_cds_miss_broadcasts(self) -> None:
        """A word the CDS index does not know falls back to the broadcast."""
        searcher = self.fn.plugin(self.a).searcher
        assert searcher is not None
        self.search(self.a, ["nothing-like-this"])
        self.assertEqual(searcher.broadcasts, 1)


class CDSIndexTests(TestCase):
    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from appnpy.link.identity import generateIdentity

        self.clock = Clock()
        self.index = CDSIndex(self.clock, maxPerNode=3, maxTotal=5, ttl=100)
        self.nodes = [_SigningNode(generateIdentity()) for _ in range(3)]

    def hits(self, node: Any, n: int, word: str = "song") -> list[dict[str, Any]]:
        return [makeHit(node, "music", f"{word}-{i}.mp3", i, f"{i:064x}", 0) for i in range(n)]

    def test_replace_on_final(self) -> None:
        """An upload replaces the node's hits only when final."""
        a = self.nodes[0]
        self.index.upload(a.nodeID, self.hits(a, 2), final=True)
        self.index.upload(a.nodeID, self.hits(a, 1, "new"), final=False)
        self.assertEqual(len(self.index.search(["song"], 10)), 2)
        self.index.upload(a.nodeID, [], final=True)
        self.assertEqual(self.index.search(["song"], 10), [])
        self.assertEqual(len(self.index.search(["new"], 10)), 1)

    def test_caps(self) -> None:
        """Per-node and total caps hold; a full index refuses a new node."""
        a, b, c = self.nodes
        self.index.upload(a.nodeID, self.hits(a, 10), final=True)
        self.assertEqual(self.index.nodeHits(a.nodeID), 3)
        self.index.upload(b.nodeID, self.hits(b, 10), final=True)
        self.assertEqual(self.index.total(), 5)
        with self.assertRaises(CDSRefused) as e:
            self.index.upload(c.nodeID, self.hits(c, 1), final=True)
        self.assertEqual(e.exception.code, "unavailable")

    def test_only_own_hits(self) -> None:
        """A node cannot upload hits signed by another node."""
        a, b, _ = self.nodes
        with self.assertRaises(CDSRefused):
            self.index.upload(a.nodeID, self.hits(b, 1), final=True)
        self.assertEqual(self.index.total(), 0)

    def test_ttl(self) -> None:
        """A node that stops uploading is forgotten after the TTL."""
        a = self.nodes[0]
        self.index.upload(a.nodeID, self.hits(a, 2), final=True)
        self.clock.advance(101)
        self.assertEqual(self.index.search(["song"], 10), [])

    def test_rate_limited_per_peer(self) -> None:
        """index-search is rate-limited per peer: slow-down with a retry delay."""
        a, b, _ = self.nodes
        for _ in range(20):
            self.index.searchFor(a.nodeID, ["x"])
        with self.assertRaises(CDSRefused) as e:
            self.index.searchFor(a.nodeID, ["x"])
        self.assertEqual(e.exception.code, "slow-down")
        self.assertGreaterEqual(e.exception.retryAfter or 0, 1)
        self.index.searchFor(b.nodeID, ["x"])  # another peer is not affected


class _SigningNode:
    def __init__(self, identity: Any) -> None:
        self.identity = identity
        self.nodeID = identity.nodeID
        self.publicKey = identity.publicKeyBytes

    def sign(self, context: str, data: bytes) -> bytes:
        from appnpy.link.identity import pluginSignedBytes

        return self.identity.sign(pluginSignedBytes(context, data))  # type: ignore[no-any-return]


class HitTests(TestCase):
    def setUp(self) -> None:
        from appnpy.link.identity import generateIdentity

        self.node = _SigningNode(generateIdentity())

    def test_round_trip(self) -> None:
        """A hit made by a node verifies, and names the node."""
        raw = makeHit(self.node, "music", "a/b.mp3", 10, "a" * 64, 5)
        hit = verifyHit(raw, self.node.nodeID)
        self.assertEqual(hit, Hit(self.node.nodeID, "music", "a/b.mp3", 10, "a" * 64, 5))

    def test_any_field_altered(self) -> None:
        """Changing any signed field, the key or the signature makes the hit invalid."""
        raw = makeHit(self.node, "music", "a/b.mp3", 10, "a" * 64, 5)
        for key, value in [
            ("share", "other"),
            ("path", "a/c.mp3"),
            ("size", 11),
            ("sha256", "b" * 64),
            ("mtime", 6),
            ("sig", b"x" * 64),
            ("v", 2),
        ]:
            self.assertIsNone(verifyHit(dict(raw, **{key: value})), key)
        self.assertIsNone(verifyHit(raw, "b" * 52))

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.text(max_size=8),
            st.one_of(
                st.integers(),
                st.text(max_size=30),
                st.binary(max_size=80),
                st.none(),
                st.lists(st.integers(), max_size=3),
            ),
            max_size=12,
        )
    )
    def test_any_map_is_safe(self, raw: dict[str, Any]) -> None:
        """Any map at all is either a valid hit or None, never an exception."""
        self.assertIsNone(verifyHit(raw))

    @settings(max_examples=100, deadline=None)
    @given(st.text(min_size=1, max_size=200), st.integers(0, 2**63 - 1))
    def test_paths_round_trip(self, path: str, size: int) -> None:
        """Any path a hit can carry round-trips; bad ones are refused at verification, not later."""
        raw = makeHit(self.node, "music", path, size, "c" * 64, 0)
        hit = verifyHit(raw)
        if hit is not None:
            self.assertEqual((hit.path, hit.size), (path, size))
        else:
            self.assertTrue(not H._validPath(path) or len(cbor2.dumps(raw)) > H.MAX_HIT)


del Deferred
