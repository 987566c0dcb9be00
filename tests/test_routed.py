"""
Routed sessions end to end: BIND through one and two relays, TLS between
the ends over the spliced streams, UNBIND reasons, failures, and relays that
tamper with or record what they carry.  In-memory harness, explicit routes.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from appnpy.api import ISession, SessionClosed, SessionRefused
from appnpy.link.yamux import MuxConfig
from appnpy.net.relay import RELAY_SEND_HIGH_WATER, installRelay
from appnpy.node import Node
from appnpy.session.resumable import SWITCH_WINDOW
from appnpy.session.routed import RoutedSession, installRoutedSessions
from appnpy.testing import MemoryNetwork, resultOf
from tests.test_sessions import Recorder, RecordingPlugin


@implementer(IPushProducer)
class Pusher:
    """
    A push producer writing C{total} bytes of C{pattern} in 16 KiB writes.
    """

    def __init__(self, transport: Any, data: bytes) -> None:
        self.transport = transport
        self.data = data
        self.offset = 0
        self.paused = False
        self.pauses = 0
        self.stopped = False

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.offset < len(self.data):
            chunk = self.data[self.offset : self.offset + 16384]
            self.offset += len(chunk)
            self.transport.write(chunk)
        if self.offset >= len(self.data) and self.transport is not None:
            transport, self.transport = self.transport, None
            transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.stopped = True
        self.paused = True


class RoutedHarness(SynchronousTestCase):
    """
    Lines of network nodes with relays and routed-session ends installed.
    """

    muxConfig: MuxConfig | None = None

    def setUp(self) -> None:
        self.net = MemoryNetwork(muxConfig=self.muxConfig, services=False)
        self.addCleanup(self.checkClean)

    def checkClean(self) -> None:
        self.net.stop()
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def line(self, n: int, **kw: Any) -> tuple[list[Node], list[Any]]:
        """
        C{n} nodes linked in a line; returns the nodes and the memory links.
        """
        nodes = [self.net.addNode(f"LAB.N{i}", **kw) for i in range(n)]
        for node in nodes:
            # Relays and routed ends only, installed as buildNode installs them.
            node.relay = installRelay(node)
            node.routedSessions = installRoutedSessions(node)
        links = [self.net.connect(nodes[i], nodes[i + 1]) for i in range(n - 1)]
        return nodes, links

    def open(
        self, nodes: list[Node], plugin: str = "rec", factory: Any = None, **kw: Any
    ) -> Deferred[Any]:
        origin, destination = nodes[0], nodes[-1]
        d = origin.routedSessions.open(
            destination.nodeID,
            plugin,
            factory or (lambda info: Recorder()),
            route=[n.nodeID for n in nodes],
            **kw,
        )
        self.net.flush()
        return d

    def assertEmpty(self, nodes: list[Node]) -> None:
        for node in nodes:
            self.assertEqual(node.relay.table, {}, node.name)
            self.assertEqual(node.relay.perOrigin, {}, node.name)
            self.assertEqual(node.relay.perPreviousHop, {}, node.name)
            self.assertEqual(node.relay.bufferReserved, 0, node.name)
            self.assertEqual(node.routedSessions.handshaking, {}, node.name)
            self.assertEqual(node.routedSessions.sessions, {}, node.name)
            self.assertEqual(node.routedSessions.pending, {}, node.name)
            self.assertEqual(node.sessions(), [], node.name)
            for cp in node.links.values():
                self.assertEqual(cp.mux.streams.keys() - {1, 2}, set(), node.name)

    def assertReason(self, failure: Failure | None, reason: str) -> None:
        self.assertIsNotNone(failure)
        assert failure is not None
        self.assertIsInstance(failure.value, SessionClosed)
        self.assertEqual(failure.value.reason, reason)


class RoutedSessionTests(RoutedHarness):
    def test_throughOneRelay(self) -> None:
        """
        A session from A to C through B carries data both ways intact, and
        its transport is an ISession naming C as the peer.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        a, b, c = nodes
        p = resultOf(self.open(nodes, factory=lambda info: Recorder(b"hello")))
        verifyObject(ISession, p.transport)
        self.assertEqual(p.transport.peerNodeID, c.nodeID)
        self.assertEqual(p.transport.localNodeID, a.nodeID)
        self.assertEqual(p.transport.direction, "outbound")
        self.assertEqual(p.transport.getPeer().nodeID, c.nodeID)
        far = plugin.built[0]
        self.assertEqual(bytes(far.received), b"hello")
        self.assertEqual(far.transport.peerNodeID, a.nodeID)
        self.assertEqual(far.transport.direction, "inbound")
        self.assertEqual(far.transport.sessionID, p.transport.sessionID)
        up, down = os.urandom(300_000), os.urandom(200_000)
        p.transport.write(up)
        far.transport.write(down)
        self.net.flush()
        self.assertEqual(bytes(far.received), b"hello" + up)
        self.assertEqual(bytes(p.received), down)
        self.assertEqual([len(n.sessions()) for n in nodes], [1, 0, 1])
        self.assertEqual(len(b.relay.table), 1)
        p.transport.loseConnection()
        self.net.flush()
        self.assertReason(p.lost, "normal")
        self.assertReason(far.lost, "normal")
        self.assertEmpty(nodes)

    def test_switchableEndsCopyLess(self) -> None:
        """
        A switchable session's ends run the copy-less data path (records
        read straight into DATA frames at the sender, views of the link's
        reads at the receiver), and every byte arrives, both ways, for
        writes of any size.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        p = resultOf(self.open(nodes))
        far = plugin.built[0]
        for end in (p.transport, far.transport):
            self.assertTrue(callable(end._tls._writeFrame))
            self.assertTrue(end.layer.takesViews)
            self.assertTrue(end.layer._reading.takesViews)
            # Frames go to the link without a copy (Stream.writeWithRoom).
            self.assertTrue(end.layer._reading._mux.transport.takesBuffers)
        sizes = [1, 100, 16 * 1024, 64 * 1024, 300 * 1024, 1 << 20]
        up = [os.urandom(n) for n in sizes]
        down = [os.urandom(n) for n in reversed(sizes)]
        for a, b in zip(up, down, strict=True):
            p.transport.write(a)
            far.transport.write(b)
        self.net.flush()
        self.assertEqual(bytes(far.received), b"".join(up))
        self.assertEqual(bytes(p.received), b"".join(down))
        # Nothing the far end has is kept; the rest is views of frames.
        for end in (p.transport, far.transport):
            self.assertEqual(end.layer.buffered, sum(len(c) for c in end.layer._unacked))
        p.transport.loseConnection()
        self.net.flush()
        self.assertReason(p.lost, "normal")
        self.assertEmpty(nodes)

    def test_throughTwoRelaysBothDirections(self) -> None:
        """
        Through two relays, sessions open from either end, data intact.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(4, plugins=[plugin])
        for order in (nodes, nodes[::-1]):
            p = resultOf(self.open(order))
            far = plugin.built[-1]
            self.assertEqual(far.transport.peerNodeID, order[0].nodeID)
            data = os.urandom(100_000)
            p.transport.write(data)
            far.transport.write(data[::-1])
            self.net.flush()
            self.assertEqual(bytes(far.received), data)
            self.assertEqual(bytes(p.received), data[::-1])
            self.assertEqual(len(order[1].relay.table), 1)
            self.assertEqual(len(order[2].relay.table), 1)
            far.transport.loseConnection()
            self.net.flush()
            self.assertEmpty(nodes)

    def test_echoPluginOverRoute(self) -> None:
        """
        The stock echo plugin runs over a routed session unchanged.
        """
        nodes, _ = self.line(3)
        p = resultOf(self.open(nodes, plugin="echo", factory=lambda info: Recorder(b"ping")))
        self.net.flush()
        self.assertEqual(bytes(p.received), b"ping")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_unbindReasonsBothWays(self) -> None:
        """
        The reason of an UNBIND reaches the other end through the relays,
        whichever end closes; data written before it is delivered.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(4, plugins=[plugin])
        p = resultOf(self.open(nodes))
        far = plugin.built[-1]
        p.transport.write(b"last words")
        p.transport.loseConnectionWithReason("busy", "try later")
        self.net.flush()
        self.assertReason(far.lost, "busy")
        assert far.lost is not None
        self.assertEqual(far.lost.value.detail, "try later")
        self.assertEqual(bytes(far.received), b"last words")
        self.assertReason(p.lost, "busy")
        self.assertEmpty(nodes)

        p = resultOf(self.open(nodes))
        far = plugin.built[-1]
        far.transport.write(b"bye")
        far.transport.loseConnectionWithReason("refused-by-plugin", "no thanks")
        self.net.flush()
        self.assertReason(p.lost, "refused-by-plugin")
        self.assertEqual(bytes(p.received), b"bye")
        self.assertEmpty(nodes)

    def test_abortPropagates(self) -> None:
        """
        An abort at one end resets the chain; the other end sees C{aborted}.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        p = resultOf(self.open(nodes))
        p.transport.abortConnection()
        self.net.flush()
        self.assertReason(plugin.built[0].lost, "aborted")
        self.assertEmpty(nodes)

    def test_destinationRefusals(self) -> None:
        """
        The destination refuses routed BINDs for the same reasons as
        adjacent ones, and the refusal travels back through the relays.
        """
        plugin = RecordingPlugin(sessionLimit=1)
        nodes, _ = self.line(3, plugins=[plugin])
        f = self.failureResultOf(self.open(nodes, plugin="nope"), SessionRefused)
        self.assertEqual(f.value.reason, "unknown-plugin")
        p = resultOf(self.open(nodes))
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "limit-reached")
        p.transport.loseConnection()
        self.net.flush()
        plugin.answer = lambda info: None
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "refused-by-plugin")
        plugin.answer = lambda info: (_ for _ in ()).throw(SessionRefused("busy", "full"))
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "busy")
        self.assertEmpty(nodes)

    def test_destinationBindRate(self) -> None:
        """
        The destination takes routed BINDs from a neighbour at its BIND
        rate: beyond the burst they are refused rate-limited before any
        signature check, and the bucket refills with time.
        """
        nodes, _ = self.line(3, plugins=[RecordingPlugin()])
        routed = nodes[2].routedSessions
        routed.bindRate, routed.bindBurst = 1.0, 1.0
        p = resultOf(self.open(nodes))
        checked = routed.verifier.checked
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "rate-limited")
        self.assertEqual(routed.verifier.checked, checked)
        self.net.clock.advance(1)
        q = resultOf(self.open(nodes))
        for protocol in (p, q):
            protocol.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_destinationForgetsFullBindBuckets(self) -> None:
        """
        The destination's table of BIND buckets holds the neighbours that
        sent BINDs lately: a bucket that has filled up again is forgotten
        (a new one would be the same) once many are kept.
        """
        nodes, _ = self.line(2)
        routed = nodes[1].routedSessions
        for i in range(200):
            self.assertTrue(routed._bindAllowed(f"neighbour-{i}"))
        self.assertEqual(len(routed._bindBuckets), 200)
        self.net.clock.advance(routed.bindBurst / routed.bindRate)
        self.assertTrue(routed._bindAllowed("newcomer"))
        self.assertEqual(list(routed._bindBuckets), ["newcomer"])

    def test_routedDoNotCountAgainstNeighbourLimit(self) -> None:
        """
        Routed sessions riding a link do not use up the adjacent session
        limit with that neighbour, and are limited per far end instead.
        """
        plugin = RecordingPlugin(sessionLimit=1)
        nodes, _ = self.line(3, plugins=[plugin])
        a, b, c = nodes
        p = resultOf(self.open(nodes))
        q = resultOf(self.open([b, c]))
        self.assertEqual(q.transport.peerNodeID, c.nodeID)
        self.assertNotIsInstance(q.transport, RoutedSession)
        self.assertEqual(len(c.sessions()), 2)
        p.transport.loseConnection()
        q.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_originChecksRoute(self) -> None:
        """
        The origin refuses routes that do not start here, do not end at the
        destination, loop, or whose first hop is not a neighbour.
        """
        nodes, _ = self.line(4)
        a, b, c, d = nodes
        cases = [
            ([b.nodeID, c.nodeID, d.nodeID], "no-route"),
            ([a.nodeID, b.nodeID, c.nodeID], "no-route"),
            ([a.nodeID, b.nodeID, a.nodeID, d.nodeID], "protocol-error"),
            ([a.nodeID, c.nodeID, d.nodeID], "no-route"),
        ]
        for route, reason in cases:
            dd = a.routedSessions.open(d.nodeID, "echo", lambda info: Recorder(), route=route)
            self.net.flush()
            self.assertEqual(self.failureResultOf(dd, SessionRefused).value.reason, reason)
        self.assertEmpty(nodes)

    def test_routeToAndPeerName(self) -> None:
        """
        Without a route the origin asks C{node.routeTo}; the far end's name
        comes from the topology database when there is one.
        """
        nodes, _ = self.line(3)
        a, b, c = nodes
        asked = []

        def routeTo(destination: str, cos: str) -> Deferred[list[str]]:
            asked.append((destination, cos))
            d: Deferred[list[str]] = Deferred()
            d.callback([n.nodeID for n in nodes])
            return d

        class Topology:
            def nodeName(self, nodeID: str) -> str | None:
                return {c.nodeID: "LAB.FAR", a.nodeID: "LAB.NEAR"}.get(nodeID)

        a.routeTo = routeTo  # type: ignore[attr-defined]
        a.topology = Topology()
        c.topology = Topology()
        dd = a.routedSessions.open(c.nodeID, "echo", lambda info: Recorder(), cos="batch")
        self.net.flush()
        p = resultOf(dd)
        self.assertEqual(asked, [(c.nodeID, "batch")])
        self.assertEqual(p.transport.peerName, "LAB.FAR")
        self.assertEqual(c.sessions()[0].peerName, "LAB.NEAR")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)


