"""
The rpc session plugin: serves this node's services, offers each as the
resource C{rpc:<name>}, and takes part in the operator's tools (API routes,
C{appn rpc}, the status page, metrics).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from appnpy.api import (
    ConfigurationError,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IMetricsPlugin,
    INode,
    IPluginLifecycle,
    IResourceDirectory,
    ISessionInfo,
    ISessionPlugin,
    IStatusPagePlugin,
    PageSection,
    PluginRequest,
    SessionError,
    SessionRefused,
    implementer,
)
from appnpy_rpc import data
from appnpy_rpc.accounting import Limits, PeerCounter, Stats
from appnpy_rpc.cli import addCommands
from appnpy_rpc.client import PROTOCOL_VERSION, RPCClient
from appnpy_rpc.errors import (
    REMOTE_ERROR,
    UNKNOWN_METHOD,
    UNKNOWN_SERVICE,
    RPCError,
)
from appnpy_rpc.metrics import RPCCollector
from appnpy_rpc.protocol import RPCProtocol
from appnpy_rpc.routes import APIRoutes, APIState
from appnpy_rpc.service import Caller, ServiceSpec, currentDepth, inspectService

__version__ = "0.1.0"
#: Entry-point group of services a node enables by name.
SERVICES_GROUP = "appnpy.rpc_services"

_LIMIT_KEYS: dict[str, tuple[str, type, float]] = {
    # config key: (Limits field, type, minimum)
    "call-timeout": ("callTimeout", float, 0.001),
    "max-timeout": ("maxTimeout", float, 0.001),
    "max-calls-in-flight": ("maxInFlight", int, 1),
    "max-depth": ("maxDepth", int, 1),
}


def loadService(name: str) -> object:
    """
    A service instance for the config entry C{name}: a name in the
    C{appnpy.rpc_services} entry-point group, or C{package.module:Class}.

    @raise ConfigurationError: naming what could not be loaded.
    """
    try:
        if ":" in name:
            module, _, attr = name.partition(":")
            target = getattr(importlib.import_module(module), attr)
        else:
            found = [ep for ep in entry_points(group=SERVICES_GROUP) if ep.name == name]
            if not found:
                known = sorted(ep.name for ep in entry_points(group=SERVICES_GROUP))
                raise ConfigurationError(
                    f"[plugin.rpc] services: no service {name!r} is installed "
                    f"(installed: {', '.join(known) or 'none'}; or give package.module:Class)"
                )
            target = found[0].load()
    except ConfigurationError:
        raise
    except Exception as e:
        raise ConfigurationError(f"[plugin.rpc] services: {name!r} failed to load: {e!r}") from None
    return target() if isinstance(target, type) else target


class _NoCallback:
    """
    The connection of a L{Caller} for a call made through the management
    API: there is no peer to call back.
    """

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return fail(
            RPCError(UNKNOWN_SERVICE, "a call from the management API cannot be called back")
        )


@implementer(
    ISessionPlugin,
    IPluginLifecycle,
    IAPIRoutesPlugin,
    ICommandPlugin,
    IStatusPagePlugin,
    IMetricsPlugin,
)
class RPCPlugin:
    """
    The rpc plugin.  C{expose(service)} offers a service; C{client()} calls
    other nodes' services.
    """

    name = "rpc"
    version = __version__
    defaultCOS = "interactive"
    log = Logger()

    def __init__(self) -> None:
        self.sessionLimit = 64
        self.limits = Limits()
        self.services: dict[str, ServiceSpec] = {}
        self.counter = PeerCounter()
        self.stats = Stats()
        self.node: INode | None = None
        self.sessions: set[RPCProtocol] = set()
        self.apiState = APIState()

    # -- ISessionPlugin ------------------------------------------------------------

    def configure(self, section: dict[str, Any]) -> None:
        for key, value in section.items():
            if key == "services":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigurationError("[plugin.rpc] services must be a list of names")
                for entry in value:
                    try:
                        self.expose(loadService(entry))
                    except ValueError as e:
                        raise ConfigurationError(f"[plugin.rpc] services: {e}") from None
            elif key == "session-limit":
                if type(value) is not int or value < 0:
                    raise ConfigurationError(
                        "[plugin.rpc] session-limit must be a whole number >= 0"
                    )
                self.sessionLimit = value
            elif key in _LIMIT_KEYS:
                field, kind, minimum = _LIMIT_KEYS[key]
                if (
                    type(value) not in ((int, float) if kind is float else (int,))
                    or value < minimum
                ):
                    raise ConfigurationError(
                        f"[plugin.rpc] {key} must be a {'number' if kind is float else 'whole number'} >= {minimum}"
                    )
                setattr(self.limits, field, kind(value))
            else:
                raise ConfigurationError(f"[plugin.rpc] has no key {key!r}")

    def resources(self) -> list[str]:
        return [f"rpc:{name}" for name in sorted(self.services)]

    def buildProtocol(self, session: ISessionInfo) -> RPCProtocol:
        version = session.parameters.get("version", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise SessionRefused(
                "refused-by-plugin", f"rpc protocol version {version!r} is not spoken here (1 is)"
            )
        return self._protocol()

    def _protocol(self) -> RPCProtocol:
        proto = RPCProtocol(
            self._reactor(),
            self.limits,
            self.services.get,
            lambda: list(self.services.values()),
            self.counter,
            self.stats,
        )
        self.sessions.add(proto)
        proto.closed.addBoth(lambda _: self.sessions.discard(proto))
        return proto

    def _reactor(self) -> IReactorTime:
        if self.node is None:
            raise SessionError("the rpc plugin is not attached to a node")
        reactor: IReactorTime = self.node.reactor
        return reactor

    # -- IPluginLifecycle --------------------------------------------------------------

    def attach(self, node: INode) -> None:
        self.node = node

    def detach(self) -> None:
        for proto in list(self.sessions):
            proto.close()
        self.node = None

    # -- services ------------------------------------------------------------------------

    def expose(self, service: object) -> ServiceSpec:
        """
        Offer C{service} (a L{appnpy_rpc.Service}) on this node as
        C{rpc:<service.name>}; replaces one of the same name.

        @raise ValueError: if its name or a method's signature is not usable.
        """
        spec = inspectService(service)
        self.services[spec.name] = spec
        self._resourcesChanged()
        return spec

    def withdraw(self, name: str) -> None:
        """
        Stop offering the service C{name}.
        """
        if self.services.pop(name, None) is not None:
            self._resourcesChanged()

    def _resourcesChanged(self) -> None:
        if self.node is not None and IResourceDirectory.providedBy(self.node):
            IResourceDirectory(self.node).resourcesChanged(self)

    def client(self) -> RPCClient:
        """
        An L{RPCClient} from this plugin's node, sharing its limits and
        counters; the peer may also call this node's services over its
        sessions.
        """
        if self.node is None:
            raise SessionError("the rpc plugin is not attached to a node")
        return RPCClient(
            self.node,
            self.limits,
            self.services.get,
            lambda: list(self.services.values()),
            self.counter,
            self.stats,
            self._reactor(),
        )

    async def callLocal(
        self, service: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """
        Call this node's own service with the same checks a peer's call
        gets (the management API's C{call} without a node).
        """
        spec = self.services.get(service)
        if spec is None:
            raise RPCError(UNKNOWN_SERVICE, f"no service {service!r} here")
        exported = spec.methods.get(method)
        if exported is None:
            raise RPCError(UNKNOWN_METHOD, f"{service} has no method {method!r}")
        args, kwargs = exported.spec.checkArguments(args, kwargs)
        if exported.callerParam is not None:
            kwargs[exported.callerParam] = Caller(
                self.node.nodeID if self.node else "", "", _NoCallback(), 1
            )
        token = currentDepth.set(1)
        try:
            result = exported.function(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = await result
        except RPCError:
            raise
        except Exception:
            self.log.failure("rpc: {service}.{method} raised", service=service, method=method)
            raise RPCError(REMOTE_ERROR, f"{service}.{method} failed") from None
        finally:
            currentDepth.reset(token)
        try:
            return exported.spec.checkResult(data.toWire(result), "result")
        except data.Mismatch as e:
            raise RPCError("bad-result", str(e)) from None

    # -- IAPIRoutesPlugin ----------------------------------------------------------------

    def apiRoutes(self) -> Mapping[tuple[str, str], Callable[[PluginRequest], object]]:
        routes = APIRoutes(self)
        return {("GET", "services"): routes.services, ("POST", "call"): routes.call}

    # -- ICommandPlugin --------------------------------------------------------------------

    addCommands = staticmethod(addCommands)

    # -- IStatusPagePlugin -------------------------------------------------------------------

    def pageSection(self) -> PageSection:
        rows: list[list[object]] = []
        for spec in self.services.values():
            served = sum(n for (s, _), n in self.stats.served.items() if s == spec.name)
            failed = sum(
                n for (s, code), n in self.stats.served.items() if s == spec.name and code != "ok"
            )
            methods = ", ".join(sorted(spec.methods))
            rows.append([f"rpc:{spec.name}", methods, served, failed])
        rows.append(
            ["(sessions open)", len(self.sessions), sum(self.counter.inFlight.values()), ""]
        )
        return PageSection("RPC services", ["service", "methods", "calls served", "errors"], rows)

    # -- IMetricsPlugin ------------------------------------------------------------------------

    def registerMetrics(self, registry: Any) -> None:
        registry.register(RPCCollector(self))
