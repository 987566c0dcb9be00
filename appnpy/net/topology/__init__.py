"""
The topology database of a network node (APPN Topology and Routing Services).

Every network node keeps a replica of the network's topology: one I{node
record} per network node and one I{link record} per (owner, neighbour) link,
each signed by its owner and stamped with a resource sequence number (RSN)
that only the owner raises.  The parts, one job each:

  - L{records}: the records and the two messages as they travel;
  - L{database}: the store, signature checks, digest, aging, the graph;
  - L{flooding}: forwarding to neighbours and the per-neighbour rate limit;
  - L{sync}: FRSN resynchronisation when a link comes up;
  - L{measurement}: RTT and throughput of this node's own links;
  - L{rsn}: the own RSN, persisted across restarts;
  - L{origination}: issuing this node's own records, damped and refreshed;
  - L{routes}: route selection over the database;
  - L{service}: the service that composes them (L{TopologyDatabase}).

What it needs of its host and what others use of it: L{_interfaces}.
"""

from appnpy.net.topology._interfaces import IRouteQueries, ITopology, ITopologyHost
from appnpy.net.topology.measurement import DEFAULT_RTT_MS, DEFAULT_THROUGHPUT
from appnpy.net.topology.records import (
    LINK,
    MAX_END_NODES,
    MAX_LINKS_PER_ORIGIN,
    MAX_NODES,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    MAX_RSN,
    NODE,
    BadRecord,
    TopologyRecord,
    TopologySync,
    TopologyUpdate,
)
from appnpy.net.topology.rsn import RSN_RESERVE, STATE_FILE
from appnpy.net.topology.service import TopologyDatabase, installTopology

__all__ = [
    "IRouteQueries",
    "TopologyUpdate",
    "TopologySync",
    "TopologyRecord",
    "TopologyDatabase",
    "installTopology",
    "BadRecord",
    "ITopology",
    "ITopologyHost",
    "NODE",
    "LINK",
    "MAX_RECORD_BYTES",
    "MAX_RECORDS_PER_MESSAGE",
    "MAX_LINKS_PER_ORIGIN",
    "MAX_END_NODES",
    "MAX_NODES",
    "MAX_RSN",
    "RSN_RESERVE",
    "STATE_FILE",
    "DEFAULT_RTT_MS",
    "DEFAULT_THROUGHPUT",
]
