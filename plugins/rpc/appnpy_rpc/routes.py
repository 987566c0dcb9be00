"""
The rpc plugin's management API routes, below /api/v1/plugins/rpc/:
C{GET services[?node=NODE]} and C{POST call} (docs/rpc.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

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
    from appnpy_rpc.protocol import RPCProtocol


class APIRoutes:
    """
    The route handlers, for one plugin.
    """

    def __init__(self, plugin: RPCPlugin) -> None:
        # The management API asks the plugin for its routes on every
        # request, so what calls share lives in the plugin's APIState.
        self.plugin = plugin
        state = plugin.apiState
        if state.slots is None:
            state.slots = DeferredSemaphore(max(1, min(32, plugin.sessionLimit // 2)))
        self._slots: DeferredSemaphore = state.slots
        self._sessions: dict[str, _Shared] = state.sessions

    async def _session(self, target: str) -> tuple[RPCProtocol, _Shared]:
        """
        An RPC session to C{target} for one API call: the one open for it
        already, or a new one.  Calls arriving together share it instead of
        opening (and tearing down) one each, which costs a session set-up per
        call and, with enough at once, ran into the far end's session limit
        (it still counts sessions that are closing).  Closed after
        L{API_SESSION_IDLE} seconds without calls.
        """
        shared = self._sessions.get(target)
        if shared is None or shared.dead():
            shared = self._sessions[target] = _Shared(self.plugin, target)
        shared.users += 1
        shared.stopIdle()
        try:
            proto = await shared.get()
        except BaseException:
            shared.release()
            if self._sessions.get(target) is shared:
                del self._sessions[target]
            raise
        return proto, shared

    def _remote(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Deferred[Any]:
        """
        Run C{work} (which opens an RPC session) once a slot is free.  Every
        API request to another node opens a session of its own; a script
        firing many at once would otherwise run into the neighbours'
        session limit and see some refused with C{limit-reached}.  Half the
        limit (at most 32) run at once; the others wait their turn.
        """
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
                    proto, shared = await self._session(target or f"rpc:{name}")
                    try:
                        remote = await proto.service(name)
                        if timeout is not None:
                            remote = remote.withTimeout(float(timeout))
                        return await remote.call(method, *args, **kwargs), proto.peerNodeID
                    finally:
                        shared.release()

                result, node = await self._remote(remoteCall)
        except Exception as e:
            raise apiError(e) from None
        return {"node": node, "service": name, "method": method, "result": toJSON(result)}


class APIState:
    """
    What the API's requests share, kept by the plugin: the sessions to
    other nodes (by target as the request named it, see
    L{APIRoutes._session}) and the slots for calls to them.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, _Shared] = {}
        self.slots: DeferredSemaphore | None = None


#: Seconds an API session to another node stays open without calls.
API_SESSION_IDLE = 10.0


class _Shared:
    """
    One API session to a target: opened once, used by every call made while
    it is open, closed when idle.
    """

    def __init__(self, plugin: RPCPlugin, target: str) -> None:
        self.plugin = plugin
        self.users = 0
        self.proto: RPCProtocol | None = None
        self._waiting: list[Deferred[RPCProtocol]] | None = []
        self._idle: IDelayedCall | None = None
        plugin.client().open(target).addCallbacks(self._opened, self._failed)

    def _opened(self, proto: RPCProtocol) -> None:
        self.proto = proto
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(proto)
        if self.users == 0:
            self._startIdle()

    def _failed(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        self.error = failure
        for d in waiting:
            d.errback(failure)

    def get(self) -> Deferred[RPCProtocol]:
        if self.proto is not None:
            return succeed(self.proto)
        if self._waiting is None:
            return fail(self.error)
        d: Deferred[RPCProtocol] = Deferred()
        self._waiting.append(d)
        return d

    def dead(self) -> bool:
        """
        Whether the session ended (or never opened): a new one is needed.
        """
        if self.proto is not None:
            return not self.proto.connected
        return self._waiting is None

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.proto is not None:
            self._startIdle()

    def stopIdle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _startIdle(self) -> None:
        self.stopIdle()
        node = self.plugin.node
        if node is None or self.proto is None:
            return
        proto = self.proto
        self._idle = cast(IReactorTime, node.reactor).callLater(API_SESSION_IDLE, proto.close)


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
