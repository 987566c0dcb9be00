"""
The rpc plugin's management API routes, below /api/v1/plugins/rpc/:
C{GET services[?node=NODE]} and C{POST call} (docs/rpc.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredSemaphore

from appnpy.api import (
    APIError,
    NoRoute,
    NoSuchNode,
    PluginRequest,
    ResourceNotFound,
    SessionRefused,
)
from appnpy_rpc import data
from appnpy_rpc.errors import RPCError
from appnpy_rpc.jsondata import fromJSON, toJSON
from appnpy_rpc.service import MethodSpec

if TYPE_CHECKING:
    from appnpy_rpc.plugin import RPCPlugin


class APIRoutes:
    """
    The route handlers, for one plugin.
    """

    def __init__(self, plugin: RPCPlugin) -> None:
        self.plugin = plugin
        self._slots: DeferredSemaphore | None = None

    def _remote(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Deferred[Any]:
        """
        Run C{work} (which opens an RPC session) once a slot is free.  Every
        API request to another node opens a session of its own; a script
        firing many at once would otherwise run into the neighbours'
        session limit and see some refused with C{limit-reached}.  Half the
        limit (at most 32) run at once; the others wait their turn.
        """
        if self._slots is None:
            self._slots = DeferredSemaphore(max(1, min(32, self.plugin.sessionLimit // 2)))
        return self._slots.run(lambda: Deferred.fromCoroutine(work()))

    def _isSelf(self, target: str) -> bool:
        node = self.plugin.node
        if node is None:
            return False
        try:
            return bool(node.resolveNode(target) == node.nodeID)
        except Exception:
            return False  # not known here: open() will locate it, or say why not

    async def services(self, request: PluginRequest) -> object:
        target = request.query.get("node")
        if not target or self._isSelf(target):
            return {
                "node": self.plugin.node.nodeID if self.plugin.node else "",
                "services": [
                    describeJSON(s.name, {m: e.spec for m, e in s.methods.items()})
                    for s in self.plugin.services.values()
                ],
            }
        try:
            proto = await self.plugin.client().open(target)
        except Exception as e:
            raise apiError(e) from None
        try:
            described = await proto.describe(None)
        except RPCError as e:
            raise apiError(e) from None
        finally:
            proto.close()
        return {
            "node": proto.peerNodeID,
            "services": [describeJSON(name, methods) for name, methods in described],
        }

    async def call(self, request: PluginRequest) -> object:
        body = request.body
        service, method = body.get("service"), body.get("method")
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        target, timeout = body.get("node"), body.get("timeout")
        if not isinstance(service, str) or not isinstance(method, str):
            raise APIError(400, "bad-request", "service and method must be text")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise APIError(400, "bad-request", "args must be a list and kwargs a map")
        if target is not None and not isinstance(target, str):
            raise APIError(400, "bad-request", "node must be text")
        if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout <= 50):
            raise APIError(400, "bad-request", "timeout must be a number of seconds, 0 < t <= 50")
        name = service[4:] if service.startswith("rpc:") else service
        try:
            args, kwargs = fromJSON(args), fromJSON(kwargs)
        except data.Mismatch as e:
            raise APIError(400, "bad-request", str(e)) from None
        try:
            if (not target or self._isSelf(target)) and name in self.plugin.services:
                result = await self.plugin.callLocal(name, method, args, kwargs)
                node = self.plugin.node.nodeID if self.plugin.node else ""
            else:

                async def remoteCall() -> tuple[Any, str]:
                    proto = await self.plugin.client().open(target or f"rpc:{name}")
                    try:
                        remote = await proto.service(name)
                        if timeout is not None:
                            remote = remote.withTimeout(float(timeout))
                        return await remote.call(method, *args, **kwargs), proto.peerNodeID
                    finally:
                        proto.close()

                result, node = await self._remote(remoteCall)
        except Exception as e:
            raise apiError(e) from None
        return {"node": node, "service": name, "method": method, "result": toJSON(result)}


def describeJSON(name: str, methods: dict[str, MethodSpec]) -> dict[str, Any]:
    return {
        "service": name,
        "methods": [
            {**m.toWire(), "signature": m.format()}
            for m in sorted(methods.values(), key=lambda m: m.name)
        ],
    }


def apiError(e: Exception) -> APIError:
    if isinstance(e, RPCError):
        return APIError(502, e.code, e.message or e.code)
    if isinstance(e, SessionRefused):
        return APIError(502, e.reason, str(e))
    if isinstance(e, APIError):
        return e
    if isinstance(e, ResourceNotFound):
        return APIError(404, "resource-not-found", str(e))
    if isinstance(e, NoSuchNode):
        return APIError(404, "no-such-node", str(e))
    if isinstance(e, NoRoute):
        return APIError(502, "no-route", str(e))
    code = getattr(e, "reason", None)
    return APIError(502, code if isinstance(code, str) else "unreachable", str(e))
