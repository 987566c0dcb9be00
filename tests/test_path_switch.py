"""
Non-disruptive path switch of routed sessions (docs/protocol.md 15.8), in
memory: a 64 MiB stream keeps going, complete and in order, when its relay's
link is cut or the relay stops mid-transfer; re-BINDs that are forged,
replayed or for another session are refused and the real session is
untouched; no route for the switch timeout ends the session with no-route;
both ends fail over several times; nothing is left behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import SessionOpen, SessionRefuse, encodeMessage
from appnpy.errors import NoRoute
from appnpy.interfaces import ISessionInfo, ISessionPlugin
from appnpy.net.relay import installRelay
from appnpy.node import Node
from appnpy.session.bind import signBind
from appnpy.session.pathswitch import ResumableStream, _buildSwitchMachine, orderAlternatives
from appnpy.session.routed import installRoutedSessions
from appnpy.testing import MemoryLink, MemoryNetwork, resultOf
from tests.test_machines import IGNORED, docDiagram, initialState, transitionTable

MiB = 1024 * 1024


def pattern(n: int) -> bytes:
    """
    C{n} bytes no two 8-byte blocks of which are the same (a repeated or
    reordered block changes the hash).
    """
    return b"".join(i.to_bytes(8, "big") for i in range(n // 8))


def startBothWays(case: Any, up: int, down: int) -> tuple[Any, Any, bytes, bytes]:
    """
    Open a session of C{case}'s harness and start C{up} bytes toward the
    destination and C{down} back: the origin's L{Source}, the far plugin's,
    and the two patterns.
    """
    upData, downData = pattern(up), pattern(down)[::-1]
    case.plugin.reply = downData
    source = Source(upData)
    case.open(source)
    far = case.plugin.built[-1]
    source.start()
    far.start()
    return source, far, upData, downData


class Sink(Protocol):
    """
    Hashes what arrives; remembers whether its session ended.
    """

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(IPushProducer)
class Source(Protocol):
    """
    Writes C{data} in 32 KiB writes as a push producer; hashes what comes back.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        self.paused = False
        self.sink = Sink()
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def start(self) -> None:
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.offset < len(self.data):
            chunk = self.data[self.offset : self.offset + 32768]
            self.offset += len(chunk)
            self.transport.write(chunk)
        if self.offset >= len(self.data) and self.transport is not None and not self.paused:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.sink.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(ISessionPlugin)
