"""
The echo and ping session plugins: the smallest useful plugins, the probe for
interop checks, and the template to copy when writing a plugin.

A plugin is an object providing L{appnpy.api.ISessionPlugin}; its protocols
are ordinary Twisted protocols.  Publish it under the entry-point group
C{appnpy.session_plugins} (see this distribution's pyproject.toml) and enable
it by name in the node's configuration.

The echo plugin also shows each optional extension point for the operator's
tools, around one number, the bytes it has echoed: a Prometheus counter
(L{IMetricsPlugin}), the API route C{GET /api/v1/plugins/echo/stats}
(L{IAPIRoutesPlugin}), a section of the status page (L{IStatusPagePlugin})
and the command C{appn echo-stats} (L{ICommandPlugin}).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver

from appnpy.api import (
    ConfigurationError,
    IAPIClient,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IMetricsPlugin,
    ISessionInfo,
    ISessionPlugin,
    IStatusPagePlugin,
    PageSection,
    PluginRequest,
    implementer,
)

__version__ = "0.1.0"


class Echo(Protocol):
    """
    Sends back every byte it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None  # set by makeConnection before any data
        self.transport.write(data)


class Pong(LineReceiver):
    """
    Answers each line C{PING <token>} with C{PONG <token>}; anything else
    with C{ERROR}.  Shows that a stock Twisted C{LineReceiver} runs over a
    session unchanged.
    """

    MAX_LENGTH = 1024

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"PING "):
            self.sendLine(b"PONG " + line[5:])  # type: ignore[no-untyped-call]  # unannotated Twisted method
        else:
            self.sendLine(b"ERROR expected PING <token>")  # type: ignore[no-untyped-call]  # unannotated Twisted method


@implementer(ISessionPlugin)
class SimplePlugin:
    """
    A plugin that answers every session with a protocol from C{protocol},
    configurable only in its session limit.
    """

    version = __version__
    defaultCOS = "interactive"

    def __init__(self, name: str, protocol: type[Protocol], sessionLimit: int = 64) -> None:
        self.name = name
        self.protocol = protocol
        self.sessionLimit = sessionLimit

    def configure(self, section: dict[str, Any]) -> None:
        for key, value in section.items():
            if key != "session-limit":
                raise ConfigurationError(f"[plugin.{self.name}] has no key {key!r}")
            if type(value) is not int or value < 0:
                raise ConfigurationError(
                    f"[plugin.{self.name}] session-limit must be a whole number >= 0"
                )
            self.sessionLimit = value

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Protocol:
        return self.protocol()


class CountingEcho(Echo):
    """
    Echo that adds what it echoes to its plugin's count.
    """

    def __init__(self, plugin: EchoPlugin) -> None:
        self.plugin = plugin

    def dataReceived(self, data: bytes) -> None:
        self.plugin.echoedBytes += len(data)
        super().dataReceived(data)


class _EchoCollector(Collector):
    """
    Reads the plugin's count at scrape time, so one plugin object serves any
    number of nodes' registries.
    """

    def __init__(self, plugin: EchoPlugin) -> None:
        self.plugin = plugin

    def collect(self) -> Iterator[CounterMetricFamily]:
        echoed = CounterMetricFamily("appn_echo_bytes", "Bytes the echo plugin sent back")
        echoed.add_metric([], self.plugin.echoedBytes)
        yield echoed


@implementer(ICommandPlugin, IAPIRoutesPlugin, IStatusPagePlugin, IMetricsPlugin)
class EchoPlugin(SimplePlugin):
    """
    The echo plugin, counting what it echoes and showing the count through
    every extension point.
    """

    def __init__(self) -> None:
        super().__init__("echo", Echo)
        self.sessions = 0
        self.echoedBytes = 0

    def buildProtocol(self, session: ISessionInfo) -> Protocol:
        self.sessions += 1
        return CountingEcho(self)

    def stats(self) -> dict[str, int]:
        return {"sessions": self.sessions, "echoed_bytes": self.echoedBytes}

    # IMetricsPlugin
    def registerMetrics(self, registry: CollectorRegistry) -> None:
        registry.register(_EchoCollector(self))

    # IAPIRoutesPlugin: served at /api/v1/plugins/echo/<path>
    def apiRoutes(self) -> Mapping[tuple[str, str], Callable[[PluginRequest], object]]:
        return {("GET", "stats"): lambda request: self.stats()}

    # IStatusPagePlugin: plain values; the page escapes them.
    def pageSection(self) -> PageSection:
        stats = self.stats()
        return PageSection(
            "Echo",
            ["sessions answered", "bytes echoed"],
            [[stats["sessions"], stats["echoed_bytes"]]],
        )

    # ICommandPlugin: `appn echo-stats`, asking the running node.
    def addCommands(
        self,
        add: Callable[
            [str, str, Callable[[argparse.Namespace, IAPIClient, TextIO], int]],
            argparse.ArgumentParser,
        ],
    ) -> None:
        add("echo-stats", "what the node's echo plugin has answered", self.runStats)

    def runStats(self, args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
        stats = api.get("plugins/echo/stats")
        if api.json:
            out.write(json.dumps(stats, indent=2) + "\n")
        else:
            assert isinstance(stats, dict)
            out.write(f"sessions  {stats['sessions']}\nechoed    {stats['echoed_bytes']} bytes\n")
        return 0


#: The objects the entry points name.
echoPlugin = EchoPlugin()
pingPlugin = SimplePlugin("ping", Pong)
