"""
Route selection on real characteristics: link security from the link's TLS
session (configuration may only lower it), link cost per link or neighbour
from the config file, node load measured from the sessions a node relays,
classes of service that choose differently where the network differs, and
the same route explanation at an end node as at a network node.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import MAX_MESSAGE_SIZE, MessageReader, encodeBody, encodeMessage
from appnpy.errors import ConfigurationError, NoRoute, ProtocolError
from appnpy.link.identity import createNetworkCA, loadOrCreateIdentity, signNodeCertificate
from appnpy.link.tls import loadTrustPolicy
from appnpy.net.directory import RouteReply, RouteRequest
from appnpy.net.routing import (
    BUILTIN_COS,
    SECURE_FLOOR,
    SECURITY_CA_128,
    SECURITY_CA_256,
    SECURITY_TLS13_128,
    SECURITY_TLS13_256,
    SECURITY_UNKNOWN,
    LinkCharacteristics,
    LinkSettings,
    NodeCharacteristics,
    Route,
    RouteExplanation,
    TopologyGraph,
    explainRoute,
    explanationFromWire,
    explanationToWire,
    leastWeightRoute,
    linkSecurity,
    parseLinkSections,
)
from appnpy.net.routing.explanation import MAX_WIRE_BYTES
from appnpy.net.topology import LINK, NODE
from appnpy.net.topology.measurement import LOAD_HYSTERESIS, NodeLoad
from appnpy.node import Node
from appnpy.ops.config import resolveConfig
from appnpy.testing import MemoryNetwork, resultOf
from tests.hostile.routing import extraKey, lieAboutRoutes, negativeWeight

# -- the classes of service choose differently --------------------------------------


def diamond(**paths: LinkCharacteristics) -> TopologyGraph:
    """
    A -> X -> Z for every named middle node X, both links of a path alike.
    """
    g = TopologyGraph()
    for n in ("a", "z", *paths):
        g.addNode(n)
    for middle, chars in paths.items():
        g.addLink("a", middle, chars)
        g.addLink(middle, "z", chars)
    return g


def chosen(g: TopologyGraph, cos: str) -> str:
    """
    The middle node of the route the class of service picks from a to z.
    """
    hops = leastWeightRoute(g, "a", "z", BUILTIN_COS[cos]).hops
    assert len(hops) == 3, hops
    return hops[1]


FAST = LinkCharacteristics(rtt_ms=5, throughput=1_000_000)
SLOW_WIDE = LinkCharacteristics(rtt_ms=60, throughput=100_000_000)


class ClassesOfServiceChooseDifferently(SynchronousTestCase):
    """
    Where the network differs, each built-in class picks the path its
    documentation (docs/protocol.md 13.2) says.
    """

    def test_lowestRTTPathIsInsecure(self) -> None:
        """
        The fastest path is below the secure floor: interactive and control
        take it, secure takes the slower secure one, batch the widest.
        """
        g = diamond(
            b=LinkCharacteristics(rtt_ms=5, throughput=1_000_000, security=SECURITY_TLS13_128),
            c=LinkCharacteristics(rtt_ms=20, throughput=1_000_000),
            d=SLOW_WIDE,
        )
        self.assertEqual(chosen(g, "interactive"), "b")
        self.assertEqual(chosen(g, "control"), "b")
        self.assertEqual(chosen(g, "secure"), "c")
        self.assertEqual(chosen(g, "batch"), "d")
        rejected = explainRoute(g, "a", "z", BUILTIN_COS["secure"]).rejected
        self.assertIn(
            f"security {SECURITY_TLS13_128} not in {SECURE_FLOOR}..inf",
            rejected[0]["excludedBy"][0]["why"],
        )

    def test_lowestRTTPathIsHighCost(self) -> None:
        """
        The fastest path costs 200: interactive, secure and batch avoid it
        (cost adds 40 a link), control (CP traffic, cost ignored) takes it.
        """
        g = diamond(
            b=LinkCharacteristics(rtt_ms=5, throughput=1_000_000, cost=200),
            c=LinkCharacteristics(rtt_ms=20, throughput=1_000_000),
        )
        self.assertEqual(chosen(g, "control"), "b")
        for cos in ("interactive", "secure", "batch"):
            self.assertEqual(chosen(g, cos), "c", cos)

    def test_lowestRTTPathCrossesALoadedNode(self) -> None:
        """
        The fastest path crosses a node at load 200 (node row 3, weight 40):
        interactive, secure and batch go around it, control ignores load.
        """
        g = diamond(b=FAST, c=LinkCharacteristics(rtt_ms=20, throughput=1_000_000))
        g.addNode("b", NodeCharacteristics(load=200))
        self.assertEqual(chosen(g, "control"), "b")
        for cos in ("interactive", "secure", "batch"):
            self.assertEqual(chosen(g, cos), "c", cos)
        # Moderately loaded (row 2, weight 15): the 10-weight RTT lead still wins.
        g.addNode("b", NodeCharacteristics(load=150))
        self.assertEqual(chosen(g, "interactive"), "b")

    def test_secureExcludesEverythingBelowTheFloor(self) -> None:
        """
        With only links below the floor, secure finds no route; at the
        floor it does.
        """
        weak = diamond(b=LinkCharacteristics(security=SECURE_FLOOR - 1))
        with self.assertRaises(NoRoute):
            leastWeightRoute(weak, "a", "z", BUILTIN_COS["secure"])
        self.assertEqual(chosen(weak, "interactive"), "b")
        self.assertEqual(
            chosen(diamond(b=LinkCharacteristics(security=SECURE_FLOOR)), "secure"), "b"
        )


# -- link security from the link's protection -------------------------------------------


class LinkSecurityTests(SynchronousTestCase):
    """
    The security level a link's TLS session earns (docs/protocol.md 12.8).
    """

    def test_mapping(self) -> None:
        self.assertEqual(linkSecurity("TLSv1.3", 256, False), SECURITY_TLS13_256)
        self.assertEqual(linkSecurity("TLSv1.3", 128, False), SECURITY_TLS13_128)
        self.assertEqual(linkSecurity("TLSv1.3", 256, True), SECURITY_CA_256)
        self.assertEqual(linkSecurity("TLSv1.3", 128, True), SECURITY_CA_128)
        self.assertEqual(linkSecurity("TLSv1.2", 256, True), SECURITY_UNKNOWN)
        self.assertEqual(linkSecurity("TLSv1.3", None, False), SECURITY_UNKNOWN)
        self.assertEqual(linkSecurity(None, 256, False), SECURITY_UNKNOWN)
        # Every open-mode default link (AES-256-GCM) meets the secure floor;
        # a 128-bit open-mode link does not; every CA-vetted link does.
        self.assertTrue(SECURITY_TLS13_128 < SECURE_FLOOR <= SECURITY_TLS13_256 < SECURITY_CA_128)

    def test_openLinkAnnouncesItsCipher(self) -> None:
        """
        A real in-memory TLS 1.3 link in open trust mode is announced at
        the level of the cipher it negotiated, by both ends.
        """
        net = Net()
        a, b = net.node("LAB.A"), net.node("LAB.B")
        cp = net.net.link(a, b)
        net.settle()
        handle = cp.link.transport.getHandle()
        expected = linkSecurity(handle.get_protocol_version_name(), handle.get_cipher_bits(), False)
        self.assertEqual(expected, SECURITY_TLS13_256)
        self.assertEqual(linkBody(a, b)["security"], expected)
        self.assertEqual(linkBody(b, a)["security"], expected)

    def test_networkCALinkIsAnnouncedHigher(self) -> None:
        """
        In network trust mode (every peer's certificate issued by the
        network CA) a link is announced at the CA-vetted level.
        """
        base = self.mktemp()
        caDir = os.path.join(base, "ca")
        createNetworkCA(caDir, "LAB")
        net = Net()
        nodes = []
        for name in ("A", "B"):
            dataDir = os.path.join(base, name)
            loadOrCreateIdentity(dataDir)
            signNodeCertificate(caDir, dataDir, cpName=f"LAB.{name}")
            nodes.append(
                net.node(
                    f"LAB.{name}",
                    identity=loadOrCreateIdentity(dataDir),
                    trust=loadTrustPolicy("network", dataDir),
                )
            )
        a, b = nodes
        net.net.link(a, b)
        net.settle()
        self.assertEqual(linkBody(a, b)["security"], SECURITY_CA_256)
        self.assertEqual(linkBody(b, a)["security"], SECURITY_CA_256)

    def test_configuredSecurityOnlyLowers(self) -> None:
        """
        A configured level below the link's protection is announced; one
        above it is not (the protection is); the management API's setting
        obeys the same rule.
        """
        net = Net()
        b = net.node("LAB.B")
        c = net.node("LAB.C")
        settings = parseLinkSections(
            {b.nodeID: {"security": 100}, "LAB.C": {"security": 255, "cost": 7}}
        )
        a = net.node("LAB.A", linkSettings=settings)
        net.net.link(a, b)
        net.net.link(a, c)
        net.settle()
        self.assertEqual(linkBody(a, b)["security"], 100)
        self.assertEqual(linkBody(a, c)["security"], SECURITY_TLS13_256)
        self.assertEqual(linkBody(a, c)["cost"], 7)
        topology(a).setLinkCharacteristics(c.nodeID, security=250)
        net.settle()
        self.assertEqual(linkBody(a, c)["security"], SECURITY_TLS13_256)
        topology(a).setLinkCharacteristics(c.nodeID, security=3)
        net.settle()
        self.assertEqual(linkBody(a, c)["security"], 3)
        # The routable link takes the worse end's claim.
        self.assertEqual(topology(c).graph().adjacency[a.nodeID][c.nodeID].security, 3)


# -- the [link.<selector>] config sections ---------------------------------------------------


class LinkConfigTests(SynchronousTestCase):
    """
    Parsing and matching C{[link.<selector>]}.
    """

    ID = "a3r73d62fg5wbk2zkv66mhw3blwnwiyrgs7dbz23ivpy4g3zf6uq"

    def test_selectorsAndPrecedence(self) -> None:
        """
        Node ID, then CP name, then dialled address, then C{"*"}, key by key.
        """
        s = parseLinkSections(
            {
                "*": {"cost": 1, "security": 200},
                "lab.b": {"cost": 50},
                "10.0.0.7:7700": {"cost": 60, "security": 90},
                self.ID: {"security": 10},
            }
        )
        dialled = f"appn://{self.ID}@10.0.0.7:7700"
        self.assertEqual((s.lookup(self.ID, "LAB.B", dialled).cost), 50)
        self.assertEqual((s.lookup(self.ID, "LAB.B", dialled).security), 10)
        self.assertEqual(s.lookup("x" * 52, "LAB.Q", "10.0.0.7:7700").cost, 60)
        self.assertEqual(s.lookup("x" * 52, "LAB.Q", "10.0.0.7:7701").cost, 1)
        self.assertEqual(s.lookup("x" * 52, "LAB.Q", "").security, 200)
        self.assertEqual(LinkSettings().lookup(self.ID, "", "").cost, None)

    def test_errors(self) -> None:
        for sections, needle in [
            ({"LAB.B": {"costs": 1}}, "unknown key 'costs'"),
            ({"LAB.B": {"cost": 256}}, "cost must be a whole number 0..255"),
            ({"LAB.B": {"security": True}}, "security must be"),
            ({"LAB.B": {"cost": 1.5}}, "cost must be"),
            ({"not a name": {"cost": 1}}, "not a node ID, CP name"),
            ({"host:notaport": {"cost": 1}}, "host:port"),
            ({"LAB.B": 3}, "must be a table"),
        ]:
            with self.assertRaises(ConfigurationError) as e:
                parseLinkSections(sections, "node.toml")
            self.assertIn(needle, str(e.exception), sections)

    def test_configFile(self) -> None:
        """
        The config file's C{[link.*]} tables reach the node's configuration
        (and C{appn config}); a bad one is an error naming the file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[node]\nname = "LAB.A"\n[link."LAB.B"]\ncost = 30\nsecurity = 64\n')
        config = resolveConfig({"config": path, "data-dir": self.mktemp()}, reactor=None)
        self.assertEqual(config.linkSettings.lookup("x", "LAB.B", "").cost, 30)
        self.assertEqual(config.asDict()["link"], {"LAB.B": {"cost": 30, "security": 64}})
        with open(path, "w") as f:
            f.write('[link."LAB.B"]\ncost = -1\n')
        with self.assertRaises(ConfigurationError) as e:
            resolveConfig({"config": path, "data-dir": self.mktemp()}, reactor=None)
        self.assertIn(path, str(e.exception))
        with open(path, "w") as f:
            f.write("[link]\ncost = 3\n")
        with self.assertRaises(ConfigurationError):
            resolveConfig({"config": path, "data-dir": self.mktemp()}, reactor=None)