@attrs.define
class SinkPlugin:
    name: str = "sink"
    version: str = "1"
    defaultCOS: str = "batch"
    sessionLimit: int = 8
    built: list[Any] = attrs.Factory(list)
    reply: bytes = b""

    def configure(self, section: dict[str, object]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> Any:
        p: Any = Source(self.reply) if self.reply else Sink()
        self.built.append(p)
        return p


class StaticRoutes:
    """
    A route source that answers what the test says (the topology's own
    answers are tested in L{TopologyRoutesTests}).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.routes: list[list[str]] = []
        self.asked = 0

    def routeTo(self, destination: str, cos: str | None = None) -> Deferred[list[str]]:
        return succeed(self.routes[0]) if self.routes else fail(NoRoute("none"))

    def alternativeRoutes(
        self, destination: str, cos: str | None, k: int
    ) -> Deferred[list[list[str]]]:
        self.asked += 1
        if not self.routes:
            return fail(NoRoute("no route"))
        return succeed([list(r) for r in self.routes])

    def nodeName(self, nodeID: str) -> str:
        return self.node.nodeName(nodeID)


class SwitchHarness(SynchronousTestCase):
    """
    A origin, B destination, relays R1 and R2: paths A-R1-B and A-R2-B.
    """

    def setUp(self) -> None:
        self.net = MemoryNetwork(services=False)
        self.plugin = SinkPlugin()
        self.a = self.addNode("LAB.A")
        self.r1 = self.addNode("LAB.R1")
        self.r2 = self.addNode("LAB.R2")
        self.b = self.addNode("LAB.B", plugins=[self.plugin])
        self.links: dict[str, MemoryLink] = {}
        for x, y in [("a", "r1"), ("r1", "b"), ("a", "r2"), ("r2", "b")]:
            self.links[x + y] = self.net.connect(getattr(self, x), getattr(self, y))
        self.routes = StaticRoutes(self.a)
        self.a.routedSessions.routes = self.routes
        self.routes.routes = [self.path(self.r1), self.path(self.r2)]
        self.addCleanup(self.checkClean)

    def addNode(self, name: str, **kw: Any) -> Node:
        node = self.net.addNode(name, **kw)
        node.relay = installRelay(node)
        node.routedSessions = installRoutedSessions(node)
        return node

    def path(self, *relays: Node) -> list[str]:
        return [self.a.nodeID, *(r.nodeID for r in relays), self.b.nodeID]

    def checkClean(self) -> None:
        self.net.stop()
        self.assertNoSessionTimers()

    def open(self, protocol: Any, route: list[str] | None = None) -> Any:
        d = self.a.routedSessions.open(
            self.b.nodeID, "sink", lambda info: protocol, route=route or self.path(self.r1)
        )
        self.net.flush()
        return resultOf(d)

    def pumpUntil(self, condition: Any, limit: int = 1000000) -> None:
        """
        Move the network one step at a time until C{condition()}.
        """
        for _ in range(limit):
            if condition():
                return
            self.net.clock.advance(0)
            for link in self.net.links:
                link.pump.pump(advanceClock=False)
        raise AssertionError("the condition never came true")

    def settle(self, seconds: float = 0.0) -> None:
        """
        Let C{seconds} pass, a second at a time (so every retry runs).
        """
        self.net.flush()
        while seconds > 0:
            step = min(1.0, seconds)
            self.net.flush(step)
            seconds -= step

    def assertNoSessionTimers(self) -> None:
        """
        No timer of a session, its switch or its numbered streams is left.
        A link's failure check may be: the last ACK, sent just before a
        FIN, has nothing to answer it but the check's probe.
        """
        left = [c for c in self.net.clock.getDelayedCalls() if "_failureCheck" not in repr(c.func)]
        self.assertEqual(left, [])

    def assertNothingLeft(self) -> None:
        for node in self.net.nodes:
            if node.relay is not None:
                self.assertEqual(node.relay.table, {}, node.name)
                self.assertEqual(node.relay.bufferReserved, 0, node.name)
            self.assertEqual(node.routedSessions.sessions, {}, node.name)
            self.assertEqual(node.routedSessions.handshaking, {}, node.name)
            self.assertEqual(node.sessions(), [], node.name)


class PathSwitchTests(SwitchHarness):
    def transfer(self, size: int, cut: Any) -> tuple[Source, Sink]:
        data = pattern(size)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.pumpUntil(lambda: sink.count >= size // 3)
        cut()
        self.settle()
        self.pumpUntil(lambda: sink.count >= size or source.lost is not None)
        self.settle(1)
        self.assertIsNone(source.lost)
        self.assertIsNone(sink.lost)
        self.assertEqual(sink.count, size)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        return source, sink

    def test_relayLinkCut(self) -> None:
        """
        The link from the relay to the destination is cut mid-transfer of
        64 MiB: every byte arrives once, in order, over the other relay,
        and neither plugin sees its session end.
        """
        source, sink = self.transfer(64 * MiB, self.links["r1b"].cut)
        session = source.transport
        self.assertEqual(session.route, self.path(self.r2))
        self.assertEqual(session.switch.switches, 1)
        self.assertEqual(self.r1.relay.table, {})
        self.assertIn((self.a.nodeID, session.sessionID), self.r2.relay.table)
        session.loseConnection()
        self.settle(1)
        self.assertEqual(sink.lost.value.reason, "normal")
        self.assertNothingLeft()
        self.assertNoSessionTimers()

    def test_relayStopped(self) -> None:
        """
        The relay stops (gracefully: it tells both ends) mid-transfer: the
        session carries on over the other relay.
        """
        source, sink = self.transfer(64 * MiB, lambda: self.r1.stopService())
        self.assertEqual(source.transport.route, self.path(self.r2))
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_relayCrashed(self) -> None:
        """
        The relay dies without a word (every link of it drops at once)
        mid-transfer of 64 MiB: both ends see their streams lost, and the
        session carries on over the other relay.
        """

        def crash() -> None:
            self.links["ar1"].cut()
            self.links["r1b"].cut()

        source, sink = self.transfer(64 * MiB, crash)
        self.assertEqual(source.transport.route, self.path(self.r2))
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_originFirstHopLost(self) -> None:
        """
        The origin's own link to the relay drops mid-transfer (it sees its
        stream lost, no UNBIND): it switches all the same.
        """
        source, sink = self.transfer(8 * MiB, self.links["ar1"].cut)
        self.assertEqual(source.transport.route, self.path(self.r2))
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_bothDirectionsSeveralSwitches(self) -> None:
        """
        Data flows both ways while the path fails three times, at the
        destination's side, at the origin's and in the relay: each
        direction arrives complete and in order, nothing repeated.
        """
        size = 6 * MiB
        source, far, up, down = startBothWays(self, size, size)
        session = source.transport
        cuts = [
            lambda: self.links["r1b"].cut(),
            lambda: self.links["ar2"].cut(),
            lambda: self.links["r1b2"].cut(),
        ]
        for i, cut in enumerate(cuts):
            self.pumpUntil(
                lambda i=i: (
                    far.sink.count >= (i + 1) * size // 4
                    and source.sink.count >= (i + 1) * size // 4
                )
            )
            cut()
            self.settle()
            if i == 0:
                self.links["r1b2"] = self.net.connect(self.r1, self.b)
            elif i == 1:
                self.links["ar2b"] = self.net.connect(self.a, self.r2)
        self.pumpUntil(lambda: far.sink.count >= size and source.sink.count >= size)
        self.settle(1)
        self.assertEqual(session.switch.switches, 3)
        self.assertEqual(session.route, self.path(self.r2))
        for sink, data in ((far.sink, up), (source.sink, down)):
            self.assertEqual(sink.count, size)
            self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertIsNone(source.lost)
        self.assertIsNone(far.lost)
        (farSession,) = self.b.routedSessions.sessions.values()
        self.assertEqual(farSession.switch.switches, 3)
        # What was acknowledged is freed: nothing is kept once all arrived.
        self.settle(1)
        self.assertEqual(session.layer.buffered, 0)
        self.assertEqual(farSession.layer.buffered, 0)
        session.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_noRoute(self) -> None:
        """
        With no other path the origin keeps asking for routes for the
        switch timeout, then both ends end the session with no-route.
        """
        self.routes.routes = [self.path(self.r1)]
        source = Source(b"x" * MiB)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.settle()
        self.assertEqual(sink.count, MiB)
        self.links["r1b"].cut()
        self.settle()
        self.assertIsNone(source.lost)
        timeout = self.a.routedSessions.switchTimeout
        self.settle(timeout - 1)
        self.assertIsNone(source.lost)
        self.assertGreater(self.routes.asked, 5)
        self.settle(2)
        self.assertEqual(source.lost.value.reason, "no-route")
        # The destination holds a while longer for the origin's last re-BIND.
        self.assertIsNone(sink.lost)
        self.settle(self.a.routedSessions.bindTimeout)
        self.assertEqual(sink.lost.value.reason, "no-route")
        self.assertNothingLeft()

    def test_stopWhileSwitching(self) -> None:
        """
        A node that stops ends its sessions waiting for a path with
        shutting-down, at once (origin and destination alike).
        """
        self.routes.routes = []
        source = Source(b"")
        self.open(source)
        sink = self.plugin.built[-1]
        self.settle(1)
        self.links["r1b"].cut()
        self.settle()
        self.assertEqual(source.transport.switch.state, "switching")
        (far,) = self.b.routedSessions.sessions.values()
        self.assertEqual(far.switch.state, "holding")
        self.a.stopService()
        self.b.stopService()
        self.net.flush()
        self.assertEqual(source.lost.value.reason, "shutting-down")
        self.assertEqual(sink.lost.value.reason, "shutting-down")
        self.assertNothingLeft()

    def test_pausedNotEnded(self) -> None:
        """
        While the session has no path, the producer writing into it is
        paused (its bytes wait within the window) and resumed after.
        """
        data = pattern(16 * MiB)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        self.routes.routes = []
        source.start()
        self.pumpUntil(lambda: sink.count >= MiB)
        self.links["r1b"].cut()
        self.settle(0.5)
        self.assertTrue(source.paused)
        session = source.transport
        self.assertLessEqual(session.layer.buffered, session.layer.window + 64 * 1024)
        self.routes.routes = [self.path(self.r2)]
        self.settle(1)
        self.pumpUntil(lambda: sink.count >= len(data))
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        session.loseConnection()
        self.settle(1)

    def test_farEndClosesAfterSwitch(self) -> None:
        """
        After a switch the session ends as any: the destination's close
        reaches the origin over the new path.
        """
        source = Source(b"")
        self.open(source)
        self.links["r1b"].cut()
        self.settle()
        (far,) = self.b.routedSessions.sessions.values()
        far.loseConnectionWithReason("normal")
        self.settle(1)
        self.assertEqual(source.lost.value.reason, "normal")
        self.assertNothingLeft()


class RebindProbe:
    """
    What a hostile node H does to a session in these tests: record the
    BINDs a relay sees, send a BIND of its own making as the first message
    of a new stream to a neighbour, and sign a re-BIND of the session.
    Mixed into a harness that has C{net}, C{settle} and C{assertEqual}.
    """

    net: MemoryNetwork

    def recordBinds(self, node: Node) -> list[SessionOpen]:
        """
        Every BIND C{node}'s relay is handed from now on.
        """
        captured: list[SessionOpen] = []
        relay = node.relay
        original = relay.bindReceived

        def record(cp: Any, stream: Any, req: SessionOpen) -> None:
            captured.append(req)
            original(cp, stream, req)

        relay.bindReceived = record  # type: ignore[method-assign]
        return captured

    def stream(self, sender: Node, via: Node, req: SessionOpen) -> tuple[Any, list[Any]]:
        """
        Send C{req} as the first message of a new stream from C{sender} to
        its neighbour C{via}; the stream and the answers read on it.
        """
        answers: list[Any] = []
        stream = sender.links[via.nodeID].mux.openStream()
        stream.attachProtocol(BindReader(lambda msg, leftover: answers.append(msg), answers.append))
        stream.write(encodeMessage(req))
        self.settle()  # type: ignore[attr-defined]
        return stream, answers

    def send(self, sender: Node, via: Node, req: SessionOpen) -> Any:
        """
        The same; the one answer.
        """
        stream, answers = self.stream(sender, via, req)
        self.assertEqual(len(answers), 1)  # type: ignore[attr-defined]
        return answers[0]

    def signRebind(
        self,
        signer: Any,
        session: Any,
        origin: Node,
        destination: Node,
        via: Node,
        /,
        **fields: Any,
    ) -> SessionOpen:
        """
        A re-BIND of C{session} from C{origin} to C{destination} through
        C{via}, path 9, signed by C{signer}; C{fields} override.
        """
        values: dict[str, Any] = dict(
            session_id=session.sessionID,
            origin=origin.nodeID,
            destination=destination.nodeID,
            plugin="sink",
            cos="batch",
            window=262144,
            route=[origin.nodeID, via.nodeID, destination.nodeID],
            path=9,
            resume=0,
        )
        values.update(fields)
        req = SessionOpen(**values)
        return signBind(req, signer.publicKeyBytes, signer.sign, self.net.clock.seconds())


class ForgedRebindTests(SwitchHarness, RebindProbe):
    """
    Re-BINDs that are not the origin's own, fresh and newer are refused,
    and the session they aim at is untouched.  H is a hostile node linked
    to relay R2 (and to B), with a key of its own, speaking the protocol.
    """

    def setUp(self) -> None:
        super().setUp()
        self.h = self.addNode("LAB.H")
        self.net.connect(self.h, self.r2)
        self.net.connect(self.h, self.b)
        self.captured = self.recordBinds(self.r2)
        self.source = Source(b"")
        self.open(self.source)
        (self.far,) = self.b.routedSessions.sessions.values()

    def rebind(self, signer: Any, **fields: Any) -> SessionOpen:
        return self.signRebind(signer, self.far, self.a, self.b, self.h, **fields)

    def assertUntouched(self) -> None:
        far = self.far
        self.assertIs(self.b.routedSessions.sessions.get(far.sessionID), far)
        self.assertEqual(far.route, self.path(self.r1))
        self.assertEqual(far.switch.state, "up")
        # It still carries data both ways.
        self.source.transport.write(b"still here")
        self.settle()
        sink = self.plugin.built[-1]
        self.assertEqual(sink.count, len(b"still here"))
        self.assertIsNone(sink.lost)
        self.assertIsNone(self.source.lost)

    def test_ownKeyOtherOrigin(self) -> None:
        """
        H signs with its own key, as itself: B knows no session of H's by
        that ID.
        """
        req = self.rebind(
            self.h.identity,
            origin=self.h.nodeID,
            route=[self.h.nodeID, self.r2.nodeID, self.b.nodeID],
        )
        answer = self.send(self.h, self.r2, req)
        self.assertIsInstance(answer, SessionRefuse)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertUntouched()

    def test_wrongKey(self) -> None:
        """
        H claims to be A, with its own key or A's key and its signature.
        """
        for publicKey in (self.h.identity.publicKeyBytes, self.a.identity.publicKeyBytes):
            req = self.rebind(self.h.identity)
            req = attrs.evolve(req, public_key=publicKey)
            answer = self.send(self.h, self.b, req)
            self.assertIsInstance(answer, SessionRefuse)
            self.assertEqual(answer.reason, "bad-signature")
        self.assertUntouched()

    def test_replayed(self) -> None:
        """
        A's genuine re-BIND, seen by a relay on its path, replayed by that
        relay to B: refused as a path that is not newer (a re-BIND takes no
        place in B's replay cache); another session's ID breaks its
        signature.
        """
        self.links["r1b"].cut()
        self.settle()
        (genuine,) = [r for r in self.captured if r.path > 1]
        self.assertEqual(self.far.route, self.path(self.r2))
        self.b.routedSessions.verifier.seen.clear()
        answer = self.send(self.r2, self.b, genuine)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertIn("not newer", answer.detail)
        other = Source(b"")
        self.open(other, route=self.path(self.r2))
        otherID = other.transport.sessionID
        answer = self.send(self.r2, self.b, attrs.evolve(genuine, session_id=otherID))
        self.assertEqual(answer.reason, "bad-signature")
        self.assertEqual(self.far.route, self.path(self.r2))
        self.assertEqual(other.transport.route, self.path(self.r2))
        self.source.transport.write(b"after")
        self.settle()
        self.assertEqual(self.plugin.built[0].count, len(b"after"))
        other.transport.loseConnection()

    def test_resumeOutsideWhatWasSent(self) -> None:
        """
        A re-BIND signed by the origin whose resume position the
        destination never sent is refused (a broken origin).
        """
        req = self.rebind(
            self.a.identity, route=[self.a.nodeID, self.r2.nodeID, self.b.nodeID], resume=10**9
        )
        answer = self.send(self.a, self.r2, req)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertIn("beyond what was sent", answer.detail)
        self.assertEqual(self.far.switch.path, 1)
        self.assertUntouched()


class TopologyRoutesTests(SynchronousTestCase):
    """
    With the network services (topology database, route selection), the
    origin finds the new route itself.
    """

    def ring(self) -> tuple[MemoryNetwork, SinkPlugin, list[Node], dict[str, MemoryLink]]:
        """
        A - R1 - B - R2 - A, with the topology settled.
        """
        net = MemoryNetwork()
        plugin = SinkPlugin()
        a = net.addNode("LAB.A")
        r1 = net.addNode("LAB.R1")
        r2 = net.addNode("LAB.R2")
        b = net.addNode("LAB.B", plugins=[plugin])
        links = {
            "ar1": net.connect(a, r1),
            "r1b": net.connect(r1, b),
            "br2": net.connect(b, r2),
            "r2a": net.connect(r2, a),
        }
        net.flush(5)
        return net, plugin, [a, r1, r2, b], links

    def test_ringSurvivesCut(self) -> None:
        net, plugin, (a, r1, r2, b), links = self.ring()
        data = pattern(4 * MiB)
        source = Source(data)
        d = a.openSession(b.nodeID, "sink", lambda info: source)
        net.flush()
        resultOf(d)
        session = source.transport
        relay = session.route[1]
        self.assertIn(relay, (r1.nodeID, r2.nodeID))
        sink = plugin.built[-1]
        source.start()
        for _ in range(200000):
            if sink.count >= MiB:
                break
            net.clock.advance(0)
            for link in net.links:
                link.pump.pump(advanceClock=False)
        (links["r1b"] if relay == r1.nodeID else links["br2"]).cut()
        net.flush(1)
        net.flush(1)
        self.assertEqual(sink.count, len(data))
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertIsNone(source.lost)
        self.assertIsNone(sink.lost)
        self.assertNotEqual(session.route[1], relay)
        self.assertEqual(session.switch.switches, 1)
        session.loseConnection()
        net.flush(1)
        net.stop()
        self.assertEqual(net.clock.getDelayedCalls(), [])

    def test_farEndGone(self) -> None:
        """
        The destination itself crashes (every link of it drops): once its
        neighbours withdraw their links to it, the origin gives up at once
        with link-failure instead of looking for a path for the whole
        switch timeout.
        """
        net, plugin, (a, r1, r2, b), links = self.ring()
        source = Source(b"x" * MiB)
        d = a.openSession(b.nodeID, "sink", lambda info: source)
        net.flush()
        resultOf(d)
        source.start()
        net.flush()
        links["r1b"].cut()
        links["br2"].cut()
        for _ in range(3):
            net.flush(1)
        self.assertIsNotNone(source.lost)
        self.assertEqual(source.lost.value.reason, "link-failure")
        self.assertIn("gone", source.lost.value.detail)
        net.stop()


# -- the numbered stream alone ------------------------------------------------


class FakeStream:
    """
    The parts of a yamux stream the numbered stream uses; records writes.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None
        self.producer: Any = None
        self.aborted = False
        self.finished = False
        #: Bytes written that have not left (everything leaves at once).
        self.unsent = 0

    def attachProtocol(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.finished = True

    def abortConnection(self) -> None:
        self.aborted = True


class FakeOwner:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.lost: list[Failure] = []
        self.resumedCount = 0

    def farEndFinished(self) -> None:
        pass

    def streamLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def layerFailed(self, detail: str) -> None:
        self.failed.append(detail)

    def resumed(self) -> None:
        self.resumedCount += 1


def layerPair(window: int = 1 << 20) -> tuple[ResumableStream, FakeStream, list[bytes], FakeOwner]:
    clock = Clock()
    owner = FakeOwner()
    layer = ResumableStream(clock, owner, window=window)
    got: list[bytes] = []

    def deliver(data: bytes) -> None:
        # As the TLS layer's memory BIO: an empty write is an error.
        assert data, "empty delivery"
        got.append(data)

    layer.deliver = deliver
    stream = FakeStream()
    layer.attach(stream, awaitingResume=False)  # type: ignore[arg-type]
    return layer, stream, got, owner


class ResumableStreamTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        chunks=st.lists(st.binary(min_size=1, max_size=3000), max_size=20),
        cuts=st.lists(st.integers(0, 70000), max_size=30),
    )
    def test_anySplitDeliversTheSame(self, chunks: list[bytes], cuts: list[int]) -> None:
        """
        Whatever the read boundaries, the payloads come out whole, in order,
        and the ACK frames between them free the sender's buffer.
        """
        sender, sent, _, _ = layerPair()
        for chunk in chunks:
            sender.write(chunk)
            # The far end's ACKs travel between the DATA frames.
            sent.written.append(b"\x01" + bytes(8))
        wire = b"".join(sent.written)
        receiver, back, got, owner = layerPair()
        points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
        for start, end in zip(points, points[1:], strict=False):
            receiver.dataReceived(wire[start:end])
        self.assertEqual(owner.failed, [])
        self.assertEqual(b"".join(got), b"".join(chunks))
        self.assertEqual(receiver.received, len(b"".join(chunks)))

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=200))
    def test_garbageFailsCleanly(self, data: bytes) -> None:
        """
        Any bytes are delivered, kept as a partial frame, or fail the
        session with one reason: never an exception, never more than once.
        """
        receiver, _, got, owner = layerPair()
        receiver.dataReceived(data)
        receiver.dataReceived(data)
        self.assertLessEqual(len(owner.failed), 1)
        self.assertLessEqual(sum(map(len, got)), 2 * len(data))

    def test_acksFreeAndWindowPauses(self) -> None:
        """
        The producer is paused once a window is unacknowledged, resumed by
        the ACK; an ACK beyond what was sent or going back fails.
        """
        layer, stream, _, owner = layerPair(window=100000)

        @implementer(IPushProducer)
        class P:
            paused = 0
            resumed = 0

            def pauseProducing(self) -> None:
                P.paused += 1

            def resumeProducing(self) -> None:
                P.resumed += 1

            def stopProducing(self) -> None:
                pass

        layer.registerProducer(P(), True)
        for _ in range(4):
            layer.write(b"x" * 30000)
        self.assertEqual((P.paused, P.resumed), (1, 0))
        self.assertEqual(layer.buffered, 120000)
        layer.dataReceived(b"\x01" + (50000).to_bytes(8, "big"))
        self.assertEqual((P.paused, P.resumed), (1, 1))
        self.assertEqual(layer.buffered, 70000)
        layer.dataReceived(b"\x01" + (40000).to_bytes(8, "big"))
        self.assertEqual(len(owner.failed), 1)
        self.assertIn("before what was acknowledged", owner.failed[0])

    def test_resumeRetransmitsTheRest(self) -> None:
        """
        On a new path the origin sends nothing before RESUME, then exactly
        the bytes after the destination's position.
        """
        layer, old, _, owner = layerPair()
        data = pattern(100000)
        for i in range(0, len(data), 30000):
            layer.write(data[i : i + 30000])
        layer.detach()
        self.assertTrue(old.aborted)
        layer.write(b"during")
        new = FakeStream()
        layer.attach(new, awaitingResume=True)  # type: ignore[arg-type]
        self.assertEqual(new.written, [])
        layer.dataReceived(b"\x02" + (45678).to_bytes(8, "big"))
        self.assertEqual(owner.resumedCount, 1)
        receiver, _, got, _ = layerPair()
        receiver.dataReceived(b"".join(new.written))
        self.assertEqual(b"".join(got), data[45678:] + b"during")

    def test_framesBeforeResumeRefused(self) -> None:
        for frame in (b"\x00\x00\x00\x00\x01x", b"\x01" + bytes(8)):
            layer, old, _, owner = layerPair()
            layer.detach()
            layer.attach(FakeStream(), awaitingResume=True)  # type: ignore[arg-type]
            layer.dataReceived(frame)
            self.assertEqual(len(owner.failed), 1)