class FailureTests(RoutedHarness):
    def test_relayLinkCut(self) -> None:
        """
        Cutting a link of the relay ends a session that cannot switch paths
        at both ends with C{link-failure}, and leaves no state on any node
        (a switchable one: tests/test_path_switch.py).
        """
        for cut in (0, 1):
            plugin = RecordingPlugin()
            nodes, links = self.line(3, plugins=[plugin])
            nodes[0].routedSessions.pathSwitch = False
            p = resultOf(self.open(nodes))
            far = plugin.built[0]
            links[cut].cut()
            self.net.flush()
            self.assertReason(p.lost, "link-failure")
            self.assertReason(far.lost, "link-failure")
            self.assertEmpty(nodes)

    def test_middleLinkCutTwoRelays(self) -> None:
        """
        With two relays, cutting the link between them fails both ends (of
        a session that cannot switch paths).
        """
        plugin = RecordingPlugin()
        nodes, links = self.line(4, plugins=[plugin])
        nodes[0].routedSessions.pathSwitch = False
        p = resultOf(self.open(nodes))
        links[1].cut()
        self.net.flush()
        self.assertReason(p.lost, "link-failure")
        self.assertReason(plugin.built[0].lost, "link-failure")
        self.assertEmpty(nodes)

    def test_tamperingRelayDetected(self) -> None:
        """
        A relay that flips a byte of the relayed stream is caught by the
        ends' TLS: the session fails with C{protocol-error} and the altered
        bytes never reach the plugin.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        relay = nodes[1].relay
        armed = []
        original = relay.forwarder

        def forwarder(entry: Any, toSide: int) -> Any:
            write = original(entry, toSide)

            def tamper(data: bytes) -> None:
                if armed and toSide == 1 and len(data) > 100:
                    # A spliced stream hands the forwarder memoryviews.
                    data = bytes(data[:50]) + bytes([data[50] ^ 1]) + bytes(data[51:])
                write(data)

            return tamper

        relay.forwarder = forwarder  # type: ignore[method-assign]
        p = resultOf(self.open(nodes))
        far = plugin.built[0]
        armed.append(True)
        data = b"attack at dawn " * 1000
        p.transport.write(data)
        self.net.flush()
        self.assertTrue(data.startswith(bytes(far.received)))
        self.assertLess(len(far.received), len(data))
        self.assertReason(far.lost, "protocol-error")
        self.assertReason(p.lost, "protocol-error")
        self.assertEmpty(nodes)

    def test_recordingRelaySeesNoPlaintext(self) -> None:
        """
        A relay that records every relayed byte never sees the plaintext of
        either direction.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        relay = nodes[1].relay
        recorded = bytearray()
        original = relay.forwarder

        def forwarder(entry: Any, toSide: int) -> Any:
            write = original(entry, toSide)

            def record(data: bytes) -> None:
                recorded.extend(data)
                write(data)

            return record

        relay.forwarder = forwarder  # type: ignore[method-assign]
        p = resultOf(self.open(nodes))
        far = plugin.built[0]
        secret, reply = b"the secret plan: " * 64, b"the secret answer: " * 64
        p.transport.write(secret)
        far.transport.write(reply)
        self.net.flush()
        self.assertEqual(bytes(far.received), secret)
        self.assertEqual(bytes(p.received), reply)
        self.assertGreater(len(recorded), len(secret) + len(reply))
        self.assertNotIn(b"secret", bytes(recorded))
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)

    def test_wrongDestinationKeyRefused(self) -> None:
        """
        The origin pins the destination's node ID: a destination that
        answers with another key fails end-to-end authentication.
        """
        plugin = RecordingPlugin()
        nodes, _ = self.line(3, plugins=[plugin])
        a, b, c = nodes
        # C presents B's certificate and key for the end-to-end layer.
        c.routedSessions._tlsFactories[False] = b.routedSessions.tlsFactory(False)
        f = self.failureResultOf(self.open(nodes), SessionRefused)
        self.assertEqual(f.value.reason, "protocol-error")
        self.net.flush()
        self.assertEmpty(nodes)


