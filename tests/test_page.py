"""
The web page's event stream and its secrets: the stream's bounds (clients,
buffered snapshots), and the API token in no log, of an in-process API and
of a real C{twist appnnode} process.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from appnpy.ops import events as eventsModule
from appnpy.ops.events import SnapshotStream

from .interop.harness import NodeHarness, exitedCleanly
from .test_management import TIMEOUT, makeNode, nodeAddress, startManaged


class StreamRequest(DummyRequest):
    """
    A request that keeps the push producer it is given (L{DummyRequest}
    drives producers as pull producers).
    """

    producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class StreamTests(unittest.SynchronousTestCase):
    """
    L{SnapshotStream} on a clock, with requests that record what they are sent.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.count = 0

        def snapshot() -> dict[str, Any]:
            self.count += 1
            return {"n": self.count}

        self.stream = SnapshotStream(self.clock, snapshot, maxClients=2, period=2.0)

    def events(self, request: StreamRequest) -> list[dict[str, Any]]:
        text = b"".join(request.written).decode()
        return [json.loads(m) for m in re.findall(r"^data: (.*)$", text, re.M)]

    def test_first(self) -> None:
        """
        A client gets the retry delay and a snapshot at once.
        """
        request = StreamRequest([b"events"])
        self.assertTrue(self.stream.add(request))
        self.assertTrue(request.written[0].startswith(b"retry: "))
        self.assertEqual(self.events(request), [{"n": 1}])
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type")[0][:17], b"text/event-stream"
        )

    def test_coalescedAndPeriodic(self) -> None:
        """
        A burst of changes is one snapshot, soon; with no change, one every
        period.
        """
        request = StreamRequest([b"events"])
        self.stream.add(request)
        for _ in range(5):
            self.stream.changed()
        self.clock.advance(eventsModule.COALESCE)
        self.assertEqual(len(self.events(request)), 2)
        self.clock.advance(2.0)
        self.assertEqual(len(self.events(request)), 3)

    def test_bounded(self) -> None:
        """
        At most C{maxClients} streams; one that finishes frees its place and,
        the last gone, no timer runs.
        """
        first, second, third = (StreamRequest([b"events"]) for _ in range(3))
        self.assertTrue(self.stream.add(first))
        self.assertTrue(self.stream.add(second))
        self.assertFalse(self.stream.add(third))
        self.assertEqual(third.written, [])
        first.finish()
        self.assertTrue(self.stream.add(third))
        second.finish()
        third.finish()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pausedClientGetsOnlyTheNewest(self) -> None:
        """
        A client that does not read (its channel paused the stream) is sent
        nothing more, and the newest snapshot once it reads again: what it
        costs in buffers is one snapshot.
        """
        request = StreamRequest([b"events"])
        self.stream.add(request)
        producer = request.producer
        producer.pauseProducing()
        for _ in range(10):
            self.clock.advance(2.0)
        self.assertEqual(len(self.events(request)), 1)
        producer.resumeProducing()
        self.assertEqual(self.events(request)[-1], {"n": self.count})
        self.assertEqual(len(self.events(request)), 2)

    def test_stop(self) -> None:
        """
        Stopping ends every stream and every timer.
        """
        request = StreamRequest([b"events"])
        self.stream.add(request)
        self.stream.stop()
        self.assertEqual(request.finished, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _Events(Protocol):
    """
    Reads an event stream; L{next} fires with the next snapshot that holds.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.snapshots: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.waiter: tuple[Callable[[dict[str, Any]], bool], Deferred[dict[str, Any]]] | None = None
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"id: "):
                    self.ids.append(int(line[4:]))
                if line.startswith(b"data: "):
                    self.snapshots.append(json.loads(line[6:]))
                    self._check()

    def _check(self) -> None:
        if self.waiter is not None:
            condition, d = self.waiter
            for snapshot in self.snapshots:
                if condition(snapshot):
                    self.waiter = None
                    d.callback(snapshot)
                    return

    def next(self, condition: Callable[[dict[str, Any]], bool]) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.waiter = (condition, d)
        self._check()
        return d.addTimeout(TIMEOUT, reactor)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(None)


async def openEvents(url: str, headers: dict[bytes, bytes]) -> tuple[int, _Events, Any]:
    h = Headers()
    for k, v in headers.items():
        h.addRawHeader(k, v)
    response = await Agent(reactor).request(b"GET", url.encode(), h).addTimeout(TIMEOUT, reactor)
    reader = _Events()
    response.deliverBody(reader)
    return response.code, reader, response


class EventStreamHTTPTests(unittest.TestCase):
    async def _live(self) -> None:
        node, service = await startManaged(self)
        assert service.url is not None
        url = service.url + "events"
        code, _, response = await openEvents(url, {})
        self.assertEqual(code, 401)
        bearer = {b"authorization": b"Bearer " + service.token.encode()}
        code, reader, response = await openEvents(url, bearer)
        self.assertEqual(code, 200)
        first = await reader.next(lambda s: True)
        self.assertEqual((first["node"]["name"], first["neighbours"]), ("LAB.ALPHA", []))
        # A neighbour appears without the client asking again, and leaves.
        other = makeNode(self, "LAB.BETA")
        cp = await other.connect(await nodeAddress(node))
        shown = await reader.next(lambda s: [n["name"] for n in s["neighbours"]] == ["LAB.BETA"])
        self.assertRegex(shown["node"]["uptime"], r"^\d+ s$")
        # A client that reconnects is current with its first event.
        code, again, _ = await openEvents(
            url, {**bearer, b"last-event-id": str(reader.ids[-1]).encode()}
        )
        resumed = await again.next(lambda s: True)
        self.assertEqual([n["name"] for n in resumed["neighbours"]], ["LAB.BETA"])
        self.assertGreater(again.ids[0], reader.ids[0])
        await cp.close()
        await reader.next(lambda s: s["neighbours"] == [] and len(reader.snapshots) > 2)
        await again.next(lambda s: s["neighbours"] == [])
        # Bounded: one client more than the limit is answered 503.
        service.events.maxClients = 2
        code, second, _ = await openEvents(url, bearer)
        self.assertEqual(code, 503)
        await second.done
        # The service's stop ends the stream.
        await service.stopService()
        await reader.done
        await again.done
        self.assertEqual(service.events.clients, [])

    def test_live(self) -> Deferred[None]:
        """
        GET /events needs the token or the page cookie, sends a snapshot at
        once and again when a neighbour comes or goes, brings a client that
        reconnects up to date at once, turns away clients
        beyond its bound, and ends when the API stops.
        """
        return Deferred.fromCoroutine(self._live())


def secretsOf(service: Any) -> list[str]:
    credentials = service.credentials
    return [credentials.token, credentials.pageSecret, credentials.csrf]


async def request(
    url: str, method: bytes, headers: dict[bytes, bytes], body: bytes | None = None
) -> tuple[int, bytes, Any]:
    """
    One request with raw headers: (status, body, headers); redirects are not followed.
    """
    h = Headers()
    for k, v in headers.items():
        h.addRawHeader(k, v)
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    response = (
        await Agent(reactor).request(method, url.encode(), h, producer).addTimeout(TIMEOUT, reactor)
    )
    return response.code, await readBody(response), response.headers


async def exercise(url: str, token: str) -> dict[str, bytes]:
    """
    Use the page and the API as a browser and C{appn} would, passing the
    token in every place a careless one might (the query of any URL); the
    answers that are not the page itself, which must not hold the token.
    """
    answers: dict[str, bytes] = {}
    code, _, headers = await request(url + "?token=" + token, b"GET", {})
    assert code == 303, code
    cookie = headers.getRawHeaders(b"set-cookie")[0].split(b";")[0]
    code, page, _ = await request(url, b"GET", {b"cookie": cookie})
    assert code == 200, code
    csrf = re.search(rb'name="appn-csrf" content="([^"]+)"', page)
    assert csrf is not None
    action = {
        b"cookie": cookie,
        b"x-appn-csrf": csrf.group(1),
        b"content-type": b"application/json",
    }
    answers["connect"] = (
        await request(url + "api/v1/connect", b"POST", action, b'{"address": "127.0.0.1:1"}')
    )[1]
    bearer = {b"authorization": b"Bearer " + token.encode()}
    for path in ("api/v1/config", "api/v1/status", "api/v1/node", "metrics"):
        answers[path] = (await request(url + path, b"GET", bearer))[1]
    for path in ("api/v1/node?token=", "nothing?token=", "events?token="):
        answers[path] = (
            await request(
                url + path + token, b"GET", {b"referer": (url + "?token=" + token).encode()}
            )
        )[1]
    code, reader, _ = await openEvents(url + "events", {b"cookie": cookie})
    assert code == 200, code
    first = await reader.next(lambda s: True)
    answers["events"] = json.dumps(first).encode()
    return answers


class TokenInNoLogTests(unittest.TestCase):
    timeout = 60

    async def _inProcess(self) -> None:
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        node, service = await startManaged(self)
        assert service.url is not None

        def noSecretLogged() -> None:
            self.assertTrue(seen)
            for event in seen:
                text = formatEvent(event) + repr(event)
                for secret in secretsOf(service):
                    self.assertNotIn(secret, text, "a secret is in the log")

        # The README's URL first, as an operator opens it.
        await request(f"{service.url}?token={service.token}", b"GET", {})
        noSecretLogged()
        answers = await exercise(service.url, service.token)
        secrets = secretsOf(service)
        await service.stopService()
        noSecretLogged()
        for name, answer in answers.items():
            self.assertNotIn(secrets[0].encode(), answer, name)

    def test_inProcess(self) -> None:
        """
        Opening the page's ?token= URL, using the page, the API, the event
        stream and failing requests with the token in their query: no log
        event of the process holds the token, the page cookie or the CSRF
        value; no answer other than the page holds the token.
        """
        return Deferred.fromCoroutine(self._inProcess())

    async def _process(self) -> None:
        harness = NodeHarness(self, reactor)
        process = harness.start("alpha", twistOptions=["--log-level=debug"])
        await process.whenReady()
        await process.waitForText("management API on")
        with open(os.path.join(process.dataDir, "api.json")) as f:
            url = json.load(f)["url"]
        with open(os.path.join(process.dataDir, "api-token")) as f:
            token = f.read().strip()
        await exercise(url, token)
        process.signal(signal.SIGTERM)
        await process.whenExited()
        self.assertTrue(exitedCleanly(process))
        with open(os.path.join(harness.root, "alpha.log"), "rb") as f:
            logged = f.read()
        texts = [e["text"] for e in process.events]
        self.assertIn("management API: GET / answered 303", texts)  # the access log is on
        self.assertNotIn(token.encode(), logged + process.stderr)
        for name in os.listdir(process.dataDir):
            if name != "api-token":
                path = os.path.join(process.dataDir, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(token.encode(), f.read(), name)

    def test_process(self) -> None:
        """
        The same with a real C{twist appnnode} logging at debug level: the
        token is in neither its log output (stdout, stderr) nor any file of
        its data directory but C{api-token}.
        """
        return Deferred.fromCoroutine(self._process())
