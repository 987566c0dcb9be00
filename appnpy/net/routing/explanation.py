"""
A route explanation as it travels: an end node keeps no topology database,
so C{appn route} there asks its network-node server for the explanation
(C{RouteRequest.explain}, docs/protocol.md) and shows the same one a network
node would.

L{explanationToWire} bounds what the server sends (routes longer than a
BIND may carry are left out, texts cut, and the last listed elements
dropped until it is at most L{MAX_WIRE_BYTES}) so the answer fits one
control message with the names beside it; L{explanationFromWire} checks
every field of what arrives before the end node shows any of it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from appnpy.cp.messages import encodeBody
from appnpy.errors import ProtocolError
from appnpy.net.routing.routes import MAX_ALTERNATIVES, MAX_EXCLUDED, Route, RouteExplanation

__all__ = ["MAX_HOPS", "MAX_WHY", "MAX_WIRE_BYTES", "explanationToWire", "explanationFromWire"]

#: The longest route an explanation carries (a BIND's limit, MAX_ROUTE_NODES).
MAX_HOPS = 16
#: The longest reason text carried.
MAX_WHY = 256
#: The most excluded elements listed for one rejected route.
MAX_EXCLUDED_BY = 2 * MAX_HOPS
#: The most bytes of encoded explanation sent: a control message is at
#: most 64 KiB, and the CP names of up to 7 x 16 nodes travel beside it.
MAX_WIRE_BYTES = 40 * 1024

_NODE_ID = re.compile(r"[a-z2-7]{52}\Z")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
_EXPLANATION_KEYS = frozenset(
    {"origin", "destination", "cos", "route", "alternatives", "rejected", "excluded", "reason"}
)
_ROUTE_KEYS = frozenset({"hops", "weight", "hopWeights", "cos"})
_ALTERNATIVE_KEYS = frozenset({"hops", "weight", "hopWeights", "lostBy", "why"})
_REJECTED_KEYS = frozenset({"hops", "excludedBy"})


def _cut(text: str) -> str:
    return text[:MAX_WHY]


def explanationToWire(explanation: RouteExplanation) -> dict[str, Any]:
    """
    C{explanation} as the server sends it: only routes of at most
    L{MAX_HOPS} nodes, texts cut to L{MAX_WHY} characters.
    """
    value = explanation.asDict()
    if value["route"] is not None and len(value["route"]["hops"]) > MAX_HOPS:
        value["route"] = None
        value["reason"] = f"the route has over {MAX_HOPS} nodes"
    value["alternatives"] = [
        {**a, "why": _cut(a["why"])} for a in value["alternatives"] if len(a["hops"]) <= MAX_HOPS
    ]
    value["rejected"] = [
        {
            "hops": r["hops"],
            "excludedBy": [{**e, "why": _cut(e["why"])} for e in r["excludedBy"]][:MAX_EXCLUDED_BY],
        }
        for r in value["rejected"]
        if len(r["hops"]) <= MAX_HOPS
    ]
    value["excluded"] = [{**e, "why": _cut(e["why"])} for e in value["excluded"]]
    value["reason"] = _cut(value["reason"])
    # What matters least goes first: the list of excluded elements, then
    # the rejected routes' details, then the alternatives.
    for key in ("excluded", "rejected", "alternatives"):
        while value[key] and len(encodeBody(value)) > MAX_WIRE_BYTES:
            value[key].pop()
    return value


# -- checking what arrives -------------------------------------------------------------


def _fail(where: str, what: str) -> ProtocolError:
    return ProtocolError(f"route explanation: {where} {what}")


def _map(value: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise _fail(where, f"must be a map with exactly {', '.join(sorted(keys))}")
    return value


def _list(value: object, maxItems: int, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > maxItems:
        raise _fail(where, f"must be a list of at most {maxItems}")
    return value


def _nodeID(value: object, where: str) -> str:
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise _fail(where, "must be a node ID")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_WHY:
        raise _fail(where, f"must be text of at most {MAX_WHY} characters")
    return value


def _weight(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "must be a number")
    if not 0 <= value < math.inf:
        raise _fail(where, "must be a finite number >= 0")
    return float(value)


def _hops(value: object, where: str) -> list[str]:
    hops = [_nodeID(h, where) for h in _list(value, MAX_HOPS, where)]
    if not hops:
        raise _fail(where, "must name at least one node")
    return hops


def _hopWeights(value: object, hops: list[str], where: str) -> list[float]:
    weights = [_weight(w, where) for w in _list(value, MAX_HOPS, where)]
    if len(weights) != len(hops) - 1:
        raise _fail(where, "must give one weight per hop")
    return weights


def _element(value: object, where: str) -> dict[str, Any]:
    if isinstance(value, dict) and set(value) == {"link", "why"}:
        link = _list(value["link"], 2, where)
        if len(link) != 2:
            raise _fail(where, "link must be two node IDs")
        return {"link": [_nodeID(n, where) for n in link], "why": _text(value["why"], where)}
    if isinstance(value, dict) and set(value) == {"node", "why"}:
        return {"node": _nodeID(value["node"], where), "why": _text(value["why"], where)}
    raise _fail(where, "must be {link, why} or {node, why}")


def _cosName(value: object, where: str) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise _fail(where, "must be a class-of-service name")
    return value


def explanationFromWire(value: object) -> RouteExplanation:
    """
    Check and rebuild an explanation a server sent.

    @raise ProtocolError: naming the first field that is wrong.
    """
    e = _map(value, _EXPLANATION_KEYS, "the explanation")
    cos = _cosName(e["cos"], "cos")
    route = None
    if e["route"] is not None:
        r = _map(e["route"], _ROUTE_KEYS, "route")
        hops = _hops(r["hops"], "route hops")
        weights = _hopWeights(r["hopWeights"], hops, "route hopWeights")
        route = Route(
            hops, _weight(r["weight"], "route weight"), weights, _cosName(r["cos"], "cos")
        )
    alternatives = []
    for a in _list(e["alternatives"], MAX_ALTERNATIVES, "alternatives"):
        a = _map(a, _ALTERNATIVE_KEYS, "an alternative")
        hops = _hops(a["hops"], "alternative hops")
        alternatives.append(
            {
                "hops": hops,
                "weight": _weight(a["weight"], "alternative weight"),
                "hopWeights": None
                if a["hopWeights"] is None
                else _hopWeights(a["hopWeights"], hops, "alternative hopWeights"),
                "lostBy": None if a["lostBy"] is None else _weight(a["lostBy"], "lostBy"),
                "why": _text(a["why"], "alternative why"),
            }
        )
    rejected = []
    for r in _list(e["rejected"], MAX_ALTERNATIVES, "rejected"):
        r = _map(r, _REJECTED_KEYS, "a rejected route")
        rejected.append(
            {
                "hops": _hops(r["hops"], "rejected hops"),
                "excludedBy": [
                    _element(x, "excludedBy")
                    for x in _list(r["excludedBy"], MAX_EXCLUDED_BY, "excludedBy")
                ],
            }
        )
    excluded = [_element(x, "excluded") for x in _list(e["excluded"], MAX_EXCLUDED, "excluded")]
    return RouteExplanation(
        _nodeID(e["origin"], "origin"),
        _nodeID(e["destination"], "destination"),
        cos,
        route,
        alternatives,
        rejected,
        excluded,
        _text(e["reason"], "reason"),
    )