class BackpressureTests(RoutedHarness):
    # No window auto-tuning, so the bound below is the spec window.
    muxConfig = MuxConfig(keepaliveInterval=0, maxStreamWindow=256 * 1024)

    def test_pausedReaderBoundsRelayBuffers(self) -> None:
        """
        A far-end reader that pauses stops the sender hop by hop: the relays
        buffer at most about a window each, the sender's producer is paused,
        and everything arrives intact after the reader resumes (a session
        that cannot switch paths: the streams' windows alone).
        """
        self.pausedReader(switchable=False, sentAtMost=4 * 1024 * 1024 - 1)

    def test_pausedReaderOfSwitchableSession(self) -> None:
        """
        The far end of a session that can switch paths reads its stream
        while its plugin does not, for the ACKs in it, and holds the DATA
        unacknowledged (docs/protocol.md 15.8): the sender is paused by its
        path-switch window, the relays still buffer little.
        """
        self.pausedReader(switchable=True, sentAtMost=SWITCH_WINDOW + 64 * 1024)

    def pausedReader(self, switchable: bool, sentAtMost: int) -> None:
        plugin = RecordingPlugin()
        nodes, _ = self.line(4, plugins=[plugin])
        nodes[0].routedSessions.pathSwitch = switchable
        p = resultOf(self.open(nodes))
        self.assertEqual(p.transport.switch is not None, switchable)
        far = plugin.built[0]
        far.transport.pauseProducing()
        data = os.urandom(8 * 1024 * 1024)
        pusher = Pusher(p.transport, data)
        pusher.start()
        self.net.flush()
        self.assertTrue(pusher.paused)
        self.assertLessEqual(pusher.offset, sentAtMost)
        window = 256 * 1024
        for relay in (nodes[1].relay, nodes[2].relay):
            (entry,) = relay.table.values()
            buffered = len(entry.inStream._recvBuf or b"") + len(entry.outStream._sendBuf or b"")
            # At most a receive window, plus the relay's send buffer and one frame.
            self.assertLessEqual(buffered, 2 * window + RELAY_SEND_HIGH_WATER + 128 * 1024)
        far.transport.resumeProducing()
        self.net.flush()
        self.assertEqual(len(far.received), len(data))
        self.assertEqual(bytes(far.received), data)
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty(nodes)
