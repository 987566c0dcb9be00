"""
Calling services from Python:

    rpc = RPCClient(node)
    calc = await rpc.connect("rpc:calc")
    await calc.call("add", 1, 2)

L{RPCClient.connect} locates the service, opens an RPC session to the node
that offers it and asks for its signatures (C{describe}); every call is then
checked against them before it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from appnpy.api import INode, ISessionInfo
from appnpy_rpc.accounting import Limits, PeerCounter, Stats
from appnpy_rpc.errors import UNKNOWN_SERVICE, RPCError
from appnpy_rpc.protocol import RemoteService, RPCProtocol, ServiceList, ServiceLookup

#: The RPC protocol version, carried in BIND's parameters.
PROTOCOL_VERSION = 1
PLUGIN = "rpc"


class RPCClient:
    """
    Opens RPC sessions from C{node}.  A node need not run the rpc plugin
    to call; the plugin's L{appnpy_rpc.plugin.RPCPlugin.client} gives one
    sharing its limits, counters and services (so the peer may call this
    node's services over the same session).
    """

    def __init__(
        self,
        node: INode,
        limits: Limits | None = None,
        lookup: ServiceLookup | None = None,
        listServices: ServiceList | None = None,
        counter: PeerCounter | None = None,
        stats: Stats | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        self.node = node
        self.limits = limits or Limits()
        self.lookup = lookup
        self.listServices = listServices
        self.counter = counter or PeerCounter()
        self.stats = stats or Stats()
        self.reactor: IReactorTime = reactor or node.reactor

    def protocol(self, info: ISessionInfo | None = None) -> RPCProtocol:
        return RPCProtocol(
            self.reactor, self.limits, self.lookup, self.listServices, self.counter, self.stats
        )

    def open(self, target: str, expose: Iterable[object] = ()) -> Deferred[RPCProtocol]:
        """
        An RPC session to C{target}: a node (ID, unique prefix or CP name)
        or a resource name C{rpc:<service>}, located first.

        @param expose: services this side offers the peer on this session
            (callbacks), exposed before the first byte arrives.
        @return: a Deferred firing with the session's L{RPCProtocol}.
        """
        return Deferred.fromCoroutine(self._open(target, list(expose)))

    async def _open(self, target: str, services: list[object]) -> RPCProtocol:
        target = await self._destination(target)

        def build(info: ISessionInfo) -> RPCProtocol:
            proto = self.protocol(info)
            for s in services:
                proto.expose(s)
            return proto

        proto: RPCProtocol = await self.node.openSession(  # type: ignore[misc]
            target, PLUGIN, build, {"version": PROTOCOL_VERSION}
        )
        return proto

    def connect(self, service: str, expose: Iterable[object] = ()) -> Deferred[RemoteService]:
        """
        The service C{rpc:<name>} (or C{<name>}) wherever it is offered,
        over a new session; close it with C{remote.close()}.

        @return: a Deferred firing with a L{RemoteService}.
        """
        return Deferred.fromCoroutine(self._connect(service, list(expose)))

    async def _connect(self, service: str, expose: list[object]) -> RemoteService:
        name = service[4:] if service.startswith("rpc:") else service
        proto = await self._open(f"rpc:{name}", expose)
        try:
            return await proto.service(name)
        except BaseException:
            proto.close()
            raise

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        One call on a session of its own: connect, call, close.
        """
        return Deferred.fromCoroutine(self._call(service, method, args, kwargs))

    async def _call(
        self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        remote = await self._connect(service, [])
        try:
            return await remote.call(method, *args, **kwargs)
        finally:
            remote.close()

    async def _destination(self, target: str) -> str:
        """
        The node to open a session to for C{target}: for a resource name,
        one of the nodes that offer it (a neighbour if one does, otherwise
        the lowest node ID, so the choice is stable); anything else is
        left for openSession to resolve.
        """
        if not target.startswith("rpc:"):
            return target
        owners: list[str] = await self.node.locate(target)  # type: ignore[misc]
        others = [o for o in owners if o != self.node.nodeID]
        if not others:
            raise RPCError(
                UNKNOWN_SERVICE, f"{target} is offered only by this node; call it in place"
            )
        neighbours = set(self.node.neighbours())
        return min(others, key=lambda o: (o not in neighbours, o))
