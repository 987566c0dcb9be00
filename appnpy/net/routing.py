"""
Route selection: classes of service and least-weight routes (APPN TRS).

A L{ClassOfService} is a named table of ordered rows.  Link rows hold ranges
over a link's characteristics (C{rtt_ms}, C{throughput}, C{cost},
C{security}), node rows ranges over a node's (C{resistance}, C{load}), and
each row a weight.  An element takes the weight of the I{first} row whose
every range contains its characteristics; an element no row admits is
excluded from routes of that class, and the reason is kept so that
L{explainRoute} can tell the operator which test it failed.

The route weight is the sum of the link weights and of the weights of the
I{intermediate} nodes (the origin and destination are where the session
ends, so their load does not count).  L{leastWeightRoute} is Dijkstra with a
deterministic tie-break: among routes of equal weight the one whose node-ID
sequence sorts first wins, so every node computes the same route.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from appnpy.errors import ConfigurationError, NoRoute

__all__ = [
    "LinkCharacteristics",
    "NodeCharacteristics",
    "LinkRow",
    "NodeRow",
    "ClassOfService",
    "TopologyGraph",
    "Route",
    "RouteExplanation",
    "BUILTIN_COS",
    "DEFAULT_COS",
    "SECURE_FLOOR",
    "parseCOS",
    "leastWeightRoute",
    "explainRoute",
    "kShortestRoutes",
]

#: The security level the C{secure} class of service requires of every link.
SECURE_FLOOR = 128
#: The security level of a TLS 1.3 link (AES-128 or better).
TLS_SECURITY = 128
#: The class of service used when a plugin names none.
DEFAULT_COS = "interactive"
#: How many next-best routes an explanation lists.
MAX_ALTERNATIVES = 3
#: How many excluded elements an explanation lists.
MAX_EXCLUDED = 20

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

    def failures(self, chars: Any) -> list[str]:
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

    def failures(self, chars: Any) -> list[str]:
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


# -- the graph ------------------------------------------------------------------


class TopologyGraph:
    """
    Network nodes with their characteristics and the (bidirectional) links
    between them with theirs.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeCharacteristics] = {}
        self.adjacency: dict[str, dict[str, LinkCharacteristics]] = {}

    def addNode(self, nodeID: str, chars: NodeCharacteristics | None = None) -> None:
        self.nodes[nodeID] = chars or NodeCharacteristics()
        self.adjacency.setdefault(nodeID, {})

    def addLink(self, a: str, b: str, chars: LinkCharacteristics | None = None) -> None:
        if a == b:
            return
        for n in (a, b):
            if n not in self.nodes:
                self.addNode(n)
        c = chars or LinkCharacteristics()
        self.adjacency[a][b] = c
        self.adjacency[b][a] = c

    def removeLink(self, a: str, b: str) -> None:
        self.adjacency.get(a, {}).pop(b, None)
        self.adjacency.get(b, {}).pop(a, None)

    def removeNode(self, nodeID: str) -> None:
        for peer in self.adjacency.pop(nodeID, {}):
            self.adjacency[peer].pop(nodeID, None)
        self.nodes.pop(nodeID, None)

    def links(self) -> Iterator[tuple[str, str, LinkCharacteristics]]:
        for a, peers in self.adjacency.items():
            for b, c in peers.items():
                if a < b:
                    yield a, b, c

    def neighbours(self, nodeID: str) -> list[str]:
        return sorted(self.adjacency.get(nodeID, {}))

    def asDict(self) -> dict[str, Any]:
        return {
            "nodes": {n: attrs.asdict(c) for n, c in sorted(self.nodes.items())},
            "links": [[a, b, attrs.asdict(c)] for a, b, c in sorted(self.links())],
        }


@attrs.define
class Route:
    """
    A selected route: every node from origin to destination, its total
    weight, and the weight each hop adds (the link's, plus the node's it
    enters when that node is intermediate).
    """

    hops: list[str]
    weight: float
    hopWeights: list[float]
    cos: str = DEFAULT_COS

    def asDict(self) -> dict[str, Any]:
        return {
            "hops": list(self.hops),
            "weight": self.weight,
            "hopWeights": list(self.hopWeights),
            "cos": self.cos,
        }


