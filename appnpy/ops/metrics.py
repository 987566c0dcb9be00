"""
Prometheus metrics of one node.

Each node gets its own C{CollectorRegistry} (several nodes may share a
process, in tests and embeddings), fed two ways:

  - events, through C{node.addObserver}: sessions started, ended and refused;
  - state read at scrape time by a custom collector: links, bytes moved,
    link round-trip times.

Handshake failures happen before a link knows its node, so they are counted
from the C{appnpy.link.tls} log events (C{refused link from ...}, field C{why});
these counts are per process, not per node.

Every label comes from a fixed set, so no peer can grow the registry: a
reason is one of L{appnpy.errors.Reason}'s codes or C{other} (a peer may
send any text as the reason it closed a session or link), and a plugin is
an installed plugin's name or C{other}.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appnpy.cp._interfaces import IBoundSession, NodeObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.errors import Reason, SessionClosed
from appnpy.ops._interfaces import IManagedNode
from appnpy.ops.extensions import registerPluginMetrics

#: Bucket bounds, in seconds, of the link RTT histogram.
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The reason labels: the protocol's reason codes, and C{other} for the rest.
REASON_LABELS = frozenset(r.value for r in Reason)
OTHER = "other"


def reasonLabel(reason: object) -> str:
    """
    C{reason} as a metric label: a known reason code, or C{other}.
    """
    text = str(reason)
    return text if text in REASON_LABELS else OTHER


def handshakeFailureReason(why: str) -> str:
    """
    A small, stable label for the free-text C{why} of a refused link.
    """
    if why.startswith("TLS handshake failed"):
        return "tls"
    if why.startswith("not authenticated within"):
        return "timeout"
    if why.startswith("connection closed before authentication"):
        return "closed"
    return "peer-rejected"


class _LiveCollector(Collector):
    """
    Reads links and byte counts from the node at scrape time.
    """

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        node = self.metrics.node
        links = GaugeMetricFamily(
            "appn_links", "Active links to neighbours, by direction", labels=["direction"]
        )
        counts = {"outbound": 0, "inbound": 0}
        for cp in node.links.values():
            counts["outbound" if cp.isDialer else "inbound"] += 1
        for direction, n in counts.items():
            links.add_metric([direction], n)
        yield links

        sessions = GaugeMetricFamily(
            "appn_sessions", "Bound sessions, by plugin", labels=["plugin"]
        )
        byPlugin: dict[str, int] = {name: 0 for name in node.plugins}
        for session in node.sessions():
            byPlugin[session.info.plugin] = byPlugin.get(session.info.plugin, 0) + 1
        for plugin, n in sorted(byPlugin.items()):
            sessions.add_metric([plugin], n)
        yield sessions

        sent, received = self.metrics.closedBytes
        for cp in node.links.values():
            sent += cp.mux.bytesSent
            received += cp.mux.bytesReceived
            self.metrics.observeRTT(cp)
        out = CounterMetricFamily("appn_link_bytes_sent", "Payload bytes sent on all links")
        out.add_metric([], sent)
        yield out
        inb = CounterMetricFamily("appn_link_bytes_received", "Payload bytes received on all links")
        inb.add_metric([], received)
        yield inb

        up = GaugeMetricFamily("appn_uptime_seconds", "Seconds since the node started")
        up.add_metric([], node.reactor.seconds() - node.startedAt)
        yield up


class NodeMetrics(NodeObserver):
    """
    The metrics of one node, in their own registry.

    @ivar registry: the node's C{CollectorRegistry}.
    """

    def __init__(self, node: IManagedNode) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        #: Bytes (sent, received) of links that are gone, so totals never fall.
        self.closedBytes = (0, 0)
        self._lastRTT: dict[int, float] = {}
        self.sessionsStarted = Counter(
            "appn_sessions_started",
            "Sessions bound, by plugin and direction",
            ["plugin", "direction"],
            registry=self.registry,
        )
        self.sessionsEnded = Counter(
            "appn_sessions_ended",
            "Sessions ended, by plugin and reason",
            ["plugin", "reason"],
            registry=self.registry,
        )
        self.sessionRefusals = Counter(
            "appn_session_refusals",
            "Sessions this node refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.linksLost = Counter(
            "appn_links_lost", "Links lost, by reason", ["reason"], registry=self.registry
        )
        self.handshakeFailures = Counter(
            "appn_handshake_failures",
            "Link handshakes refused or failed at this node, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.rtt = Histogram(
            "appn_link_rtt_seconds",
            "Link round-trip times measured by keepalive pings",
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))
        registerPluginMetrics(self.registry, node.plugins.values())
        node.addObserver(self)

    # -- node observer -------------------------------------------------------

    def handshakeFailed(self, why: str) -> None:
        self.handshakeFailures.labels(handshakeFailureReason(why)).inc()

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        sent, received = self.closedBytes
        self.closedBytes = (sent + cp.mux.bytesSent, received + cp.mux.bytesReceived)
        self.observeRTT(cp)
        self._lastRTT.pop(id(cp), None)
        self.linksLost.labels(reasonLabel(why[0])).inc()

    def sessionStarted(self, session: IBoundSession) -> None:
        self.sessionsStarted.labels(
            self._pluginLabel(session.info.plugin), session.info.direction
        ).inc()

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        self.sessionsEnded.labels(
            self._pluginLabel(session.info.plugin), reasonLabel(why.reason)
        ).inc()

    def sessionRefused(self, reason: str) -> None:
        self.sessionRefusals.labels(reasonLabel(reason)).inc()

    def _pluginLabel(self, name: str) -> str:
        return name if name in self.node.plugins else OTHER

    def observeRTT(self, cp: ControlPoint) -> None:
        """
        Record the link's latest RTT once per new measurement.
        """
        rtt = cp.mux.rtt
        if rtt is not None and self._lastRTT.get(id(cp)) != rtt:
            self._lastRTT[id(cp)] = rtt
            self.rtt.observe(rtt)

    # -- exposition ----------------------------------------------------------

    def render(self) -> bytes:
        """
        The Prometheus text exposition of this node's metrics.
        """
        return generate_latest(self.registry)
