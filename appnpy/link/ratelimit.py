"""
The one rate limiter of appnpy: a token bucket on the reactor's clock.

The topology database, the directory, admission, the relay and the
routed-session ends charge every neighbour (and the node as a whole) through
these buckets; time comes from the caller's C{reactor.seconds()}, so
L{twisted.internet.task.Clock} drives tests.  It lives in the lowest layer
so that every layer above can use it.
"""

from __future__ import annotations


class TokenBucket:
    """
    C{rate} tokens a second up to C{burst}.  L{credit} may lift it above
    C{burst} once, until a deadline (the initial exchange after a link comes
    up is larger than the steady rate allows).
    """

    __slots__ = ("rate", "burst", "tokens", "last", "creditUntil")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
        self.creditUntil = now

    def take(self, now: float, n: float = 1) -> bool:
        """
        Take C{n} tokens at time C{now} if there are that many.

        @return: whether they were taken.
        """
        if now > self.creditUntil and self.tokens > self.burst:
            self.tokens = self.burst
        if now > self.last:
            if self.tokens < self.burst:
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def credit(self, n: float, until: float) -> None:
        """
        Allow at least C{n} tokens now, even above C{burst}, until C{until}.
        """
        self.tokens = max(self.tokens, n)
        self.creditUntil = until
