"""
Prometheus metrics of the rpc plugin, read from its state at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from appnpy_rpc.plugin import RPCPlugin


class RPCCollector(Collector):
    def __init__(self, plugin: RPCPlugin) -> None:
        self.plugin = plugin

    def collect(self) -> Iterator[Metric]:
        stats = self.plugin.stats
        served = CounterMetricFamily(
            "appn_rpc_calls_served",
            "Calls peers made to this node's services, by service and outcome code",
            labels=["service", "code"],
        )
        for (service, code), n in sorted(stats.served.items()):
            served.add_metric([service, code], n)
        yield served
        made = CounterMetricFamily(
            "appn_rpc_calls_made", "Calls this node made, by outcome code", labels=["code"]
        )
        for code, n in sorted(stats.made.items()):
            made.add_metric([code], n)
        yield made
        yield CounterMetricFamily(
            "appn_rpc_protocol_errors",
            "RPC sessions closed because the peer broke the protocol",
            value=stats.protocolErrors,
        )
        yield GaugeMetricFamily("appn_rpc_sessions", "RPC sessions open", value=stats.sessions)
        yield GaugeMetricFamily(
            "appn_rpc_calls_in_flight",
            "Calls from peers running on this node",
            value=sum(self.plugin.counter.inFlight.values()),
        )
        yield GaugeMetricFamily(
            "appn_rpc_services", "Services this node offers", value=len(self.plugin.services)
        )
