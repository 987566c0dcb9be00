"""
A hostile network-node server for route explanations: a real network node
whose answers to its end nodes' C{RouteRequest(explain=true)} start from
its honest topology database's explanation and then lie in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appnpy.cp.controlpoint import ControlPoint
from appnpy.net.directory import RouteReply, RouteRequest
from appnpy.net.routing import explanationToWire
from appnpy.node import Node

#: Changes an honest explanation (its wire form) into a lie.
Tamper = Callable[[dict[str, Any]], dict[str, Any]]


def negativeWeight(wire: dict[str, Any]) -> dict[str, Any]:
    """
    A route whose weight is negative: it would win any comparison.
    """
    route = dict(wire["route"], weight=-1.0)
    return dict(wire, route=route)


def extraKey(wire: dict[str, Any]) -> dict[str, Any]:
    """
    A field the explanation does not have.
    """
    return dict(wire, trusted=True)


def lieAboutRoutes(server: Node, tamper: Tamper) -> None:
    """
    Make C{server} answer every route request with its own explanation for
    the requester, passed through C{tamper}, and the route in it.
    """
    topology = server.topology
    assert topology is not None

    def answer(cp: ControlPoint, msg: RouteRequest) -> None:
        explanation = topology.explainRoute(cp.peerNodeID, msg.destination, msg.cos)
        wire = tamper(explanationToWire(explanation))
        hops = list(explanation.route.hops) if explanation.route is not None else []
        cp.send(RouteReply(request_id=msg.request_id, route=hops, explanation=wire))

    server.addControlHandler(RouteRequest, answer)
