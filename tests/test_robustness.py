"""
Fault tests for a whole L{appnpy.node.Node} on real loopback sockets with the
real reactor (shared/reference/robustness.md, checklist A, B, C and J):
connections that never authenticate, bytes that are not TLS, a peer that
breaks the yamux framing after its link is up, a peer that goes silent, and
two nodes dialling each other at once.

Every test ends with resource assertions: the node's links, sessions,
pending handshakes and protocol state are back to what the test expects, and
trial's dirty-reactor check (timers and sockets) stays clean.  Nothing sleeps:
every wait is for an event (a Deferred, a log event, C{connectionLost}).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from appnpy import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN
from appnpy.cp.controlpoint import LinkState
from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.cp.messages import Hello, encodeMessage
from appnpy.link.identity import Identity, defaultCPName, generateIdentity
from appnpy.link.tls import LinkContextFactory, TrustPolicy
from appnpy.link.yamux import (
    FLAG_SYN,
    GOAWAY_PROTOCOL_ERROR,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    MuxConfig,
    encodeHeader,
)
from appnpy.net.admission import AdmissionControl
from appnpy.node import Node, _LinkFactory

#: Upper bound for any one wait; the tests finish far sooner.
TIMEOUT = 5.0
#: Slack allowed on top of a stated deadline (scheduling, loopback I/O).
SLACK = 0.5

Event = dict[str, Any]


def withTimeout(d: Deferred[Any], timeout: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(timeout, reactor)


def clientHello(maxVersion: int | None = None) -> bytes:
    """
    The bytes of a real TLS ClientHello (at most C{maxVersion} if given),
    made in memory, for clients that send it by hand.
    """
    ctx = SSL.Context(SSL.TLS_METHOD)
    if maxVersion is not None:
        ctx.set_max_proto_version(maxVersion)
    connection = SSL.Connection(ctx, None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def helloFrames(identity: Identity) -> bytes:
    """
    What a well-behaved dialler sends first after TLS: SYN on its control
    stream (1), then a signed Hello in one Data frame.
    """
    hello = Hello(
        node_id=identity.nodeID,
        public_key=identity.publicKeyBytes,
        name=defaultCPName(identity.nodeID),
        role="network",
        versions=[PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX],
        capabilities=["sessions"],
        listen=[],
        plugins={},
        dial_serial=0,
    )
    hello = attrs.evolve(hello, signature=identity.sign(hello.signedBytes()))
    payload = encodeMessage(hello)
    return (
        encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0)
        + encodeHeader(TYPE_DATA, 0, 1, len(payload))
        + payload
    )


class PlainClient(Protocol):
    """
    A TCP client that sends C{payload} at once (maybe nothing), or one byte
    of it every C{drip} seconds, and records when it was closed.
    """

    def __init__(self, payload: bytes = b"", drip: float | None = None) -> None:
        self.payload = payload
        self.drip = drip
        self.sent = 0
        self.received = b""
        self.madeAt: float | None = None
        self.lostAt: float | None = None
        self.lost: Deferred[BaseException] = Deferred()
        self._dripper: LoopingCall | None = None

    def connectionMade(self) -> None:
        self.madeAt = reactor.seconds()
        if self.drip is not None:
            self._dripper = LoopingCall(self._dripOne)
            self._dripper.start(self.drip, now=True)
        elif self.payload:
            self.transport.write(self.payload)
            self.sent = len(self.payload)

    def _dripOne(self) -> None:
        if self.sent < len(self.payload):
            self.transport.write(self.payload[self.sent : self.sent + 1])
            self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._dripper is not None and self._dripper.running:
            self._dripper.stop()
        self.lostAt = reactor.seconds()
        self.lost.callback(reason.value)


@implementer(IHandshakeListener)
class RawPeer(Protocol):
    """
    A hand-driven dialler with a valid throwaway identity: it completes
    mutual TLS, sends a signed Hello (so the node brings the link up), then
    writes only what the test tells it to.  It never answers a Ping.  It
    records the header of every yamux frame the node sends.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.frames: list[tuple[int, int, int, int]] = []
        self.lost: Deferred[BaseException] = Deferred()
        self.lostAt: float | None = None
        self._buffer = b""
        self._skip = 0

    def handshakeCompleted(self) -> None:
        self.transport.write(helloFrames(self.identity))

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                self._buffer = self._buffer[taken:]
                self._skip -= taken
                if self._skip:
                    return
            if len(self._buffer) < 12:
                return
            _, type, flags, streamID, length = struct.unpack(">BBHII", self._buffer[:12])
            self._buffer = self._buffer[12:]
            self.frames.append((type, flags, streamID, length))
            if type == TYPE_DATA:
                self._skip = length

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostAt = reactor.seconds()
        self.lost.callback(reason.value)


