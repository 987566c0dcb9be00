"""
What the operator's tools (the management API, the metrics) need from the
node they serve: private to C{appnpy.ops}, provided by L{appnpy.node.Node}.

The topology database and the directory are optional services of the net
layer; ops declares here, as structural protocols, only the few calls it
makes of them, so it depends on no more of them than it uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from zope.interface import Attribute

from appnpy.cp._interfaces import IBoundSession, INodeObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.interfaces import INode, ISessionInfo
from appnpy.link.tls import LinkAddress
from appnpy.net.directory import LocateResult
from appnpy.net.routing import Route, RouteExplanation


class TopologyView(Protocol):
    """
    What ops reads of a network node's topology database.
    """

    cosTables: Mapping[str, object]

    def nodeName(self, nodeID: str) -> str | None: ...

    def asDict(self) -> dict[str, Any]: ...

    def addObserver(self, observer: Callable[[], None]) -> None: ...

    def selectRoute(self, origin: str, destination: str, cos: str | None = None) -> Route: ...

    def explainRoute(
        self, origin: str, destination: str, cos: str | None = None
    ) -> RouteExplanation: ...


class DirectoryView(Protocol):
    """
    What ops reads of the node's directory.
    """

    #: At an end node, its network-node server, else C{None}.
    serverNodeID: str | None

    def asDict(self) -> dict[str, Any]: ...

    def locate(self, name: str) -> Coroutine[Any, Any, LocateResult]: ...

    def explainRoute(
        self, destination: str, cos: str = "interactive"
    ) -> Coroutine[Any, Any, tuple[RouteExplanation, dict[str, str]]]: ...


class IManagedNode(INode):
    """
    A node as its management API and metrics see it.
    """

    role = Attribute("C{str}: C{'network'} or C{'end'}.")
    reactor = Attribute("The reactor the node runs on.")
    startedAt = Attribute("C{float}: C{reactor.seconds()} when the node was built.")
    links = Attribute("C{dict[str, ControlPoint]}: active links by neighbour node ID.")
    plugins = Attribute("C{dict[str, ISessionPlugin]}: enabled plugins by name.")
    topology = Attribute("L{TopologyView} or C{None}: the topology database (network nodes).")
    directory = Attribute("L{DirectoryView} or C{None}: the directory, when installed.")

    def openSession(  # type: ignore[override]  # INode declares protocolFactory as object
        destination: str,
        plugin: str,
        protocolFactory: Callable[[ISessionInfo], object],
        parameters: dict[str, object] | None = None,
        cos: str | None = None,
    ) -> Deferred[Any]:
        """
        As L{INode.openSession}; fires with the connected protocol.
        """

    def advertisedAddresses() -> list[str]:
        """
        The C{appn://} addresses the node listens on.
        """

    def sessions() -> list[IBoundSession]:
        """
        The bound sessions on all links.
        """

    def connect(address: str | LinkAddress) -> Deferred[ControlPoint]:
        """
        Dial a neighbour; fires with the link's control point once active.
        """

    def findNeighbour(destination: str) -> ControlPoint:
        """
        The active link to C{destination} (node ID, unique prefix, CP name).

        @raise appnpy.errors.NoSuchNode: if none.
        """

    def locateNode(name: str) -> Awaitable[str]:
        """
        The node ID of C{name}, located in the directory if need be.
        """

    def routeTo(destination: str, cos: str | None = None) -> Deferred[list[str]]:
        """
        The route to C{destination} for C{cos}, as node IDs.
        """

    def addObserver(observer: INodeObserver) -> None:
        """
        Tell C{observer} of link and session events (see L{appnpy.node.Node.addObserver}).
        """
