"""
The management API, served over real loopback HTTP by a node with real links.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from typing import Any

import attrs
from appnpy_echo import Echo, Pong, SimplePlugin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from appnpy.link.identity import generateIdentity
from appnpy.node import Node, buildNode
from appnpy.ops.config import NodeConfig
from appnpy.ops.management import ManagementService
from appnpy.ops.page import humanDuration, pageSnapshot, renderStatusPage

TIMEOUT = 20.0


def makeNode(
    testCase: unittest.TestCase, name: str, role: str = "network", services: bool = False
) -> Node:
    """
    A started node with real-reactor loopback listening, stopped at cleanup,
    built as C{twist appnnode} builds one (without a data directory, API or
    peer manager); with C{services}, the network services of its role.
    Topology changes are flooded without damping, so a test waits for
    convergence only as long as the links take.
    """
    config = NodeConfig(
        dataDir=None, name=name, role=role, listen=("tcp:0:interface=127.0.0.1",), api=None
    )
    plugins = [SimplePlugin("echo", Echo), SimplePlugin("ping", Pong, sessionLimit=3)]
    node = buildNode(
        reactor,
        config,
        generateIdentity(),
        plugins,
        services=services,
        managePeers=False,
        topologyOptions={"damping": 0.0},
    )
    node.startService()
    testCase.addCleanup(node.stopService)
    return node


async def nodeAddress(node: Node) -> str:
    await node.whenStarted()
    return node.advertisedAddresses()[0]


async def startManaged(
    testCase: unittest.TestCase,
    name: str = "LAB.ALPHA",
    role: str = "network",
    services: bool = False,
) -> Any:
    node = makeNode(testCase, name, role, services)
    dataDir = testCase.mktemp()
    service = ManagementService(
        node, "tcp:0:interface=127.0.0.1", dataDir, {"name": name, "listen": ["x"]}, reactor=reactor
    )
    service.startService()
    testCase.addCleanup(service.stopService)
    await service.whenListening()
    await nodeAddress(node)
    return node, service


async def http(
    service: ManagementService,
    method: bytes,
    path: str,
    body: Any = None,
    token: str | None | bool = True,
    raw: bytes | None = None,
    extra: dict[bytes, bytes] | None = None,
) -> tuple[int, Any, Any]:
    """
    One request (with the C{extra} headers); answers (status, decoded JSON
    or bytes, headers).
    """
    headers = Headers()
    for name, value in (extra or {}).items():
        headers.addRawHeader(name, value)
    if token is True:
        headers.addRawHeader(b"authorization", b"Bearer " + service.token.encode())
    elif token:
        headers.addRawHeader(b"authorization", b"Bearer " + token.encode())
    producer = None
    if raw is not None or body is not None:
        from io import BytesIO

        producer = FileBodyProducer(BytesIO(raw if raw is not None else json.dumps(body).encode()))
    assert service.url is not None
    d = Agent(reactor).request(method, (service.url.rstrip("/") + path).encode(), headers, producer)
    response = await d.addTimeout(TIMEOUT, reactor)
    data = await readBody(response)
    ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
    value: Any = json.loads(data) if ctype.startswith(b"application/json") else data
    return response.code, value, response.headers


async def until(condition: Callable[[], bool], nodes: list[Node]) -> None:
    """
    Wait until C{condition()} holds, checking whenever a topology database of
    C{nodes} changes (no polling).
    """
    if condition():
        return
    done: Deferred[None] = Deferred()

    def check() -> None:
        if not done.called and condition():
            done.callback(None)

    for node in nodes:
        if node.topology is not None:
            node.topology.addObserver(check)
    await done.addTimeout(TIMEOUT, reactor)


@attrs.frozen
class Lab:
    """
    N1 (managed) linked to N2 and N4, both linked to N3; the end node E
    (managed) linked to N1, its server.  N1's link to N4 is announced with a
    high cost, so interactive routes from N1 to N3 go through N2 and the
    route through N4 is the alternative.  N3 offers C{files:music}; E
    registers C{chat:lobby} with N1.
    """

    n1: Node
    n2: Node
    n3: Node
    n4: Node
    e: Node
    api1: ManagementService
    apiE: ManagementService


async def startLab(testCase: unittest.TestCase) -> Lab:
    n1, api1 = await startManaged(testCase, "LAB.N1", services=True)
    n2, n3, n4 = (makeNode(testCase, f"LAB.N{i}", services=True) for i in (2, 3, 4))
    e, apiE = await startManaged(testCase, "LAB.E", role="end", services=True)
    n1.topology.setLinkCharacteristics(n4.nodeID, cost=200)
    n3.directory.register("files:music")
    e.directory.register("chat:lobby")
    network = [n1, n2, n3, n4]
    for a, b in ((n1, n2), (n1, n4), (n2, n3), (n4, n3), (e, n1)):
        await a.connect(await nodeAddress(b))

    def converged() -> bool:
        dbs = [n.topology for n in network]
        routable = sum(1 for link in n1.topology.asDict()["links"] if link["routable"])
        return (
            len({db.digest() for db in dbs}) == 1
            and len(n1.topology.networkNodes()) == 4
            and routable == 8  # four links, announced from both ends
            and all(db.servingNode(e.nodeID) == n1.nodeID for db in dbs)
            and any(
                link["cost"] == 200
                for link in n4.topology.asDict()["links"]
                if link["owner"] == n1.nodeID
            )
        )

    await until(converged, network)
    return Lab(n1, n2, n3, n4, e, api1, apiE)


class FilesTests(unittest.TestCase):
    async def _files(self) -> None:
        node, service = await startManaged(self)
        tokenPath = os.path.join(service.dataDir, "api-token")
        apiPath = os.path.join(service.dataDir, "api.json")
        self.assertEqual(stat.S_IMODE(os.stat(tokenPath).st_mode), 0o600)
        with open(tokenPath) as f:
            self.assertEqual(f.read().strip(), service.token)
        self.assertGreaterEqual(len(service.token), 40)
        with open(apiPath) as f:
            info = json.load(f)
        self.assertEqual(info["node_id"], node.nodeID)
        self.assertEqual(info["pid"], os.getpid())
        self.assertEqual(info["url"], service.url)
        self.assertTrue(info["url"].startswith("http://127.0.0.1:"))
        self.assertEqual(
            [n for n in os.listdir(service.dataDir) if n.endswith(".tmp")], [], "temp files left"
        )
        await service.stopService()
        self.assertFalse(os.path.exists(apiPath))

    def test_files(self) -> Deferred[None]:
        """
        Starting writes api-token (0600, the token) and api.json (url, pid,
        node ID); stopping removes api.json.
        """
        return Deferred.fromCoroutine(self._files())

    async def _newToken(self) -> None:
        node = makeNode(self, "LAB.ONE")
        dataDir = self.mktemp()
        tokens = []
        for _ in range(2):
            s = ManagementService(node, "tcp:0:interface=127.0.0.1", dataDir, {}, reactor=reactor)
            s.startService()
            await s.whenListening()
            tokens.append(s.token)
            await s.stopService()
        self.assertNotEqual(tokens[0], tokens[1])

    def test_newTokenEachStart(self) -> Deferred[None]:
        """
        Each start makes a new random token.
        """
        return Deferred.fromCoroutine(self._newToken())


class APITests(unittest.TestCase):
    """
    Every endpoint over HTTP.
    """

    def run_(self, coro: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(coro)

    async def _auth(self) -> None:
        node, service = await startManaged(self)
        for token in (None, "wrong", service.token + "x"):
            code, body, headers = await http(service, b"GET", "/api/v1/node", token=token)
            self.assertEqual(code, 401)
            self.assertEqual(body["code"], "unauthorized")
            self.assertNotIn(service.token, json.dumps(body))
        code, body, _ = await http(service, b"GET", "/", token=None)
        self.assertEqual(code, 401)
        code, body, _ = await http(service, b"GET", "/api/v1/node")
        self.assertEqual(code, 200)

    def test_auth(self) -> Deferred[None]:
        """
        A missing or wrong token is answered 401 with a JSON error, on the API
        and the HTML page.
        """
        return self.run_(self._auth())

    async def _errors(self) -> None:
        node, service = await startManaged(self)
        code, body, _ = await http(service, b"GET", "/api/v1/nothing")
        self.assertEqual((code, body["code"]), (404, "not-found"))
        code, body, _ = await http(service, b"GET", "/elsewhere")
        self.assertEqual(code, 404)
        code, body, _ = await http(service, b"GET", "/api/v1/connect")
        self.assertEqual((code, body["code"]), (405, "method-not-allowed"))
        code, body, _ = await http(service, b"POST", "/api/v1/connect", raw=b"{nope")
        self.assertEqual((code, body["code"]), (400, "bad-json"))
        code, body, _ = await http(service, b"POST", "/api/v1/connect", raw=b"[1]")
        self.assertEqual((code, body["code"]), (400, "bad-json"))
        code, body, _ = await http(service, b"POST", "/api/v1/connect", body={})
        self.assertEqual((code, body["code"]), (400, "missing-field"))
        code, body, _ = await http(service, b"POST", "/api/v1/connect", body={"address": 7})
        self.assertEqual((code, body["code"]), (400, "bad-field"))
        code, body, _ = await http(service, b"POST", "/api/v1/connect", body={"address": "x:y:z"})
        self.assertEqual((code, body["code"]), (400, "bad-address"))
        code, body, _ = await http(service, b"POST", "/api/v1/echo", body={"node": "a", "count": 0})
        self.assertEqual((code, body["code"]), (400, "bad-field"))
        code, body, _ = await http(service, b"POST", "/api/v1/disconnect", body={"node": "LAB.NO"})
        self.assertEqual((code, body["code"]), (404, "no-such-node"))

    def test_errors(self) -> Deferred[None]:
        """
        Unknown paths are 404, wrong methods 405, malformed bodies and fields
        400, unknown nodes 404; all with a JSON error and code.
        """
        return self.run_(self._errors())

    async def _gets(self) -> None:
        node, service = await startManaged(self)
        code, info, _ = await http(service, b"GET", "/api/v1/node")
        self.assertEqual(code, 200)
        self.assertEqual(info["node_id"], node.nodeID)
        self.assertEqual(info["name"], "LAB.ALPHA")
        self.assertEqual(info["role"], "network")
        self.assertEqual(info["listen"], node.advertisedAddresses())
        self.assertGreaterEqual(info["uptime_s"], 0)
        code, plugins, _ = await http(service, b"GET", "/api/v1/plugins")
        self.assertEqual(
            plugins,
            [
                {
                    "name": "echo",
                    "version": "0.1.0",
                    "default_cos": "interactive",
                    "session_limit": 64,
                },
                {
                    "name": "ping",
                    "version": "0.1.0",
                    "default_cos": "interactive",
                    "session_limit": 3,
                },
            ],
        )
        code, config, _ = await http(service, b"GET", "/api/v1/config")
        self.assertEqual(config, {"name": "LAB.ALPHA", "listen": ["x"]})
        for path in ("neighbours", "sessions"):
            code, value, _ = await http(service, b"GET", "/api/v1/" + path)
            self.assertEqual((code, value), (200, []))

    def test_gets(self) -> Deferred[None]:
        """
        node, plugins, config, neighbours and sessions describe the node.
        """
        return self.run_(self._gets())

    async def _actions(self) -> None:
        node, service = await startManaged(self)
        other = makeNode(self, "LAB.BETA")
        address = await nodeAddress(other)
        code, n, _ = await http(service, b"POST", "/api/v1/connect", body={"address": address})
        self.assertEqual(code, 200, n)
        self.assertEqual(
            (n["node_id"], n["name"], n["direction"]), (other.nodeID, "LAB.BETA", "outbound")
        )
        code, status, _ = await http(service, b"GET", "/api/v1/status")
        self.assertEqual(status["node_id"], node.nodeID)
        self.assertEqual([x["node_id"] for x in status["neighbours"]], [other.nodeID])
        for key in ("name", "address", "rtt_ms", "bytes_in", "bytes_out", "since", "sessions"):
            self.assertIn(key, status["neighbours"][0])

        code, echo, _ = await http(
            service, b"POST", "/api/v1/echo", body={"node": "LAB.BETA", "count": 3, "size": 1000}
        )
        self.assertEqual(code, 200, echo)
        self.assertEqual((echo["sent"], echo["received"]), (3, 3))
        self.assertEqual(len(echo["rtt_ms"]), 3)
        self.assertGreater(echo["rtt_ms_median"], 0)

        # A session in progress is listed.
        from appnpy.ops.probe import EchoClient

        client = await other.openSession(node.nodeID, "echo", lambda info: EchoClient(reactor))
        code, sessions, _ = await http(service, b"GET", "/api/v1/sessions")
        self.assertEqual(len(sessions), 1)
        s = sessions[0]
        self.assertEqual(
            (s["plugin"], s["direction"], s["peer_name"]), ("echo", "inbound", "LAB.BETA")
        )
        client.transport.loseConnection()

        code, page, _ = await http(service, b"GET", "/")
        self.assertEqual(code, 200)
        self.assertIn(b'"name": "LAB.BETA"', page)

        code, result, _ = await http(
            service, b"POST", "/api/v1/disconnect", body={"node": other.nodeID[:10]}
        )
        self.assertEqual((code, result["node_id"], result["closed"]), (200, other.nodeID, True))
        self.assertEqual(node.links, {})
        code, body, _ = await http(service, b"POST", "/api/v1/echo", body={"node": "LAB.BETA"})
        self.assertEqual((code, body["code"]), (404, "no-such-node"))

    def test_actions(self) -> Deferred[None]:
        """
        connect links and answers the neighbour; status lists it; echo
        measures round trips; sessions lists a live session; disconnect
        (by node ID prefix) closes the link.
        """
        return self.run_(self._actions())

    async def _connectFails(self) -> None:
        node, service = await startManaged(self)
        code, body, _ = await http(
            service, b"POST", "/api/v1/connect", body={"address": "127.0.0.1:1"}
        )
        self.assertEqual((code, body["code"]), (502, "connect-failed"))
        self.assertIn("127.0.0.1:1", body["error"])

    def test_connectFails(self) -> Deferred[None]:
        """
        A link that cannot be made is answered 502 with the reason.
        """
        return self.run_(self._connectFails())

    async def _metrics(self) -> None:
        node, service = await startManaged(self)
        code, body, headers = await http(service, b"GET", "/metrics", token=None)
        self.assertEqual(code, 200)
        self.assertIn(b"appn_links{", body)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))

    def test_metricsOpenOnLoopback(self) -> Deferred[None]:
        """
        /metrics on a loopback-only API needs no token.
        """
        return self.run_(self._metrics())

    async def _pageCookie(self) -> None:
        node, service = await startManaged(self)
        code, body, headers = await http(service, b"GET", "/?token=" + service.token, token=None)
        # Taken once: a cookie, and a redirect to the URL without the token.
        self.assertEqual(code, 303)
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/"])
        self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
        cookie = headers.getRawHeaders(b"set-cookie")[0]
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(b"SameSite=strict", cookie)
        self.assertNotIn(service.token.encode(), cookie)
        pair = cookie.split(b";")[0]
        code, page, headers = await http(service, b"GET", "/", token=None, extra={b"cookie": pair})
        self.assertEqual(code, 200)
        self.assertIn(f'content="{service.credentials.csrf}"'.encode(), page)
        self.assertNotIn(service.token.encode(), page)
        policy = headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"script-src 'self'", policy)
        # The form takes the token in a POST body, as the query does.
        code, _, headers = await http(
            service,
            b"POST",
            "/",
            token=None,
            raw=b"token=" + service.token.encode(),
            extra={b"content-type": b"application/x-www-form-urlencoded"},
        )
        self.assertEqual(code, 303)
        code, page, _ = await http(service, b"GET", "/?token=wrong", token=None)
        self.assertEqual(code, 401)
        self.assertIn(b'<form method="post"', page)

        # The cookie alone does not act: the page's CSRF header is needed too.
        body = {"address": "127.0.0.1:1"}
        for extra in ({b"cookie": pair}, {b"cookie": pair, b"x-appn-csrf": b"guess"}):
            code, answer, _ = await http(
                service, b"POST", "/api/v1/connect", body=body, token=None, extra=extra
            )
            self.assertEqual((code, answer["code"]), (401, "unauthorized"))
        csrf = service.credentials.csrf.encode()
        code, answer, _ = await http(
            service,
            b"POST",
            "/api/v1/connect",
            body=body,
            token=None,
            extra={b"cookie": pair, b"x-appn-csrf": csrf},
        )
        self.assertEqual((code, answer["code"]), (502, "connect-failed"))
        code, _, _ = await http(
            service, b"GET", "/api/v1/node", token=None, extra={b"x-appn-csrf": csrf}
        )
        self.assertEqual(code, 401)
        # The static files need nothing, and hold no secret.
        for path in ("/page.js", "/page.css"):
            code, data, _ = await http(service, b"GET", path, token=None)
            self.assertEqual(code, 200)
            self.assertNotIn(service.token.encode(), data)

    def test_pageTokenQuery(self) -> Deferred[None]:
        """
        The page takes ?token= (or its form's POST) once: it sets an
        HTTP-only, SameSite=Strict cookie holding another secret and
        redirects to C{/}; the cookie opens the page, and acts on the API
        only with the page's CSRF header.
        """
        return self.run_(self._pageCookie())


class NetworkServicesTests(unittest.TestCase):
    """
    topology, resources, locate, route and routed echo, on a network node
    and an end node with the network services installed.
    """

    def run_(self, coro: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(coro)

    async def _topology(self) -> None:
        lab = await startLab(self)
        code, topo, _ = await http(lab.api1, b"GET", "/api/v1/topology")
        self.assertEqual(code, 200, topo)
        self.assertEqual((topo["node_id"], topo["role"]), (lab.n1.nodeID, "network"))
        self.assertTrue(topo["has_database"])
        self.assertEqual(topo["digest"], lab.n3.topology.digest())
        nodes = {n["node_id"]: n for n in topo["nodes"]}
        self.assertEqual(
            {nid: (n["name"], n["role"]) for nid, n in nodes.items()},
            {n.nodeID: (n.name, "network") for n in (lab.n1, lab.n2, lab.n3, lab.n4)},
        )
        self.assertEqual(nodes[lab.n1.nodeID]["end_nodes"], [lab.e.nodeID])
        for key in ("resistance", "load", "cds"):
            self.assertIn(key, nodes[lab.n2.nodeID])
        toN4 = [
            link
            for link in topo["links"]
            if (link["owner"], link["peer"]) == (lab.n1.nodeID, lab.n4.nodeID)
        ]
        self.assertEqual(len(toN4), 1)
        self.assertEqual(toN4[0]["cost"], 200)
        for key in ("rtt_ms", "throughput", "security", "up", "routable"):
            self.assertIn(key, toN4[0])

        code, topo, _ = await http(lab.apiE, b"GET", "/api/v1/topology")
        self.assertEqual(code, 200, topo)
        self.assertEqual(
            (topo["role"], topo["has_database"], topo["digest"], topo["nodes"], topo["links"]),
            ("end", False, None, [], []),
        )
        self.assertEqual(topo["server"], {"node_id": lab.n1.nodeID, "name": "LAB.N1"})

    def test_topology(self) -> Deferred[None]:
        """
        A network node answers its topology database: every node with name,
        role and characteristics, links with theirs, the digest (equal to
        the other nodes'); an end node says it has none and names its
        network-node server.
        """
        return self.run_(self._topology())

    async def _resources(self) -> None:
        lab = await startLab(self)
        code, res, _ = await http(lab.api1, b"GET", "/api/v1/resources")
        self.assertEqual(code, 200, res)
        self.assertIn("echo:LAB.N1", res["local"])
        self.assertEqual(
            res["registered"]["chat:lobby"][0]["owner"], lab.e.nodeID, res["registered"]
        )
        self.assertEqual(res["registered"]["chat:lobby"][0]["owner_name"], "LAB.E")
        self.assertEqual(res["attached_end_nodes"], [lab.e.nodeID])
        code, res, _ = await http(lab.apiE, b"GET", "/api/v1/resources")
        self.assertEqual(code, 200, res)
        self.assertIn("chat:lobby", res["local"])
        self.assertEqual((res["server"], res["server_name"]), (lab.n1.nodeID, "LAB.N1"))

        code, found, _ = await http(lab.apiE, b"GET", "/api/v1/locate?name=files:music")
        self.assertEqual(code, 200, found)
        # An end node keeps no topology database: it knows its neighbours' names only.
        self.assertEqual((found["owner"], found["owner_name"]), (lab.n3.nodeID, None))
        self.assertEqual(found["record"]["name"], "files:music")
        self.assertEqual(
            found["route"], [lab.e.nodeID, lab.n1.nodeID, lab.n2.nodeID, lab.n3.nodeID]
        )
        code, found, _ = await http(lab.api1, b"GET", "/api/v1/locate?name=chat:lobby")
        self.assertEqual(code, 200, found)
        self.assertEqual(found["owner"], lab.e.nodeID)
        self.assertEqual(found["route"], [lab.n1.nodeID, lab.e.nodeID])
        self.assertEqual(found["names"][lab.e.nodeID], "LAB.E")
        code, found, _ = await http(lab.api1, b"GET", "/api/v1/locate?name=files:music")
        self.assertEqual((code, found["owner_name"]), (200, "LAB.N3"))
        self.assertEqual(found["route"], [lab.n1.nodeID, lab.n2.nodeID, lab.n3.nodeID])

        code, body, _ = await http(lab.api1, b"GET", "/api/v1/locate?name=files:nothing")
        self.assertEqual((code, body["code"]), (404, "resource-not-found"))
        code, body, _ = await http(lab.api1, b"GET", "/api/v1/locate?name=no-colon")
        self.assertEqual((code, body["code"]), (400, "bad-field"))
        code, body, _ = await http(lab.api1, b"GET", "/api/v1/locate")
        self.assertEqual((code, body["code"]), (400, "missing-field"))

    def test_resourcesAndLocate(self) -> Deferred[None]:
        """
        resources lists local resources and, at a network node, what its end
        nodes registered; locate answers the owner, its name, the record and
        the route (the server's for an end node), and 404
        resource-not-found for a name nobody offers.
        """
        return self.run_(self._resources())

    async def _route(self) -> None:
        lab = await startLab(self)
        n1, n2, n3, n4 = (x.nodeID for x in (lab.n1, lab.n2, lab.n3, lab.n4))
        code, route, _ = await http(lab.api1, b"GET", "/api/v1/route?destination=LAB.N3")
        self.assertEqual(code, 200, route)
        self.assertEqual(route["cos"], "interactive")
        self.assertEqual(route["route"]["hops"], [n1, n2, n3])
        self.assertEqual(len(route["route"]["hopWeights"]), 2)
        self.assertEqual(route["route"]["weight"], sum(route["route"]["hopWeights"]))
        alternatives = route["alternatives"]
        self.assertEqual(alternatives[0]["hops"], [n1, n4, n3])
        self.assertGreater(alternatives[0]["lostBy"], 0)
        self.assertEqual(route["names"][n2], "LAB.N2")

        code, route, _ = await http(
            lab.api1, b"GET", f"/api/v1/route?destination={n3[:12]}&cos=batch"
        )
        self.assertEqual((code, route["cos"], route["route"]["hops"][-1]), (200, "batch", n3))

        # An end node asks its server; the weights are known there only.
        code, route, _ = await http(lab.apiE, b"GET", f"/api/v1/route?destination={n3}")
        self.assertEqual(code, 200, route)
        self.assertEqual(route["route"]["hops"], [lab.e.nodeID, n1, n2, n3])
        self.assertEqual(route["computed_by"], n1)

        code, body, _ = await http(lab.api1, b"GET", "/api/v1/route?destination=LAB.NOBODY")
        self.assertEqual((code, body["code"]), (404, "no-such-node"))
        unknown = generateIdentity().nodeID
        code, body, _ = await http(lab.api1, b"GET", f"/api/v1/route?destination={unknown}")
        self.assertEqual((code, body["code"]), (404, "no-route"))
        self.assertIsNone(body["explanation"]["route"])
        code, body, _ = await http(lab.apiE, b"GET", f"/api/v1/route?destination={unknown}")
        self.assertEqual((code, body["code"]), (404, "no-route"))
        code, body, _ = await http(lab.api1, b"GET", "/api/v1/route?destination=LAB.N3&cos=x")
        self.assertEqual((code, body["code"]), (400, "unknown-cos"))
        code, body, _ = await http(lab.api1, b"GET", "/api/v1/route")
        self.assertEqual((code, body["code"]), (400, "missing-field"))

    def test_route(self) -> Deferred[None]:
        """
        route explains the selection for a CP name or node ID prefix and a
        class of service: hops, per-hop weights, alternatives and by how
        much they lost; an end node answers its server's route; unknown
        nodes are 404 no-such-node, unreachable ones 404 no-route.
        """
        return self.run_(self._route())

    async def _echo(self) -> None:
        lab = await startLab(self)
        code, echo, _ = await http(
            lab.api1, b"POST", "/api/v1/echo", body={"node": "LAB.N3", "count": 2}
        )
        self.assertEqual(code, 200, echo)
        self.assertEqual((echo["node_id"], echo["sent"], echo["received"]), (lab.n3.nodeID, 2, 2))
        code, echo, _ = await http(
            lab.apiE, b"POST", "/api/v1/echo", body={"node": lab.n3.nodeID, "count": 2}
        )
        self.assertEqual(code, 200, echo)
        self.assertEqual((echo["node_id"], echo["received"]), (lab.n3.nodeID, 2))
        code, echo, _ = await http(
            lab.apiE, b"POST", "/api/v1/echo", body={"node": "echo:LAB.N4", "count": 1}
        )
        self.assertEqual(code, 200, echo)
        self.assertEqual((echo["node_id"], echo["received"]), (lab.n4.nodeID, 1))
        code, body, _ = await http(
            lab.api1, b"POST", "/api/v1/echo", body={"node": "echo:LAB.NOBODY"}
        )
        self.assertEqual((code, body["code"]), (404, "resource-not-found"))

    def test_echoRouted(self) -> Deferred[None]:
        """
        echo reaches non-adjacent nodes through relays: from a network node
        by CP name, from an end node by node ID (the route from its server)
        and by resource name.
        """
        return self.run_(self._echo())


class PageTests(unittest.SynchronousTestCase):
    def test_escaped(self) -> None:
        """
        Values from peers reach the page as JSON data that cannot close its
        element or start markup (the script renders them as text).
        """
        from appnpy.testing import MemoryNetwork

        net = MemoryNetwork(services=False)
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        cp = net.link(a, b)
        cp.address = "</script><script>alert(1)</script>"
        page = renderStatusPage(a, "csrf-value")
        self.assertNotIn("alert(1)</script>", page)
        self.assertIn("\\u003c/script\\u003e\\u003cscript\\u003ealert(1)", page)
        self.assertEqual(page.count("<script"), 2)  # the data and page.js, nothing else
        self.assertEqual(pageSnapshot(a)["neighbours"][0]["address"], cp.address)
        net.stop()

    def test_uptime(self) -> None:
        """
        Uptime reads as an operator says it.
        """
        self.assertEqual(
            [humanDuration(s) for s in (0, 12.7, 274.373, 7500, 3 * 86400 + 4 * 3600 + 59)],
            ["0 s", "12 s", "4 min 34 s", "2 h 5 min", "3 d 4 h"],
        )

    def test_topologyGraph(self) -> None:
        """
        On a network node the graph holds the network nodes reachable over
        routable links; a node whose last link goes down leaves it.
        """
        from appnpy.testing import MemoryNetwork

        net = MemoryNetwork(services=True)
        a, b, c = (net.addNode(f"LAB.{x}") for x in "ABC")
        net.link(a, b)
        cp = net.link(b, c)
        net.flush(advance=10)
        graph = pageSnapshot(a)["topology"]
        self.assertEqual(graph["digest"], a.topology.digest())
        self.assertEqual(
            sorted((n["name"], n["self"]) for n in graph["nodes"]),
            [("LAB.A", True), ("LAB.B", False), ("LAB.C", False)],
        )
        self.assertEqual(len(graph["links"]), 2)
        cp.close()
        net.flush(advance=10)
        graph = pageSnapshot(a)["topology"]
        self.assertEqual(sorted(n["name"] for n in graph["nodes"]), ["LAB.A", "LAB.B"])
        net.stop()

    def test_endNodeGraph(self) -> None:
        """
        A node without a topology database draws itself and its neighbours.
        """
        from appnpy.testing import MemoryNetwork

        net = MemoryNetwork(services=False)
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        net.link(a, b)
        graph = pageSnapshot(a)["topology"]
        self.assertFalse(graph["has_database"])
        self.assertEqual(sorted(n["name"] for n in graph["nodes"]), ["LAB.A", "LAB.B"])
        self.assertEqual(
            graph["links"], [{"a": min(a.nodeID, b.nodeID), "b": max(a.nodeID, b.nodeID)}]
        )
        net.stop()


class PluginExtensionTests(unittest.TestCase):
    """
    A plugin's API routes and page section (the echo plugin's, the template).
    """

    async def _routes(self) -> None:
        from appnpy_echo import EchoPlugin

        node, service = await startManaged(self)
        echo = EchoPlugin()
        node.addSessionPlugin(echo)
        echo.echoedBytes = 12
        code, body, _ = await http(service, b"GET", "/api/v1/plugins/echo/stats")
        self.assertEqual((code, body), (200, {"sessions": 0, "echoed_bytes": 12}))
        code, body, _ = await http(service, b"GET", "/api/v1/plugins/echo/stats", token=None)
        self.assertEqual((code, body["code"]), (401, "unauthorized"))
        code, body, _ = await http(service, b"POST", "/api/v1/plugins/echo/stats", body={})
        self.assertEqual((code, body["code"]), (405, "method-not-allowed"))
        code, body, _ = await http(service, b"GET", "/api/v1/plugins/ping/stats")
        self.assertEqual((code, body["code"]), (404, "not-found"))
        # The plugin list keeps its own path.
        code, body, _ = await http(service, b"GET", "/api/v1/plugins")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(p["name"] for p in body), ["echo", "ping"])

    def test_routes(self) -> Deferred[None]:
        """
        A plugin providing IAPIRoutesPlugin is served below
        /api/v1/plugins/<name>/, behind the token, with JSON errors.
        """
        return Deferred.fromCoroutine(self._routes())

    async def _routeErrors(self) -> None:
        from zope.interface import implementer

        from appnpy.api import APIError, IAPIRoutesPlugin, PluginRequest

        seen: list[PluginRequest] = []

        @implementer(IAPIRoutesPlugin)
        class Failing(SimplePlugin):
            def apiRoutes(self) -> Any:
                async def echoBack(request: PluginRequest) -> Any:
                    seen.append(request)
                    return {"got": request.body["x"]}

                def refuse(request: PluginRequest) -> Any:
                    raise APIError(409, "busy", "try later")

                def crash(request: PluginRequest) -> Any:
                    raise ValueError("secret detail")

                return {
                    ("POST", "back"): echoBack,
                    ("GET", "refuse"): refuse,
                    ("GET", "crash"): crash,
                }

        node, service = await startManaged(self)
        node.addSessionPlugin(Failing("failing", Echo))
        code, body, _ = await http(
            service, b"POST", "/api/v1/plugins/failing/back?a=b", body={"x": 1}
        )
        self.assertEqual((code, body), (200, {"got": 1}))
        self.assertEqual((seen[0].path, dict(seen[0].query)), ("back", {"a": "b"}))
        code, body, _ = await http(service, b"POST", "/api/v1/plugins/failing/back", raw=b"[")
        self.assertEqual((code, body["code"]), (400, "bad-json"))
        code, body, _ = await http(service, b"GET", "/api/v1/plugins/failing/refuse")
        self.assertEqual((code, body), (409, {"error": "try later", "code": "busy"}))
        code, body, _ = await http(service, b"GET", "/api/v1/plugins/failing/crash")
        self.assertEqual((code, body), (500, {"error": "internal error", "code": "internal"}))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_routeErrors(self) -> Deferred[None]:
        """
        A plugin handler's APIError is its JSON error; any other exception
        is a 500 that shows nothing of it; bodies are checked as elsewhere.
        """
        return Deferred.fromCoroutine(self._routeErrors())

    def test_pageSection(self) -> None:
        """
        A plugin's section is shown with its title and rows, all escaped;
        one whose section fails is left out, and the page still renders.
        """
        from zope.interface import implementer

        from appnpy.api import IStatusPagePlugin, PageSection
        from appnpy.testing import MemoryNetwork

        @implementer(IStatusPagePlugin)
        class Shouting(SimplePlugin):
            def pageSection(self) -> PageSection:
                return PageSection("<b>loud</b>", ["<th>"], [["<script>x</script>"]])

        @implementer(IStatusPagePlugin)
        class Broken(SimplePlugin):
            def pageSection(self) -> PageSection:
                raise RuntimeError("no section")

        net = MemoryNetwork()
        self.addCleanup(net.stop)
        node = net.addNode("LAB.A", plugins=[Shouting("loud", Echo), Broken("broken", Echo)])
        sections = pageSnapshot(node)["sections"]
        self.assertEqual(
            sections,
            [{"title": "<b>loud</b>", "headers": ["<th>"], "rows": [["<script>x</script>"]]}],
        )
        page = renderStatusPage(node, "csrf-value")
        self.assertIn("\\u003cb\\u003eloud", page)
        self.assertNotIn("<b>loud", page)
        self.assertNotIn("<script>x", page)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_echoPageSection(self) -> None:
        """
        The echo plugin's section shows its counts.
        """
        from appnpy_echo import EchoPlugin

        from appnpy.testing import MemoryNetwork

        net = MemoryNetwork()
        self.addCleanup(net.stop)
        echo = EchoPlugin()
        echo.echoedBytes = 4242
        sections = pageSnapshot(net.addNode("LAB.A", plugins=[echo]))["sections"]
        self.assertEqual([s["title"] for s in sections], ["Echo"])
        self.assertIn("4242", sections[0]["rows"][0])