class _OneProtocolFactory(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def buildProtocol(self, addr: Any) -> Protocol:
        self.protocol.factory = self  # type: ignore[attr-defined]
        return self.protocol  # type: ignore[return-value]


def whenSome(ds: list[Deferred[Any]], count: int) -> Deferred[None]:
    """
    Fires once C{count} of C{ds} have fired (their results pass through).
    """
    done: Deferred[None] = Deferred()
    fired = [0]

    def one(result: object) -> object:
        fired[0] += 1
        if fired[0] == count:
            done.callback(None)
        return result

    for d in ds:
        d.addBoth(one)
    return done


def _isWarning(event: Event) -> bool:
    level = event.get("log_level")
    return level is not None and level >= LogLevel.warn


def _fromAppnpy(event: Event) -> bool:
    return str(event.get("log_namespace", "")).startswith("appnpy")


class NodeFaultTestCase(TestCase):
    """
    Builds nodes as C{tap} does (a L{Node} plus L{AdmissionControl}), records
    every link protocol they build and every log event, and checks resources.
    """

    def setUp(self) -> None:
        self.events: list[Event] = []
        self._eventWaiters: list[tuple[Callable[[Event], bool], Deferred[Event]]] = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)
        #: Every LinkProtocol any node built, inbound and outbound.
        self.built: list[LinkProtocol] = []
        original = _LinkFactory.buildProtocol

        def buildProtocol(factory: _LinkFactory, addr: Any) -> LinkProtocol:
            protocol = original(factory, addr)
            self.built.append(protocol)
            return protocol

        self.patch(_LinkFactory, "buildProtocol", buildProtocol)

    # -- log events --

    def _observe(self, event: Event) -> None:
        self.events.append(event)
        for entry in list(self._eventWaiters):
            predicate, d = entry
            if predicate(event):
                self._eventWaiters.remove(entry)
                # Not from inside the code that is logging.
                reactor.callLater(0, d.callback, event)

    def waitForEvent(
        self, predicate: Callable[[Event], bool], what: str, since: int = 0
    ) -> Deferred[Event]:
        """
        The first log event from index C{since} on (already seen or still to
        come) that matches C{predicate}.
        """
        for event in self.events[since:]:
            if predicate(event):
                d: Deferred[Event] = Deferred()
                d.callback(event)
                return d
        d = Deferred()
        entry = (predicate, d)
        self._eventWaiters.append(entry)

        def timedOut(result: Any, timeout: float) -> Any:
            raise AssertionError(f"timed out waiting for {what}")

        def forget(result: Any) -> Any:
            if entry in self._eventWaiters:
                self._eventWaiters.remove(entry)
            return result

        d.addTimeout(TIMEOUT, reactor, onTimeoutCancel=timedOut)
        d.addBoth(forget)
        return d

    def whenLinkUp(self, node: Node, peer: str, since: int = 0) -> Deferred[Event]:
        return self.waitForEvent(
            lambda e: (
                e.get("log_source") is node
                and e.get("log_format", "").startswith("link up with")
                and e.get("peer") == peer
            ),
            f"link up with {peer[:8]}",
            since,
        )

    def whenLinkDown(self, node: Node, peer: str, since: int = 0) -> Deferred[Event]:
        return self.waitForEvent(
            lambda e: (
                e.get("log_source") is node
                and e.get("log_format", "").startswith("link down with")
                and e.get("peer") == peer
            ),
            f"link down with {peer[:8]}",
            since,
        )

    def warnings(self, since: int = 0) -> list[Event]:
        """
        The warning (or worse) lines appnpy logged from index C{since} on.
        """
        return [e for e in self.events[since:] if _fromAppnpy(e) and _isWarning(e)]

    def assertNoFailuresLogged(self) -> None:
        failures = [e for e in self.events if "log_failure" in e]
        self.assertEqual(failures, [], [e.get("log_format") for e in failures])

    # -- nodes --

    async def startNode(
        self,
        handshakeTimeout: float = 10.0,
        muxConfig: MuxConfig | None = None,
        **admission: Any,
    ) -> Node:
        """
        A running node listening on a loopback port, with admission control
        (as C{tap} builds it; C{admission} overrides its limits).
        """
        node = Node(
            reactor,
            generateIdentity(),
            listen=["tcp:0:interface=127.0.0.1"],
            muxConfig=muxConfig,
            handshakeTimeout=handshakeTimeout,
        )
        node.admission = AdmissionControl(reactor, **admission)
        node.startService()
        self.addCleanup(self.stopNode, node)
        await self.waitForEvent(
            lambda e: (
                e.get("log_format", "").startswith("node {node_id}")
                and e.get("node_id") == node.nodeID
            ),
            "the node's readiness line",
        )
        return node

    async def stopNode(self, node: Node) -> None:
        if node.running:
            await withTimeout(node.stopService())
        node.admission.stop()

    def whenAdmitted(self, node: Node, count: int) -> Deferred[None]:
        """
        Fires once C{count} connections are in the handshake at C{node}
        (counted by its admission control as the node accepts them).
        """
        admission = node.admission
        d: Deferred[None] = Deferred()
        original = admission.admit

        def admit(factory: Any, addr: Any) -> Any:
            protocol = original(factory, addr)
            if admission.unauthenticated >= count and not d.called:
                admission.admit = original
                reactor.callLater(0, d.callback, None)
            return protocol

        admission.admit = admit
        return withTimeout(d)

    def port(self, node: Node) -> int:
        return node.ports[0].getHost().port

    async def link(self, dialler: Node, listener: Node) -> None:
        """
        Link C{dialler} to C{listener} and wait until both ends are active.
        """
        mark = len(self.events)
        up = self.whenLinkUp(listener, dialler.nodeID, mark)
        await withTimeout(dialler.connect(listener.advertisedAddresses()[0]))
        await up

    async def assertLinkWorks(self, a: Node, b: Node) -> None:
        """
        The link between C{a} and C{b} is active at both ends and carries a
        round trip.
        """
        self.assertEqual(a.links[b.nodeID].state, LinkState.ACTIVE)
        self.assertEqual(b.links[a.nodeID].state, LinkState.ACTIVE)
        rtt = await withTimeout(a.links[b.nodeID].mux.ping())
        self.assertLess(rtt, TIMEOUT)

    async def connectPlain(self, node: Node, client: PlainClient) -> PlainClient:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port(node))
        await withTimeout(endpoint.connect(_OneProtocolFactory(client)))
        return client

    async def connectRaw(self, node: Node) -> RawPeer:
        """
        Link a L{RawPeer} to C{node} and wait until the node has it up.
        """
        peer = RawPeer(generateIdentity())
        mark = len(self.events)
        up = self.whenLinkUp(node, peer.identity.nodeID, mark)
        contextFactory = LinkContextFactory(peer.identity, TrustPolicy.open())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port(node))
        await withTimeout(
            endpoint.connect(TLSMemoryBIOFactory(contextFactory, True, _OneProtocolFactory(peer)))
        )
        self.addCleanup(self._closeRaw, peer)
        await up
        return peer

    async def _closeRaw(self, peer: RawPeer) -> None:
        if not peer.lost.called:
            peer.transport.abortConnection()
            await withTimeout(peer.lost)

    def protocolsOf(self, node: Node) -> list[LinkProtocol]:
        return [p for p in self.built if p.host is node]

    async def whenProtocolsLost(self, node: Node, keep: set[str] = frozenset()) -> None:
        """
        Wait until every link protocol of C{node} has lost its connection,
        except the active links to C{keep}.
        """
        for protocol in self.protocolsOf(node):
            cp = node.links.get(protocol.peerNodeID or "")
            if protocol.peerNodeID in keep and cp is not None and cp.link is protocol:
                continue
            await withTimeout(protocol.whenLost())

    def assertResources(self, node: Node, linkedTo: set[str] = frozenset()) -> None:
        """
        Checklist J for one node: its only links are to C{linkedTo}; no
        session; no connection is still in the handshake (neither in the
        admission count nor as a live unauthenticated protocol); every lost
        protocol has freed its deadline, multiplexer and control point.
        """
        self.assertEqual(set(node.links), set(linkedTo))
        self.assertEqual(node.sessions(), [])
        self.assertEqual(node.admission.unauthenticated, 0)
        alive = [p for p in self.protocolsOf(node) if not p.lost]
        self.assertEqual(sorted(p.peerNodeID or "unauthenticated" for p in alive), sorted(linkedTo))
        for protocol in alive:
            self.assertIs(node.links[protocol.peerNodeID].link, protocol)
        for protocol in self.protocolsOf(node):
            if protocol.lost:
                self.assertIsNone(protocol._deadline)
                if protocol.mux is not None:
                    self.assertTrue(protocol.mux._closed)
                    self.assertEqual(protocol.mux.streams, {})
                if protocol.cp is not None:
                    self.assertIs(protocol.cp.state, LinkState.CLOSED)
                    self.assertEqual(protocol.cp.pendingInbound, {})
                    self.assertEqual(protocol.cp.sessions, {})

    async def stopAndCheck(self, *nodes: Node) -> None:
        """
        Stop C{nodes}; afterwards nothing of theirs is left.
        """
        for node in nodes:
            await self.stopNode(node)
        for node in nodes:
            await self.whenProtocolsLost(node)
            self.assertEqual(node.ports, [])
            self.assertResources(node)
        self.assertNoFailuresLogged()