# -- node load ----------------------------------------------------------------------------


class FakeRelay:
    def __init__(self, capacity: int = 100) -> None:
        self.sessionCount = 0
        self.maxSessions = capacity


class NodeLoadTests(SynchronousTestCase):
    """
    The measured load: smoothed, scaled, announced with hysteresis.
    """

    def test_hysteresis(self) -> None:
        load = NodeLoad()
        self.assertIsNone(load.sample(0, 100))
        # 10 of 100 sessions: smoothed 5 (level 13), then 7.5 (19): too small a move.
        self.assertIsNone(load.sample(10, 100))
        self.assertIsNone(load.sample(10, 100))
        levels = [load.sample(80, 100) for _ in range(4)]
        announced = [v for v in levels if v is not None]
        self.assertTrue(announced, levels)
        self.assertTrue(
            all(b - a >= LOAD_HYSTERESIS for a, b in zip([0, *announced], announced, strict=False))
        )
        # Back to idle: the load decays and is announced as 0 at the end.
        idle = [load.sample(0, 100) for _ in range(20)]
        self.assertEqual([v for v in idle if v is not None][-1], 0)
        self.assertEqual(load.applied, 0)
        self.assertIsNone(load.sample(0, 100))

    def test_fullRelay(self) -> None:
        load = NodeLoad()
        for _ in range(10):
            load.sample(50, 50)
        self.assertEqual(load.applied, 255)

    def test_relayedSessionsRaiseTheLoadAndMoveRoutes(self) -> None:
        """
        A node relaying sessions near its capacity announces the load (at
        the next measurement, not before), and interactive routes then go
        around it while control routes do not.
        """
        net = Net()
        a, z, b, c = (net.node(n) for n in ("LAB.A", "LAB.Z", "LAB.B", "LAB.C"))
        for middle in (b, c):
            net.net.link(a, middle)
            net.net.link(middle, z)
        net.settle()
        usual = topology(a).selectRoute(a.nodeID, z.nodeID, "interactive").hops[1]
        loaded = b if usual == b.nodeID else c
        other = c if loaded is b else b
        assert loaded.relay is not None
        loaded.relay.maxSessions = 4
        sessions = [
            loaded_open(net, a, z) for _ in range(3)
        ]  # relayed through `loaded`, the route every class picks
        self.assertEqual(loaded.relay.sessionCount, 3)
        self.assertEqual(nodeBody(a, loaded)["load"], 0)
        for _ in range(3):
            topology(loaded).measureLinks()
            net.settle()
        self.assertGreater(nodeBody(a, loaded)["load"], 127)
        self.assertEqual(
            topology(a).selectRoute(a.nodeID, z.nodeID, "interactive").hops[1], other.nodeID
        )
        self.assertEqual(
            topology(a).selectRoute(a.nodeID, z.nodeID, "control").hops[1], loaded.nodeID
        )
        for s in sessions:
            s.transport.loseConnection()
        net.settle()
        for _ in range(12):
            topology(loaded).measureLinks()
            net.settle()
        self.assertEqual(nodeBody(a, loaded)["load"], 0)

    def test_manualLoadStaysUntilTheMeasurementMoves(self) -> None:
        net = Net()
        a = net.node("LAB.A")
        relay = FakeRelay()
        topology(a).setLoadSource(relay)
        topology(a).setNodeCharacteristics(load=40)
        topology(a).measureLinks()
        net.settle()
        self.assertEqual(nodeBody(a, a)["load"], 40)
        relay.sessionCount = 100
        topology(a).measureLinks()
        net.settle()
        self.assertEqual(nodeBody(a, a)["load"], 128)


