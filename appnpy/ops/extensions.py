"""
The values plugins exchange with the operator's tools through their extension
points (L{appnpy.interfaces.IAPIRoutesPlugin}, L{IStatusPagePlugin},
L{IMetricsPlugin}), and the lookups the management API and metrics make of
them.

Kept apart from L{appnpy.ops.management} so that a plugin importing
L{appnpy.api} does not pull in the web server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from prometheus_client.registry import CollectorRegistry
from twisted.logger import Logger

from appnpy.interfaces import IAPIRoutesPlugin, IMetricsPlugin, ISessionPlugin, IStatusPagePlugin

log = Logger(namespace="appnpy.ops.extensions")

#: Where a plugin's routes live, below C{/api/v1/}: C{plugins/<name>/<path>}.
PLUGIN_ROUTE_PREFIX = "plugins/"


class APIError(Exception):
    """
    An error answered as C{{"error": message, "code": code}} with C{status};
    C{extra} adds fields to that object (e.g. the explanation of a failed
    route selection).  Plugin route handlers raise it too.
    """

    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


@attrs.frozen
class PluginRequest:
    """
    A management API request as a plugin's route handler sees it: already
    authenticated, its body already checked to be a JSON object.
    """

    method: str
    #: The path below the plugin's prefix, e.g. C{"stats"}.
    path: str
    #: Query parameters, the first value of each, as text.
    query: Mapping[str, str]
    #: The JSON body (C{{}} for none).
    body: Mapping[str, Any]


@attrs.frozen
class PageSection:
    """
    A plugin's section of the status page: every value is shown as text and
    escaped by the page.
    """

    title: str
    headers: list[str]
    rows: list[list[object]]


#: What a plugin route handler is.
RouteHandler = Callable[[PluginRequest], object]


def pluginRoutes(plugins: Iterable[ISessionPlugin]) -> dict[tuple[bytes, bytes], RouteHandler]:
    """
    The routes of every plugin providing L{IAPIRoutesPlugin}, keyed by
    (method, path below C{/api/v1/}) as the management resource dispatches.
    A plugin's routes are always under its own name.
    """
    routes: dict[tuple[bytes, bytes], RouteHandler] = {}
    for plugin in plugins:
        if not IAPIRoutesPlugin.providedBy(plugin):
            continue
        for (method, path), handler in plugin.apiRoutes().items():
            full = f"{PLUGIN_ROUTE_PREFIX}{plugin.name}/{path.lstrip('/')}"
            routes[(method.upper().encode("ascii"), full.encode("utf-8"))] = handler
    return routes


def pageSections(plugins: Iterable[ISessionPlugin]) -> list[PageSection]:
    """
    The status page sections of the plugins providing L{IStatusPagePlugin};
    a plugin whose section fails is left out (and logged), never the page.
    """
    sections = []
    for plugin in plugins:
        if not IStatusPagePlugin.providedBy(plugin):
            continue
        try:
            section = plugin.pageSection()
        except Exception:
            log.failure("plugin {plugin} failed to render its page section", plugin=plugin.name)
            continue
        if isinstance(section, PageSection):
            sections.append(section)
    return sections


def registerPluginMetrics(registry: CollectorRegistry, plugins: Iterable[ISessionPlugin]) -> None:
    """
    Let every plugin providing L{IMetricsPlugin} register its metrics.
    """
    for plugin in plugins:
        if IMetricsPlugin.providedBy(plugin):
            plugin.registerMetrics(registry)
