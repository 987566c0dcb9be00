"""
Tests for L{appnpy.net.peers}: signed address records, peer exchange, keeping
max-peers links, backoff, shedding, persistence and admission control, on
the in-memory network harness driven by one Clock.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import shutil
import socket
import tempfile
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import TestCase

from appnpy.cp.messages import decodeBody, encodeMessage
from appnpy.errors import Reason
from appnpy.link.identity import generateIdentity
from appnpy.link.tls import LinkAddress
from appnpy.net.addresses import MAX_RECORD_SIZE, AddressRecord, BadAddressRecord, PeerAddresses
from appnpy.net.peers import PEERS_FILE, PeerManager
from appnpy.node import Node
from appnpy.testing import MemoryLink, MemoryNetwork


class PeerNet:
    """
    A MemoryNetwork whose nodes each run a PeerManager and pretend to
    listen at 10.0.0.<n>:7700; dialling such an address makes an in-memory
    connection (a missing one is refused).
    """

    def __init__(self, testCase: TestCase) -> None:
        self.net = MemoryNetwork()
        self.clock = self.net.clock
        self.byHost: dict[str, Node] = {}
        self.managers: dict[str, PeerManager] = {}
        self.hostOf: dict[str, str] = {}
        self.dials: list[tuple[Node, LinkAddress]] = []
        testCase.addCleanup(self.stop)

    def add(
        self,
        name: str,
        maxPeers: int = 3,
        bootstrap: tuple[str, ...] = (),
        dataDir: str | None = None,
        identity: Any = None,
        **kwargs: Any,
    ) -> Node:
        node = self.net.addNode(name, identity=identity)
        host = f"10.0.0.{len(self.byHost) + 1}"
        self.byHost[host] = node
        self.hostOf[node.nodeID] = host
        own = [f"appn://{node.nodeID}@{host}:7700"]
        manager = PeerManager(
            node,
            dataDir=dataDir,
            bootstrap=bootstrap,
            maxPeers=maxPeers,
            rng=random.Random(len(self.byHost)),
            dial=lambda address: self.dial(node, address),
            addresses=lambda: own,
            **kwargs,
        )
        manager.setServiceParent(node)
        self.managers[node.nodeID] = manager
        return node

    def address(self, node: Node, pinned: bool = False) -> str:
        host = self.hostOf[node.nodeID]
        return f"appn://{node.nodeID}@{host}:7700" if pinned else f"{host}:7700"

    def dial(self, dialer: Node, address: LinkAddress) -> Deferred[Any]:
        self.dials.append((dialer, address))
        listener = self.byHost.get(address.host)
        if listener is None or listener.shuttingDown:
            return fail(ConnectionRefusedError(str(address)))
        port = 40000 + len(self.net.links) * 2
        serverAddr = IPv4Address("TCP", address.host, 7700)
        clientAddr = IPv4Address("TCP", self.hostOf[dialer.nodeID], port)
        server = listener.serverFactory().buildProtocol(clientAddr)
        client = dialer.clientFactory(address).buildProtocol(serverAddr)
        serverIO = FakeTransport(
            server, isServer=True, hostAddress=serverAddr, peerAddress=clientAddr
        )
        clientIO = FakeTransport(
            client, isServer=False, hostAddress=clientAddr, peerAddress=serverAddr
        )
        pump = connect(server, serverIO, client, clientIO, greet=False, clock=self.clock)
        self.net.links.append(MemoryLink(dialer, listener, pump))
        return Deferred.fromCoroutine(dialer.whenLinkActive(client.wrappedProtocol))

    def flush(self, advance: float = 0.0) -> None:
        self.net.flush(advance)

    def run(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            self.flush(step)

    def stop(self) -> None:
        for node in self.net.nodes:
            if node.running:
                node.stopService()
                self.flush()
                self.flush(10)


def linkedIDs(node: Node) -> set[str]:
    return set(node.links)


class AddressRecordTests(TestCase):
    """
    Address records verify only when signed by the node they describe.
    """

    def setUp(self) -> None:
        self.identity = generateIdentity()
        self.address = f"appn://{self.identity.nodeID}@192.0.2.1:7700"

    def test_roundTrip(self) -> None:
        """
        A record made with C{create} decodes to the same fields.
        """
        record = AddressRecord.create(self.identity, [self.address], 42)
        decoded = AddressRecord.fromBytes(record.raw)
        self.assertEqual(decoded, record)
        self.assertEqual(decoded.addresses, (self.address,))
        self.assertEqual(decoded.seq, 42)

    def _reencode(self, record: AddressRecord, **changes: Any) -> bytes:
        body = cbor2.loads(record.raw)
        body.update(changes)
        return cbor2.dumps(body, canonical=True)

    def test_alteredAddressRejected(self) -> None:
        """
        Changing the addresses of a signed record breaks its signature.
        """
        record = AddressRecord.create(self.identity, [self.address], 1)
        forged = self._reencode(
            record, addresses=[f"appn://{self.identity.nodeID}@203.0.113.9:7700"]
        )
        self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, forged)

    def test_signedByAnotherNodeRejected(self) -> None:
        """
        A record naming node A but signed by node B's key does not verify,
        whether it carries A's key (bad signature) or B's (key mismatch).
        """
        other = generateIdentity()
        mine = AddressRecord.create(self.identity, [self.address], 1)
        theirs = AddressRecord.create(other, [f"appn://{other.nodeID}@192.0.2.2:1"], 1)
        withMyKey = self._reencode(mine, signature=theirs.signature)
        self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, withMyKey)
        withTheirKey = self._reencode(
            theirs, node_id=self.identity.nodeID, addresses=[self.address]
        )
        e = self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, withTheirKey)
        self.assertIn("public key", str(e))

    def test_addressNotPinnedRejected(self) -> None:
        """
        Every address must be pinned to the record's own node ID.
        """
        other = generateIdentity()
        for address in ["192.0.2.1:7700", f"appn://{other.nodeID}@192.0.2.1:7700"]:
            record = AddressRecord.create(self.identity, [address], 1)
            self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, record.raw)

    def test_limits(self) -> None:
        """
        Oversized records, extra keys and non-canonical encodings are refused.
        """
        record = AddressRecord.create(self.identity, [self.address], 1)
        self.assertRaises(
            BadAddressRecord, AddressRecord.fromBytes, b"\x00" * (MAX_RECORD_SIZE + 1)
        )
        self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, self._reencode(record, x=1))
        body = cbor2.loads(record.raw)
        reordered = dict(reversed(list(body.items())))
        self.assertNotEqual(cbor2.dumps(reordered), record.raw)
        self.assertRaises(BadAddressRecord, AddressRecord.fromBytes, cbor2.dumps(reordered))

    def test_messageCaps(self) -> None:
        """
        PeerAddresses carries at most 64 records of at most 2 KiB each.
        """
        record = AddressRecord.create(self.identity, [self.address], 1)
        msg = PeerAddresses(records=[record.raw] * 64)
        self.assertEqual(decodeBody(encodeMessage(msg)[4:]), msg)
        from appnpy.errors import ProtocolError

        self.assertRaises(ProtocolError, PeerAddresses, records=[record.raw] * 65)
        self.assertRaises(ProtocolError, PeerAddresses, records=[b"x" * 2049])

    @given(st.binary(max_size=300))
    def test_garbageNeverCrashes(self, data: bytes) -> None:
        """
        Arbitrary bytes are a BadAddressRecord, never another exception.
        """
        try:
            AddressRecord.fromBytes(data)
        except BadAddressRecord:
            pass


class PeerExchangeTests(TestCase):
    """
    Nodes learn each other from a seed and keep max-peers links.
    """

    def test_exchange(self) -> None:
        """
        Two nodes that only know a seed learn each other's signed records
        through it and link to each other.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED")
        a = pn.add("LAB.A", bootstrap=(pn.address(seed),))
        pn.flush()
        b = pn.add("LAB.B", bootstrap=(pn.address(seed),))
        pn.flush()
        pn.flush(1)
        self.assertEqual(linkedIDs(a), {seed.nodeID, b.nodeID})
        self.assertEqual(linkedIDs(b), {seed.nodeID, a.nodeID})
        self.assertIn(b.nodeID, pn.managers[a.nodeID].records)
        self.assertEqual(
            pn.managers[a.nodeID].records[b.nodeID].addresses, (pn.address(b, pinned=True),)
        )

    def test_forgedRecordDropped(self) -> None:
        """
        A record a neighbour forged for another node is dropped (one log
        line), the genuine ones in the same message are learned, and the
        link stays up.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED")
        a = pn.add("LAB.A", bootstrap=(pn.address(seed),))
        pn.flush()
        victim, honest = generateIdentity(), generateIdentity()
        good = AddressRecord.create(honest, [f"appn://{honest.nodeID}@10.9.9.9:7700"], 5)
        real = AddressRecord.create(victim, [f"appn://{victim.nodeID}@10.9.9.8:7700"], 5)
        body = cbor2.loads(real.raw)
        body["addresses"] = [f"appn://{victim.nodeID}@10.6.6.6:7700"]
        forged = cbor2.dumps(body, canonical=True)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        a.links[seed.nodeID].send(PeerAddresses(records=[forged, good.raw]))
        pn.flush()
        records = pn.managers[seed.nodeID].records
        self.assertNotIn(victim.nodeID, records)
        self.assertIn(honest.nodeID, records)
        self.assertIn(seed.nodeID, a.links)
        warnings = [e for e in events if "invalid address records" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["count"], 1)

    def test_maxPeersKept(self) -> None:
        """
        Six nodes bootstrapping from one seed each reach max-peers links,
        dial no more than that, and no node exceeds max-peers + slack.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED", maxPeers=2)
        nodes = []
        for i in range(6):
            nodes.append(pn.add(f"LAB.N{i}", maxPeers=2, bootstrap=(pn.address(seed),)))
            pn.flush()
        pn.run(60)
        for node in [seed, *nodes]:
            self.assertGreaterEqual(len(node.links), 2, node.name)
            self.assertLessEqual(len(node.links), 2 + 2, node.name)
            dialled = [cp for cp in node.links.values() if cp.isDialer]
            self.assertLessEqual(len(dialled), 2, node.name)

    def test_configuredPeerDialledWhenInboundFillsMaxPeers(self) -> None:
        """
        Nodes of a line started at once: B's configured peer A is not
        listening yet, and C's inbound link then fills B's max-peers; B
        still dials A (with backoff) once A listens, so the line joins up
        instead of splitting in two.
        """
        pn = PeerNet(self)
        b = pn.add("LAB.B", maxPeers=1, bootstrap=("10.0.0.3:7700",))  # A's, to come
        c = pn.add("LAB.C", maxPeers=1, bootstrap=(pn.address(b),))
        pn.flush()
        self.assertEqual(linkedIDs(b), {c.nodeID})
        a = pn.add("LAB.A", maxPeers=1, slack=0)
        self.assertEqual(pn.address(a), "10.0.0.3:7700")
        pn.run(30)
        self.assertEqual(linkedIDs(b), {a.nodeID, c.nodeID})
        self.assertEqual(linkedIDs(c), {b.nodeID})

    def test_shedding(self) -> None:
        """
        A full seed refuses a newcomer with reason busy, but only after
        sending it the addresses it knows, so the newcomer links elsewhere.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED", maxPeers=1, slack=0)
        a = pn.add("LAB.A", maxPeers=2, bootstrap=(pn.address(seed),))
        pn.flush()
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        b = pn.add("LAB.B", maxPeers=1, bootstrap=(pn.address(seed),))
        pn.flush()
        pn.run(5)
        self.assertEqual(linkedIDs(seed), {a.nodeID})
        self.assertEqual(linkedIDs(b), {a.nodeID})
        self.assertIn(a.nodeID, pn.managers[b.nodeID].records)
        refusals = [
            e
            for e in events
            if e.get("log_format", "").startswith("link to {peer} refused")
            and e.get("reason") == Reason.BUSY
        ]
        self.assertTrue(refusals)

    def test_lostLinkRedialledWithBackoff(self) -> None:
        """
        A lost link is redialled, not at once but after the backoff delay.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED")
        a = pn.add("LAB.A", bootstrap=(pn.address(seed),))
        pn.flush()
        manager = pn.managers[a.nodeID]
        # Only A knows where the other listens (the seed learned A's record,
        # but keep it from redialling so the test watches A alone).
        pn.managers[seed.nodeID].records.clear()

        def dialsByA() -> int:
            return len([d for d in pn.dials if d[0] is a])

        dialsBefore = dialsByA()
        pn.net.links[-1].cut()
        pn.flush()
        self.assertEqual(linkedIDs(a), set())
        self.assertEqual(dialsByA(), dialsBefore)
        state = manager._backoff[seed.nodeID]
        self.assertEqual(state.attempts, 1)
        wait = state.notBefore - pn.clock.seconds()
        self.assertTrue(0.5 <= wait <= 1.0, wait)
        pn.flush(wait - 0.01)
        self.assertEqual(dialsByA(), dialsBefore)
        pn.flush(0.02)
        self.assertEqual(dialsByA(), dialsBefore + 1)
        self.assertEqual(linkedIDs(a), {seed.nodeID})

    def test_failedDialsBackOff(self) -> None:
        """
        An unreachable peer is retried at growing intervals, capped.
        """
        pn = PeerNet(self)
        a = pn.add("LAB.A", bootstrap=("10.0.0.99:7700",), backoffCap=8.0)
        pn.flush()
        pn.run(60, step=0.25)
        # Dials to the missing host happened at roughly 0, 0.5-1, +1-2, +2-4, +4-8, +4-8...
        attempts = [d for d in pn.dials if d[0] is a]
        self.assertGreater(len(attempts), 5)
        self.assertLess(len(attempts), 20)
        state = pn.managers[a.nodeID]._backoff["addr:10.0.0.99:7700"]
        self.assertEqual(state.attempts, len(attempts))

    def test_backoffSchedule(self) -> None:
        """
        Delays double from the base up to the cap, each drawn from the upper
        half of its ceiling; a seeded generator repeats the schedule.
        """
        node = Node(Clock(), generateIdentity())
        one = PeerManager(node, rng=random.Random(7), backoffBase=1.0, backoffCap=300.0)
        two = PeerManager(node, rng=random.Random(7), backoffBase=1.0, backoffCap=300.0)
        for attempt in range(1, 15):
            ceiling = min(300.0, 2.0 ** (attempt - 1))
            delay = one.backoffDelay(attempt)
            self.assertTrue(ceiling / 2 <= delay <= ceiling, (attempt, delay))
            self.assertEqual(delay, two.backoffDelay(attempt))

    def test_backoffBounded(self) -> None:
        """
        Nodes that link in and leave without a known address leave no
        backoff entry behind (before, one per node ID ever lost, for ever);
        an entry for a node whose record is forgotten goes with it.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED", maxPeers=50)
        manager = pn.managers[seed.nodeID]
        for i in range(30):
            passer = pn.net.addNode(f"LAB.P{i}")
            pn.net.link(passer, seed)
            pn.flush()
            passer.stopService()
            pn.flush()
            self.assertNotIn(passer.nodeID, seed.links)
        pn.flush(1)
        self.assertEqual(manager._backoff, {})
        # A known node that fails is backed off, until its record goes.
        other = generateIdentity()
        manager.records[other.nodeID] = AddressRecord.create(
            other, [f"appn://{other.nodeID}@10.9.9.9:7700"], 1
        )
        manager.maintain()
        pn.flush()
        self.assertIn(other.nodeID, manager._backoff)
        del manager.records[other.nodeID]
        pn.flush(manager.tickInterval)
        self.assertNotIn(other.nodeID, manager._backoff)

    def test_inboundSlackConfigured(self) -> None:
        """
        --inbound-slack reaches the peer manager that sheds inbound links.
        """
        from appnpy.node import buildNode
        from appnpy.ops.config import NodeConfig

        for slack in (0, 5):
            node = buildNode(
                Clock(), NodeConfig(dataDir=None, api=None, inboundSlack=slack), generateIdentity()
            )
            manager = node.getServiceNamed("peers")
            self.assertEqual(manager.slack, slack)

    def test_wildcardAddressSubstituted(self) -> None:
        """
        A node listening on 0.0.0.0 advertises, to each neighbour, the local
        address of the link to it.
        """
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED")
        a = pn.add("LAB.A", bootstrap=(pn.address(seed),))
        pn.flush()
        manager = pn.managers[a.nodeID]
        manager._addresses = lambda: [f"appn://{a.nodeID}@0.0.0.0:7700"]
        record = manager.ownRecord(a.links[seed.nodeID])
        assert record is not None
        self.assertEqual(record.addresses, (f"appn://{a.nodeID}@10.0.0.2:7700",))
        self.assertIsNone(manager.ownRecord(None))


class PersistenceTests(TestCase):
    """
    Known peers survive a restart in peers.json.
    """

    def test_restartRejoins(self) -> None:
        """
        A node restarted with the same identity and data directory but no
        bootstrap peers links again to the nodes it knew.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        pn = PeerNet(self)
        seed = pn.add("LAB.SEED")
        identity = generateIdentity()
        a = pn.add("LAB.A", bootstrap=(pn.address(seed),), dataDir=dataDir, identity=identity)
        pn.flush()
        b = pn.add("LAB.B", bootstrap=(pn.address(seed),))
        pn.flush()
        pn.flush(5)
        with open(os.path.join(dataDir, PEERS_FILE)) as f:
            saved = json.load(f)
        self.assertEqual(len(saved["records"]), 2)
        self.assertEqual(
            [n for n in os.listdir(dataDir) if n.endswith(".tmp")], [], "temporary files left"
        )
        a.stopService()
        pn.flush()
        pn.flush(10)
        stopped = pn.managers[a.nodeID]
        self.assertFalse(stopped.running)
        self.assertIsNone(stopped._tick)
        self.assertIsNone(stopped._saveTimer)
        again = pn.add("LAB.A", dataDir=dataDir, identity=identity)
        pn.flush()
        self.assertEqual(linkedIDs(again), {seed.nodeID, b.nodeID})

    def test_tamperedFileIgnored(self) -> None:
        """
        Records in peers.json are verified again on load; a damaged file is
        ignored rather than stopping the node.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        other = generateIdentity()
        record = AddressRecord.create(other, [f"appn://{other.nodeID}@10.1.1.1:7700"], 9)
        body = cbor2.loads(record.raw)
        body["seq"] = 10
        import base64

        bad = base64.b64encode(cbor2.dumps(body, canonical=True)).decode()
        good = base64.b64encode(record.raw).decode()
        with open(os.path.join(dataDir, PEERS_FILE), "w") as f:
            json.dump({"version": 1, "records": [bad, good]}, f)
        node = Node(Clock(), generateIdentity())
        manager = PeerManager(node, dataDir=dataDir)
        manager.load()
        self.assertEqual(manager.records[other.nodeID].seq, 9)
        with open(os.path.join(dataDir, PEERS_FILE), "w") as f:
            f.write("{not json")
        empty = PeerManager(node, dataDir=dataDir)
        empty.load()
        self.assertEqual(empty.records, {})


class ReadableFileTests(TestCase):
    """
    peers.json is JSON an operator can read, with each record's signed form
    kept inside; only the signed form is trusted on load.
    """

    def test_readable(self) -> None:
        """
        Each record shows its node ID, addresses and seq in words beside
        its signed form; a node loading the file gets the same records.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        node = Node(Clock(), generateIdentity())
        manager = PeerManager(node, dataDir=dataDir)
        other = generateIdentity()
        address = f"appn://{other.nodeID}@10.1.1.1:7700"
        manager.records[other.nodeID] = AddressRecord.create(other, [address], 5)
        manager.save()
        with open(os.path.join(dataDir, PEERS_FILE)) as f:
            document = json.load(f)
        [entry] = document["records"]
        self.assertEqual(document["version"], 2)
        self.assertEqual(
            {k: entry[k] for k in ("node_id", "addresses", "seq")},
            {"node_id": other.nodeID, "addresses": [address], "seq": 5},
        )
        again = PeerManager(node, dataDir=dataDir)
        again.load()
        self.assertEqual(again.records[other.nodeID].raw, manager.records[other.nodeID].raw)

    def test_readableFieldsNotTrusted(self) -> None:
        """
        Editing the readable fields changes nothing; a signed form that does
        not verify is dropped.
        """
        import base64

        dataDir = self.mktemp()
        os.makedirs(dataDir)
        other, third = generateIdentity(), generateIdentity()
        record = AddressRecord.create(other, [f"appn://{other.nodeID}@10.1.1.1:7700"], 5)
        body = cbor2.loads(record.raw)
        body["seq"] = 6
        forged = base64.b64encode(cbor2.dumps(body, canonical=True)).decode()
        entries = [
            {
                "node_id": other.nodeID,
                "addresses": [f"appn://{other.nodeID}@6.6.6.6:7700"],
                "seq": 99,
                "signed": base64.b64encode(record.raw).decode(),
            },
            {"node_id": third.nodeID, "addresses": [], "seq": 1, "signed": forged},
        ]
        with open(os.path.join(dataDir, PEERS_FILE), "w") as f:
            json.dump({"version": 2, "records": entries}, f)
        manager = PeerManager(Node(Clock(), generateIdentity()), dataDir=dataDir)
        manager.load()
        self.assertEqual(list(manager.records), [other.nodeID])
        loaded = manager.records[other.nodeID]
        self.assertEqual((loaded.seq, loaded.addresses), (5, record.addresses))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["version", "records", "signed", "seq"]), children)
    ),
    max_leaves=20,
)


