"""
Per-sender rate limiting: a token bucket for each sender, kept in a bounded
table so a flood of distinct senders cannot grow it without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    """
    One token bucket per key: C{burst} tokens at most, refilled at C{rate}
    per second; a message takes one.  At most C{maxKeys} buckets are kept,
    the least recently used dropped first (a dropped sender starts full
    again, which is the worst a forgotten sender gains).
    """

    def __init__(
        self, seconds: Callable[[], float], rate: float, burst: int, maxKeys: int = 1024
    ) -> None:
        self.seconds = seconds
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        """
        Take a token for C{key}: C{True} if there was one.
        """
        now = self.seconds()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.maxKeys:
            self._buckets.popitem(last=False)
        return allowed