class _Weights:
    """
    The weights of one graph under one class of service, computed once.
    """

    def __init__(self, graph: TopologyGraph, cos: ClassOfService) -> None:
        self.graph = graph
        self.cos = cos
        self.node: dict[str, float] = {}
        self.excludedNodes: dict[str, str] = {}
        c: NodeCharacteristics | LinkCharacteristics  # reused by both loops below
        for n, c in graph.nodes.items():
            w, why = cos.nodeWeight(c)
            if w is None:
                self.excludedNodes[n] = why
            else:
                self.node[n] = w
        self.link: dict[tuple[str, str], float] = {}
        self.excludedLinks: dict[tuple[str, str], str] = {}
        for a, b, c in graph.links():
            w, why = cos.linkWeight(c)
            if w is None:
                self.excludedLinks[(a, b)] = why
            else:
                self.link[(a, b)] = w

    def linkWeight(self, a: str, b: str) -> float | None:
        return self.link.get((a, b) if a < b else (b, a))

    def linkExcluded(self, a: str, b: str) -> str | None:
        return self.excludedLinks.get((a, b) if a < b else (b, a))

    def hopWeights(self, hops: list[str]) -> list[float] | None:
        out = []
        for i in range(len(hops) - 1):
            w = self.linkWeight(hops[i], hops[i + 1])
            if w is None:
                return None
            nxt = hops[i + 1]
            if i + 1 < len(hops) - 1:
                nw = self.node.get(nxt)
                if nw is None:
                    return None
                w += nw
            out.append(float(w))
        return out


def _dijkstra(
    w: _Weights,
    origin: str,
    destination: str,
    bannedNodes: frozenset[str] = frozenset(),
    bannedLinks: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[float, list[str]] | None:
    """
    Least-weight path; ties broken by the lexicographic order of the node-ID
    sequence (a total order that extension preserves, so Dijkstra stays exact).
    """
    graph = w.graph
    if origin not in graph.nodes or destination not in graph.nodes:
        return None
    heap: list[tuple[float, tuple[str, ...]]] = [(0.0, (origin,))]
    done: set[str] = set()
    while heap:
        dist, path = heapq.heappop(heap)
        u = path[-1]
        if u in done:
            continue
        done.add(u)
        if u == destination:
            return dist, list(path)
        if u != origin:
            nodeW = w.node.get(u)
            if nodeW is None:
                continue  # an excluded node may end a route but not carry one
            extra = nodeW
        else:
            extra = 0.0
        for v, _ in graph.adjacency[u].items():
            if v in done or v in bannedNodes:
                continue
            if (u, v) in bannedLinks:
                continue
            lw = w.linkWeight(u, v)
            if lw is None:
                continue
            heapq.heappush(heap, (dist + extra + lw, path + (v,)))
    return None


def _route(w: _Weights, hops: list[str]) -> Route:
    hw = w.hopWeights(hops)
    assert hw is not None
    return Route(hops, float(sum(hw)), hw, w.cos.name)


def leastWeightRoute(
    graph: TopologyGraph, origin: str, destination: str, cos: ClassOfService
) -> Route:
    """
    The least-weight route for C{cos}.

    @raise NoRoute: if no route qualifies.
    """
    if origin == destination and origin in graph.nodes:
        return Route([origin], 0.0, [], cos.name)
    w = _Weights(graph, cos)
    found = _dijkstra(w, origin, destination)
    if found is None:
        raise NoRoute(_noRouteDetail(graph, origin, destination, cos.name))
    return _route(w, found[1])


def _noRouteDetail(graph: TopologyGraph, origin: str, destination: str, cos: str) -> str:
    for n in (origin, destination):
        if n not in graph.nodes:
            return f"{n} is not in the topology"
    return f"no route from {origin} to {destination} qualifies for class of service {cos!r}"


def _yen(w: _Weights, origin: str, destination: str, k: int) -> list[tuple[float, list[str]]]:
    """
    Yen's algorithm: the C{k} least-weight loop-free paths, best first.
    """
    first = _dijkstra(w, origin, destination)
    if first is None:
        return []
    found = [first]
    candidates: list[tuple[float, tuple[str, ...]]] = []
    seen = {tuple(first[1])}
    while len(found) < k:
        _, last = found[-1]
        for i in range(len(last) - 1):
            spur = last[i]
            root = last[: i + 1]
            bannedLinks = set()
            for _, p in found:
                if p[: i + 1] == root and len(p) > i + 1:
                    bannedLinks.add((p[i], p[i + 1]))
            if i > 0 and w.node.get(spur) is None:
                continue  # the spur node is excluded as an intermediate
            sub = _dijkstra(w, spur, destination, frozenset(root[:-1]), frozenset(bannedLinks))
            if sub is None:
                continue
            path = tuple(root[:-1]) + tuple(sub[1])
            if path in seen:
                continue
            hw = w.hopWeights(list(path))
            if hw is None:
                continue
            seen.add(path)
            heapq.heappush(candidates, (float(sum(hw)), path))
        if not candidates:
            break
        weight, path = heapq.heappop(candidates)
        found.append((weight, list(path)))
    return found


def kShortestRoutes(
    graph: TopologyGraph, origin: str, destination: str, cos: ClassOfService, k: int
) -> list[Route]:
    """
    The C{k} best loop-free routes for C{cos}, best first.
    """
    w = _Weights(graph, cos)
    return [_route(w, p) for _, p in _yen(w, origin, destination, k)]


@attrs.define
class RouteExplanation:
    """
    Why a route was chosen: its hops and weights, the next-best routes and
    how much more they weigh, and the shortest paths the class of service
    excluded, with the element and the row test it failed.
    """

    origin: str
    destination: str
    cos: str
    route: Route | None
    alternatives: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    reason: str = ""

    def asDict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "destination": self.destination,
            "cos": self.cos,
            "route": self.route.asDict() if self.route else None,
            "alternatives": self.alternatives,
            "rejected": self.rejected,
            "excluded": self.excluded,
            "reason": self.reason,
        }


