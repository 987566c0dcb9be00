"""
The characteristics this node announces for its own links: round-trip time
from the keepalive pings, throughput from the bytes the link has carried,
and the configured cost and security level.

A link is re-announced only when its RTT moved by more than a relative
threshold (and at least 5 ms) or its throughput left the factor-of-2 band
around what was announced, so measurement noise does not flood the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from appnpy.net.routing import TLS_SECURITY

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["DEFAULT_RTT_MS", "DEFAULT_THROUGHPUT", "OwnLink", "DOWN_LINK_BODY", "linkBytes"]

#: RTT announced for a link not measured yet.
DEFAULT_RTT_MS = 100
#: Throughput announced for a link with no observed traffic (bytes/s).
DEFAULT_THROUGHPUT = 1_000_000
#: RTT changes smaller than this (ms) never trigger a re-announcement.
_MIN_RTT_CHANGE_MS = 5

#: The body announced for an own link record with no link state (withdrawn).
DOWN_LINK_BODY: dict[str, Any] = {
    "rtt_ms": DEFAULT_RTT_MS,
    "throughput": DEFAULT_THROUGHPUT,
    "cost": 0,
    "security": 0,
    "up": False,
}


def linkBytes(cp: ControlPoint) -> int:
    """
    Bytes the link has carried both ways so far.
    """
    return cp.mux.bytesSent + cp.mux.bytesReceived


@attrs.define
class OwnLink:
    """
    What this node knows and announces of its link to one neighbour.
    """

    cost: int = 0
    security: int = TLS_SECURITY
    up: bool = False
    downSince: float | None = None
    rttMs: int | None = None
    peakThroughput: float = 0.0
    lastBytes: int = 0
    lastSample: float | None = None
    #: The body last announced, to compare new measurements with.
    announced: dict[str, Any] | None = None

    def linkUp(self, cp: ControlPoint, now: float) -> None:
        self.up = True
        self.downSince = None
        self.lastSample = now
        self.lastBytes = linkBytes(cp)

    def body(self) -> dict[str, Any]:
        """
        The link record body to announce now.
        """
        return {
            "rtt_ms": self.rttMs if self.rttMs is not None else DEFAULT_RTT_MS,
            "throughput": int(max(DEFAULT_THROUGHPUT, self.peakThroughput)),
            "cost": self.cost,
            "security": self.security,
            "up": self.up,
        }

    def sample(self, cp: ControlPoint, now: float) -> None:
        """
        Take the latest keepalive RTT and the throughput since the last sample
        (the peak decays by 10% per sample).
        """
        rtt = cp.mux.rtt
        if rtt is not None:
            self.rttMs = int(round(rtt * 1000))
        total = linkBytes(cp)
        if self.lastSample is not None and now > self.lastSample:
            rate = (total - self.lastBytes) / (now - self.lastSample)
            self.peakThroughput = max(self.peakThroughput * 0.9, rate)
        self.lastBytes, self.lastSample = total, now

    def changed(self, rttChange: float) -> bool:
        """
        Whether the announced body is out of date: RTT moved by more than
        C{rttChange} (relative) or throughput by more than a factor of 2.
        """
        old = self.announced
        if old is None:
            return False
        new = self.body()
        drtt = abs(new["rtt_ms"] - old["rtt_ms"])
        if drtt > _MIN_RTT_CHANGE_MS and drtt > rttChange * max(old["rtt_ms"], 1):
            return True
        return not old["throughput"] / 2 <= new["throughput"] <= old["throughput"] * 2
