"""
What the network services of C{appnpy.net} need from their host (the node),
declared here so they type against a narrow seam instead of the whole
L{appnpy.node.Node}.  Private to appnpy: the node declares
C{@implementer(IPeerHost)}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute

from appnpy.cp._interfaces import ILinkRegistry
from appnpy.cp.controlpoint import ControlPoint
from appnpy.link.tls import LinkAddress


class IPeerHost(ILinkRegistry):
    """
    What the L{appnpy.net.peers.PeerManager} uses of its node: the links it
    keeps up, dialling, and what the node advertises of itself.
    """

    nodeID = Attribute("C{str}: this node's ID (its own record is never learned).")
    identity = Attribute("L{appnpy.link.identity.Identity}: signs this node's address record.")
    reactor = Attribute("The reactor: C{seconds()} and C{callLater} for backoff and saves.")
    shuttingDown = Attribute("C{bool}: the node is stopping (lost links are not redialled).")

    def connect(address: LinkAddress) -> Deferred[ControlPoint]:
        """
        Dial C{address}; fires with the link's control point once it is up.
        """

    def advertisedAddresses() -> list[str]:
        """
        This node's listening addresses as C{appn://} text (may hold wildcards).
        """
