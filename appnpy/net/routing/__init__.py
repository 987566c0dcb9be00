"""
Route selection: classes of service (L{appnpy.net.routing.cos}),
least-weight routes over the topology graph (L{appnpy.net.routing.routes}),
and where link and node characteristics come from
(L{appnpy.net.routing.characteristics}).
"""

from appnpy.net.routing.characteristics import (
    LINK_DEFAULT,
    SECURITY_CA_128,
    SECURITY_CA_256,
    SECURITY_TLS13_128,
    SECURITY_TLS13_256,
    SECURITY_UNKNOWN,
    LinkSetting,
    LinkSettings,
    linkSecurity,
    loadLevel,
    parseLinkSections,
)
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
from appnpy.net.routing.explanation import explanationFromWire, explanationToWire
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
    "LINK_DEFAULT",
    "SECURITY_CA_128",
    "SECURITY_CA_256",
    "SECURITY_TLS13_128",
    "SECURITY_TLS13_256",
    "SECURITY_UNKNOWN",
    "LinkSetting",
    "LinkSettings",
    "linkSecurity",
    "loadLevel",
    "parseLinkSections",
    "explanationFromWire",
    "explanationToWire",
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