def loaded_open(net: Net, a: Node, z: Node) -> Protocol:
    d = a.openSession(z.nodeID, "echo", lambda info: Protocol())
    net.settle()
    p: Protocol = resultOf(d)
    return p


# -- configured cost steers routes in a real network ---------------------------------------


class ConfiguredCostTests(SynchronousTestCase):
    def test_costPerNeighbourName(self) -> None:
        """
        C{[link."LAB.B"] cost = 200} on A: interactive, batch and secure
        routes from A avoid B; control routes do not.
        """
        net = Net()
        z, b, c = (net.node(n) for n in ("LAB.Z", "LAB.B", "LAB.C"))
        cheap = b if b.nodeID < c.nodeID else c  # the tie-break winner by node ID
        a = net.node("LAB.A", linkSettings=parseLinkSections({cheap.name: {"cost": 200}}))
        for middle in (b, c):
            net.net.link(a, middle)
            net.net.link(middle, z)
        net.settle()
        other = c if cheap is b else b
        self.assertEqual(linkBody(a, cheap)["cost"], 200)
        for cos in ("interactive", "batch", "secure"):
            hops = topology(z).selectRoute(z.nodeID, a.nodeID, cos).hops
            self.assertEqual(hops[1], other.nodeID, cos)
        hops = topology(z).selectRoute(z.nodeID, a.nodeID, "control").hops
        self.assertEqual(hops[1], cheap.nodeID)


