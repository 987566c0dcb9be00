"""
Per-node Prometheus metrics, driven by the in-memory network.
"""

from __future__ import annotations

import attrs
from prometheus_client import REGISTRY
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from appnpy.errors import Reason, SessionClosed
from appnpy.ops.metrics import (
    OTHER,
    REASON_LABELS,
    NodeMetrics,
    handshakeFailureReason,
    reasonLabel,
)
from appnpy.testing import MemoryNetwork, resultOf


@attrs.define
class _Info:
    plugin: str = "no-such-plugin"
    direction: str = "inbound"


@attrs.define
class _Session:
    """
    A session of a plugin this node does not have (what a peer names).
    """

    info: _Info = attrs.Factory(_Info)


def value(metrics: NodeMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


class MetricsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.a = self.net.addNode("LAB.A")
        self.b = self.net.addNode("LAB.B")
        self.metrics = NodeMetrics(self.a)
        self.addCleanup(self.net.stop)

    def test_linksAndBytes(self) -> None:
        """
        The links gauge follows links coming and going; byte counters grow
        and never fall when a link is lost.
        """
        m = self.metrics
        self.assertEqual(value(m, "appn_links", direction="outbound"), 0)
        cp = self.net.link(self.a, self.b)
        self.assertEqual(value(m, "appn_links", direction="outbound"), 1)
        sent = value(m, "appn_link_bytes_sent_total")
        self.assertGreater(sent, 0)
        d = cp.close()
        self.net.flush()
        resultOf(d)
        self.assertEqual(value(m, "appn_links", direction="outbound"), 0)
        self.assertGreaterEqual(value(m, "appn_link_bytes_sent_total"), sent)
        self.assertEqual(value(m, "appn_links_lost_total", reason="normal"), 1)

    def test_sessions(self) -> None:
        """
        Sessions are counted by plugin while bound, and as started and ended.
        """
        m = self.metrics
        self.net.link(self.a, self.b)
        d = self.a.openSession("LAB.B", "echo", lambda info: Protocol())
        self.net.flush()
        p = resultOf(d)
        self.assertEqual(value(m, "appn_sessions", plugin="echo"), 1)
        self.assertEqual(
            value(m, "appn_sessions_started_total", plugin="echo", direction="outbound"), 1
        )
        p.transport.loseConnection()
        self.net.flush()
        self.assertEqual(value(m, "appn_sessions", plugin="echo"), 0)
        self.assertEqual(value(m, "appn_sessions_ended_total", plugin="echo", reason="normal"), 1)

    def test_refusals(self) -> None:
        """
        Sessions this node refuses are counted by reason.
        """
        bm = NodeMetrics(self.b)
        cp = self.net.link(self.a, self.b)
        # Make the local side believe the peer has the plugin, so it sends the BIND.
        cp.peerHello = attrs.evolve(cp.peerHello, plugins={**cp.peerHello.plugins, "nothing": 1})
        cp.limits["nothing"] = 1
        d = self.a.openSession("LAB.B", "nothing", lambda info: Protocol())
        self.net.flush()
        self.failureResultOf(d)
        self.assertEqual(value(bm, "appn_session_refusals_total", reason="unknown-plugin"), 1)

    def test_rtt(self) -> None:
        """
        Each new RTT measurement is observed once in the histogram.
        """
        cp = self.net.link(self.a, self.b)
        self.assertEqual(value(self.metrics, "appn_link_rtt_seconds_count"), 0)
        cp.mux.ping()
        self.net.flush()
        self.metrics.render()
        self.metrics.render()
        self.assertEqual(value(self.metrics, "appn_link_rtt_seconds_count"), 1)

    def test_handshakeFailures(self) -> None:
        """
        A link refused before authentication is counted by reason at the
        node that refused or lost it, and at no other node in the process.
        """
        from appnpy.link.identity import generateIdentity

        bystander = self.net.addNode("LAB.C")
        cm = NodeMetrics(bystander)
        self.net.connect(self.a, self.b, expect=generateIdentity().nodeID)
        self.assertEqual(
            value(self.metrics, "appn_handshake_failures_total", reason="peer-rejected"), 1
        )
        self.assertEqual(value(cm, "appn_handshake_failures_total", reason="peer-rejected"), 0)
        self.flushLoggedErrors()

    def test_reasons(self) -> None:
        """
        Free-text handshake failures map to a few stable labels.
        """
        self.assertEqual(handshakeFailureReason("not authenticated within 10 s"), "timeout")
        self.assertEqual(
            handshakeFailureReason("connection closed before authentication: x"), "closed"
        )
        self.assertEqual(handshakeFailureReason("expected node abc"), "peer-rejected")

    def test_peerChosenReasonsBounded(self) -> None:
        """
        Reasons a peer chooses (for closing a link, or a session) become the
        label C{other} unless they are one of the protocol's reason codes,
        so a peer cannot grow the label set.
        """
        for i in range(20):
            self.net.link(self.a, self.b)
            self.b.links[self.a.nodeID].close(f"made-up-{i}", "bye")
            self.net.flush()
            self.assertNotIn(self.b.nodeID, self.a.links)
            self.metrics.sessionEnded(_Session(), SessionClosed(f"x{i}"))
            self.metrics.sessionRefused(f"y{i}")
        lost = {
            s.labels["reason"]
            for metric in self.metrics.registry.collect()
            for s in metric.samples
            if s.name == "appn_links_lost_total"
        }
        self.assertEqual(lost, {"other"})
        self.assertEqual(value(self.metrics, "appn_links_lost_total", reason="other"), 20)
        self.assertEqual(
            value(self.metrics, "appn_sessions_ended_total", plugin="other", reason="other"), 20
        )
        self.assertEqual(value(self.metrics, "appn_session_refusals_total", reason="other"), 20)
        self.assertEqual(reasonLabel("busy"), "busy")
        self.assertEqual(reasonLabel("busy "), OTHER)
        self.assertEqual(REASON_LABELS, {r.value for r in Reason})

    def test_ownRegistry(self) -> None:
        """
        Each node has its own registry; nothing goes to the global one.
        """
        other = NodeMetrics(self.b)
        self.assertIsNot(other.registry, self.metrics.registry)
        self.assertIsNone(REGISTRY.get_sample_value("appn_links", {"direction": "outbound"}))
        self.assertIn(b"appn_sessions", self.metrics.render())


class PluginMetricsTests(unittest.TestCase):
    def test_echoBytes(self) -> None:
        """
        A plugin providing IMetricsPlugin registers its metrics in each
        node's registry: the echo plugin counts the bytes it echoed.
        """
        from appnpy_echo import EchoPlugin

        net = MemoryNetwork()
        self.addCleanup(net.stop)
        echo = EchoPlugin()
        a = net.addNode("LAB.A")
        b = net.addNode("LAB.B", plugins=[echo])
        metrics, other = NodeMetrics(b), NodeMetrics(b)
        self.assertEqual(value(metrics, "appn_echo_bytes_total"), 0)
        net.link(a, b)
        d = a.openSession("LAB.B", "echo", lambda info: Protocol())
        net.flush()
        p = resultOf(d)
        p.transport.write(b"x" * 100)
        net.flush()
        self.assertEqual(value(metrics, "appn_echo_bytes_total"), 100)
        self.assertEqual(value(other, "appn_echo_bytes_total"), 100)
        self.assertEqual(echo.stats(), {"sessions": 1, "echoed_bytes": 100})
        p.transport.loseConnection()
        net.flush()
