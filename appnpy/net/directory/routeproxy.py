"""
Routes for end nodes: an end node keeps no topology database, so it asks its
network-node server (C{RouteRequest}), which computes the route from the end
node with its own topology database, and on request explains it, so
C{appn route} shows an end node the same explanation a network node sees.
A network node answers from its database directly.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred

from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import MAX_ROUTE_NODES
from appnpy.errors import NoRoute, ProtocolError, Reason
from appnpy.net.directory._core import DirectoryBase, PendingRoute
from appnpy.net.directory.messages import (
    MAX_EXPLAINED_NODES,
    RouteReply,
    RouteRequest,
    newSearchID,
)
from appnpy.net.routing import RouteExplanation, explanationFromWire, explanationToWire


class RouteProxyMixin(DirectoryBase):
    """
    Route requests, both sides (a part of L{service.Directory}).
    """

    def requestRoute(
        self, destination: str, cos: str = "interactive"
    ) -> Coroutine[Any, Any, list[str]]:
        """
        The route (node IDs, this node first) to C{destination} for C{cos}
        (an awaitable).  End nodes ask their server.

        @raise NoRoute: if there is none.
        """
        return self._requestRoute(destination, cos)

    async def _requestRoute(self, destination: str, cos: str) -> list[str]:
        if self.role == "network":
            if self.topology is None:
                raise NoRoute(f"{destination}: this node has no topology database")
            return list(self.topology.selectRoute(self.nodeID, destination, cos).hops)
        reply = await self._askServer(destination, cos, False)
        return list(reply.route)

    def explainRoute(
        self, destination: str, cos: str = "interactive"
    ) -> Coroutine[Any, Any, tuple[RouteExplanation, dict[str, str]]]:
        """
        Why the route to C{destination} for C{cos} is the one chosen, and
        the CP names of the nodes the explanation mentions as the chooser
        knows them (an awaitable).  End nodes ask their server; a network
        node explains from its own database.

        @raise NoRoute: if the end node has no server, or it does not answer.
        """
        return self._explainRoute(destination, cos)

    async def _explainRoute(
        self, destination: str, cos: str
    ) -> tuple[RouteExplanation, dict[str, str]]:
        if self.role == "network":
            if self.topology is None:
                raise NoRoute(f"{destination}: this node has no topology database")
            explanation = self.topology.explainRoute(self.nodeID, destination, cos)
            return explanation, {}
        reply = await self._askServer(destination, cos, True)
        try:
            explanation = explanationFromWire(reply.explanation)
        except ProtocolError as e:
            self.log.warn("the network-node server sent a bad route explanation: {why}", why=str(e))
            raise NoRoute(f"{destination}: the server's explanation is malformed") from None
        return explanation, dict(reply.names)

    async def _askServer(self, destination: str, cos: str, explain: bool) -> RouteReply:
        server = self._serverCP()
        if server is None:
            raise NoRoute(f"{destination}: this end node has no network-node server")
        request = RouteRequest(
            request_id=newSearchID(), destination=destination, cos=cos, explain=explain
        )
        d: Deferred[RouteReply] = Deferred()
        pending = PendingRoute(d, request, None)
        pending.timer = self.reactor.callLater(
            self.requestTimeout, self._failRoute, pending, "the server did not answer in time"
        )
        self._routes[request.request_id] = pending
        self._send(server, request)
        return await d

    def _failRoute(self, pending: PendingRoute, why: str) -> None:
        self._routes.pop(pending.request.request_id, None)
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        if not pending.deferred.called:
            pending.deferred.errback(NoRoute(f"{pending.request.destination}: {why}"))

    def _routeRequestReceived(self, cp: ControlPoint, msg: RouteRequest) -> None:
        if not self._admit(cp):
            self._send(cp, RouteReply(request_id=msg.request_id, reason=Reason.BUSY.value))
            return
        topology = self.topology
        try:
            if self.role != "network" or topology is None:
                raise NoRoute("this node computes no routes")
            if msg.explain:
                self._send(cp, self._explanationReply(cp.peerNodeID, msg))
                return
            hops = list(topology.selectRoute(cp.peerNodeID, msg.destination, msg.cos).hops)
            if len(hops) > MAX_ROUTE_NODES:
                raise NoRoute(f"the route has {len(hops)} nodes, over {MAX_ROUTE_NODES}")
        except NoRoute as e:
            self._send(
                cp,
                RouteReply(
                    request_id=msg.request_id, reason=Reason.NO_ROUTE.value, detail=str(e)[:512]
                ),
            )
            return
        self._send(cp, RouteReply(request_id=msg.request_id, route=hops))

    def _explanationReply(self, requester: str, msg: RouteRequest) -> RouteReply:
        """
        The answer to an C{explain} request: the explanation from the
        requester (the end node) and the route in it, if any.

        @raise NoRoute: for an unknown class of service.
        """
        topology = self.topology
        assert topology is not None
        explanation = topology.explainRoute(requester, msg.destination, msg.cos)
        wire = explanationToWire(explanation)
        hops = wire["route"]["hops"] if wire["route"] is not None else []
        mentioned = {requester, msg.destination, *hops}
        for a in wire["alternatives"] + wire["rejected"]:
            mentioned.update(a["hops"])
        names = {}
        for nodeID in sorted(mentioned)[:MAX_EXPLAINED_NODES]:
            name = topology.nodeName(nodeID)
            if name:
                names[nodeID] = name
        if not hops:
            return RouteReply(
                request_id=msg.request_id,
                reason=Reason.NO_ROUTE.value,
                detail=wire["reason"][:512],
                explanation=wire,
                names=names,
            )
        return RouteReply(request_id=msg.request_id, route=hops, explanation=wire, names=names)

    def _routeReplyReceived(self, cp: ControlPoint, msg: RouteReply) -> None:
        pending = self._routes.get(msg.request_id)
        if pending is None or cp.peerNodeID != self.serverNodeID:
            self.stats["stray-replies"] += 1
            return
        del self._routes[msg.request_id]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        if msg.route or (pending.request.explain and msg.explanation):
            pending.deferred.callback(msg)
        else:
            pending.deferred.errback(
                NoRoute(f"{pending.request.destination}: {msg.reason} {msg.detail}".strip())
            )