# -- the end node's route explanation ---------------------------------------------------------


class EndNodeExplanationTests(SynchronousTestCase):
    def test_sameExplanationAsTheServer(self) -> None:
        """
        An end node's explanation is its server's, weights, alternatives and
        exclusions included; with no qualifying route it still explains why.
        """
        net = Net()
        n1, n2, n3, n4 = (net.node(f"LAB.N{i}") for i in range(1, 5))
        for x, y in ((n1, n2), (n2, n3), (n1, n4), (n4, n3)):
            net.net.link(x, y)
        e = net.node("LAB.E", role="end")
        net.net.link(e, n1)
        net.settle(5)
        topology(n1).setLinkCharacteristics(n2.nodeID, security=0)
        net.settle(5)
        for cos in ("interactive", "secure", "batch"):
            found, names = explainAt(net, e, n3, cos)
            expected = topology(n1).explainRoute(e.nodeID, n3.nodeID, cos)
            self.assertEqual(found.asDict(), expected.asDict(), cos)
            self.assertIsNotNone(found.route, cos)
            self.assertEqual(names[n3.nodeID], "LAB.N3")
        found, _ = explainAt(net, e, n3, "secure")
        self.assertEqual(found.route.hops, [e.nodeID, n1.nodeID, n4.nodeID, n3.nodeID])
        self.assertEqual(found.rejected[0]["hops"], [n1.nodeID, n2.nodeID, n3.nodeID])
        # No qualifying route: the explanation comes back with the reason.
        topology(n1).setLinkCharacteristics(n4.nodeID, security=0)
        net.settle(5)
        found, _ = explainAt(net, e, n3, "secure")
        self.assertIsNone(found.route)
        self.assertIn("no route", found.reason)
        with self.assertRaises(NoRoute):
            explainAt(net, e, n3, "nonesuch")

    def test_malformedExplanationFromTheServer(self) -> None:
        """
        A server whose explanation does not check out: the end node logs
        one line and reports no route; it shows none of it.
        """
        net = Net()
        n1, n2 = net.node("LAB.N1"), net.node("LAB.N2")
        net.net.link(n1, n2)
        e = net.node("LAB.E", role="end")
        net.net.link(e, n1)
        net.settle(5)
        lieAboutRoutes(n1, negativeWeight)
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        with self.assertRaises(NoRoute) as caught:
            explainAt(net, e, n2, "interactive")
        self.assertIn("malformed", str(caught.exception))
        lines = [formatEvent(ev) for ev in logged if "route explanation" in formatEvent(ev)]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("route weight must be a finite number >= 0", lines[0])
        lieAboutRoutes(n1, extraKey)
        with self.assertRaises(NoRoute):
            explainAt(net, e, n2, "interactive")
        # The link stays up, and the server's routes are still used.
        self.assertIn(n1.nodeID, e.links)
        d = Deferred.fromCoroutine(e.directory.requestRoute(n2.nodeID))  # type: ignore[union-attr]
        net.settle()
        self.assertEqual(resultOf(d), [e.nodeID, n1.nodeID, n2.nodeID])