class OrderTests(SynchronousTestCase):
    def test_disjointFirstFailedLast(self) -> None:
        failed = ["a", "r1", "r3", "b"]
        routes = [
            ["a", "r1", "r3", "b"],
            ["a", "r1", "r4", "b"],
            ["a", "r2", "r3", "b"],
            ["a", "r5", "b"],
            ["a", "b"],
        ]
        self.assertEqual(
            orderAlternatives(routes, failed),
            [["a", "r5", "b"], ["a", "r1", "r4", "b"], ["a", "r2", "r3", "b"], failed],
        )


class SwitchDiagramTests(SynchronousTestCase):
    """
    The machine of a switching session is its diagram in
    docs/state-machines.md exactly.
    """

    def test_diagram(self) -> None:
        factory = _buildSwitchMachine()
        table = transitionTable(factory)
        drawn, ignored = docDiagram(initialState(factory))
        actual = {t for t in table if t[3] != IGNORED}
        self.assertEqual((sorted(drawn - actual), sorted(actual - drawn)), ([], []))
        actualIgnored = {(old, i) for old, i, new, out in table if out == IGNORED}
        self.assertEqual(
            (sorted(ignored - actualIgnored), sorted(actualIgnored - ignored)), ([], [])
        )
        self.assertGreater(len(drawn), 8)


