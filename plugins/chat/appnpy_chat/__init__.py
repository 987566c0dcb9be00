"""
The chat session plugin: rooms found through the directory (C{chat:<name>}),
direct messages to any node, presence and nicknames; every message signed by
its sender's node.  docs/chat.md is the user's guide, docs/protocol.md
section 19 the protocol.

The plugin takes part in every operator tool: API routes below
C{/api/v1/plugins/chat/}, a status page section, C{appn_chat_*} metrics and
the C{appn chat} command (scriptable subcommands and an interactive client).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from appnpy.api import (
    APIError,
    ConfigurationError,
    IAPIClient,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IKeywordSearchable,
    IMetricsPlugin,
    INode,
    IPluginLifecycle,
    ISessionInfo,
    ISessionPlugin,
    IStatusPagePlugin,
    PageSection,
    PluginRequest,
    SessionRefused,
    implementer,
)
from appnpy_chat.service import ChatConfig, ChatService

__version__ = "0.1.0"

#: The configuration keys, their ChatConfig attribute and type.
_KEYS: dict[str, tuple[str, type]] = {
    "history": ("history", int),
    "max-rooms": ("maxRooms", int),
    "max-members": ("maxMembers", int),
    "max-conversations": ("maxConversations", int),
    "rate": ("rate", float),
    "burst": ("burst", int),
    "rejoin-grace": ("rejoinGrace", float),
    "merge-interval": ("mergeInterval", float),
    "retry-delay": ("retryDelay", float),
    "dm-idle": ("dmIdle", float),
    "rejoin-delay": ("rejoinDelay", float),
    "session-limit": ("sessionLimit", int),
}
_MAXIMA = {"history": 1000, "max-rooms": 256, "max-members": 1024, "max-conversations": 1024}


@implementer(
    ISessionPlugin,
    IPluginLifecycle,
    IKeywordSearchable,
    IAPIRoutesPlugin,
    IStatusPagePlugin,
    IMetricsPlugin,
    ICommandPlugin,
)
class ChatPlugin:
    """
    The chat plugin.  Each node it is attached to gets its own
    L{ChatService} (sessions find theirs by the local node ID); the
    operator's tools (API, page, metrics) show the first one, which is the
    only one in a C{twist appnnode} process.  The entry point names this
    class, so every node loaded from it gets its own object.  C{detach}
    carries no node, so it stops every service: an embedding that runs
    several nodes at once gives each its own C{ChatPlugin()}.
    """

    name = "chat"
    version = __version__
    defaultCOS = "interactive"

    def __init__(
        self, config: ChatConfig | None = None, nick: str = "", stateDirectory: str | None = None
    ) -> None:
        """
        @param stateDirectory: where to keep the nickname and rooms when the
            node has no data directory (in-memory nodes); a node's own
            directory is used when it has one.
        """
        self.config = config or ChatConfig()
        self.nick = nick
        self.stateDirectory = stateDirectory
        self.services: dict[str, ChatService] = {}

    @property
    def sessionLimit(self) -> int:
        return self.config.sessionLimit

    def configure(self, section: dict[str, Any]) -> None:
        for key, value in section.items():
            if key == "nick":
                if not isinstance(value, str):
                    raise ConfigurationError("[plugin.chat] nick must be text")
                self.nick = value
                continue
            if key not in _KEYS:
                raise ConfigurationError(f"[plugin.chat] has no key {key!r}")
            attr, kind = _KEYS[key]
            if kind is float and type(value) is int:
                value = float(value)
            if type(value) is not kind or not 0 < value <= _MAXIMA.get(key, 1e9):  # type: ignore[operator]  # int or float, checked just before
                raise ConfigurationError(
                    f"[plugin.chat] {key} must be a positive {kind.__name__}"
                    + (f" of at most {_MAXIMA[key]}" if key in _MAXIMA else "")
                )
            setattr(self.config, attr, value)

    @property
    def service(self) -> ChatService:
        for service in self.services.values():
            return service
        raise APIError(503, "not-attached", "the chat plugin is not running on a node")

    # -- ISessionPlugin ---------------------------------------------------------------

    def resources(self) -> list[str]:
        names: set[str] = set()
        for service in self.services.values():
            names.update(service.resources())
        return sorted(names)

    def buildProtocol(self, session: ISessionInfo) -> object:
        service = self.services.get(session.localNodeID)
        if service is None:
            raise SessionRefused("refused-by-plugin", "chat is not running on this node")
        return service.buildProtocol(session)

    # -- IPluginLifecycle -----------------------------------------------------------

    def attach(self, node: INode) -> None:
        try:
            directory = node.dataDirectory(self.name)
        except ValueError:
            directory = None
        self.services[node.nodeID] = ChatService(
            node, self, self.config, self.nick, directory or self.stateDirectory
        )

    def detach(self) -> None:
        for service in self.services.values():
            service.stop()
        self.services.clear()

    # -- IKeywordSearchable: the rooms this node hosts ---------------------------------

    def search(self, keywords: list[str]) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for service in self.services.values():
            for name in sorted(service.hosted):
                if all(k.lower() in name for k in keywords):
                    room = service.rooms.get(name)
                    found.append({"room": name, "members": len(room.members) if room else 0})
        return found[:100]

    # -- the operator's tools -----------------------------------------------------------

    def apiRoutes(self) -> Mapping[tuple[str, str], Callable[[PluginRequest], object]]:
        from appnpy_chat.routes import routes

        return routes(lambda: self.service)

    def pageSection(self) -> PageSection | None:
        if not self.services:
            return None
        service = self.service
        rows: list[list[object]] = []
        for room in sorted(service.rooms.values(), key=lambda r: r.name):
            nicks = ", ".join(
                f"{m.nick} ({m.presence})"
                for m in sorted(room.members.values(), key=lambda m: m.nick)
            )
            rows.append(
                [
                    "#" + room.name,
                    room.role,
                    service.nodeName(room.hostID or "") or room.hostID,
                    nicks,
                ]
            )
        for peer, conversation in service.conversations.items():
            rows.append(
                [
                    "@" + (service.nodeName(peer) or peer[:16]),
                    "direct",
                    "",
                    f"{len(conversation.history)} messages",
                ]
            )
        return PageSection(
            f"Chat ({service.nick}, {service.presence})", ["room", "role", "host", "members"], rows
        )

    def registerMetrics(self, registry: CollectorRegistry) -> None:
        registry.register(_ChatCollector(self))

    def addCommands(
        self,
        add: Callable[
            [str, str, Callable[[argparse.Namespace, IAPIClient, TextIO], int]],
            argparse.ArgumentParser,
        ],
    ) -> None:
        from appnpy_chat.commands import addCommands

        addCommands(add)


class _ChatCollector(Collector):
    """
    Reads the plugin's state at scrape time.
    """

    def __init__(self, plugin: ChatPlugin) -> None:
        self.plugin = plugin

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        sent = CounterMetricFamily("appn_chat_messages_sent", "Chat messages this node sent")
        delivered = CounterMetricFamily(
            "appn_chat_messages_delivered", "Chat messages from others delivered here"
        )
        dropped = CounterMetricFamily(
            "appn_chat_messages_dropped", "Chat messages dropped, by reason", labels=["reason"]
        )
        rooms = GaugeMetricFamily(
            "appn_chat_rooms", "Rooms this node is in, by role", labels=["role"]
        )
        members = GaugeMetricFamily("appn_chat_members", "Members of the rooms this node hosts")
        roles: dict[str, int] = {}
        hostedMembers = 0
        for service in self.plugin.services.values():
            sent.add_metric([], service.counts["sent"])
            delivered.add_metric([], service.counts["delivered"])
            for reason, count in sorted(service.drops.items()):
                dropped.add_metric([reason], count)
            for room in service.rooms.values():
                roles[room.role] = roles.get(room.role, 0) + 1
                if room.role == "host":
                    hostedMembers += len(room.members)
        for role, count in sorted(roles.items()):
            rooms.add_metric([role], count)
        members.add_metric([], hostedMembers)
        yield from (sent, delivered, dropped, rooms, members)


#: A ready plugin object for embeddings (the entry point names the class).
chatPlugin = ChatPlugin()