def explainAt(net: Net, e: Node, dest: Node, cos: str) -> tuple[Any, dict[str, str]]:
    assert e.directory is not None
    d = Deferred.fromCoroutine(e.directory.explainRoute(dest.nodeID, cos))
    net.settle()
    result: tuple[Any, dict[str, str]] = resultOf(d)
    return result


# -- the explanation's wire form -----------------------------------------------------------------


@st.composite
def explainedGraphs(draw: st.DrawFn) -> Any:
    n = draw(st.integers(2, 6))
    ids = [c * 52 for c in "abcdef"[:n]]
    g = TopologyGraph()
    for i in ids:
        g.addNode(i, NodeCharacteristics(load=draw(st.sampled_from([0, 150, 255]))))
    for x in ids:
        for y in ids:
            if x < y and draw(st.booleans()):
                g.addLink(
                    x,
                    y,
                    LinkCharacteristics(
                        rtt_ms=draw(st.sampled_from([1, 20, 200, 5000])),
                        cost=draw(st.sampled_from([0, 9, 200])),
                        security=draw(st.sampled_from([0, 128, 160, 224])),
                    ),
                )
    cos = draw(st.sampled_from(sorted(BUILTIN_COS)))
    return explainRoute(g, ids[0], ids[-1], BUILTIN_COS[cos])