class FallbackTests(SwitchHarness):
    def test_relayWithoutPathSwitch(self) -> None:
        """
        A relay that cannot verify a BIND with the path-switch fields (it
        does not know them) refuses it bad-signature; the origin opens the
        session again without path switch.
        """
        verifier = self.r1.relay.verifier
        check = verifier.check

        def oldCheck(req: SessionOpen, now: float) -> Any:
            if req.path:
                return "bad-signature", "the BIND's signature does not verify"
            return check(req, now)

        verifier.check = oldCheck  # type: ignore[method-assign]
        source = Source(b"")
        self.open(source)
        self.assertIsNone(source.transport.switch)
        source.transport.write(b"hello")
        self.settle()
        self.assertEqual(self.plugin.built[-1].count, 5)
        source.transport.loseConnection()
        self.settle(1)


class EmptyDeliveryTests(SynchronousTestCase):
    def test_headerAloneDeliversNothing(self) -> None:
        """
        A DATA header that ends a read delivers nothing yet (an empty write
        into the TLS layer's memory BIO fails); the payload follows.
        """
        receiver, _, got, owner = layerPair()
        receiver.dataReceived(b"\x00\x00\x00\x00\x03")
        self.assertEqual(got, [])
        receiver.dataReceived(b"abc")
        self.assertEqual(got, [b"abc"])
        self.assertEqual(owner.failed, [])