@functools.cache
def _decoderNode() -> Node:
    return Node(Clock(), generateIdentity())


@functools.cache
def _decoderDir() -> str:
    path = tempfile.mkdtemp(prefix="appn-peers-")
    atexit.register(shutil.rmtree, path, True)
    return path


class FileDecoderTests(TestCase):
    @settings(max_examples=40, deadline=None)
    @given(document=_json)
    def test_anyDocumentIsSafe(self, document: Any) -> None:
        """
        Whatever JSON peers.json holds, loading it never raises and never
        yields a record that does not verify.
        """
        dataDir = _decoderDir()
        with open(os.path.join(dataDir, PEERS_FILE), "w") as f:
            json.dump(document, f)
        manager = PeerManager(_decoderNode(), dataDir=dataDir)
        manager.load()
        self.assertEqual(manager.records, {})


class DialableAddressTests(TestCase):
    def test_wildcardExpanded(self) -> None:
        """
        A wildcard listener stands for each of the host's addresses; other
        addresses are kept; nothing is listed twice.
        """
        from appnpy.net.addresses import dialableAddresses

        node = "a" * 52
        hosts = {socket.AF_INET: ["192.0.2.7", "127.0.0.1"], socket.AF_INET6: ["::1"]}
        self.assertEqual(
            dialableAddresses(
                [
                    f"appn://{node}@0.0.0.0:7700",
                    f"appn://{node}@[::]:7700",
                    f"appn://{node}@127.0.0.1:7700",
                    f"appn://{node}@10.0.0.1:7701",
                ],
                hosts.__getitem__,
            ),
            [
                f"appn://{node}@192.0.2.7:7700",
                f"appn://{node}@127.0.0.1:7700",
                f"appn://{node}@[::1]:7700",
                f"appn://{node}@10.0.0.1:7701",
            ],
        )

    def test_hostAddresses(self) -> None:
        """
        The host's addresses end with loopback and hold no wildcard.
        """
        from appnpy.net.addresses import hostAddresses

        found = hostAddresses(socket.AF_INET)
        self.assertEqual(found[-1], "127.0.0.1")
        self.assertNotIn("0.0.0.0", found)
