"""
Intermediate session routing: the relay's checks on a BIND (route shape,
previous and next hop, caps, shutdown), forwarded answers, and that no relay
state outlives a session.  In-memory harness, BINDs written by hand.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from appnpy.api import SessionRefused
from appnpy.cp._interfaces import RELAY
from appnpy.cp.messages import Message
from appnpy.testing import resultOf
from tests.hostile.relay import BindSender, makeBind
from tests.test_routed import Recorder, RecordingPlugin, RoutedHarness


class RelayTests(RoutedHarness):
    def rawBind(self, sender: Any, via: Any, route: list[str], **kw: Any) -> Message:
        """
        Send a hand-made BIND, signed by C{sender}, from C{sender} to its
        neighbour C{via} and return the answer.
        """
        req = makeBind(route, sender.identity, self.net.clock.seconds(), **kw)
        bindSender = BindSender(self.net, sender)
        answers = bindSender.send(via, req)
        self.assertEqual(len(answers), 1)
        for stream in bindSender.held:
            stream.loseConnection()
        self.net.flush()
        answer = answers[0]
        assert not isinstance(answer, Failure), answer
        return answer

    def assertRefused(self, answer: Any, reason: str) -> None:
        self.assertEqual(answer.typeName, "SessionRefuse")
        self.assertEqual(answer.reason, reason)

    def test_loopRefused(self) -> None:
        """
        A route that visits a node twice is refused with protocol-error.
        """
        nodes, _ = self.line(4)
        a, b, c, d = (n.nodeID for n in nodes)
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, b, c, b, d]), "protocol-error")
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, b, c, a, d]), "protocol-error")
        self.assertEmpty(nodes)

    def test_hopLimit(self) -> None:
        """
        A route longer than the relay allows is refused with protocol-error.
        """
        nodes, _ = self.line(4)
        nodes[1].relay.maxRouteNodes = 3
        route = [n.nodeID for n in nodes]
        self.assertRefused(self.rawBind(nodes[0], nodes[1], route), "protocol-error")
        nodes[1].relay.maxRouteNodes = 4
        self.assertEqual(self.rawBind(nodes[0], nodes[1], route).typeName, "SessionAccept")
        self.net.flush(advance=60)
        self.assertEmpty(nodes)

    def test_previousHopMustBeSender(self) -> None:
        """
        The element before the relay in the route must be the neighbour that
        sent the BIND; a route that does not name the relay is refused.
        """
        nodes, _ = self.line(4)
        a, b, c, d = (n.nodeID for n in nodes)
        # C sends a BIND claiming to come from A directly.
        self.assertRefused(self.rawBind(nodes[2], nodes[1], [a, b, d]), "protocol-error")
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, c, d]), "protocol-error")
        # Origin not the route's first element.
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, b, d], origin=c), "protocol-error")
        self.assertEmpty(nodes)

    def test_nextHopNotNeighbour(self) -> None:
        """
        A next hop this relay has no active link to is refused with no-route,
        whether it is a known node or not.
        """
        nodes, _ = self.line(4)
        a, b, c, d = (n.nodeID for n in nodes)
        stranger = self.net.addNode("LAB.X")
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, b, d]), "no-route")
        self.assertRefused(self.rawBind(nodes[0], nodes[1], [a, b, stranger.nodeID, d]), "no-route")
        self.assertEmpty(nodes)

    def test_noRelayInstalled(self) -> None:
        """
        A node without a relay refuses routed BINDs with no-route.
        """
        nodes, _ = self.line(3)
        nodes[1].setBindHandler(RELAY, None)
        dd = self.open(nodes, plugin="echo", factory=lambda info: Recorder())
        self.assertEqual(self.failureResultOf(dd, SessionRefused).value.reason, "no-route")

    def test_shuttingDown(self) -> None:
        """
        A stopping relay refuses with shutting-down.
        """
        nodes, _ = self.line(3)
        nodes[1].shuttingDown = True
        dd = self.open(nodes, plugin="echo")
        self.assertEqual(self.failureResultOf(dd, SessionRefused).value.reason, "shutting-down")
        nodes[1].shuttingDown = False
        self.assertEmpty(nodes)

    def test_perOriginAndGlobalCaps(self) -> None:
        """
        Relayed sessions are capped per origin and in total (limit-reached);
        closing one frees its place.
        """
        plugin = RecordingPlugin(sessionLimit=100)
        nodes, _ = self.line(3, plugins=[plugin])
        a, b, c = nodes
        relay = b.relay
        relay.maxPerOrigin = 2
        opened = [resultOf(self.open(nodes)) for _ in range(2)]
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "limit-reached")
        self.assertEqual(relay.perOrigin, {a.nodeID: 2})
        # Another origin (C towards A) still gets through.
        back = resultOf(self.open(nodes[::-1]))
        relay.maxSessions = 3
        f = self.failureResultOf(self.open(nodes[::-1]), SessionRefused)
        self.assertEqual(f.value.reason, "limit-reached")
        opened[0].transport.loseConnection()
        self.net.flush()
        opened[0] = resultOf(self.open(nodes))
        for p in opened + [back]:
            p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_refusalForwarded(self) -> None:
        """
        The destination's refusal comes back through the relay unchanged and
        the relay keeps no entry for it.
        """
        nodes, _ = self.line(3)
        route = [n.nodeID for n in nodes]
        self.assertRefused(self.rawBind(nodes[0], nodes[1], route, plugin="nope"), "unknown-plugin")
        self.assertEmpty(nodes)

    def test_unbindFromUnrelatedLinkIgnored(self) -> None:
        """
        An UNBIND for a relayed session arriving on a link the session does
        not use is ignored (no crosstalk between links).
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        a, b, c = nodes
        x = self.net.addNode("LAB.X")
        self.net.connect(x, b)
        p = resultOf(self.open(nodes))
        x.links[b.nodeID].sendUnbind(p.transport.sessionID, "normal", "forged")
        self.net.flush()
        self.assertIsNone(p.lost)
        self.assertEqual(len(b.relay.table), 1)
        p.transport.write(b"still here")
        self.net.flush()
        self.assertEqual(bytes(plugin.built[0].received), b"still here")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_bindTimeout(self) -> None:
        """
        A next hop that never answers the BIND: the relay answers timeout and
        forgets the session.
        """
        nodes, _ = self.line(3)
        a, b, c = nodes
        # C's routed-session ends swallow the BIND.
        c.routedSessions.bindReceived = lambda cp, stream, req: None  # type: ignore[method-assign]
        a.routedSessions.bindTimeout = 100
        dd = self.open(nodes, plugin="echo")
        self.net.flush(advance=31)
        self.assertEqual(self.failureResultOf(dd, SessionRefused).value.reason, "timeout")
        self.assertEqual(b.relay.table, {})

    def test_asDict(self) -> None:
        """
        The relay table is reported for management.
        """
        nodes, _ = self.line(3)
        p = resultOf(self.open(nodes, plugin="echo"))
        d = nodes[1].relay.asDict()
        self.assertEqual(len(d["sessions"]), 1)
        self.assertEqual(d["sessions"][0]["origin"], nodes[0].nodeID)
        self.assertEqual(d["sessions"][0]["state"], "spliced")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)
