"""
Topology convergence: messages, records and simulated time for every
network node's database to agree again after one link change.

Builds a random connected graph of network nodes (average degree ~4), lets
the initial flood settle, then cuts one link (and later restores it) and
counts what the flooding costs until every database has the same digest.

Links are TLS-free and in memory, at the topology-message level: each node is
a real L{appnpy.net.topology.TopologyDatabase} with a real Ed25519 key, every
control message is CBOR-encoded and strictly decoded as on the wire, and
delivered after a simulated one-way latency on one Clock.  TLS and yamux are
left out because 1,000 full TLS nodes in one process spend their time in
handshakes and the harness's pump loop, not in topology (tests/test_topology.py
runs 50 nodes over full TLS).

    python benchmarks/topology_convergence.py [--quick] [--nodes 200,1000]
        [--seed-databases | --no-seed-databases] [--compare-flood]

The initial flood costs every node one signature check per record per
neighbour (~20M at 1,000 nodes), so above SEED_ABOVE nodes the databases are
seeded instead (C{--seed-databases}, reported as C{"initial": {"seeded":
true}}): the network is built with message delivery suppressed, so each node
only originates its own node and link records; every record is decoded and
signature-checked once, then applied to every other database through
C{RecordStore.apply} (the same call C{updateReceived} ends in), and the
per-neighbour FRSN state is set to what a sync of identical databases leaves.
The link down / link up measurements then run through the real flooding code
exactly as in flood mode.  C{--compare-flood} first runs the real flood with
the same keys and graph and reports whether the seeded digest equals it.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.application.service import MultiService

sys.path.insert(0, ".")

from appnpy.cp.messages import decodeBody, encodeMessage  # noqa: E402
from appnpy.link.identity import nodeIDFromSPKI  # noqa: E402
from appnpy.net.topology import NODE, TopologyRecord, installTopology  # noqa: E402

LATENCY = 0.005  # one-way, seconds
#: Sizes above this are seeded by default (see the module docstring).
SEED_ABOVE = 300


class _Call:
    __slots__ = ("time", "seq", "f", "args", "cancelled", "called")

    def __init__(self, t: float, seq: int, f: Any, args: tuple[Any, ...]) -> None:
        self.time, self.seq, self.f, self.args = t, seq, f, args
        self.cancelled = self.called = False

    def __lt__(self, other: _Call) -> bool:
        return (self.time, self.seq) < (other.time, other.seq)

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True

    def getTime(self) -> float:
        return self.time


class HeapClock:
    """
    A Clock with a heap: twisted's Clock re-sorts every pending call on each
    callLater, which dominates at thousands of in-flight messages.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[_Call] = []
        self.seq = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any) -> _Call:
        self.seq += 1
        c = _Call(self.now + delay, self.seq, f, args)
        heapq.heappush(self.heap, c)
        return c

    def nextTime(self) -> float | None:
        while self.heap and self.heap[0].cancelled:
            heapq.heappop(self.heap)
        return self.heap[0].time if self.heap else None

    def advance(self, amount: float) -> None:
        until = self.now + amount
        while True:
            t = self.nextTime()
            if t is None or t > until:
                break
            c = heapq.heappop(self.heap)
            self.now = max(self.now, c.time)
            c.called = True
            c.f(*c.args)
        self.now = until


class Key:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.publicKeyBytes = self.key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.nodeID = nodeIDFromSPKI(self.publicKeyBytes)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


class Hello:
    role = "network"


class Mux:
    rtt = None
    bytesSent = 0
    bytesReceived = 0


class Wire:
    """
    Counts and delivers messages between simulated nodes.
    """

    def __init__(self, clock: HeapClock) -> None:
        self.clock = clock
        self.messages = 0
        self.bytes = 0
        self.lastDelivery = 0.0
        #: While set, messages are dropped uncounted (building a seeded network).
        self.suppressed = False


