"""
Route selection: classes of service, Dijkstra against brute force, and route
explanations.
"""

from __future__ import annotations

import itertools
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.errors import ConfigurationError, NoRoute
from appnpy.net.routing import (
    BUILTIN_COS,
    SECURE_FLOOR,
    ClassOfService,
    LinkCharacteristics,
    LinkRow,
    NodeCharacteristics,
    NodeRow,
    TopologyGraph,
    explainRoute,
    kShortestRoutes,
    leastWeightRoute,
    parseCOS,
)

#: A class of service whose weights are the characteristics themselves, so
#: random graphs get varied weights; cost 255 and load 255 are excluded.
VARIED = ClassOfService(
    "varied",
    tuple(LinkRow(w, cost=(w, w)) for w in range(0, 255)),
    tuple(NodeRow(w, load=(w, w)) for w in range(0, 255)),
)


@st.composite
def graphs(draw: st.DrawFn, maxNodes: int = 7) -> TopologyGraph:
    n = draw(st.integers(2, maxNodes))
    names = [f"n{i}" for i in range(n)]
    g = TopologyGraph()
    for name in names:
        g.addNode(name, NodeCharacteristics(load=draw(st.sampled_from([0, 1, 3, 10, 255]))))
    for a, b in itertools.combinations(names, 2):
        if draw(st.booleans()):
            g.addLink(a, b, LinkCharacteristics(cost=draw(st.sampled_from([0, 1, 2, 5, 9, 255]))))
    return g


def routeWeight(g: TopologyGraph, hops: list[str], cos: ClassOfService) -> float | None:
    """
    The weight of C{hops} under C{cos} straight from the definition: every
    link's weight plus every intermediate node's; None if any is excluded.
    """
    total = 0.0
    for a, b in zip(hops, hops[1:], strict=False):
        w, _ = cos.linkWeight(g.adjacency[a][b])
        if w is None:
            return None
        total += w
    for n in hops[1:-1]:
        w, _ = cos.nodeWeight(g.nodes[n])
        if w is None:
            return None
        total += w
    return total


def bruteForce(g: TopologyGraph, origin: str, destination: str, cos: ClassOfService):
    """
    Every simple path, weighed; the least (weight, hops) or None.
    """
    best = None
    others = [n for n in g.nodes if n not in (origin, destination)]
    for k in range(len(others) + 1):
        for middle in itertools.permutations(others, k):
            hops = [origin, *middle, destination]
            if any(b not in g.adjacency[a] for a, b in zip(hops, hops[1:], strict=False)):
                continue
            w = routeWeight(g, hops, cos)
            if w is not None and (best is None or (w, hops) < best):
                best = (w, hops)
    return best


def line(*specs: tuple[str, str, LinkCharacteristics]) -> TopologyGraph:
    g = TopologyGraph()
    for a, b, c in specs:
        g.addLink(a, b, c)
    return g


class DijkstraPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(graphs())
    def test_equalsBruteForce(self, g: TopologyGraph) -> None:
        """
        On small random graphs, Dijkstra finds the same weight as trying
        every simple path, and the same route (ties broken by node IDs).
        """
        expected = bruteForce(g, "n0", "n1", VARIED)
        if expected is None:
            self.assertRaises(NoRoute, leastWeightRoute, g, "n0", "n1", VARIED)
            return
        route = leastWeightRoute(g, "n0", "n1", VARIED)
        self.assertEqual((route.weight, route.hops), expected)
        self.assertEqual(sum(route.hopWeights), route.weight)

    @settings(max_examples=200, deadline=None)
    @given(graphs(), st.data())
    def test_noLoopsNoExcluded(self, g: TopologyGraph, data: st.DataObject) -> None:
        """
        Routes (the best and the alternatives) never visit a node twice and
        never use an excluded link or an excluded intermediate node.
        """
        names = sorted(g.nodes)
        origin = data.draw(st.sampled_from(names))
        destination = data.draw(st.sampled_from(names))
        for route in kShortestRoutes(g, origin, destination, VARIED, 4):
            self.assertEqual(len(route.hops), len(set(route.hops)))
            self.assertEqual(route.hops[0], origin)
            self.assertEqual(route.hops[-1], destination)
            for a, b in zip(route.hops, route.hops[1:], strict=False):
                self.assertNotEqual(g.adjacency[a][b].cost, 255)
            for n in route.hops[1:-1]:
                self.assertNotEqual(g.nodes[n].load, 255)

    @settings(max_examples=100, deadline=None)
    @given(graphs())
    def test_alternativesOrdered(self, g: TopologyGraph) -> None:
        """
        Yen's alternatives are distinct and come in non-decreasing weight,
        the first being Dijkstra's route.
        """
        routes = kShortestRoutes(g, "n0", "n1", VARIED, 4)
        weights = [r.weight for r in routes]
        self.assertEqual(weights, sorted(weights))
        self.assertEqual(len({tuple(r.hops) for r in routes}), len(routes))
        if routes:
            self.assertEqual(routes[0].hops, leastWeightRoute(g, "n0", "n1", VARIED).hops)


class ClassOfServiceTests(SynchronousTestCase):
    def test_firstRowWins(self) -> None:
        """
        An element takes the weight of the first row that admits it, even
        when a later row would be lighter.
        """
        cos = ClassOfService("t", (LinkRow(50, rtt_ms=(0, 100)), LinkRow(1)), (NodeRow(0),))
        self.assertEqual(cos.linkWeight(LinkCharacteristics(rtt_ms=10))[0], 50)
        self.assertEqual(cos.linkWeight(LinkCharacteristics(rtt_ms=200))[0], 1)

    def test_interactivePrefersLatency(self) -> None:
        """
        interactive takes two fast hops over one slow one; batch takes the
        high-throughput path over the low-latency one.
        """
        fastThin = LinkCharacteristics(rtt_ms=5, throughput=100_000)
        slowFat = LinkCharacteristics(rtt_ms=250, throughput=500_000_000)
        g = line(("a", "b", fastThin), ("b", "c", fastThin), ("a", "c", slowFat))
        self.assertEqual(
            leastWeightRoute(g, "a", "c", BUILTIN_COS["interactive"]).hops, ["a", "b", "c"]
        )
        self.assertEqual(leastWeightRoute(g, "a", "c", BUILTIN_COS["batch"]).hops, ["a", "c"])

    def test_secureExcludesWeakLinks(self) -> None:
        """
        secure never uses a link below the security floor, and says which
        row test it failed.
        """
        weak = LinkCharacteristics(rtt_ms=1, security=SECURE_FLOOR - 1)
        strong = LinkCharacteristics(rtt_ms=500)
        g = line(("a", "b", weak), ("b", "c", weak), ("a", "d", strong), ("d", "c", strong))
        cos = BUILTIN_COS["secure"]
        self.assertEqual(leastWeightRoute(g, "a", "c", cos).hops, ["a", "d", "c"])
        e = explainRoute(g, "a", "c", cos)
        self.assertEqual(e.rejected[0]["hops"], ["a", "b", "c"])
        self.assertIn(
            f"security {SECURE_FLOOR - 1} not in {SECURE_FLOOR}..inf",
            e.rejected[0]["excludedBy"][0]["why"],
        )
        weakOnly = line(("a", "b", weak), ("b", "c", weak), ("d", "c", strong))
        with self.assertRaises(NoRoute):
            leastWeightRoute(weakOnly, "a", "c", cos)

    def test_congestedNodeAvoided(self) -> None:
        """
        A heavily loaded intermediate node weighs more; an excluded one is
        never crossed, but may still be the destination.
        """
        g = line(*[(a, b, LinkCharacteristics(rtt_ms=5)) for a, b in ["ab", "bd", "ac", "cd"]])
        g.nodes["c"] = NodeCharacteristics(load=250)
        cos = BUILTIN_COS["interactive"]
        self.assertEqual(leastWeightRoute(g, "a", "d", cos).hops, ["a", "b", "d"])
        strict = ClassOfService("s", (LinkRow(1),), (NodeRow(1, load=(0, 100)),))
        g.nodes["b"] = NodeCharacteristics(load=200)
        with self.assertRaises(NoRoute):
            leastWeightRoute(g, "a", "d", strict)
        self.assertEqual(leastWeightRoute(g, "a", "c", strict).hops, ["a", "c"])

    def test_tieBreakDeterministic(self) -> None:
        """
        Of two equal-weight routes the one whose node IDs sort first wins,
        whatever the insertion order.
        """
        for order in (["ab", "bd", "ac", "cd"], ["cd", "ac", "bd", "ab"]):
            g = line(*[(a, b, LinkCharacteristics()) for a, b in order])
            self.assertEqual(
                leastWeightRoute(g, "a", "d", BUILTIN_COS["control"]).hops, ["a", "b", "d"]
            )

    def test_explainJSON(self) -> None:
        """
        An explanation lists per-hop weights and the alternatives with how
        much more they weigh, and is JSON-able.
        """
        g = line(
            ("a", "b", LinkCharacteristics(rtt_ms=5)),
            ("b", "c", LinkCharacteristics(rtt_ms=5)),
            ("a", "c", LinkCharacteristics(rtt_ms=50)),
        )
        e = explainRoute(g, "a", "c", BUILTIN_COS["interactive"]).asDict()
        json.dumps(e)
        self.assertEqual(e["route"]["hops"], ["a", "b", "c"])
        self.assertEqual(sum(e["route"]["hopWeights"]), e["route"]["weight"])
        self.assertEqual(e["alternatives"][0]["hops"], ["a", "c"])
        self.assertGreater(e["alternatives"][0]["lostBy"], 0)
        none = explainRoute(g, "a", "zz", BUILTIN_COS["interactive"]).asDict()
        self.assertIsNone(none["route"])
        self.assertIn("not in the topology", none["reason"])


class ParseCOSTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        A config table becomes a class of service; omitted ranges admit
        anything; "inf" is an open upper bound.
        """
        cos = parseCOS(
            "bulk",
            {
                "priority": "low",
                "link": [
                    {"weight": 10, "throughput": [10_000_000, "inf"], "security": [128, 255]},
                    {"weight": 50, "rtt-ms": [0, 500]},
                ],
                "node": [{"weight": 5, "load": [0, 200]}],
            },
        )
        self.assertEqual(cos.linkWeight(LinkCharacteristics(throughput=20_000_000))[0], 10)
        self.assertEqual(cos.linkWeight(LinkCharacteristics(rtt_ms=400))[0], 50)
        self.assertIsNone(cos.linkWeight(LinkCharacteristics(rtt_ms=600))[0])
        self.assertIsNone(cos.nodeWeight(NodeCharacteristics(load=201))[0])
        self.assertEqual(cos.linkRows[0].throughput, (10_000_000, math.inf))
        json.dumps(cos.asDict())

    def test_errors(self) -> None:
        """
        Unknown keys, bad ranges and missing weights are configuration errors.
        """
        bad = [
            {"link": [{"weight": 1}], "colour": "red"},
            {"link": [{"weight": 1, "latency": [0, 1]}]},
            {"link": [{"rtt-ms": [0, 1]}]},
            {"link": [{"weight": 1, "rtt-ms": [5, 1]}]},
            {"link": [{"weight": 1, "rtt-ms": [-1, 1]}]},
            {"link": [{"weight": 1, "rtt-ms": "fast"}]},
            {"link": []},
            {"node": [{"weight": 1}]},
            {"link": [{"weight": 1}], "priority": "urgent"},
        ]
        for section in bad:
            with self.assertRaises(ConfigurationError, msg=repr(section)):
                parseCOS("x", section)
