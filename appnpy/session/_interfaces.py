"""
What the session services need from the node they run in and from the
network layer above them (private to appnpy).  The node provides them; the
routes come from the topology database or the network-node server, which
the session layer must not import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from appnpy.cp._interfaces import IBindHandler, ILinkHost

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from appnpy.cp.controlpoint import ControlPoint


class ISessionHost(Interface):
    """
    The node, as the ends of its routed sessions see it.
    """

    nodeID = Attribute("C{str}: this node's ID.")
    reactor = Attribute("The reactor sessions schedule on.")
    handshakeTimeout = Attribute("C{float}: seconds end-to-end TLS may take to authenticate.")
    shuttingDown = Attribute("C{bool}: whether the node is stopping (BINDs are refused).")

    def activeLink(nodeID: str) -> ControlPoint | None:
        """
        The active link to neighbour C{nodeID}, if there is one.
        """

    def findNeighbour(destination: str) -> ControlPoint:
        """
        The active link to C{destination} (node ID, unique prefix, CP name).

        @raise appnpy.errors.NoSuchNode: if there is none.
        """


class IRouteSource(Interface):
    """
    Routes and node names from the network layer (topology database on a
    network node, the network-node server on an end node).
    """

    def routeTo(destination: str, cos: str | None = None) -> Deferred[list[str]]:
        """
        The route, node IDs from this node to C{destination}, for C{cos}.
        """

    def alternativeRoutes(destination: str, cos: str | None, k: int) -> Deferred[list[list[str]]]:
        """
        Up to C{k} routes to C{destination} for C{cos}, best first (a path
        switch tries them in turn).
        """

    def nodeName(nodeID: str) -> str:
        """
        The CP name of C{nodeID}, or C{""} if this node does not know it.
        """


class IRoutedSessionsHost(ILinkHost, ISessionHost, IRouteSource):
    """
    What L{appnpy.session.routed.installRoutedSessions} builds the routed
    session ends from, and where it registers them.
    """

    plugins = Attribute("C{dict} of the node's session plugins by name.")
    linkContextFactory = Attribute(
        "L{appnpy.link.tls.LinkContextFactory}: the node's TLS context, used end to end too."
    )
    routedSessions = Attribute("The node's routed session ends, once installed.")

    def setBindHandler(kind: str, handler: IBindHandler | None) -> None:
        """
        Register C{handler} (an L{IBindHandler}, or L{None} to remove) for
        inbound BINDs of C{kind}.
        """
