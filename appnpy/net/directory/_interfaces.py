"""
What the directory needs from its host and from the topology database, and
what it offers the rest of the node (private to appnpy: the node and the
topology database provide these; plugins see L{appnpy.interfaces}).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.interfaces import ISessionPlugin
from appnpy.net.directory.records import LocateResult
from appnpy.net.routing import RouteExplanation


class IDirectory(Interface):
    """
    A node's directory services, as the node, the management API and the
    benchmarks use them.
    """

    serverNodeID = Attribute(
        "C{str | None}: at an end node, its current network-node server's node ID."
    )
    stats = Attribute("C{Counter[str]}: the directory's counters.")
    centralDirectory = Attribute(
        "C{str | None}: the node ID of the central directory server this node "
        "registers with (its own when it is the CDS), or C{None}."
    )

    def locate(name: str, cos: str = "interactive") -> Coroutine[Any, Any, LocateResult]:
        """
        Find the owner of C{name}.

        @raise appnpy.errors.ResourceNotFound: if no node answers for it.
        """

    def requestRoute(destination: str, cos: str = "interactive") -> Coroutine[Any, Any, list[str]]:
        """
        The route (node IDs, this node first) to C{destination}.

        @raise appnpy.errors.NoRoute: if there is none.
        """

    def explainRoute(
        destination: str, cos: str = "interactive"
    ) -> Coroutine[Any, Any, tuple[RouteExplanation, dict[str, str]]]:
        """
        Why the route to C{destination} is the one chosen, and the CP names
        of the nodes it mentions; an end node asks its server.

        @raise appnpy.errors.NoRoute: if the end node cannot ask.
        """

    def search(
        kind: str,
        keywords: list[str],
        maxResults: int = 100,
        onResults: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """
        A keyword search of every reachable node's plugins offering C{kind};
        C{onResults} hears each batch as it arrives.
        """

    def register(name: str) -> None:
        """
        Offer C{name} from this node (besides what its plugins offer).
        """

    def localResources() -> list[str]:
        """
        The resource names this node offers.
        """

    def resourcesChanged(plugin: ISessionPlugin) -> None:
        """
        C{plugin}'s C{resources()} answer changed: register and announce anew.
        """

    def asDict() -> dict[str, Any]:
        """
        The directory as JSON-able data (C{appn resources}).
        """


class IDirectoryHost(ILinkRegistry):
    """
    The node L{appnpy.net.directory.installDirectory} gives directory services.
    """

    reactor = Attribute("The reactor (C{IReactorTime}).")
    identity = Attribute("C{Identity}: signs this node's resource records.")
    nodeID = Attribute("C{str}: this node's node ID.")
    name = Attribute("C{str}: this node's CP name.")
    role = Attribute("C{'network'} or C{'end'}.")
    trust = Attribute(
        "L{appnpy.link.tls.TrustPolicy}: in network mode its CA certificate binds names to keys."
    )
    plugins = Attribute("C{Mapping[str, ISessionPlugin]}: the node's plugins by name (live).")
    topology = Attribute(
        "The topology database (an L{IRouteQueries}), C{None} on end nodes; built first."
    )
