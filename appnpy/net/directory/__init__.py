"""
Directory services: which node owns a named resource, and how to ask.

A resource is named C{<kind>:<name>} (C{files:music}, C{chat:lobby},
C{rpc:calc}, and C{echo:<CP name>} on every node that runs the echo plugin).
Its owner publishes an owner-signed resource record (L{records}) that lives
C{ttl} seconds after it was received unless its owner refreshes it.

One module per job:

  - L{records}: resource records and their checks, the locate result;
  - L{messages}: the seven control messages and their limits;
  - L{registry}: records other nodes registered here;
  - L{cache}: the positive and negative locate cache;
  - L{registration}: registering with the network-node server and the CDS;
  - L{locate}: the locate sequence (local, cache, directed, CDS, broadcast);
  - L{search}: keyword search of plugins (L{appnpy.interfaces.IKeywordSearchable});
  - L{routeproxy}: end nodes asking their server for routes;
  - L{service}: the L{Directory} composing them, and L{installDirectory};
  - L{_interfaces}: what the directory needs from the node and the topology
    database, and the L{IDirectory} it offers.
"""

from appnpy.net.directory._interfaces import IDirectory, IDirectoryHost
from appnpy.net.directory.messages import (
    MAX_RECORDS_PER_ANSWER,
    MAX_RECORDS_PER_MESSAGE,
    MAX_SEARCH_RESULTS,
    LocateReply,
    LocateRequest,
    RegisterResources,
    RouteReply,
    RouteRequest,
    SearchReply,
    SearchRequest,
    newSearchID,
)
from appnpy.net.directory.records import (
    MAX_RECORD_SIZE,
    MAX_TTL,
    InvalidRecord,
    LocateResult,
    ResourceRecord,
    validResourceName,
)
from appnpy.net.directory.registry import MAX_RECORDS_PER_REGISTRANT, MAX_REGISTRY
from appnpy.net.directory.search import MAX_RESULT_SIZE, MAX_SEARCH_BYTES
from appnpy.net.directory.service import Directory, installDirectory

__all__ = [
    "MAX_RECORDS_PER_ANSWER",
    "MAX_RECORDS_PER_MESSAGE",
    "MAX_RECORDS_PER_REGISTRANT",
    "MAX_RECORD_SIZE",
    "MAX_REGISTRY",
    "MAX_RESULT_SIZE",
    "MAX_SEARCH_BYTES",
    "MAX_SEARCH_RESULTS",
    "MAX_TTL",
    "Directory",
    "IDirectory",
    "IDirectoryHost",
    "InvalidRecord",
    "LocateReply",
    "LocateRequest",
    "LocateResult",
    "RegisterResources",
    "ResourceRecord",
    "RouteReply",
    "RouteRequest",
    "SearchReply",
    "SearchRequest",
    "installDirectory",
    "newSearchID",
    "validResourceName",
]
