"""
Route selection: classes of service (L{appnpy.net.routing.cos}) and
least-weight routes over the topology graph (L{appnpy.net.routing.routes}).
"""

from appnpy.net.routing.cos import (
    BUILTIN_COS,
    DEFAULT_COS,
    SECURE_FLOOR,
    TLS_SECURITY,
    ClassOfService,
    LinkCharacteristics,
    LinkRow,
    NodeCharacteristics,
    NodeRow,
    parseCOS,
    parseCOSTables,
)
from appnpy.net.routing.routes import (
    MAX_ALTERNATIVES,
    MAX_EXCLUDED,
    Route,
    RouteExplanation,
    TopologyGraph,
    explainRoute,
    kShortestRoutes,
    leastWeightRoute,
)

__all__ = [
    "LinkCharacteristics",
    "NodeCharacteristics",
    "LinkRow",
    "NodeRow",
    "ClassOfService",
    "TopologyGraph",
    "Route",
    "RouteExplanation",
    "BUILTIN_COS",
    "DEFAULT_COS",
    "SECURE_FLOOR",
    "TLS_SECURITY",
    "MAX_ALTERNATIVES",
    "MAX_EXCLUDED",
    "parseCOS",
    "parseCOSTables",
    "leastWeightRoute",
    "explainRoute",
    "kShortestRoutes",
]
