"""
Route selection over a topology graph: least-weight routes (APPN TRS).

The route weight is the sum of the link weights and of the weights of the
I{intermediate} nodes (the origin and destination are where the session
ends, so their load does not count).  L{leastWeightRoute} is Dijkstra with a
deterministic tie-break: among routes of equal weight the one whose node-ID
sequence sorts first wins, so every node computes the same route.
L{kShortestRoutes} (Yen) and L{explainRoute} show the operator the next-best
routes and what the class of service excluded.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from appnpy.errors import NoRoute
from appnpy.net.routing.cos import (
    DEFAULT_COS,
    ClassOfService,
    LinkCharacteristics,
    LinkRow,
    NodeCharacteristics,
    NodeRow,
)

__all__ = [
    "TopologyGraph",
    "Route",
    "RouteExplanation",
    "leastWeightRoute",
    "explainRoute",
    "kShortestRoutes",
]

#: How many next-best routes an explanation lists.
MAX_ALTERNATIVES = 3
#: How many excluded elements an explanation lists.
MAX_EXCLUDED = 20

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

    def links(self) -> Iterator[tuple[str, str, LinkCharacteristics]]:
        for a, peers in self.adjacency.items():
            for b, c in peers.items():
                if a < b:
                    yield a, b, c

    def neighbours(self, nodeID: str) -> list[str]:
        return sorted(self.adjacency.get(nodeID, {}))

    def without(self, links: Iterable[tuple[str, str]]) -> TopologyGraph:
        """
        A copy of this graph lacking C{links} (node-ID pairs, either order).
        """
        g = TopologyGraph()
        g.nodes = dict(self.nodes)
        g.adjacency = {n: dict(peers) for n, peers in self.adjacency.items()}
        for a, b in links:
            g.adjacency.get(a, {}).pop(b, None)
            g.adjacency.get(b, {}).pop(a, None)
        return g

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
