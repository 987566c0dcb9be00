"""
RSS per idle session and per idle link, on both ends, vs raw TLS connections.

Every measurement uses two fresh child processes (a listener and a dialer,
both C{_peer.py}); each reports its own VmRSS (after C{gc.collect()}) over
its stdin/stdout, before and after the step, so only the step's growth is
counted.

  - sessions: the dialer's node links to the listener, then opens N echo
    sessions on that one link (one 32-byte round trip each) and leaves them
    idle; growth / N on each side.  Goal <= 4 KiB per session.
  - links: the dialer creates L nodes first (their identities and TLS
    contexts are not counted), then each dials the listener's node once;
    growth / L on each side.  Goal <= 64 KiB per link.
  - baseline: L raw TLS connections with the same TLS context (one 32-byte
    echo round trip each), growth / L on each side.

Twisted's logging is started with a discarding observer in both processes,
as it would be in a real deployment (otherwise it buffers 65,536 events).
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402


async def measure(reactor: Any, kind: str, n: int) -> dict[str, float]:
    """
    One measurement in fresh processes; KiB per session/link on each side.
    """
    listener, ready = await C.spawnPeer(reactor, "--mode", "listen")
    dialer, _ = await C.spawnPeer(reactor, "--mode", "dialer")
    try:
        if kind == "sessions":
            await dialer.request(cmd="nodes", n=1)
            await dialer.request(cmd="connect", target=ready["appn"])
            # A few sessions first, so one-off costs (code paths, first
            # allocations) are not charged to the measured ones.
            await dialer.request(cmd="sessions", n=50)
        elif kind == "links":
            await dialer.request(cmd="nodes", n=n)
        l0 = (await listener.request(cmd="rss"))["rss"]
        d0 = (await dialer.request(cmd="rss"))["rss"]
        if kind == "sessions":
            await dialer.request(cmd="sessions", n=n)
        elif kind == "links":
            await dialer.request(cmd="connect", target=ready["appn"])
        else:
            await dialer.request(cmd="tls", n=n, port=ready["tls"])
        l1 = await listener.request(cmd="rss")
        d1 = await dialer.request(cmd="rss")
        if kind == "sessions":
            assert l1["sessions"] >= n, l1
        if kind == "links":
            assert l1["links"] == n, l1
    finally:
        await dialer.stop()
        await listener.stop()
    return {"listener": (l1["rss"] - l0) / n, "dialer": (d1["rss"] - d0) / n}


async def main(reactor: Any, args: Any) -> None:
    sessions = C.pick(args, 10000, 5000, 500)
    links = C.pick(args, 200, 100, 20)
    runs = args.runs or C.pick(args, 5, 3, 1)
    out: dict[str, list[dict[str, float]]] = {"sessions": [], "links": [], "tls": []}
    for i in range(runs):
        # Alternate: APPN links, TLS connections, sessions.
        out["links"].append(await measure(reactor, "links", links))
        out["tls"].append(await measure(reactor, "tls", links))
        out["sessions"].append(await measure(reactor, "sessions", sessions))
        C.log(f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]}" for k, v in out.items()))

    def med(kind: str, side: str) -> float:
        return round(C.median([r[side] for r in out[kind]]), 2)

    C.emit(
        {
            "benchmark": "memory",
            "sessions": sessions,
            "links": links,
            "runs": runs,
            "session_KiB_dialer": med("sessions", "dialer"),
            "session_KiB_listener": med("sessions", "listener"),
            "session_goal_KiB": 4,
            "link_KiB_dialer": med("links", "dialer"),
            "link_KiB_listener": med("links", "listener"),
            "link_goal_KiB": 64,
            "tls_conn_KiB_dialer": med("tls", "dialer"),
            "tls_conn_KiB_listener": med("tls", "listener"),
            "link_ratio_to_tls_listener": round(
                med("links", "listener") / med("tls", "listener"), 2
            ),
            "link_ratio_to_tls_dialer": round(med("links", "dialer") / med("tls", "dialer"), 2),
        }
    )


if __name__ == "__main__":
    args = C.parseArgs(__doc__.splitlines()[1])
    C.runMain(lambda reactor: main(reactor, args), args)
