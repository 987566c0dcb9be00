"""
The own resource sequence number (RSN), persisted so a restart never reuses one.

Only the owner raises the RSN of its records, so reusing one after a restart
would make the neighbours drop the new records as duplicates or as
inconsistent.  The RSN is reserved in blocks of L{RSN_RESERVE} in
C{topology.json} in the state directory (written atomically before any RSN
of the block is used); a restart continues above the last reservation.
Without a state directory the start grows with the clock, and the
neighbours' "newer copy" answers fix the rest (L{OwnRSN.jumpPast}).

Own RSNs are even: each issue adds 2.
"""

from __future__ import annotations

import json
import os

from appnpy.errors import ConfigurationError
from appnpy.link.statefile import writeAtomically
from appnpy.net.topology.records import MAX_RSN

__all__ = ["RSN_RESERVE", "STATE_FILE", "OwnRSN"]

#: RSNs reserved per write of the state file; a restart continues above.
RSN_RESERVE = 1000
STATE_FILE = "topology.json"


class OwnRSN:
    """
    The last RSN this node used for its own records, and the reservation
    persisted above it.

    @ivar value: the last RSN used (even).
    """

    def __init__(self, stateDir: str | None, now: float) -> None:
        self.stateDir = stateDir
        self.value = 0
        self._reserved = 0
        self._load(now)

    @property
    def statePath(self) -> str | None:
        return os.path.join(self.stateDir, STATE_FILE) if self.stateDir else None

    def _load(self, now: float) -> None:
        path = self.statePath
        start = 0
        if path is not None and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
                reserved = state["reserved_rsn"]
                if type(reserved) is not int or not 0 <= reserved <= MAX_RSN:
                    raise ValueError("reserved_rsn out of range")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigurationError(f"{path}: unreadable topology state ({e})") from None
            # Everything up to the reserved value may have been used.
            start = reserved + 2
        elif path is None:
            # No state: a value that grows with time, so a restart is very
            # unlikely to reuse one; the neighbours' newer copies fix the rest.
            start = int(now * 100)
        self.value = start + (start % 2)
        self._reserved = self.value
        if path is not None:
            self._reserve()

    def _reserve(self) -> None:
        self._reserved = self.value + RSN_RESERVE
        path = self.statePath
        if path is None:
            return
        os.makedirs(self.stateDir or ".", exist_ok=True)
        data = json.dumps({"reserved_rsn": self._reserved, "version": 1}).encode()
        writeAtomically(path, data, 0o600)

    def next(self) -> int:
        """
        The RSN for the next own record.
        """
        self.value += 2
        if self.value >= self._reserved:
            self._reserve()
        return self.value

    def jumpPast(self, seen: int) -> None:
        """
        A neighbour holds an own record with RSN C{seen}: we lost our state.
        Continue from there (the next issue is above it).
        """
        self.value = max(self.value, seen + (seen % 2))
        if self.value >= self._reserved:
            self._reserve()
