"""
What the topology database needs from its host, and what others use of it.

The database runs inside a node but needs only a few things from it: the
active links to neighbouring control points, a place to register its two
control-message handlers, and link-up/link-down events.  L{ILinkRegistry}
names exactly those, so the database never reaches through a node; the node
(C{appnpy.node.Node}) provides it.  L{ITopologyHost} adds what
L{appnpy.net.topology.installTopology} reads to build the database.

L{ITopology} is the database as the directory, routed sessions, the
management API and the node use it (they receive it as C{node.topology}).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from zope.interface import Attribute, Interface

from appnpy.cp._interfaces import ILinkObserver, ILinkRegistry
from appnpy.net.routing import Route, RouteExplanation

if TYPE_CHECKING:
    pass

__all__ = ["ILinkObserver", "ILinkRegistry", "ITopologyHost", "ITopology", "IRelayLoad"]


class ITopologyHost(ILinkRegistry):
    """
    A node that can be given a topology database.
    """

    reactor = Attribute("The reactor (IReactorTime): time and timers.")
    identity = Attribute("The node's Identity: signs its own records.")
    name = Attribute("str: the node's CP name, announced in its node record.")
    role = Attribute('str: "network" or "end"; only network nodes keep a database.')


class ITopology(Interface):
    """
    The topology database of a network node as its users see it.
    """

    cosTables = Attribute("dict[str, ClassOfService]: the classes of service by name.")

    def networkNodes() -> list[str]:
        """
        The node IDs of every network node with a node record, sorted.
        """

    def nodeName(nodeID: str) -> str | None:
        """
        The CP name in C{nodeID}'s node record, or C{None}.
        """

    def servingNode(endNodeID: str) -> str | None:
        """
        The network node C{endNodeID} named as its server in its own signed
        end record, while that node's record lists it as attached.
        """

    def setAttachedEndNodes(ids: Iterable[str]) -> None:
        """
        The end nodes this node serves, to announce in its node record.
        """

    def selectRoute(origin: str, destination: str, cos: str | None = None) -> Route:
        """
        The least-weight L{Route} for C{cos}.

        @raise NoRoute: when none qualifies.
        """

    def isReachable(nodeID: str) -> bool:
        """
        Is C{nodeID} (a network node, or an end node through its serving
        network node) reachable from this node over links both ends announce?
        """

    def isAnnounced(nodeID: str) -> bool:
        """
        Does the database still hold a link record announced by C{nodeID},
        or one another node announces up to it (for an end node: to or by
        its serving network node)?  A node with none has left the network
        or crashed; one that merely is not reachable now may be across a
        partition that heals.
        """

    def alternativeRoutes(origin: str, destination: str, cos: str | None, k: int) -> list[Route]:
        """
        Up to C{k} L{Route}s for C{cos}, best first; empty when none qualifies.
        """

    def explainRoute(origin: str, destination: str, cos: str | None = None) -> RouteExplanation:
        """
        The L{RouteExplanation} of the route selection for C{cos}.
        """

    def digest() -> str:
        """
        A digest of the versions held, equal on nodes that have converged.
        """

    def asDict() -> dict[str, Any]:
        """
        The database (records, statistics, digest) for the management API.
        """


class IHops(Protocol):
    """
    A chosen route: its node IDs, origin first.
    """

    @property
    def hops(self) -> Sequence[str]: ...


class IRelayLoad(Protocol):
    """
    What the topology database reads of the node's relay to measure the
    load its node record announces (the relay, L{appnpy.net.relay.Relay},
    provides it; L{appnpy.node.buildNode} wires it).
    """

    @property
    def sessionCount(self) -> int:
        """
        The routed sessions relayed now (spliced or being bound).
        """

    @property
    def maxSessions(self) -> int:
        """
        How many the relay carries before it refuses BINDs (C{limit-reached}).
        """


class IRouteQueries(Interface):
    """
    The few topology database queries the directory makes (network nodes only).
    The topology database provides it.
    """

    def selectRoute(origin: str, destination: str, cos: str) -> IHops:
        """
        The route for C{cos}.

        @raise appnpy.errors.NoRoute: if there is none.
        """

    def explainRoute(origin: str, destination: str, cos: str) -> RouteExplanation:
        """
        Why the route for C{cos} is the one chosen (for an end node's
        C{appn route}).

        @raise appnpy.errors.NoRoute: for an unknown class of service.
        """

    def nodeName(nodeID: str) -> str | None:
        """
        The CP name in C{nodeID}'s node record, or C{None}.
        """

    def networkNodes() -> list[str]:
        """
        The node IDs of every network node in the topology database.
        """

    def servingNode(endNodeID: str) -> str | None:
        """
        The network node serving C{endNodeID}: the one the end node named in
        its own signed end record (and that lists it), if any.
        """

    def setAttachedEndNodes(ids: Iterable[str]) -> None:
        """
        The end nodes this node serves now (they registered with it), to
        announce in its node record.
        """
