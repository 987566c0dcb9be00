"""
The locate cache of a node: recent answers (positive) and recent misses
(negative), both bounded LRU tables with a lifetime.

A positive entry is I{fresh} for C{fresh} seconds (used as is) and then
I{stale} until it expires (only a hint where to send a directed search); a
negative entry answers "not found" at once so a storm of locates for a
missing name does not become a storm of broadcasts.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from appnpy.errors import ResourceNotFound
from appnpy.net.directory.records import ResourceRecord


@attrs.define
class CacheEntry:
    records: list[ResourceRecord]
    route: list[str] | None
    fresh: float
    expires: float


class LocateCache:
    """
    Positive and negative locate answers, by resource name.

    @ivar negative: name -> when the cached miss expires.
    """

    def __init__(self, size: int, fresh: float, ttl: float, negativeTTL: float) -> None:
        self.size = size
        self.freshFor = fresh
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.positive: OrderedDict[str, CacheEntry] = OrderedDict()
        self.negative: OrderedDict[str, float] = OrderedDict()

    def lookup(self, name: str, now: float) -> tuple[CacheEntry | None, bool]:
        """
        (cache entry or None, is it fresh?).

        @raise ResourceNotFound: for a cached miss.
        """
        entry = self.positive.get(name)
        if entry is not None and entry.expires <= now:
            del self.positive[name]
            entry = None
        if entry is not None:
            self.positive.move_to_end(name)
            return entry, entry.fresh > now
        missUntil = self.negative.get(name)
        if missUntil is not None:
            if missUntil > now:
                raise ResourceNotFound(f"{name} (a recent search found nothing)")
            del self.negative[name]
        return None, False

    def found(
        self, name: str, records: list[ResourceRecord], route: list[str] | None, now: float
    ) -> None:
        ttl = min([self.ttl] + [r.ttl for r in records])
        self.positive[name] = CacheEntry(records, route, now + min(self.freshFor, ttl), now + ttl)
        self.positive.move_to_end(name)
        self.negative.pop(name, None)
        while len(self.positive) > self.size:
            self.positive.popitem(last=False)

    def missed(self, name: str, now: float) -> None:
        self.negative[name] = now + self.negativeTTL
        self.negative.move_to_end(name)
        while len(self.negative) > self.size:
            self.negative.popitem(last=False)

    def forget(self, name: str) -> None:
        """
        Drop the positive answer for C{name} (a directed search disproved it).
        """
        self.positive.pop(name, None)

    def forgetMiss(self, name: str) -> None:
        """
        Drop a cached miss (a registration for C{name} arrived).
        """
        self.negative.pop(name, None)

    def expire(self, now: float) -> None:
        for name in [n for n, e in self.positive.items() if e.expires <= now]:
            del self.positive[name]
        for name in [n for n, t in self.negative.items() if t <= now]:
            del self.negative[name]

    def asDict(self, now: float) -> dict[str, Any]:
        return {
            "cache": {
                name: {
                    "owners": [r.owner for r in e.records],
                    "expires_in": round(e.expires - now, 1),
                }
                for name, e in self.positive.items()
            },
            "negative_cache": sorted(self.negative),
        }