class DestinationResetTests(SwitchHarness):
    def test_destinationStreamReset(self) -> None:
        """
        The destination's own end of the stream is reset (its relay tells
        the origin link-failure): the destination holds, the origin
        re-binds, the data carries on.
        """
        self.routes.routes = [self.path(self.r1)]
        data = pattern(4 * MiB)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.pumpUntil(lambda: sink.count >= MiB)
        (far,) = self.b.routedSessions.sessions.values()
        far.layer._reading.abortConnection()
        self.settle(1)
        self.pumpUntil(lambda: sink.count >= len(data))
        self.settle(1)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertEqual(far.switch.switches, 1)
        self.assertIsNone(source.lost)
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()


class LyingRelayTests(SwitchHarness):
    def test_falseAckEndsSessionCleanly(self) -> None:
        """
        A relay on the path that forges an ACK for bytes never sent (ACKs
        are not authenticated) ends the session with protocol-error at the
        origin; nothing is freed early, nothing is left behind.
        """
        relay = self.r1.relay
        plain = relay.forwarder
        lie = [False]

        def forwarder(entry: Any, toSide: int) -> Any:
            write = plain(entry, toSide)
            if toSide != 0:
                return write

            def lying(data: bytes) -> None:
                if lie[0]:
                    lie[0] = False
                    write(b"\x01" + (10**12).to_bytes(8, "big"))
                write(data)

            return lying

        relay.forwarder = forwarder  # type: ignore[method-assign]
        self.plugin.reply = b"y" * 100000
        source = Source(b"")
        self.open(source)
        far = self.plugin.built[-1]
        lie[0] = True
        far.start()
        self.settle(1)
        self.assertEqual(source.lost.value.reason, "protocol-error")
        self.assertIn("path switch: ACK", source.lost.value.detail)
        self.settle(1)
        self.assertIsNotNone(far.lost)
        self.assertNothingLeft()
