"""
Topology flooding: records applied per second by one network node's
database (decode, checks, signature, store, forward to one other
neighbour), and the largest database a hostile neighbour can make it hold.

In process, at the topology-message level: a real
L{appnpy.net.topology.TopologyDatabase} with a real Ed25519 key, on a fake
link registry of two network-node neighbours; every message is CBOR-encoded
and strictly decoded as on the wire (TLS and yamux are left out: they cost
the same before and after).  The records are valid and really signed: node
records of fresh identities, and a link record from each to the next,
announced by both ends (so nothing is withdrawn or held).

    python benchmarks/topology_flood.py [--records 6000] [--runs 5]
        [--compare OTHER_TREE] [--hostile]

C{--compare} runs the measurement alternately in this tree and in
C{OTHER_TREE} (for example a worktree of the base commit), in fresh
processes, and reports both medians and their ratio.  C{--hostile} fills
a database through one neighbour with the largest records allowed (a
2 KiB certificate each) from fresh identities and reports what it holds:
records, wire bytes and Python heap (tracemalloc).

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.task import Clock

from appnpy.cp.messages import decodeBody, encodeMessage
from appnpy.link.identity import generateIdentity, nodeIDFromSPKI
from appnpy.net.topology import TopologyDatabase, TopologyRecord, TopologyUpdate

LINK_BODY = {"rtt_ms": 5, "throughput": 10**6, "cost": 0, "security": 128, "up": True}


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
    bytesSent = bytesReceived = 0
    rtt = 0.005


class FakeLink:
    """
    The parts of a ControlPoint the topology database uses; what it sends
    is encoded as on the wire and counted.
    """

    def __init__(self, nodeID: str) -> None:
        self.peerNodeID = nodeID
        self.peerHello = Hello()
        self.peerName = "LAB.PEER"
        self.since = 0.0
        self.sent = 0
        self.mux = Mux()

    def send(self, msg: Any) -> bool:
        self.sent += len(encodeMessage(msg))
        return True

    def refuseLink(self, reason: Any, detail: str) -> None:
        raise AssertionError(f"link refused: {detail}")


class Registry:
    def __init__(self, links: list[FakeLink]) -> None:
        self.links = {cp.peerNodeID: cp for cp in links}

    def addControlHandler(self, cls: Any, handler: Any) -> None:
        pass

    def removeControlHandler(self, cls: Any) -> None:
        pass

    def addLinkObserver(self, observer: Any) -> None:
        pass


def nodeBody(key: Key, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "role": "network",
        "public_key": key.publicKeyBytes,
        "resistance": 0,
        "load": 0,
        "cds": False,
        "end_nodes": [],
        **extra,
    }


def records(count: int, pad: int = 0) -> list[TopologyRecord]:
    """
    C{count} records: node records of fresh identities, each followed by
    link records to and from the previous one.
    """
    out: list[TopologyRecord] = []
    keys: list[Key] = []
    extra = {"cert": b"\0" * pad} if pad else {}
    while len(out) < count:
        k = Key()
        out.append(TopologyRecord.create(k, "node", "", 2, nodeBody(k, "BEN.N", **extra)))
        if keys and not pad:
            out.append(TopologyRecord.create(k, "link", keys[-1].nodeID, 2, LINK_BODY))
            out.append(TopologyRecord.create(keys[-1], "link", k.nodeID, 2, LINK_BODY))
        keys.append(k)
    return out[:count]


def messages(recs: list[TopologyRecord]) -> list[bytes]:
    """
    The records as encoded TopologyUpdate messages (node records first in
    each, at most 200 records or 60 KB each).
    """
    out, chunk, size = [], [], 0
    for r in recs:
        if chunk and (len(chunk) >= 200 or size + len(r.raw) > 60_000):
            out.append(encodeMessage(TopologyUpdate("", 0, 0, chunk))[4:])
            chunk, size = [], 0
        chunk.append(r.raw)
        size += len(r.raw) + 8
    if chunk:
        out.append(encodeMessage(TopologyUpdate("", 0, 0, chunk))[4:])
    return out


def database(**options: Any) -> tuple[TopologyDatabase, FakeLink, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    sender, other = FakeLink(Key().nodeID), FakeLink(Key().nodeID)
    registry = Registry([sender, other])
    # Only the tuning this tree's database has (the base has no owner limits).
    accepted = inspect.signature(TopologyDatabase).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    db = TopologyDatabase(
        clock, generateIdentity(), "LAB.BENCH", registry, measureInterval=0, **options
    )
    db.startService()
    return db, sender, clock


def measure(count: int) -> float:
    """
    Records applied per second, all from one neighbour.
    """
    wire = messages(records(count))
    db, sender, clock = database(rate=1e9, burst=1e9, ownerRate=1e9, ownerBurst=1e9)
    gc.collect()
    start = time.perf_counter()
    for body in wire:
        db.updateReceived(sender, decodeBody(body))
    elapsed = time.perf_counter() - start
    applied = db.stats["applied"]
    assert applied == count, (applied, count)
    return applied / elapsed


def hostile(count: int) -> dict[str, Any]:
    """
    One neighbour pushes C{count} of the largest node records allowed, from
    fresh identities, past every rate limit: what does the database hold?
    """
    wire = messages(records(count, pad=2048))
    gc.collect()
    tracemalloc.start()
    db, sender, clock = database(rate=1e9, burst=1e9)
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    for body in wire:
        db.updateReceived(sender, decodeBody(body))
        clock.advance(0.01)
    elapsed = time.perf_counter() - start
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    store = db.store
    return {
        "pushed": count,
        "records": len(store),
        "wire_bytes": getattr(store, "bytes", sum(len(r.raw) for r in store.records())),
        "heap_bytes": heap,
        "evicted": db.stats.get("db_full", 0),
        "received_per_s_traced": round(count / elapsed),
    }


def child(args: argparse.Namespace) -> None:
    print(json.dumps({"records_per_s": measure(args.records)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=6000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--compare", metavar="OTHER_TREE")
    p.add_argument("--hostile", action="store_true")
    p.add_argument("--pushed", type=int, default=12_000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.hostile:
        print(json.dumps(hostile(args.pushed)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this": here}
    if args.compare:
        trees["other"] = os.path.abspath(args.compare)
    results: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(args.runs):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    "--records",
                    str(args.records),
                ],
                env=env,
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            value = json.loads(out.strip().splitlines()[-1])["records_per_s"]
            results[name].append(value)
            print(f"run {run + 1} {name}: {value:,.0f} records/s", file=sys.stderr)
    summary: dict[str, Any] = {
        "records": args.records,
        "runs": args.runs,
        **{
            f"{name}_median_records_per_s": round(statistics.median(v))
            for name, v in results.items()
        },
    }
    if "other" in results:
        summary["ratio_this_over_other"] = round(
            statistics.median(results["this"]) / statistics.median(results["other"]), 3
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