class SimCP:
    def __init__(self, wire: Wire, local: SimNode, peer: SimNode) -> None:
        self.wire, self.local, self.peer = wire, local, peer
        self.peerNodeID = peer.nodeID
        self.peerHello = Hello()
        self.mux = Mux()
        self.up = True

    def send(self, msg: Any) -> None:
        if not self.up or self.wire.suppressed:
            return
        data = encodeMessage(msg)
        self.wire.messages += 1
        self.wire.bytes += len(data)
        self.wire.clock.callLater(LATENCY, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        back = self.peer.links.get(self.local.nodeID)
        if not self.up or back is None:
            return
        self.wire.lastDelivery = self.wire.clock.seconds()
        msg = decodeBody(data[4:])
        self.peer.controlHandlers[type(msg)](back, msg)

    def refuseLink(self, reason: str, detail: str) -> None:
        raise AssertionError(f"link refused: {reason} {detail}")


class SimNode(MultiService):
    role = "network"

    def __init__(self, clock: HeapClock, index: int, key: Key | None = None) -> None:
        super().__init__()
        self.reactor = clock
        self.identity = key if key is not None else Key()
        self.nodeID = self.identity.nodeID
        self.name = f"SIM.N{index}"
        self.links: dict[str, SimCP] = {}
        self.controlHandlers: dict[type, Any] = {}
        self.observers: list[Any] = []
        self.topology: Any = None

    def addLinkObserver(self, o: Any) -> None:
        self.observers.append(o)

    def addControlHandler(self, messageClass: type, handler: Any) -> None:
        self.controlHandlers[messageClass] = handler

    def removeControlHandler(self, messageClass: type) -> None:
        self.controlHandlers.pop(messageClass, None)


def connect(wire: Wire, a: SimNode, b: SimNode) -> None:
    ab, ba = SimCP(wire, a, b), SimCP(wire, b, a)
    a.links[b.nodeID], b.links[a.nodeID] = ab, ba
    a.topology.linkActive(ab)
    b.topology.linkActive(ba)


def disconnect(a: SimNode, b: SimNode) -> None:
    ab, ba = a.links.pop(b.nodeID), b.links.pop(a.nodeID)
    ab.up = ba.up = False
    a.topology.linkLost(ab, ("link-failure", "cut"))
    b.topology.linkLost(ba, ("link-failure", "cut"))


def randomGraph(n: int, rng: random.Random) -> list[tuple[int, int]]:
    edges = {(rng.randrange(i), i) for i in range(1, n)}
    while len(edges) < 2 * n:
        a, b = sorted(rng.sample(range(n), 2))
        edges.add((a, b))
    return sorted(edges)


def runUntilQuiet(clock: HeapClock, horizon: float = 30.0, limit: float = 600.0) -> None:
    """
    Run due calls (deliveries, damped announcements) until nothing is due
    within C{horizon} seconds (only the long periodic timers are left).
    """
    start = clock.seconds()
    while clock.seconds() - start < limit:
        t = clock.nextTime()
        if t is None or t > clock.seconds() + horizon:
            return
        clock.advance(t - clock.seconds())


def measure(wire: Wire, nodes: list[SimNode], change: Any) -> dict[str, Any]:
    clock = wire.clock
    m0, b0 = wire.messages, wire.bytes
    r0 = sum(n.topology.stats["sent"] for n in nodes)
    t0 = clock.seconds()
    wire.lastDelivery = t0
    cpu = time.process_time()
    change()
    runUntilQuiet(clock)
    digests = {n.topology.digest() for n in nodes}
    return {
        "converged": len(digests) == 1,
        "messages": wire.messages - m0,
        "records_sent": sum(n.topology.stats["sent"] for n in nodes) - r0,
        "bytes": wire.bytes - b0,
        "simulated_seconds": round(wire.lastDelivery - t0, 4),
        "cpu_seconds": round(time.process_time() - cpu, 3),
    }


def seedDatabases(clock: HeapClock, nodes: list[SimNode], edges: list[tuple[int, int]]) -> int:
    """
    Give every database every other node's own records, as the initial flood
    would, and the per-neighbour state a sync of identical databases leaves.
    Returns the number of signature checks made (one per record).

    Uses the database's parts: C{store.entries} (reading each node's own
    entries, C{source is None}), C{store.apply} (to store, as
    C{updateReceived} does), the database's C{_changed} (to drop the cached graph, as
    after a flood), and the per-neighbour C{flooder.neighbours[peer]} fields
    C{epoch}, C{lastFRSN}, C{sentUpTo}.
    """
    now = clock.seconds()
    n = len(nodes)
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    # Every owner's own records, decoded from their wire form (as a receiver
    # would) and signature-checked once.
    own: list[list[TopologyRecord]] = []
    checks = 0
    for node in nodes:
        pk = node.identity.publicKeyBytes
        recs = []
        for e in node.topology.store.entries.values():
            assert e.source is None and e.record.owner == node.nodeID
            rec = TopologyRecord.decode(e.record.raw)
            checks += 1
            if not rec.verify(pk):
                raise AssertionError("own record does not verify")
            recs.append(rec)
        # Node records first, as updateReceived applies them.
        recs.sort(key=lambda r: (r.kind != NODE, r.subject))
        own.append(recs)
    # The source a flood would record: the neighbour on a shortest path
    # back towards the owner (BFS from each owner; ties are resolved
    # arbitrarily, as latency ties are in a flood).
    sources: list[list[int]] = []
    for root in range(n):
        parent = [-1] * n
        parent[root] = root
        frontier = [root]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if parent[v] < 0:
                        parent[v] = u
                        nxt.append(v)
            frontier = nxt
        sources.append(parent)
    for y, node in enumerate(nodes):
        db = node.topology
        for x in range(n):
            if x == y:
                continue
            src = nodes[sources[x][y]].nodeID
            for rec in own[x]:
                db.store.apply(rec, src, now)
        db._changed()
    # Every link as after a sync between identical databases: each side
    # holds the other's changes up to its FRSN and has sent it all of its own.
    for a, b in edges:
        for x, y in ((a, b), (b, a)):
            ns = nodes[x].topology.flooder.neighbours[nodes[y].nodeID]
            ns.epoch = nodes[y].topology.epoch
            ns.lastFRSN = nodes[y].topology.frsn
            ns.sentUpTo = nodes[x].topology.frsn
    return checks


def run(
    n: int,
    seed: int = 1,
    seeded: bool = False,
    keys: list[Key] | None = None,
    floodDigest: str | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    clock = HeapClock()
    clock.advance(1000)
    wire = Wire(clock)
    nodes = [SimNode(clock, i, keys[i] if keys else None) for i in range(n)]
    for node in nodes:
        # Refresh and measuring are off: the benchmark measures one change.
        node.topology = installTopology(node, refreshInterval=10**7, measureInterval=0, damping=5.0)
        node.startService()
    edges = randomGraph(n, rng)
    built = time.process_time()
    if seeded:
        # Build with delivery suppressed: each node originates only its own
        # node and link records (the announcement after damping), then copy.
        wire.suppressed = True
        for a, b in edges:
            connect(wire, nodes[a], nodes[b])
        runUntilQuiet(clock)
        wire.suppressed = False
        checks = seedDatabases(clock, nodes, edges)
        digests = {x.topology.digest() for x in nodes}
        initial = {
            "seeded": True,
            "converged": len(digests) == 1,
            "messages": wire.messages,
            "signature_checks": checks,
            "cpu_seconds": round(time.process_time() - built, 3),
            "records_per_node": len(nodes[0].topology),
        }
        if floodDigest is not None:
            initial["digest_equals_flood"] = digests == {floodDigest}
    else:
        for a, b in edges:
            connect(wire, nodes[a], nodes[b])
        runUntilQuiet(clock)
        initial = {
            "converged": len({x.topology.digest() for x in nodes}) == 1,
            "messages": wire.messages,
            "cpu_seconds": round(time.process_time() - built, 3),
            "records_per_node": len(nodes[0].topology),
        }
        if keys is not None:
            initial["digest"] = nodes[0].topology.digest()
    clock.advance(10)  # past the damping period of the initial announcements
    a, b = edges[rng.randrange(len(edges))]
    cut = measure(wire, nodes, lambda: disconnect(nodes[a], nodes[b]))
    clock.advance(10)
    restore = measure(wire, nodes, lambda: connect(wire, nodes[a], nodes[b]))
    route = nodes[0].topology.selectRoute(nodes[0].nodeID, nodes[-1].nodeID, "interactive")
    t = time.process_time()
    for _ in range(20):
        nodes[0].topology.store.cachedGraph = None
        nodes[0].topology.selectRoute(nodes[0].nodeID, nodes[-1].nodeID, "interactive")
    return {
        "nodes": n,
        "links": len(edges),
        "initial": initial,
        "link_down": cut,
        "link_up": restore,
        "route_hops": len(route.hops),
        "route_ms_with_graph_build": round((time.process_time() - t) / 20 * 1000, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--quick", action="store_true", help="50 and 200 nodes only")
    p.add_argument("--nodes", default=None, help="comma-separated sizes (default 200,1000)")
    p.add_argument(
        "--seed-databases",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"seed the databases instead of the initial flood (default: above {SEED_ABOVE} nodes)",
    )
    p.add_argument(
        "--compare-flood",
        action="store_true",
        help="before each seeded run, run the real flood with the same keys and graph "
        "and report both (slow: the flood is O(N^2) signature checks)",
    )
    args = p.parse_args()
    sizes = (
        [int(x) for x in args.nodes.split(",")]
        if args.nodes
        else ([50, 200] if args.quick else [200, 1000])
    )
    results = []
    for n in sizes:
        seeded = args.seed_databases if args.seed_databases is not None else n > SEED_ABOVE
        runs = []
        if seeded and args.compare_flood:
            keys = [Key() for _ in range(n)]
            flood = run(n, keys=keys)
            runs.append(flood)
            runs.append(run(n, seeded=True, keys=keys, floodDigest=flood["initial"].pop("digest")))
        else:
            runs.append(run(n, seeded=seeded))
        for r in runs:
            results.append(r)
            tag = " seeded" if r["initial"].get("seeded") else ""
            print(
                f"{n:5d} nodes{tag} {r['links']:5d} links | initial {r['initial']['messages']} "
                f"msgs {r['initial']['cpu_seconds']}s cpu | link down: "
                f"{r['link_down']['messages']} msgs {r['link_down']['records_sent']} records "
                f"{r['link_down']['simulated_seconds']}s sim | link up: "
                f"{r['link_up']['messages']} msgs {r['link_up']['records_sent']} records "
                f"{r['link_up']['simulated_seconds']}s sim | converged "
                f"{r['link_down']['converged'] and r['link_up']['converged']}",
                file=sys.stderr,
            )
    print(
        json.dumps(
            {
                "benchmark": "topology_convergence",
                "transport": "in-memory, TLS-free, topology-message level (CBOR encode/decode)",
                "one_way_latency_s": LATENCY,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
