"""
The topology database of a network node (APPN Topology and Routing Services).

Every network node keeps a replica of the network's topology: one I{node
record} per network node, one I{link record} per (owner, neighbour) link and
one I{end record} per end node (naming its server), each signed by its owner and stamped with a resource sequence number (RSN)
that only the owner raises.  The parts, one job each:

  - L{records}: the records and the two messages as they travel;
  - L{database}: the store, signature checks, digest, aging, tombstones,
    the eviction order, the graph;
  - L{flooding}: forwarding to neighbours and the rate limits (per
    neighbour and per owner);
  - L{sync}: FRSN resynchronisation when a link comes up, held records;
  - L{endnode}: an end node's signed record naming its server;
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
    END,
    LINK,
    MAX_CERT_BYTES,
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
    "END",
    "MAX_CERT_BYTES",
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