class PreAuthenticationTests(NodeFaultTestCase):
    """
    Checklist A: connections that never finish the handshake.
    """

    async def test_silentConnectionClosedAtDeadline(self) -> None:
        """
        A connection that sends nothing is closed at the handshake deadline
        (not before, not much after), with one log line; the node then
        still links with an honest node.
        """
        node = await self.startNode(handshakeTimeout=1.0)
        mark = len(self.events)
        client = await self.connectPlain(node, PlainClient())
        await withTimeout(client.lost)
        assert client.madeAt is not None and client.lostAt is not None
        self.assertGreaterEqual(client.lostAt - client.madeAt, 1.0 - 0.05)
        self.assertLess(client.lostAt - client.madeAt, 1.0 + SLACK)
        await self.whenProtocolsLost(node)
        [line] = self.warnings(mark)
        self.assertEqual(line["log_format"], "refused link from {peer}: {why}")
        self.assertIn("not authenticated within 1 s", line["why"])
        self.assertResources(node)

        honest = await self.startNode()
        await self.link(honest, node)
        await self.assertLinkWorks(node, honest)
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)

    async def test_dripClosedAtDeadline(self) -> None:
        """
        A client dripping a real ClientHello one byte every 100 ms (it would
        take half a minute to finish it) is closed at the handshake
        deadline: the deadline covers the whole handshake, not each read.
        """
        node = await self.startNode(handshakeTimeout=1.0)
        hello = clientHello()
        self.assertGreater(len(hello), 100)
        mark = len(self.events)
        client = await self.connectPlain(node, PlainClient(hello, drip=0.1))
        await withTimeout(client.lost)
        assert client.madeAt is not None and client.lostAt is not None
        self.assertGreaterEqual(client.lostAt - client.madeAt, 1.0 - 0.05)
        self.assertLess(client.lostAt - client.madeAt, 1.0 + SLACK)
        self.assertLess(client.sent, len(hello))
        await self.whenProtocolsLost(node)
        [line] = self.warnings(mark)
        self.assertIn("not authenticated within 1 s", line["why"])
        self.assertResources(node)
        await self.stopAndCheck(node)

    async def test_manySilentConnections(self) -> None:
        """
        While 100 silent connections hold handshake slots, an honest node
        still links within a second; at the deadline all 100 are closed,
        each with one log line, and the honest link stays up.
        """
        node = await self.startNode(
            handshakeTimeout=1.5, rate=1000.0, burst=200, maxUnauthenticated=128
        )
        honest = await self.startNode()
        mark = len(self.events)
        clients = [PlainClient() for _ in range(100)]
        admitted = self.whenAdmitted(node, 100)
        await gatherResults([Deferred.fromCoroutine(self.connectPlain(node, c)) for c in clients])
        # Every silent connection has reached the node and holds a slot.
        await admitted
        start = reactor.seconds()
        await self.link(honest, node)
        self.assertLess(reactor.seconds() - start, 1.0)
        self.assertEqual(node.admission.unauthenticated, 100)
        self.assertFalse(any(c.lost.called for c in clients))

        await withTimeout(gatherResults([c.lost for c in clients]))
        await self.whenProtocolsLost(node, keep={honest.nodeID})
        refusals = [e for e in self.warnings(mark) if "not authenticated within" in e["why"]]
        self.assertEqual(len(refusals), 100)
        self.assertEqual(len(self.warnings(mark)), 100)
        await self.assertLinkWorks(node, honest)
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)

    async def test_unauthenticatedCap(self) -> None:
        """
        Beyond C{maxUnauthenticated} connections still in the handshake, a
        new connection drops the oldest one at once (not left hanging until
        a deadline, and not refusing the newcomer), and the drops are
        summarised in one log line; an honest node then links past the
        connections still held.
        """
        node = await self.startNode(
            handshakeTimeout=5.0, rate=1000.0, burst=200, maxUnauthenticated=10, reportInterval=0.2
        )
        mark = len(self.events)
        held = [PlainClient() for _ in range(10)]
        admitted = self.whenAdmitted(node, 10)
        await gatherResults([Deferred.fromCoroutine(self.connectPlain(node, c)) for c in held])
        await admitted
        # One at a time, so that "oldest" is the order they were opened in.
        newer = [PlainClient() for _ in range(5)]
        for i, c in enumerate(newer):
            await self.connectPlain(node, c)
            await withTimeout(whenSome([h.lost for h in held], i + 1))
            self.assertEqual(sum(h.lost.called for h in held), i + 1)
        self.assertEqual(node.admission.unauthenticated, 10)
        self.assertFalse(any(c.lost.called for c in newer))
        summary = await self.waitForEvent(
            lambda e: "dropped {dropped}" in e.get("log_format", ""), "the admission summary", mark
        )
        self.assertEqual((summary["rate"], summary["dropped"]), (0, 5))
        self.assertEqual(len(self.warnings(mark)), 1)

        honest = await self.startNode()
        await self.link(honest, node)
        await self.assertLinkWorks(node, honest)
        for c in held + newer:
            if not c.lost.called:
                c.transport.loseConnection()
        await withTimeout(gatherResults([c.lost for c in held + newer]))
        await self.whenProtocolsLost(node, keep={honest.nodeID})
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)

    async def test_stopDropsPendingHandshakes(self) -> None:
        """
        Stopping a node closes the connections still in their handshake at
        once, rather than leaving them (and their deadline timers) to run
        until the deadline.
        """
        node = await self.startNode(handshakeTimeout=5.0)
        clients = [PlainClient() for _ in range(5)]
        admitted = self.whenAdmitted(node, 5)
        await gatherResults([Deferred.fromCoroutine(self.connectPlain(node, c)) for c in clients])
        await admitted
        start = reactor.seconds()
        await self.stopNode(node)
        await withTimeout(gatherResults([c.lost for c in clients]), 1.0)
        self.assertLess(reactor.seconds() - start, 1.0)
        await self.stopAndCheck(node)

    async def assertDroppedWithOneLine(self, node: Node, payload: bytes, why: str) -> None:
        """
        A plain client sending C{payload} is dropped; the node logs exactly
        one line, saying C{why}, and nothing else.
        """
        mark = len(self.events)
        built = len(self.built)
        client = await self.connectPlain(node, PlainClient(payload))
        await withTimeout(client.lost)
        [server] = self.built[built:]
        await withTimeout(server.whenLost())
        lines = [e for e in self.events[mark:] if _fromAppnpy(e)]
        self.assertEqual([e["log_format"] for e in lines], ["refused link from {peer}: {why}"])
        self.assertIn(why, lines[0]["why"])
        self.assertIsNone(server.peerNodeID)
        self.assertIsNone(server.mux)
        self.assertResources(node)

    async def test_nonTLSBytes(self) -> None:
        """
        At the node's listening port (behind admission control), an HTTP
        request, random bytes and a ClientHello offering at most TLS 1.2
        are each dropped with exactly one log line and no logged error; the
        node then links with an honest node.
        """
        node = await self.startNode()
        await self.assertDroppedWithOneLine(
            node, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "TLS handshake failed"
        )
        # Seeded, so a failure can be reproduced.
        noise = random.Random(1234).randbytes(3000)
        await self.assertDroppedWithOneLine(node, noise, "TLS handshake failed")
        await self.assertDroppedWithOneLine(
            node, clientHello(SSL.TLS1_2_VERSION), "unsupported protocol"
        )
        honest = await self.startNode()
        await self.link(honest, node)
        await self.assertLinkWorks(node, honest)
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)


