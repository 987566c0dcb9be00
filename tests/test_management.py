"""
The management API, served over real loopback HTTP by a node with real links.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from appnpy_echo import Echo, Pong, SimplePlugin
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from appnpy.identity import generateIdentity
from appnpy.management import ManagementService, renderStatusPage
from appnpy.node import Node

TIMEOUT = 20.0


def makeNode(testCase: unittest.TestCase, name: str) -> Node:
    """
    A started node with real-reactor loopback listening, stopped at cleanup.
    """
    node = Node(reactor, generateIdentity(), name=name, listen=["tcp:0:interface=127.0.0.1"])
    node.addSessionPlugin(SimplePlugin("echo", Echo))
    node.addSessionPlugin(SimplePlugin("ping", Pong, sessionLimit=3))
    node.startService()
    testCase.addCleanup(node.stopService)
    return node


async def nodeAddress(node: Node) -> str:
    for _ in range(100):
        if node.ports:
            return node.advertisedAddresses()[0]
        await _later(0.01)
    raise AssertionError("node did not listen")


def _later(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


async def startManaged(testCase: unittest.TestCase, name: str = "LAB.ALPHA") -> Any:
    node = makeNode(testCase, name)
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
) -> tuple[int, Any, Any]:
    """
    One request; answers (status, decoded JSON or bytes, headers).
    """
    headers = Headers()
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
        from appnpy.probe import EchoClient

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
        self.assertIn(b"LAB.BETA", page)

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
        self.assertEqual(code, 200)
        cookie = headers.getRawHeaders(b"set-cookie")[0]
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(b"SameSite=strict", cookie)

    def test_pageTokenQuery(self) -> Deferred[None]:
        """
        The HTML page accepts ?token= and sets an HTTP-only same-site cookie.
        """
        return self.run_(self._pageCookie())


class PageTests(unittest.TestCase):
    def test_escaped(self) -> None:
        """
        Values from peers are HTML-escaped on the status page.
        """
        from appnpy.testing import MemoryNetwork

        net = MemoryNetwork()
        a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
        cp = net.link(a, b)
        cp.address = "<script>alert(1)</script>"
        page = renderStatusPage(a)
        self.assertNotIn("<script>", page)
        self.assertIn("&lt;script&gt;", page)
        net.stop()
