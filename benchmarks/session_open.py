"""
Session opens per second on one established link vs new TLS connections per second.

APPN: on one active link, open a session to the peer's echo plugin, wait for
the accept (a full BIND round trip), close it.  Baseline: a new TCP
connection, mutual TLS 1.3 handshake with the same context, one 32-byte echo
round trip, close.  Each is run sequentially and with 10 in flight; a run
ends when every session / connection has been closed on this side.  Runs
alternate APPN, TLS, APPN, TLS...

With --relay: routed session opens through one relay instead (three
processes: this node A, relay B, destination C, linked A-B-C): a signed BIND
through B, TLS end to end between A and C, the destination's start, then a
close; sequential and with 10 in flight, and the CPU milliseconds each
process spends per open.  This is what the BIND signature checks (one
signature at A, one check each at B and C) add to.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402


async def appnLoop(node: Any, peerID: str, count: int) -> None:
    # Closing does not wait for the peer's FIN before the next open (as a
    # TLS client's close does not wait for the server's); the run still
    # waits until every close has completed.
    lost = []
    for _ in range(count):
        proto = await node.openSession(peerID, "echo", C.SessionClient)
        proto.transport.loseConnection()
        lost.append(proto.lost)
    await gatherResults(lost)


async def tlsLoop(reactor: Any, ctx: Any, port: int, count: int) -> None:
    factory = Factory.forProtocol(C.HandshakeWaiter)
    lost = []
    for _ in range(count):
        proto = await C.connectTLS(reactor, ctx, port, factory)
        answered = proto.answered
        proto.transport.write(b"E" + b"x" * 32)
        await answered
        proto.transport.loseConnection()
        lost.append(proto.lost)
    await gatherResults(lost)


async def routedLoop(node: Any, route: list[str], count: int) -> None:
    lost = []
    for _ in range(count):
        proto = await node.routedSessions.open(route[-1], "echo", C.SessionClient, route=route)
        proto.transport.loseConnection()
        lost.append(proto.lost)
    await gatherResults(lost)


async def relayMain(reactor: Any, args: Any) -> None:
    count = C.pick(args, 1000, 300, 20)
    runs = args.runs or C.pick(args, 5, 3, 1)
    relay, relayReady = await C.spawnPeer(reactor, "--mode", "listen", "--services")
    dest, destReady = await C.spawnPeer(reactor, "--mode", "listen", "--services")
    results: dict[str, list[float]] = {}
    try:
        await relay.request(cmd="dial", target=destReady["appn"])
        node = C.makeNode(reactor, services=True)
        cp = await node.connect(relayReady["appn"])
        destID = destReady["appn"].split("//")[1].split("@")[0]
        route = [node.nodeID, cp.peerNodeID, destID]
        routed = lambda n: routedLoop(node, route, n)  # noqa: E731
        await timed(reactor, 1, 20, routed)
        # CPU each process spends per open (user + system), over the same
        # opens: less sensitive to a busy machine than the rates.
        pids = {"origin": None, "relay": relayReady["pid"], "destination": destReady["pid"]}
        for i in range(runs):
            for inFlight in (1, 10):
                before = {k: C.cpuSeconds(pid) for k, pid in pids.items()}
                rate = await timed(reactor, inFlight, count, routed)
                results.setdefault(f"routed_{inFlight}", []).append(rate)
                for k, pid in pids.items():
                    used = (C.cpuSeconds(pid) - before[k]) / count * 1000
                    results.setdefault(f"cpu_{k}", []).append(used)
            C.log(
                f"run {i + 1}/{runs}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in results.items())
            )
        await cp.close()
    finally:
        await relay.stop()
        await dest.stop()
    med = {k: C.median(v) for k, v in results.items()}
    C.emit(
        {
            "benchmark": "session_open_relay",
            "sessions_per_run": count,
            "runs": runs,
            "routed_seq_per_s": round(med["routed_1"]),
            "routed_10_per_s": round(med["routed_10"]),
            "cpu_ms_origin": round(med["cpu_origin"], 2),
            "cpu_ms_relay": round(med["cpu_relay"], 2),
            "cpu_ms_destination": round(med["cpu_destination"], 2),
        }
    )


async def timed(reactor: Any, inFlight: int, count: int, loop: Any) -> float:
    start = reactor.seconds()
    per = count // inFlight
    await gatherResults([Deferred.fromCoroutine(loop(per)) for _ in range(inFlight)])
    return per * inFlight / (reactor.seconds() - start)


async def main(reactor: Any, args: Any) -> None:
    count = C.pick(args, 2000, 500, 40)
    runs = args.runs or C.pick(args, 5, 3, 1)
    peer, ready = await C.spawnPeer(reactor, "--mode", "listen", *args.peerArgs)
    results: dict[str, list[float]] = {}
    try:
        node = C.makeNode(reactor)
        cp = await node.connect(ready["appn"])
        peerID = cp.peerNodeID
        ctx = C.tlsContext()
        appn = lambda n: appnLoop(node, peerID, n)  # noqa: E731
        tls = lambda n: tlsLoop(reactor, ctx, ready["tls"], n)  # noqa: E731
        # Warm-up of both paths.
        await timed(reactor, 1, 20, appn)
        await timed(reactor, 1, 20, tls)
        for i in range(runs):
            for inFlight in (1, 10):
                for name, loop in (("appn", appn), ("tls", tls)):
                    # TLS connections cost ~10x more: a tenth of the count
                    # keeps both runs a similar length.
                    n = count if name == "appn" else max(count // 10, inFlight * 2)
                    rate = await timed(reactor, inFlight, n, loop)
                    results.setdefault(f"{name}_{inFlight}", []).append(rate)
            C.log(
                f"run {i + 1}/{runs}: "
                + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in results.items())
            )
        await cp.close()
    finally:
        await peer.stop()
    med = {k: C.median(v) for k, v in results.items()}
    C.emit(
        {
            "benchmark": "session_open",
            "sessions_per_run": count,
            "runs": runs,
            "appn_seq_per_s": round(med["appn_1"]),
            "tls_seq_per_s": round(med["tls_1"]),
            "ratio_seq": round(med["appn_1"] / med["tls_1"], 2),
            "appn_10_per_s": round(med["appn_10"]),
            "tls_10_per_s": round(med["tls_10"]),
            "ratio_10": round(med["appn_10"] / med["tls_10"], 2),
            "goal": 5.0,
        }
    )


if __name__ == "__main__":
    # Read here, not by the shared parser: only this benchmark has the mode.
    relayMode = "--relay" in sys.argv
    if relayMode:
        sys.argv.remove("--relay")
    args = C.parseArgs(__doc__.splitlines()[1])
    args.peerArgs = ["--profile", args.profile + ".peer"] if args.profile else []
    C.runMain(lambda reactor: (relayMain if relayMode else main)(reactor, args), args)