class FramingFaultTests(NodeFaultTestCase):
    """
    Checklist A and C: an authenticated peer with an active link breaks the
    yamux framing.  The node drops that link at once, logs one warning, and
    keeps serving its other neighbour.
    """

    async def assertFramingErrorClosesLink(
        self, bad: bytes, why: str | None, close: bool = False
    ) -> None:
        """
        Send C{bad} from a linked raw peer (then close, if C{close}): the
        node drops that link at once and logs the violation in one warning
        naming C{why} (the multiplexer's C{link aborted} line; with C{why}
        L{None}, exactly one warning of any kind), logs no failure, and its
        link to an honest node still works.
        """
        node = await self.startNode()
        honest = await self.startNode()
        await self.link(honest, node)
        peer = await self.connectRaw(node)
        raw = peer.identity.nodeID
        self.assertEqual(set(node.links), {honest.nodeID, raw})
        mark = len(self.events)
        down = self.whenLinkDown(node, raw, mark)
        peer.transport.write(bad)
        if close:
            peer.transport.loseConnection()
        await withTimeout(peer.lost, 1.0)
        await down
        await self.whenProtocolsLost(node, keep={honest.nodeID})
        warnings = self.warnings(mark)
        if why is None:
            self.assertEqual(len(warnings), 1, [e["log_format"] for e in warnings])
        else:
            [aborted] = [e for e in warnings if e["log_format"] == "link aborted: {error}"]
            self.assertIn(why, str(aborted["error"]))
        await self.assertLinkWorks(node, honest)
        self.assertResources(node, {honest.nodeID})
        await self.stopAndCheck(honest, node)

    async def test_dataBeyondWindow(self) -> None:
        """
        A Data frame whose length exceeds the stream's receive window (256
        KiB) is a protocol error, judged from the header alone.
        """
        await self.assertFramingErrorClosesLink(
            encodeHeader(TYPE_DATA, 0, 1, 256 * 1024 + 1), "sent into a window of"
        )

    async def test_badVersion(self) -> None:
        """
        A frame header with version 1 is a protocol error.
        """
        await self.assertFramingErrorClosesLink(
            struct.pack(">BBHII", 1, TYPE_PING, FLAG_SYN, 0, 1), "yamux version 1"
        )

    async def test_garbageAfterValidFrame(self) -> None:
        """
        Garbage right after a valid frame (in the same write) is a protocol
        error.
        """
        await self.assertFramingErrorClosesLink(
            encodeHeader(TYPE_PING, FLAG_SYN, 0, 7) + b"GARBAGE GARBAGE GARBAGE!",
            "yamux version 71",
        )

    async def test_dataLengthMaxU32(self) -> None:
        """
        A Data frame claiming 2**32-1 bytes is refused from its header,
        before any buffering.
        """
        await self.assertFramingErrorClosesLink(
            encodeHeader(TYPE_DATA, 0, 1, 2**32 - 1), "sent into a window of"
        )

    async def test_windowUpdateMaxU32(self) -> None:
        """
        A WindowUpdate of 2**32-1 on the node's control stream overflows
        the send window: a protocol error.
        """
        await self.assertFramingErrorClosesLink(
            encodeHeader(TYPE_WINDOW_UPDATE, 0, 2, 2**32 - 1), "window overflows"
        )

    async def test_eofInsideHeader(self) -> None:
        """
        The peer's connection ending five bytes into a frame header drops
        the link with one warning (the truncated frame is not processed).
        """
        await self.assertFramingErrorClosesLink(
            encodeHeader(TYPE_PING, FLAG_SYN, 0, 9)[:5], None, close=True
        )

    async def test_protocolErrorReported(self) -> None:
        """
        On a yamux protocol error the node logs exactly one warning (the
        violation), logs the link down with the protocol error as the
        reason (not a side effect of its own teardown), and the peer
        receives GoAway(1) before the connection ends, as docs/protocol.md
        5.5 says.
        """
        node = await self.startNode()
        peer = await self.connectRaw(node)
        raw = peer.identity.nodeID
        mark = len(self.events)
        down = self.whenLinkDown(node, raw, mark)
        peer.transport.write(struct.pack(">BBHII", 1, TYPE_PING, FLAG_SYN, 0, 1))
        await withTimeout(peer.lost, 1.0)
        event = await down
        self.assertEqual(event["reason"], "protocol-error")
        self.assertIn("yamux version 1", event["detail"])
        warnings = self.warnings(mark)
        self.assertEqual([e["log_format"] for e in warnings], ["link aborted: {error}"])
        self.assertIn("yamux version 1", str(warnings[0]["error"]))
        self.assertIn((TYPE_GO_AWAY, 0, 0, GOAWAY_PROTOCOL_ERROR), peer.frames)
        await self.stopAndCheck(node)


