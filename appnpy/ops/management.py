"""
The node's local management API: HTTP + JSON, token-protected, plus a small
live web page and Prometheus metrics.  docs/management-api.md is the
reference for every endpoint.

Authentication (L{appnpy.ops.access}): every request to C{/api/v1/...}
carries C{Authorization: Bearer <token>}, the token being a fresh random
string the service writes to C{<dataDir>/api-token} (mode 0600) on each
start, or the web page's cookie with its CSRF header.  C{/metrics} is open
when the API listens on a loopback interface only (any local user may read
counters, never act); otherwise it needs the token too.

The page itself is L{appnpy.ops.page} and its event stream
L{appnpy.ops.events}, the JSON views L{appnpy.ops.describe};
this module is the HTTP dispatch and every endpoint, read best together
(hence its length).
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import os
import secrets
import statistics
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.server import Request

from appnpy.cp.controlpoint import ControlPoint
from appnpy.errors import (
    APPNError,
    NoRoute,
    NoSuchNode,
    ResourceNotFound,
    SessionClosed,
    SessionError,
    SessionRefused,
)
from appnpy.interfaces import ISessionInfo
from appnpy.link.statefile import writeAtomically
from appnpy.link.tls import parseAddress
from appnpy.ops._interfaces import DirectoryView, IManagedNode, TopologyView
from appnpy.ops.access import AccessLogSite, Credentials
from appnpy.ops.describe import describeNeighbour, describeNode, describePlugin, describeSession, ms
from appnpy.ops.events import NodeChanges, SnapshotStream
from appnpy.ops.extensions import (
    PLUGIN_ROUTE_PREFIX,
    APIError,
    PluginRequest,
    RouteHandler,
    pluginRoutes,
)
from appnpy.ops.metrics import CONTENT_TYPE, NodeMetrics
from appnpy.ops.page import STATIC, PageResource, pageSnapshot
from appnpy.ops.probe import EchoClient

API_PREFIX = b"/api/v1/"
TOKEN_FILE = "api-token"
API_FILE = "api.json"
#: Largest request body accepted.
MAX_BODY = 64 * 1024
#: Seconds `connect`, `disconnect` and `echo` may take.
ACTION_TIMEOUT = 30.0
MAX_ECHO_COUNT = 1000
MAX_ECHO_SIZE = 1024 * 1024


def _nodesIn(explanation: dict[str, Any]) -> list[str]:
    """
    Every node ID a route explanation mentions.
    """
    found = [explanation["origin"], explanation["destination"]]
    if explanation.get("computed_by"):
        found.append(explanation["computed_by"])
    if explanation.get("route"):
        found += explanation["route"]["hops"]
    for alternative in explanation.get("alternatives", []) + explanation.get("rejected", []):
        found += alternative["hops"]
    for element in explanation.get("excluded", []):
        found += element.get("link") or [element["node"]]
    return found


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ManagementResource(resource.Resource):
    """
    The whole URL space; one leaf that dispatches on method and path, so auth,
    404s and 405s are answered in one place.
    """

    isLeaf = True
    log = Logger(namespace="appnpy.ops.management")

    def __init__(self, service: ManagementService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self.service = service
        self.node = service.node
        self.page = PageResource(service.node, service.credentials, service.events)
        self.routes: dict[tuple[bytes, bytes], Callable[[Request], Awaitable[Any]]] = {
            (b"GET", b"node"): self.getNode,
            (b"GET", b"neighbours"): self.getNeighbours,
            (b"GET", b"sessions"): self.getSessions,
            (b"GET", b"plugins"): self.getPlugins,
            (b"GET", b"config"): self.getConfig,
            (b"GET", b"status"): self.getStatus,
            (b"GET", b"topology"): self.getTopology,
            (b"GET", b"resources"): self.getResources,
            (b"GET", b"locate"): self.getLocate,
            (b"GET", b"route"): self.getRoute,
            (b"POST", b"connect"): self.postConnect,
            (b"POST", b"disconnect"): self.postDisconnect,
            (b"POST", b"echo"): self.postEcho,
        }

    # -- plumbing --------------------------------------------------------------

    def render(self, request: Request) -> Any:
        path = request.path
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        # The page's first URL carries ?token=: never let it out as a referrer.
        request.setHeader(b"referrer-policy", b"no-referrer")
        page = {b"/": self.page.page, b"/events": self.page.stream}.get(path)
        if page is None and path in STATIC:
            page = self.page.static
        if page is not None:
            try:
                return page(request)
            except APIError as e:
                return self.error(request, e)
        if path == b"/metrics":
            return self.renderMetrics(request)
        if not path.startswith(API_PREFIX):
            return self.error(request, APIError(404, "not-found", "no such resource"))
        if not self.service.authorised(request):
            return self.error(request, self.unauthorised(request))
        name = path[len(API_PREFIX) :]
        routes = self.routes
        if name.startswith(PLUGIN_ROUTE_PREFIX.encode("ascii")):
            routes = {
                key: self._pluginHandler(key[1], handler)
                for key, handler in pluginRoutes(self.node.plugins.values()).items()
            }
        handler = routes.get((request.method, name))
        if handler is None:
            if any(n == name for (_, n) in routes):
                return self.error(
                    request, APIError(405, "method-not-allowed", "method not allowed here")
                )
            return self.error(request, APIError(404, "not-found", "no such resource"))
        gone: list[Failure] = []
        finished = request.notifyFinish()
        d = Deferred.fromCoroutine(self._run(handler, request, gone))

        def clientGone(reason: Failure) -> None:
            # Stop waiting for the link or the echo; nobody reads the answer.
            gone.append(reason)
            d.cancel()

        finished.addErrback(clientGone)
        return server.NOT_DONE_YET

    async def _run(
        self, handler: Callable[[Request], Awaitable[Any]], request: Request, gone: list[Failure]
    ) -> None:
        try:
            result = await handler(request)
        except CancelledError:
            return
        except APIError as e:
            self._finish(request, gone, e.status, {**e.extra, "error": e.message, "code": e.code})
        except Exception:
            self.log.failure("management request {path} failed", path=request.path.decode())
            self._finish(request, gone, 500, {"error": "internal error", "code": "internal"})
        else:
            self._finish(request, gone, 200, result)

    def _pluginHandler(
        self, path: bytes, handler: RouteHandler
    ) -> Callable[[Request], Awaitable[Any]]:
        """
        Adapt a plugin's route handler to the resource's: the plugin sees a
        L{PluginRequest}, never the Twisted request.
        """
        below = path.decode("utf-8").split("/", 2)[2]

        async def run(request: Request) -> Any:
            body = self.body(request) if request.method == b"POST" else {}
            query = {
                k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
                for k, v in request.args.items()
                if v
            }
            result = handler(PluginRequest(request.method.decode("ascii"), below, query, body))
            if inspect.isawaitable(result):
                result = await result
            return result

        return run

    def _finish(self, request: Request, gone: list[Failure], status: int, body: Any) -> None:
        if gone or request.finished:
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body).encode("utf-8") + b"\n")
        request.finish()

    def error(self, request: Request, e: APIError) -> bytes:
        request.setResponseCode(e.status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": e.message, "code": e.code}).encode("utf-8") + b"\n"

    def unauthorised(self, request: Request) -> APIError:
        request.setHeader(b"www-authenticate", b'Bearer realm="appnpy"')
        return APIError(
            401, "unauthorized", "missing or wrong API token (see <data-dir>/api-token)"
        )

    def body(self, request: Request) -> dict[str, Any]:
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise APIError(413, "too-large", f"request body over {MAX_BODY} bytes")
        try:
            value = json.loads(raw or b"{}")
        except ValueError as e:
            raise APIError(400, "bad-json", f"request body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise APIError(400, "bad-json", "request body must be a JSON object")
        return value

    @staticmethod
    def field(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
        if name not in body:
            if default is None:
                raise APIError(400, "missing-field", f"field {name!r} is required")
            return default
        value = body[name]
        if type(value) is not kind or (kind is str and not value):
            raise APIError(400, "bad-field", f"field {name!r} must be a {kind.__name__}")
        return value

    @staticmethod
    def query(request: Request, name: str, required: bool = True) -> str | None:
        """
        The query parameter C{name} as text (its first value).
        """
        values = request.args.get(name.encode("ascii"))
        if not values or not values[0]:
            if required:
                raise APIError(400, "missing-field", f"query parameter {name!r} is required")
            return None
        try:
            return str(values[0].decode("utf-8"))
        except UnicodeDecodeError:
            raise APIError(400, "bad-field", f"query parameter {name!r} is not UTF-8") from None

    def nameOf(self, nodeID: str) -> str | None:
        """
        The CP name of C{nodeID} if this node knows it: itself, a neighbour,
        or a node of the topology database.
        """
        if nodeID == self.node.nodeID:
            return str(self.node.name)
        cp = self.node.links.get(nodeID)
        if cp is not None and cp.peerName:
            return str(cp.peerName)
        if self.topology is not None:
            name = self.topology.nodeName(nodeID)
            if name:
                return str(name)
        return None

    def names(self, nodeIDs: Iterable[str]) -> dict[str, str | None]:
        return {n: self.nameOf(n) for n in sorted(set(nodeIDs))}

    @property
    def topology(self) -> TopologyView | None:
        """
        The node's topology database, if it keeps one (network nodes).
        """
        topology: TopologyView | None = self.node.topology
        return topology

    @property
    def serverNodeID(self) -> str | None:
        """
        At an end node, its network-node server, else C{None}.
        """
        directory: DirectoryView | None = self.node.directory
        return directory.serverNodeID if directory is not None else None

    def directory(self) -> DirectoryView:
        directory: DirectoryView | None = self.node.directory
        if directory is None:
            raise APIError(404, "no-directory", "this node runs no directory services")
        return directory

    async def resolve(self, destination: str) -> str:
        try:
            return str(await self.node.locateNode(destination))
        except NoSuchNode as e:
            raise APIError(404, "no-such-node", str(e)) from None

    def neighbour(self, destination: str) -> ControlPoint:
        try:
            return self.node.findNeighbour(destination)
        except NoSuchNode as e:
            raise APIError(404, "no-such-node", str(e)) from None

    # -- GET ---------------------------------------------------------------------

    async def getNode(self, request: Request) -> Any:
        return describeNode(self.node)

    async def getNeighbours(self, request: Request) -> Any:
        return [describeNeighbour(cp) for cp in self.node.links.values()]

    async def getSessions(self, request: Request) -> Any:
        return [describeSession(s) for s in self.node.sessions()]

    async def getPlugins(self, request: Request) -> Any:
        return [describePlugin(p) for _, p in sorted(self.node.plugins.items())]

    async def getConfig(self, request: Request) -> Any:
        return self.service.effectiveConfig

    async def getStatus(self, request: Request) -> Any:
        status = describeNode(self.node)
        status["neighbours"] = await self.getNeighbours(request)
        status["sessions"] = len(self.node.sessions())
        return status

    async def getTopology(self, request: Request) -> Any:
        node = self.node
        base: dict[str, Any] = {"node_id": node.nodeID, "name": node.name, "role": node.role}
        topology = self.topology
        if topology is None:
            server = self.serverNodeID
            return {
                **base,
                "has_database": False,
                "server": None
                if server is None
                else {"node_id": server, "name": self.nameOf(server)},
                "digest": None,
                "nodes": [],
                "links": [],
            }
        database = topology.asDict()
        for n in database["nodes"]:
            # The database holds node records of network nodes only.
            n.setdefault("role", "network")
        return {**database, **base, "has_database": True, "server": None}

    async def getResources(self, request: Request) -> Any:
        resources = self.directory().asDict()
        for owners in resources.get("registered", {}).values():
            for entry in owners:
                entry["owner_name"] = self.nameOf(entry["owner"])
        server = resources.get("server")
        return {
            "node_id": self.node.nodeID,
            "name": self.node.name,
            **resources,
            "server_name": None if server is None else self.nameOf(server),
        }

    async def getLocate(self, request: Request) -> Any:
        from appnpy.net.directory import validResourceName

        name = self.query(request, "name")
        assert name is not None
        if not validResourceName(name):
            raise APIError(400, "bad-field", f"{name!r} is not a resource name (<kind>:<name>)")
        directory = self.directory()
        reactor = self.service.reactor
        try:
            found = await Deferred.fromCoroutine(directory.locate(name)).addTimeout(
                ACTION_TIMEOUT, reactor
            )
        except ResourceNotFound as e:
            raise APIError(404, "resource-not-found", str(e)) from None
        except TimeoutError:
            raise APIError(502, "timeout", f"no answer for {name} in time") from None
        route = list(found.route) if found.route else None
        if route is None and found.owner != self.node.nodeID and self.topology is not None:
            # A network node's locate carries no route: choose one as a BIND would.
            try:
                route = list(self.topology.selectRoute(self.node.nodeID, found.owner).hops)
            except NoRoute:
                route = None
        return {
            "name": found.name,
            "owner": found.owner,
            "owner_name": self.nameOf(found.owner),
            "record": found.record,
            "route": route,
            "names": self.names((route or []) + [found.owner]),
            # Several verified owners (open trust mode): a conflict, shown,
            # never resolved to one of them.
            "conflict": found.conflict,
            "owners": [
                {"node_id": owner, "name": self.nameOf(owner)}
                for owner in (found.owners or (found.owner,))
            ],
        }

    async def getRoute(self, request: Request) -> Any:
        destination = self.query(request, "destination")
        assert destination is not None
        cos = self.query(request, "cos", required=False) or "interactive"
        target = await self.resolve(destination)
        node = self.node
        topology = self.topology
        # CP names the chooser knows (an end node's server).
        serverNames: dict[str, str] = {}
        if topology is not None:
            if cos not in topology.cosTables:
                raise APIError(
                    400,
                    "unknown-cos",
                    f"no class of service {cos!r}; known: {', '.join(sorted(topology.cosTables))}",
                )
            explanation = topology.explainRoute(node.nodeID, target, cos).asDict()
            explanation["computed_by"] = node.nodeID
        else:
            # An end node keeps no topology database: its server explains
            # the route it would choose from here.
            server = self.serverNodeID
            try:
                found, serverNames = await Deferred.fromCoroutine(
                    self.directory().explainRoute(target, cos)
                ).addTimeout(ACTION_TIMEOUT, self.service.reactor)
            except NoRoute as e:
                raise APIError(404, "no-route", str(e)) from None
            except TimeoutError:
                raise APIError(502, "timeout", "no route answer in time") from None
            explanation = found.asDict()
            explanation["computed_by"] = server
        # What this node knows of a name first; the server's for the rest.
        explanation["names"] = {
            n: name or serverNames.get(n) for n, name in self.names(_nodesIn(explanation)).items()
        }
        if explanation["route"] is None:
            raise APIError(
                404,
                "no-route",
                explanation["reason"] or f"no route to {destination} for {cos}",
                {"explanation": explanation},
            )
        return explanation

    # -- POST --------------------------------------------------------------------

    async def postConnect(self, request: Request) -> Any:
        address = self.field(self.body(request), "address", str)
        try:
            parsed = parseAddress(address)
        except APPNError as e:
            raise APIError(400, "bad-address", str(e)) from None
        self.log.info("management: connecting to {address}", address=str(parsed))
        try:
            cp = await self.node.connect(parsed).addTimeout(ACTION_TIMEOUT, self.service.reactor)
        except CancelledError:
            raise
        except TimeoutError:
            raise APIError(
                502, "timeout", f"no link to {parsed} within {ACTION_TIMEOUT:g} s"
            ) from None
        except Exception as e:
            raise APIError(502, "connect-failed", f"could not link to {parsed}: {e}") from None
        return describeNeighbour(cp)

    async def postDisconnect(self, request: Request) -> Any:
        cp = self.neighbour(self.field(self.body(request), "node", str))
        self.log.info("management: closing the link with {peer}", peer=cp.peerNodeID)
        try:
            await cp.close().addTimeout(ACTION_TIMEOUT, self.service.reactor)
        except TimeoutError:
            cp.link.abortTransport()
        return {"node_id": cp.peerNodeID, "name": cp.peerName, "closed": True}

    async def postEcho(self, request: Request) -> Any:
        body = self.body(request)
        destination = self.field(body, "node", str)
        count = self.field(body, "count", int, 5)
        size = self.field(body, "size", int, 64)
        if not 1 <= count <= MAX_ECHO_COUNT:
            raise APIError(400, "bad-field", f"count must be 1..{MAX_ECHO_COUNT}")
        if not 1 <= size <= MAX_ECHO_SIZE:
            raise APIError(400, "bad-field", f"size must be 1..{MAX_ECHO_SIZE}")
        reactor = self.service.reactor
        infos: list[ISessionInfo] = []

        def build(info: ISessionInfo) -> EchoClient:
            infos.append(info)
            return EchoClient(reactor)

        # Any node of the network, or a resource (echo:<CP name>): adjacent
        # or routed through relays, as the node decides.
        try:
            client = await self.node.openSession(destination, "echo", build).addTimeout(
                ACTION_TIMEOUT, reactor
            )
        except TimeoutError:
            raise APIError(502, "timeout", "the echo session was not bound in time") from None
        except NoSuchNode as e:
            raise APIError(404, "no-such-node", str(e)) from None
        except ResourceNotFound as e:
            raise APIError(404, "resource-not-found", str(e)) from None
        except NoRoute as e:
            raise APIError(502, "no-route", str(e)) from None
        except SessionError as e:
            reason = (
                e.reason if isinstance(e, (SessionRefused, SessionClosed)) else "session-refused"
            )
            raise APIError(502, str(reason), str(e)) from None
        deadline = reactor.seconds() + ACTION_TIMEOUT
        rtts: list[float] = []
        sent = received = 0
        error = None
        try:
            for _ in range(count):
                payload = secrets.token_bytes(size)
                sent += 1
                left = deadline - reactor.seconds()
                try:
                    seconds, echoed = await client.roundTrip(payload).addTimeout(
                        max(left, 0.001), reactor
                    )
                except TimeoutError:
                    error = "timeout"
                    break
                except SessionError as e:
                    error = str(e)
                    break
                if echoed == payload:
                    received += 1
                    rtts.append(seconds)
        finally:
            if error is None:
                client.transport.loseConnection()
            else:
                client.transport.abortConnection()
        info = infos[0] if infos else None
        result: dict[str, Any] = {
            "node_id": info.peerNodeID if info is not None else None,
            "sent": sent,
            "received": received,
            "size": size,
            "rtt_ms_median": ms(statistics.median(rtts)) if rtts else None,
            "rtt_ms": [ms(r) for r in rtts],
        }
        if error is not None:
            result["error"] = error
        return result

    # -- metrics and page -----------------------------------------------------

    def renderMetrics(self, request: Request) -> bytes:
        if request.method != b"GET":
            return self.error(request, APIError(405, "method-not-allowed", "GET only"))
        if not (self.service.loopbackOnly or self.service.authorised(request)):
            return self.error(request, self.unauthorised(request))
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return self.service.metrics.render()


class ManagementService(Service):
    """
    Serves the management API of C{node} on C{endpoint} and advertises it in
    C{dataDir} (C{api.json}, C{api-token}).
    """

    log = Logger(namespace="appnpy.ops.management")

    def __init__(
        self,
        node: IManagedNode,
        endpoint: str,
        dataDir: str,
        effectiveConfig: dict[str, Any],
        reactor: IReactorTime | None = None,
    ) -> None:
        self.node = node
        self.endpoint = endpoint
        self.dataDir = dataDir
        self.effectiveConfig = effectiveConfig
        self.reactor: IReactorTime = reactor if reactor is not None else node.reactor
        self.metrics = NodeMetrics(node)
        self.credentials = Credentials()
        self.events = SnapshotStream(self.reactor, lambda: pageSnapshot(node))
        node.addObserver(NodeChanges(self.events))
        if node.topology is not None:
            node.topology.addObserver(self.events.changed)
        self.port: IListeningPort | None = None
        self.url: str | None = None
        self.loopbackOnly = False
        self._starting: Deferred[None] | None = None
        self._failure: Failure | None = None

    @property
    def tokenPath(self) -> str:
        return os.path.join(self.dataDir, TOKEN_FILE)

    @property
    def apiPath(self) -> str:
        return os.path.join(self.dataDir, API_FILE)

    @property
    def token(self) -> str:
        """
        The API token of this start (C{""} before it).
        """
        return self.credentials.token

    def authorised(self, request: Request) -> bool:
        return self.credentials.authorised(request)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(self._startFailed)

    def whenListening(self) -> Deferred[None]:
        """
        Fires once the API is listening and C{api.json} is written; fails if
        it could not start.
        """
        assert self._starting is not None, "the service has not been started"
        d: Deferred[None] = Deferred()

        def fire(result: Any) -> Any:
            if self.port is None:
                why = f": {self._failure.getErrorMessage()}" if self._failure is not None else ""
                d.errback(APPNError(f"the management API could not listen on {self.endpoint}{why}"))
            else:
                d.callback(None)
            return result

        self._starting.addBoth(fire)
        return d

    async def _start(self) -> None:
        os.makedirs(self.dataDir, mode=0o700, exist_ok=True)
        self.credentials.renew()
        writeAtomically(self.tokenPath, self.token.encode("ascii") + b"\n", 0o600)
        site = AccessLogSite(ManagementResource(self))  # type: ignore[no-untyped-call]  # Site.__init__ is unannotated
        # Not "Starting factory <twisted.web.server.Site object at 0x...>".
        site.noisy = False
        self.port = await serverFromString(self.reactor, self.endpoint).listen(site)
        host = cast(IPv4Address | IPv6Address, self.port.getHost())
        self.loopbackOnly = _isLoopback(host.host)
        shown = "127.0.0.1" if host.host in ("0.0.0.0", "::") else host.host
        if ":" in shown:
            shown = f"[{shown}]"
        self.url = f"http://{shown}:{host.port}/"
        info = {"url": self.url, "pid": os.getpid(), "node_id": self.node.nodeID}
        writeAtomically(self.apiPath, json.dumps(info).encode("utf-8") + b"\n", 0o600)
        self.log.info("management API on {url}", url=self.url)

    def _startFailed(self, failure: Failure) -> None:
        # One line: the operator needs the reason, not a traceback; the
        # process entry point (tap) turns it into ERROR and exit status 1.
        self._failure = failure
        self.log.error("the management API could not start: {why}", why=failure.getErrorMessage())

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.events.stop()
        if self.port is not None:
            port, self.port = self.port, None
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        try:
            os.unlink(self.apiPath)
        except FileNotFoundError:
            pass
