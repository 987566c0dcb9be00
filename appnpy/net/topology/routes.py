"""
Route selection over the topology database: the graph's least-weight route,
with an end node at either end reached through its serving network node
(the one its own end record names, while that node lists it; that hop
weighs 0).  Links named in C{avoid} (this node's suspected links) are left
out of the graph.
"""

from __future__ import annotations

from collections.abc import Collection

from appnpy.net.routing import (
    ClassOfService,
    Route,
    RouteExplanation,
    TopologyGraph,
    kShortestRoutes,
    leastWeightRoute,
)
from appnpy.net.routing import explainRoute as explainGraphRoute
from appnpy.net.topology.database import RecordStore

__all__ = ["alternativeRoutes", "explainRoute", "selectRoute"]


def _endpoints(
    store: RecordStore, origin: str, destination: str
) -> tuple[str, str, str | None, str | None]:
    """
    The network nodes to route between, and the end nodes (if any) beyond them.
    """
    g = store.graph()
    first = last = None
    if origin not in g.nodes:
        server = store.servingNode(origin)
        if server is not None:
            first, origin = origin, server
    if destination not in g.nodes:
        server = store.servingNode(destination)
        if server is not None:
            last, destination = destination, server
    return origin, destination, first, last


def _extend(route: Route, first: str | None, last: str | None) -> Route:
    hops, weights = list(route.hops), list(route.hopWeights)
    if first is not None:
        hops.insert(0, first)
        weights.insert(0, 0.0)
    if last is not None:
        hops.append(last)
        weights.append(0.0)
    return Route(hops, route.weight, weights, route.cos)


def _graph(store: RecordStore, avoid: Collection[tuple[str, str]]) -> TopologyGraph:
    g = store.graph()
    return g.without(avoid) if avoid else g


def selectRoute(
    store: RecordStore,
    table: ClassOfService,
    origin: str,
    destination: str,
    avoid: Collection[tuple[str, str]] = (),
) -> Route:
    """
    The least-weight route for C{table}, over none of the links in C{avoid}.

    @raise NoRoute: when none qualifies.
    """
    if origin == destination:
        return Route([origin], 0.0, [], table.name)
    o, d, first, last = _endpoints(store, origin, destination)
    if o == d:
        route = Route([o], 0.0, [], table.name)
    else:
        route = leastWeightRoute(_graph(store, avoid), o, d, table)
    return _extend(route, first, last)


def alternativeRoutes(
    store: RecordStore, table: ClassOfService, origin: str, destination: str, k: int
) -> list[Route]:
    """
    Up to C{k} loop-free routes for C{table}, best first (the alternatives
    a path switch tries); empty when none qualifies.
    """
    o, d, first, last = _endpoints(store, origin, destination)
    if o == d:
        return [selectRoute(store, table, origin, destination)]
    return [_extend(r, first, last) for r in kShortestRoutes(store.graph(), o, d, table, k)]


def explainRoute(
    store: RecordStore,
    table: ClassOfService,
    origin: str,
    destination: str,
    avoid: Collection[tuple[str, str]] = (),
) -> RouteExplanation:
    """
    Why the route for C{table} is the one chosen (see
    L{appnpy.net.routing.explainRoute}), between the nodes asked about.
    """
    o, d, first, last = _endpoints(store, origin, destination)
    explanation = explainGraphRoute(_graph(store, avoid), o, d, table)
    if explanation.route is not None:
        explanation.route = _extend(explanation.route, first, last)
    explanation.origin, explanation.destination = origin, destination
    return explanation
