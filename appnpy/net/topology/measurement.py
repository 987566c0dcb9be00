"""
The characteristics this node announces for its own links and for itself:
round-trip time from the keepalive pings, throughput from the bytes the
link has carried, the security level the link's TLS session earns (lowered,
never raised, by configuration), the configured cost, and the node's load
from the sessions it relays.

A link is re-announced only when its RTT moved by more than a relative
threshold (and at least 5 ms) or its throughput left the factor-of-2 band
around what was announced, and the node's load only when it moved by
L{LOAD_HYSTERESIS} (of 255) or fell back to 0, so measurement noise does
not flood the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from OpenSSL import SSL

from appnpy.link.tls import NETWORK
from appnpy.net.routing import SECURITY_UNKNOWN, TLS_SECURITY, linkSecurity, loadLevel

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = [
    "DEFAULT_RTT_MS",
    "DEFAULT_THROUGHPUT",
    "LOAD_HYSTERESIS",
    "LOAD_SMOOTHING",
    "OwnLink",
    "NodeLoad",
    "DOWN_LINK_BODY",
    "linkBytes",
    "linkProtection",
]

#: RTT announced for a link not measured yet.
DEFAULT_RTT_MS = 100
#: Throughput announced for a link with no observed traffic (bytes/s).
DEFAULT_THROUGHPUT = 1_000_000
#: RTT changes smaller than this (ms) never trigger a re-announcement.
_MIN_RTT_CHANGE_MS = 5

#: Weight of the newest sample in the smoothed count of relayed sessions
#: (one sample per measurement interval, 30 s by default).
LOAD_SMOOTHING = 0.5
#: How far (of 0..255) the measured load must move from the value last
#: announced before the node record is re-issued.
LOAD_HYSTERESIS = 32

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


def linkProtection(cp: ControlPoint) -> int:
    """
    The security level the TLS session of C{cp}'s link earns (see
    L{appnpy.net.routing.linkSecurity}): the negotiated protocol and cipher
    key size, and whether the node runs in C{network} trust mode, where
    every peer's certificate was verified against the network CA before
    the link came up.
    """
    tls = cp.link.transport
    handle = tls.getHandle() if tls is not None else None
    if not isinstance(handle, SSL.Connection):
        return SECURITY_UNKNOWN
    return linkSecurity(
        handle.get_protocol_version_name(),
        handle.get_cipher_bits(),
        cp.host.trust.mode == NETWORK,
    )


@attrs.define
class OwnLink:
    """
    What this node knows and announces of its link to one neighbour.

    @ivar protection: the level the link's TLS session earns, read at link-up.
    @ivar securityCap: the configured security level, if any; the announced
        level is the lower of the two.
    """

    cost: int = 0
    protection: int = TLS_SECURITY
    securityCap: int | None = None
    up: bool = False
    downSince: float | None = None
    rttMs: int | None = None
    peakThroughput: float = 0.0
    lastBytes: int = 0
    lastSample: float | None = None
    #: The body last announced, to compare new measurements with.
    announced: dict[str, Any] | None = None

    @property
    def security(self) -> int:
        """
        The security level announced: what the link provides, or less if so
        configured.
        """
        if self.securityCap is None:
            return self.protection
        return min(self.protection, self.securityCap)

    def linkUp(self, cp: ControlPoint, now: float) -> None:
        self.protection = linkProtection(cp)
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


@attrs.define
class NodeLoad:
    """
    This node's load: the sessions it relays, smoothed, as a share of the
    relay's capacity (L{appnpy.net.routing.loadLevel}), with hysteresis.

    @ivar smoothed: the smoothed count of relayed sessions.
    @ivar applied: the measured level last put into the node record.
    """

    smoothed: float = 0.0
    applied: int = 0

    def sample(self, sessions: int, capacity: int) -> int | None:
        """
        Take one sample; the level to announce if it moved far enough from
        the one last announced (or fell back to 0), else C{None}.
        """
        self.smoothed += LOAD_SMOOTHING * (sessions - self.smoothed)
        if sessions == 0 and self.smoothed < 0.5:
            self.smoothed = 0.0
        level = loadLevel(self.smoothed, capacity)
        if abs(level - self.applied) >= LOAD_HYSTERESIS or (level == 0 != self.applied):
            self.applied = level
            return level
        return None
