"""
Messages per uncached locate: appnpy's directory vs a Kademlia DHT lookup.

appnpy: N network nodes in the in-memory harness (real TLS + yamux, one
Clock), joined in a random connected graph (a random spanning tree plus
random extra links, mean degree about 4).  For each trial a random node
registers a fresh resource name and another random node locates it with
empty caches and no CDS, so the locate is a broadcast search.  Counted:
every directory control message any node sends until the network is quiet
(requests, positive answers, final answers, duplicate answers).

Baseline: the C{kademlia} PyPI package (pip install kademlia; benchmark
only), N servers on loopback UDP in this process under asyncio, each
bootstrapped from an earlier one.  For each trial a random server stores a
fresh key and another random server (with the key removed from its own
storage, since k = 20 replication often puts it there) gets it.  Counted: RPCs sent by every
server during the get (its C{call_*} methods wrapped), each a request and a
response, so messages = 2 x RPCs.

Both sides use the same N, trial count and random seed.  Prints progress to
stderr and one JSON line at the end.  C{--quick}: N = 20/50, 3 trials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet.defer import Deferred  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

from appnpy.testing import MemoryNetwork, resultOf  # noqa: E402


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def randomGraph(n: int, rng: random.Random, degree: float = 4.0) -> list[tuple[int, int]]:
    edges: set[tuple[int, int]] = set()
    order = list(range(n))
    rng.shuffle(order)
    for i in range(1, n):
        a, b = order[i], order[rng.randrange(i)]
        edges.add((min(a, b), max(a, b)))
    target = int(n * degree / 2)
    while len(edges) < target:
        a, b = rng.sample(range(n), 2)
        edges.add((min(a, b), max(a, b)))
    return sorted(edges)


def appnpyMessages(n: int, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    # Full network services, as deployed; the directory's rate limits are
    # lifted so a benchmark's back-to-back locates are never refused.
    net = MemoryNetwork(
        directoryOptions={
            "maxHops": 16,
            "overallRate": 1e6,
            "overallBurst": 1e6,
            "neighbourRate": 1e6,
            "neighbourBurst": 1e6,
        }
    )
    nodes = [net.addNode(f"NET.N{i}") for i in range(n)]
    edges = randomGraph(n, rng)
    started = time.perf_counter()
    for a, b in edges:
        net.connect(nodes[a], nodes[b])
    log(f"appnpy N={n}: {len(edges)} links up in {time.perf_counter() - started:.1f}s")
    counts, found = [], 0
    for t in range(trials):
        owner, requester = rng.sample(nodes, 2)
        name = f"bench:r{t}"
        owner.directory.register(name)
        before = sum(x.directory.stats["messages-sent"] for x in nodes)
        d = Deferred.fromCoroutine(requester.directory.locate(name))
        net.flush()
        found += resultOf(d).owner == owner.nodeID
        counts.append(sum(x.directory.stats["messages-sent"] for x in nodes) - before)
    net.stop()
    return {
        "links": len(edges),
        "messages_per_locate": statistics.mean(counts),
        "min": min(counts),
        "max": max(counts),
        "found": found,
    }


async def _kademlia(n: int, trials: int, seed: int) -> dict[str, Any]:
    from kademlia.network import Server
    from kademlia.protocol import KademliaProtocol
    from kademlia.utils import digest

    calls = {"count": 0}
    for method in ("call_find_node", "call_find_value", "call_ping", "call_store"):
        original = getattr(KademliaProtocol, method)

        def counted(self: Any, *args: Any, _original: Any = original) -> Any:
            calls["count"] += 1
            return _original(self, *args)

        setattr(KademliaProtocol, method, counted)
    rng = random.Random(seed)
    servers: list[Any] = []
    basePort = 30000 + rng.randrange(20000)
    started = time.perf_counter()
    for i in range(n):
        server = Server()
        await server.listen(basePort + i, interface="127.0.0.1")
        if servers:
            seedIndex = rng.randrange(len(servers))
            await server.bootstrap([("127.0.0.1", basePort + seedIndex)])
        servers.append(server)
    log(f"kademlia N={n}: bootstrapped in {time.perf_counter() - started:.1f}s")
    counts, found = [], 0
    try:
        for t in range(trials):
            owner, requester = rng.sample(servers, 2)
            key = f"bench:r{t}"
            await owner.set(key, owner.node.long_id.to_bytes(20, "big").hex())
            # Uncached at the requester: with k = 20 replication it may be one
            # of the nodes that store the key; make it look it up regardless.
            requester.storage.data.pop(digest(key), None)
            before = calls["count"]
            value = await requester.get(key)
            found += value is not None
            counts.append(calls["count"] - before)
    finally:
        for server in servers:
            server.stop()
    return {
        "rpcs_per_lookup": statistics.mean(counts),
        "messages_per_lookup": 2 * statistics.mean(counts),
        "min_rpcs": min(counts),
        "max_rpcs": max(counts),
        "found": found,
    }


def kademliaMessages(n: int, trials: int, seed: int) -> dict[str, Any]:
    return asyncio.run(_kademlia(n, trials, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="N = 20/50, 3 trials")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    sizes = [20, 50] if args.quick else [50, 200]
    trials = 3 if args.quick else args.trials
    results = []
    for n in sizes:
        ours = appnpyMessages(n, trials, args.seed)
        log(f"appnpy   N={n}: {ours}")
        theirs = kademliaMessages(n, trials, args.seed)
        log(f"kademlia N={n}: {theirs}")
        results.append({"n": n, "trials": trials, "appnpy": ours, "kademlia": theirs})
    print(
        json.dumps(
            {
                "benchmark": "locate_vs_kademlia",
                "unit": "messages per uncached lookup (requests + replies)",
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
