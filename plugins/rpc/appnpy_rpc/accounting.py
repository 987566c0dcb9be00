"""
What an RPC node counts and limits: its configured limits, the calls in
flight per peer node, and the counters behind its metrics and status page.
"""

from __future__ import annotations

import attrs

from appnpy_rpc.errors import CODES


@attrs.define
class Limits:
    """
    What one node allows; [plugin.rpc] sets them (docs/rpc.md).
    """

    #: Seconds a call waits for its answer unless the caller says otherwise.
    callTimeout: float = 30.0
    #: The longest a handler here may run, whatever the caller asked.
    maxTimeout: float = 300.0
    #: Calls from one peer node running here at once (all its sessions).
    maxInFlight: int = 256
    #: Deepest nested call chain (A calls B which calls A ...).
    maxDepth: int = 8


class PeerCounter:
    """
    Calls in flight per peer node, across all its sessions.
    """

    def __init__(self) -> None:
        self.inFlight: dict[str, int] = {}

    def acquire(self, peer: str, limit: int) -> bool:
        n = self.inFlight.get(peer, 0)
        if n >= limit:
            return False
        self.inFlight[peer] = n + 1
        return True

    def release(self, peer: str) -> None:
        n = self.inFlight.get(peer, 0) - 1
        if n > 0:
            self.inFlight[peer] = n
        else:
            self.inFlight.pop(peer, None)


class Stats:
    """
    Counters the plugin shows as metrics and on the status page.
    """

    def __init__(self) -> None:
        self.served: dict[tuple[str, str], int] = {}
        self.made: dict[str, int] = {}
        self.protocolErrors = 0
        self.sessions = 0

    def servedOne(self, service: str, code: str) -> None:
        key = (service, code)
        self.served[key] = self.served.get(key, 0) + 1

    def madeOne(self, code: str) -> None:
        # Codes a peer sends are counted by name only when they are the
        # plugin's own: a peer must not be able to grow the metrics.
        if code != "ok" and code not in CODES:
            code = "application"
        self.made[code] = self.made.get(code, 0) + 1