class ExplanationWireTests(SynchronousTestCase):
    @settings(max_examples=30, deadline=None)
    @given(explainedGraphs())
    def test_roundTrip(self, explanation: Any) -> None:
        """
        What a server sends is what the end node rebuilds.
        """
        wire = explanationToWire(explanation)
        self.assertEqual(explanationFromWire(wire).asDict(), wire)

    def test_largestExplanationFitsOneMessage(self) -> None:
        """
        However much a server has to say, the reply fits one control
        message: the least important lists are shortened first.
        """
        ids = [f"{c}{d}" * 26 for c in "abcdefgh" for d in "ijklmnop"]
        why = "w" * 1000
        hops = ids[:16]
        explanation = RouteExplanation(
            ids[0],
            ids[15],
            "interactive",
            Route(hops, 1.5, [0.1] * 15, "interactive"),
            [
                {"hops": hops, "weight": 2.0, "hopWeights": [0.1] * 15, "lostBy": 0.5, "why": why}
                for _ in range(3)
            ],
            [{"hops": hops, "excludedBy": [{"link": ids[:2], "why": why}] * 40} for _ in range(3)],
            [{"node": i, "why": why} for i in ids[:20]],
            why,
        )
        wire = explanationToWire(explanation)
        self.assertLessEqual(len(encodeBody(wire)), MAX_WIRE_BYTES)
        self.assertEqual(len(wire["alternatives"]), 3)
        self.assertEqual(explanationFromWire(wire).route, explanation.route)
        reply = RouteReply(
            request_id="0" * 32,
            route=hops,
            explanation=wire,
            names={i: "LABNET01.NODENAME" for i in ids},
        )
        self.assertLessEqual(len(encodeMessage(reply)), MAX_MESSAGE_SIZE + 4)

    @settings(max_examples=30, deadline=None)
    @given(explainedGraphs(), st.booleans(), st.data())
    def test_messagesRoundTrip(self, explanation: Any, explain: bool, data: st.DataObject) -> None:
        """
        C{RouteRequest(explain)} and a C{RouteReply} carrying an explanation
        and names decode to themselves, split anywhere on the wire.
        """
        wire = explanationToWire(explanation)
        hops = wire["route"]["hops"] if wire["route"] else []
        request = RouteRequest(
            request_id="ab" * 16, destination=explanation.destination, cos="batch", explain=explain
        )
        reply = RouteReply(
            request_id="ab" * 16,
            route=hops,
            explanation=wire,
            names={n: f"LAB.N{i}" for i, n in enumerate(hops)},
        )
        for msg in (request, reply):
            raw = encodeMessage(msg)
            cut = data.draw(st.integers(0, len(raw)))
            reader = MessageReader()
            self.assertEqual(reader.feed(raw[:cut]) + reader.feed(raw[cut:]), [msg])
        self.assertEqual(explanationFromWire(reply.explanation).asDict(), wire)

    @settings(max_examples=100, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["origin", "destination", "cos", "route", "hops", "weight", "why", "x"]
                    ),
                    inner,
                    max_size=8,
                )
            ),
            max_leaves=30,
        )
    )
    def test_junkIsRefusedCleanly(self, value: Any) -> None:
        """
        Anything that is not an explanation raises ProtocolError, nothing else.
        """
        try:
            explanationFromWire(value)
        except ProtocolError:
            pass

    @settings(max_examples=40, deadline=None)
    @given(explainedGraphs(), st.data())
    def test_mutationsRefused(self, explanation: Any, data: st.DataObject) -> None:
        """
        A wrong type in any top-level field, a non-finite weight or a
        mismatched hop-weight list is refused.
        """
        wire = explanationToWire(explanation)
        key = data.draw(st.sampled_from(sorted(wire)))
        bad = dict(wire)
        bad[key] = data.draw(st.sampled_from([12, "x" * 300, [1], {"a": 1}]))
        if bad[key] == wire[key]:
            return
        with self.assertRaises(ProtocolError):
            explanationFromWire(bad)
        if wire["route"] is not None:
            for route in (
                {**wire["route"], "weight": float("inf")},
                {**wire["route"], "hopWeights": wire["route"]["hopWeights"] + [1.0]},
                {**wire["route"], "hops": []},
            ):
                with self.assertRaises(ProtocolError):
                    explanationFromWire({**wire, "route": route})


# -- harness --------------------------------------------------------------------------------


class Net:
    """
    A MemoryNetwork whose topology databases announce without damping.
    """

    def __init__(self) -> None:
        self.net = MemoryNetwork(topologyOptions={"damping": 0.0, "measureInterval": 0})

    def node(self, name: str, **kw: Any) -> Node:
        return self.net.addNode(name, **kw)

    def settle(self, advance: float = 0.0) -> None:
        self.net.flush(advance)


def topology(node: Node) -> Any:
    assert node.topology is not None
    return node.topology


def linkBody(owner: Node, peer: Node) -> dict[str, Any]:
    record = topology(owner).record(LINK, owner.nodeID, peer.nodeID)
    assert record is not None
    return dict(record.body)


def nodeBody(holder: Node, owner: Node) -> dict[str, Any]:
    record = topology(holder).record(NODE, owner.nodeID)
    assert record is not None
    return dict(record.body)
