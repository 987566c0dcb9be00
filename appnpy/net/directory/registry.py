"""
The registry: records other nodes registered here (an end node with its
network-node server; every network node with the central directory server),
by resource name and owner, each remembering through which node (C{via}) it
came so a re-registration replaces exactly what that node sent before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterator
from typing import Any

import attrs

from appnpy.net.directory.records import MAX_TTL, ResourceRecord

#: Most records registered through one node (an end node, or a network node
#: pushing to a CDS), and in the whole registry.
MAX_RECORDS_PER_REGISTRANT = 1024
MAX_REGISTRY = 65536


@attrs.define
class Registration:
    record: ResourceRecord
    via: str
    expires: float


class Registry:
    """
    Registered records, bounded (L{MAX_REGISTRY}) and expiring.
    """

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.byName: dict[str, dict[str, Registration]] = {}

    def replace(self, via: str, records: list[ResourceRecord], now: float) -> list[str]:
        """
        Everything registered through C{via} is now C{records}.

        @return: the names that gained a registration.
        """
        for name in list(self.byName):
            owners = self.byName[name]
            for owner in [o for o, r in owners.items() if r.via == via]:
                del owners[owner]
            if not owners:
                del self.byName[name]
        total = sum(len(o) for o in self.byName.values())
        added = []
        for record in records:
            if total >= MAX_REGISTRY:
                self.stats["registry-full"] += 1
                break
            owners = self.byName.setdefault(record.name, {})
            existing = owners.get(record.owner)
            if existing is not None and existing.record.seq > record.seq:
                continue
            owners[record.owner] = Registration(record, via, now + min(record.ttl, MAX_TTL))
            total += 1
            added.append(record.name)
        return added

    def current(self, name: str, now: float) -> Iterator[ResourceRecord]:
        for reg in self.byName.get(name, {}).values():
            if reg.expires > now:
                yield reg.record

    def registeredVia(self, vias: Container[str]) -> Iterator[ResourceRecord]:
        for owners in self.byName.values():
            yield from (reg.record for reg in owners.values() if reg.via in vias)

    def expire(self, now: float) -> None:
        for name in list(self.byName):
            owners = self.byName[name]
            for owner in [o for o, r in owners.items() if r.expires <= now]:
                del owners[owner]
                self.stats["records-expired"] += 1
            if not owners:
                del self.byName[name]

    def asDict(self, now: float) -> dict[str, Any]:
        return {
            name: [
                {"owner": o, "via": r.via, "expires_in": round(r.expires - now, 1)}
                for o, r in sorted(owners.items())
            ]
            for name, owners in sorted(self.byName.items())
        }
