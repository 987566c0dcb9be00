"""
Classes of service (APPN COS tables): what route selection knows of links and
nodes, the ordered weight rows, the built-in tables and the parser of the
C{[cos.NAME]} sections of the config file.

A L{ClassOfService} is a named table of ordered rows.  Link rows hold ranges
over a link's characteristics (C{rtt_ms}, C{throughput}, C{cost},
C{security}), node rows ranges over a node's (C{resistance}, C{load}), and
each row a weight.  An element takes the weight of the I{first} row whose
every range contains its characteristics; an element no row admits is
excluded from routes of that class, and the reason is kept so that
L{appnpy.net.routing.explainRoute} can tell the operator which test it failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from appnpy.errors import ConfigurationError
from appnpy.net.routing.characteristics import SECURITY_TLS13_256

__all__ = [
    "LinkCharacteristics",
    "NodeCharacteristics",
    "LinkRow",
    "NodeRow",
    "ClassOfService",
    "BUILTIN_COS",
    "DEFAULT_COS",
    "SECURE_FLOOR",
    "TLS_SECURITY",
    "parseCOS",
    "parseCOSTables",
]

#: The security level the C{secure} class of service requires of every link:
#: TLS 1.3 with a 256-bit cipher, or a peer certified by the network CA (see
#: L{appnpy.net.routing.characteristics.linkSecurity}).
SECURE_FLOOR = SECURITY_TLS13_256
#: The security level assumed for a link not measured yet: TLS 1.3 as every
#: link negotiates it by default (AES-256-GCM), in open trust mode.
TLS_SECURITY = SECURITY_TLS13_256
#: The class of service used when a plugin names none.
DEFAULT_COS = "interactive"

UNBOUNDED = (0, math.inf)
Bound = tuple[float, float]


@attrs.frozen
class LinkCharacteristics:
    """
    What route selection knows of a link (APPN TG characteristics).
    """

    rtt_ms: int = 100
    throughput: int = 1_000_000
    cost: int = 0
    security: int = TLS_SECURITY

    @classmethod
    def combine(cls, a: LinkCharacteristics, b: LinkCharacteristics) -> LinkCharacteristics:
        """
        The characteristics of a link as both ends announce it: the worse of
        each, so neither end can make a link look better than the other sees it.
        """
        return cls(
            rtt_ms=max(a.rtt_ms, b.rtt_ms),
            throughput=min(a.throughput, b.throughput),
            cost=max(a.cost, b.cost),
            security=min(a.security, b.security),
        )


@attrs.frozen
class NodeCharacteristics:
    """
    What route selection knows of a node: route-addition resistance and load
    (0-255, lower is more desirable for intermediate routing).
    """

    resistance: int = 0
    load: int = 0


LINK_FIELDS = ("rtt_ms", "throughput", "cost", "security")
NODE_FIELDS = ("resistance", "load")


def _inRange(value: float, bound: Bound) -> bool:
    return bound[0] <= value <= bound[1]


def _fmtBound(bound: Bound) -> str:
    hi = "inf" if bound[1] == math.inf else f"{bound[1]:g}"
    return f"{bound[0]:g}..{hi}"


@attrs.frozen
class LinkRow:
    """
    One row of a class of service for links: ranges (inclusive) and a weight.
    """

    weight: float
    rtt_ms: Bound = UNBOUNDED
    throughput: Bound = UNBOUNDED
    cost: Bound = UNBOUNDED
    security: Bound = UNBOUNDED

    def failures(self, chars: LinkCharacteristics) -> list[str]:
        return [
            f"{name} {getattr(chars, name)} not in {_fmtBound(getattr(self, name))}"
            for name in LINK_FIELDS
            if not _inRange(getattr(chars, name), getattr(self, name))
        ]


@attrs.frozen
class NodeRow:
    """
    One row of a class of service for nodes.
    """

    weight: float
    resistance: Bound = UNBOUNDED
    load: Bound = UNBOUNDED

    def failures(self, chars: NodeCharacteristics) -> list[str]:
        return [
            f"{name} {getattr(chars, name)} not in {_fmtBound(getattr(self, name))}"
            for name in NODE_FIELDS
            if not _inRange(getattr(chars, name), getattr(self, name))
        ]


def _firstFit(rows: tuple[Any, ...], chars: Any) -> tuple[float | None, str]:
    best: tuple[int, int, list[str]] | None = None
    for index, row in enumerate(rows):
        failed = row.failures(chars)
        if not failed:
            return row.weight, ""
        if best is None or len(failed) < best[0]:
            best = (len(failed), index, failed)
    if best is None:
        return None, "the class of service has no rows"
    return None, f"no row admits it; closest row {best[1] + 1}: {', '.join(best[2])}"


@attrs.frozen
class ClassOfService:
    """
    A named route-selection table (APPN COS): ordered link and node rows.
    """

    name: str
    linkRows: tuple[LinkRow, ...]
    nodeRows: tuple[NodeRow, ...]
    priority: str = "medium"
    description: str = ""

    def linkWeight(self, chars: LinkCharacteristics) -> tuple[float | None, str]:
        """
        The weight of the first row that admits the link, or C{None} and why
        no row does.
        """
        return _firstFit(self.linkRows, chars)

    def nodeWeight(self, chars: NodeCharacteristics) -> tuple[float | None, str]:
        return _firstFit(self.nodeRows, chars)

    def asDict(self) -> dict[str, Any]:
        def bounds(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
            out: dict[str, Any] = {"weight": row.weight}
            for n in names:
                b = getattr(row, n)
                if b != UNBOUNDED:
                    out[n] = [b[0], None if b[1] == math.inf else b[1]]
            return out

        return {
            "name": self.name,
            "priority": self.priority,
            "description": self.description,
            "link": [bounds(r, LINK_FIELDS) for r in self.linkRows],
            "node": [bounds(r, NODE_FIELDS) for r in self.nodeRows],
        }


# -- built-in classes of service -------------------------------------------------

_RTT_BANDS = ((0, 10, 10), (10, 30, 20), (30, 100, 40), (100, 300, 80), (300, 1000, 160))
_THROUGHPUT_BANDS = (
    (100_000_000, 20),
    (10_000_000, 40),
    (1_000_000, 80),
    (100_000, 160),
    (0, 320),
)
_COST_BANDS = ((0, 0, 0), (1, 127, 10), (128, 255, 40))


def _latencyRows(security: Bound = UNBOUNDED, slowRTT: bool = True) -> tuple[LinkRow, ...]:
    rows = []
    for lo, hi, w in _RTT_BANDS:
        for clo, chi, cw in _COST_BANDS:
            rows.append(LinkRow(w + cw, rtt_ms=(lo, hi), cost=(clo, chi), security=security))
    if slowRTT:
        rows.append(LinkRow(640, rtt_ms=(1000, math.inf), security=security))
    return tuple(rows)


def _throughputRows() -> tuple[LinkRow, ...]:
    rows = []
    for lo, w in _THROUGHPUT_BANDS:
        for clo, chi, cw in _COST_BANDS:
            rows.append(LinkRow(w + cw, throughput=(lo, math.inf), cost=(clo, chi)))
    return tuple(rows)


def _nodeRows(maxLoad: float = 255) -> tuple[NodeRow, ...]:
    return (
        NodeRow(5, resistance=(0, 63), load=(0, 127)),
        NodeRow(15, resistance=(0, 127), load=(0, 191)),
        NodeRow(40, resistance=(0, 191), load=(0, maxLoad)),
        NodeRow(100, resistance=(0, 255), load=(0, maxLoad)),
    )


BUILTIN_COS: dict[str, ClassOfService] = {
    "interactive": ClassOfService(
        "interactive",
        _latencyRows(),
        _nodeRows(),
        "high",
        "latency first; cost second; congested nodes avoided",
    ),
    "batch": ClassOfService(
        "batch", _throughputRows(), _nodeRows(), "low", "throughput first, then cost"
    ),
    "secure": ClassOfService(
        "secure",
        _latencyRows(security=(SECURE_FLOOR, math.inf)),
        _nodeRows(),
        "high",
        f"latency first, only links with security >= {SECURE_FLOOR}",
    ),
    "control": ClassOfService(
        "control",
        tuple(LinkRow(w, rtt_ms=(lo, hi)) for lo, hi, w in _RTT_BANDS)
        + (LinkRow(640, rtt_ms=(1000, math.inf)),),
        (NodeRow(1),),
        "network",
        "CP traffic: any link, latency first, node load ignored",
    ),
}


# -- configuration ----------------------------------------------------------------

_COS_KEYS = frozenset({"priority", "description", "link", "node"})
_PRIORITIES = ("network", "high", "medium", "low")


def _parseBound(cosName: str, where: str, key: str, value: object) -> Bound:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(v is None or (type(v) in (int, float) and v >= 0) for v in value)
    ):
        raise ConfigurationError(
            f"cos {cosName!r} {where}: {key!r} must be [low, high] with numbers >= 0 "
            "(high may be TOML's inf)"
        )
    lo = float(value[0] or 0)
    hi = math.inf if value[1] is None else float(value[1])
    if lo > hi:
        raise ConfigurationError(f"cos {cosName!r} {where}: {key!r} low is above high")
    return (lo, hi)


def _parseRows(
    cosName: str, kind: str, rows: object, fields: tuple[str, ...]
) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not rows:
        raise ConfigurationError(f"cos {cosName!r}: {kind!r} must be a non-empty list of rows")
    out = []
    for index, row in enumerate(rows):
        where = f"{kind} row {index + 1}"
        if not isinstance(row, dict):
            raise ConfigurationError(f"cos {cosName!r} {where}: must be a table")
        args: dict[str, Any] = {}
        for key, value in row.items():
            name = key.replace("-", "_")
            if name == "weight":
                if type(value) not in (int, float) or not 0 <= value < math.inf:
                    raise ConfigurationError(f"cos {cosName!r} {where}: weight must be >= 0")
                args["weight"] = float(value)
            elif name in fields:
                if isinstance(value, list) and len(value) == 2 and value[1] == "inf":
                    value = [value[0], None]
                args[name] = _parseBound(cosName, where, key, value)
            else:
                raise ConfigurationError(
                    f"cos {cosName!r} {where}: unknown key {key!r} "
                    f"(expected weight, {', '.join(f.replace('_', '-') for f in fields)})"
                )
        if "weight" not in args:
            raise ConfigurationError(f"cos {cosName!r} {where}: weight is required")
        out.append(args)
    return out


def parseCOS(name: str, section: Mapping[str, Any]) -> ClassOfService:
    """
    Build a class of service from a configuration table such as::

        [cos.bulk]
        priority = "low"
        link = [ {weight = 10, throughput = [10000000, inf], security = [128, 255]},
                 {weight = 50, rtt-ms = [0, 500]} ]
        node = [ {weight = 5, load = [0, 200]} ]

    Ranges are inclusive C{[low, high]}; a key left out admits anything.

    @raise ConfigurationError: naming the bad key; unknown keys are errors.
    """
    if not isinstance(name, str) or not name or len(name) > 32:
        raise ConfigurationError(f"invalid class of service name {name!r}")
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"cos {name!r} must be a table")
    unknown = set(section) - _COS_KEYS
    if unknown:
        raise ConfigurationError(
            f"cos {name!r}: unknown key {sorted(unknown)[0]!r} "
            f"(expected {', '.join(sorted(_COS_KEYS))})"
        )
    priority = section.get("priority", "medium")
    if priority not in _PRIORITIES:
        raise ConfigurationError(f"cos {name!r}: priority must be one of {', '.join(_PRIORITIES)}")
    description = section.get("description", "")
    if not isinstance(description, str):
        raise ConfigurationError(f"cos {name!r}: description must be text")
    if "link" not in section:
        raise ConfigurationError(f"cos {name!r}: at least one link row is required")
    linkRows = tuple(LinkRow(**a) for a in _parseRows(name, "link", section["link"], LINK_FIELDS))
    nodeRows = (
        tuple(NodeRow(**a) for a in _parseRows(name, "node", section["node"], NODE_FIELDS))
        if "node" in section
        else (NodeRow(0),)
    )
    return ClassOfService(name, linkRows, nodeRows, priority, description)


def parseCOSTables(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, ClassOfService]:
    """
    Every C{[cos.NAME]} section of a config file, parsed: the tables to add
    to (or replace) the built-in ones.  One parse serves both validating the
    config and building the topology database.

    @raise ConfigurationError: for the first bad section.
    """
    return {name: parseCOS(name, dict(section)) for name, section in sections.items()}