class LivenessTests(NodeFaultTestCase):
    """
    Checklist A: a peer that stops answering, and simultaneous dials.
    """

    mux = MuxConfig(keepaliveInterval=0.2, keepaliveTimeout=1.0)

    async def test_silentPeerDeclaredDead(self) -> None:
        """
        A peer that completes TLS and Hello and then says nothing (it does
        not answer Pings) is declared dead by keepalive within
        keepaliveTimeout; an honest neighbour, which answers, stays linked.
        """
        node = await self.startNode(muxConfig=self.mux)
        honest = await self.startNode(muxConfig=self.mux)
        await self.link(honest, node)
        peer = await self.connectRaw(node)
        raw = peer.identity.nodeID
        upAt = reactor.seconds()
        mark = len(self.events)
        await self.whenLinkDown(node, raw, mark)
        self.assertLess(reactor.seconds() - upAt, 1.0 + SLACK)
        await withTimeout(peer.lost, 1.0)
        assert peer.lostAt is not None
        self.assertLess(peer.lostAt - upAt, 1.0 + SLACK)
        # The node was asking: keepalive Pings went out every 0.2 s.
        pings = [f for f in peer.frames if f[0] == TYPE_PING and f[1] & FLAG_SYN]
        self.assertGreaterEqual(len(pings), 3)
        aborted = [e for e in self.events[mark:] if "no frame for" in e.get("log_format", "")]
        self.assertEqual(len(aborted), 1)
        await self.whenProtocolsLost(node, keep={honest.nodeID})
        # The honest link has outlived several keepalive timeouts' worth of
        # pings by now and still works.
        await self.assertLinkWorks(node, honest)
        self.assertResources(node, {honest.nodeID})
        self.assertResources(honest, {node.nodeID})
        await self.stopAndCheck(honest, node)

    async def test_keepaliveReasonLogged(self) -> None:
        """
        A link dropped by keepalive is logged as such: one line, and the
        link-down reason names the keepalive timeout.
        """
        node = await self.startNode(muxConfig=self.mux)
        peer = await self.connectRaw(node)
        mark = len(self.events)
        event = await self.whenLinkDown(node, peer.identity.nodeID, mark)
        self.assertIn("keepalive", event["detail"])
        self.assertEqual(self.warnings(mark), [])
        await withTimeout(peer.lost, 1.0)
        await self.stopAndCheck(node)

    async def test_simultaneousDial(self) -> None:
        """
        Two nodes that dial each other at once over real sockets both get a
        link; exactly one TCP connection survives, the same one at both
        ends (the one dialled by the lower node ID), and the other is
        closed on both sides.
        """
        a = await self.startNode()
        b = await self.startNode()
        results = await withTimeout(
            gatherResults(
                [a.connect(b.advertisedAddresses()[0]), b.connect(a.advertisedAddresses()[0])]
            )
        )
        cpa, cpb = a.links[b.nodeID], b.links[a.nodeID]
        self.assertEqual(results, [cpa, cpb])
        self.assertEqual(cpa.link.transport.getHost().port, cpb.link.transport.getPeer().port)
        self.assertEqual(cpa.link.transport.getPeer().port, cpb.link.transport.getHost().port)
        lower = min(a.nodeID, b.nodeID)
        self.assertEqual(cpa.isDialer, a.nodeID == lower)
        self.assertEqual(cpb.isDialer, b.nodeID == lower)
        # Each node built two link protocols (one per direction); the loser
        # is closed at both ends.
        self.assertEqual(len(self.protocolsOf(a)), 2)
        self.assertEqual(len(self.protocolsOf(b)), 2)
        await self.whenProtocolsLost(a, keep={b.nodeID})
        await self.whenProtocolsLost(b, keep={a.nodeID})
        await self.assertLinkWorks(a, b)
        self.assertResources(a, {b.nodeID})
        self.assertResources(b, {a.nodeID})
        await self.stopAndCheck(a, b)