def _unitWeights(graph: TopologyGraph, cos: ClassOfService) -> _Weights:
    """
    Every link and node weighs 1: the hop-count view used to find the
    shortest paths a class of service excludes.
    """
    unit = ClassOfService("hops", (LinkRow(1),), (NodeRow(0),))
    return _Weights(graph, unit)


def explainRoute(
    graph: TopologyGraph,
    origin: str,
    destination: str,
    cos: ClassOfService,
    alternatives: int = MAX_ALTERNATIVES,
) -> RouteExplanation:
    """
    Explain the route selection for C{cos} from C{origin} to C{destination}.
    """
    w = _Weights(graph, cos)
    best = _yen(w, origin, destination, alternatives + 1) if origin != destination else []
    route = _route(w, best[0][1]) if best else None
    if origin == destination and origin in graph.nodes:
        route = Route([origin], 0.0, [], cos.name)
    alts = []
    for weight, hops in best[1:]:
        alts.append(
            {
                "hops": hops,
                "weight": weight,
                "hopWeights": w.hopWeights(hops),
                "lostBy": weight - route.weight if route else None,
                "why": f"weighs {weight - route.weight:g} more" if route else "",
            }
        )
    rejected = []
    if origin != destination and origin in graph.nodes and destination in graph.nodes:
        unit = _unitWeights(graph, cos)
        for _, hops in _yen(unit, origin, destination, 4 * (alternatives + 1)):
            failed = _excludedElements(w, hops)
            if failed:
                rejected.append({"hops": hops, "excludedBy": failed})
                if len(rejected) >= alternatives:
                    break
    excluded = [{"link": [a, b], "why": why} for (a, b), why in sorted(w.excludedLinks.items())] + [
        {"node": n, "why": why} for n, why in sorted(w.excludedNodes.items())
    ]
    reason = ""
    if route is None:
        reason = _noRouteDetail(graph, origin, destination, cos.name)
    return RouteExplanation(
        origin, destination, cos.name, route, alts, rejected, excluded[:MAX_EXCLUDED], reason
    )


def _excludedElements(w: _Weights, hops: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(len(hops) - 1):
        why = w.linkExcluded(hops[i], hops[i + 1])
        if why is not None:
            out.append({"link": [hops[i], hops[i + 1]], "why": why})
        if 0 < i + 1 < len(hops) - 1 and hops[i + 1] in w.excludedNodes:
            out.append({"node": hops[i + 1], "why": w.excludedNodes[hops[i + 1]]})
    return out


def routeWeight(graph: TopologyGraph, hops: Iterable[str], cos: ClassOfService) -> float | None:
    """
    The weight of a given route under C{cos}, or C{None} if it uses an
    excluded element or a missing link.
    """
    hw = _Weights(graph, cos).hopWeights(list(hops))
    return None if hw is None else float(sum(hw))
