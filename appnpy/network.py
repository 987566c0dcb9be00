"""
The network services a node runs, installed in one place.

Every node gets a directory and the ends of routed sessions; a network node
also keeps the topology database and relays sessions for others (APPN
intermediate session routing).  C{twist appnnode} and the in-memory harness
both build their nodes through L{installNetworkServices}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appnpy.net.directory import installDirectory
from appnpy.net.relay import installRelay
from appnpy.net.routing import parseCOS
from appnpy.net.topology import installTopology
from appnpy.node import Node
from appnpy.session.routed import installRoutedSessions


def installNetworkServices(
    node: Node,
    stateDir: str | None = None,
    cds: bool = False,
    cdsNode: str | None = None,
    cosSections: Mapping[str, Mapping[str, Any]] | None = None,
    **topologyOptions: Any,
) -> None:
    """
    Give C{node} its network services according to its role.

    @param stateDir: where the topology database keeps its own resource
        sequence number across restarts (the node's data directory).
    @param cds: make this network node a central directory server.
    @param cdsNode: the node ID of the central directory server to use.
    @param cosSections: classes of service from the config file, added to
        (or replacing) the built-in ones.
    """
    cosTables = {
        name: parseCOS(name, dict(section)) for name, section in (cosSections or {}).items()
    }
    if node.role == "network":
        installTopology(node, cosTables=cosTables, stateDir=stateDir, **topologyOptions)
        installRelay(node)
    installDirectory(node, cds=cds, cdsNode=cdsNode)
    installRoutedSessions(node)
