"""
Path switch of adjacent sessions (docs/protocol.md 15.9), in memory: a
64 MiB stream on a session between neighbours keeps going, complete and in
order, over A-B-D when the link A-D is cut mid-transfer, both ways, and
again when the routed path fails in turn; no other route ends it with
no-route; re-BINDs that are forged, replayed, or a hostile node's own are
refused and the session is untouched; the end-to-end TLS of the new path
must authenticate the origin; a session that did not ask for path switch
ends with link-failure as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from appnpy.cp.messages import SessionOpen, SessionRefuse
from appnpy.net.relay import installRelay
from appnpy.node import Node
from appnpy.session.adjacent import PATH_SWITCH_CAPABILITY, Session
from appnpy.session.carrier import EndToEndCarrier
from appnpy.session.routed import installRoutedSessions
from appnpy.session.switchable import SwitchableSession
from appnpy.testing import MemoryLink, MemoryNetwork, resultOf
from tests.test_path_switch import (
    MiB,
    RebindProbe,
    Sink,
    SinkPlugin,
    Source,
    StaticRoutes,
    pattern,
    startBothWays,
)
from tests.test_path_switch_hostile import endedOffPathIsReported


class Tap:
    """
    What an impostor's end-to-end TLS would read.
    """

    def __init__(self, got: list[bytes]) -> None:
        self.dataReceived = got.append

    def connectionLost(self, reason: Any) -> None:
        pass


class AdjacentHarness(SynchronousTestCase):
    """
    A origin, D destination, neighbours over the link A-D; relays B and C:
    other paths A-B-D and A-C-D.
    """

    relays = ("b", "c")

    def setUp(self) -> None:
        self.net = MemoryNetwork(services=False)
        self.plugin = SinkPlugin()
        self.a = self.addNode("LAB.A")
        self.d = self.addNode("LAB.D", plugins=[self.plugin])
        self.links: dict[str, MemoryLink] = {"ad": self.net.connect(self.a, self.d)}
        for name in self.relays:
            relay = self.addNode(f"LAB.{name.upper()}")
            setattr(self, name, relay)
            self.links["a" + name] = self.net.connect(self.a, relay)
            self.links[name + "d"] = self.net.connect(relay, self.d)
        self.routes = StaticRoutes(self.a)
        self.a.routedSessions.routes = self.routes
        self.routes.routes = [self.via(getattr(self, r)) for r in self.relays]
        self.addCleanup(self.checkClean)

    def addNode(self, name: str, **kw: Any) -> Node:
        node = self.net.addNode(name, **kw)
        node.relay = installRelay(node)
        node.routedSessions = installRoutedSessions(node)
        return node

    def via(self, *relays: Node) -> list[str]:
        return [self.a.nodeID, *(r.nodeID for r in relays), self.d.nodeID]

    def checkClean(self) -> None:
        self.net.stop()
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def open(self, protocol: Any) -> Any:
        d = self.a.links[self.d.nodeID].openSession("sink", lambda info: protocol)
        self.net.flush()
        return resultOf(d)

    def far(self) -> Any:
        (session,) = [s for s in self.d.sessions() if s.plugin == "sink"] or [
            *self.d.routedSessions.adjacent.sessions.values()
        ]
        return session

    def pumpUntil(self, condition: Any, limit: int = 1000000) -> None:
        for _ in range(limit):
            if condition():
                return
            self.net.clock.advance(0)
            for link in self.net.links:
                link.pump.pump(advanceClock=False)
        raise AssertionError("the condition never came true")

    def settle(self, seconds: float = 0.0) -> None:
        self.net.flush()
        while seconds > 0:
            step = min(1.0, seconds)
            self.net.flush(step)
            seconds -= step

    def assertNothingLeft(self) -> None:
        for node in self.net.nodes:
            self.assertEqual(node.relay.table, {}, node.name)
            self.assertEqual(node.relay.bufferReserved, 0, node.name)
            self.assertEqual(node.routedSessions.sessions, {}, node.name)
            self.assertEqual(node.routedSessions.adjacent.sessions, {}, node.name)
            self.assertEqual(node.routedSessions.adjacent.away, {}, node.name)
            self.assertEqual(node.sessions(), [], node.name)


class AdjacentSwitchTests(AdjacentHarness):
    def test_switchable(self) -> None:
        """
        Between two nodes that end routed sessions, an adjacent session
        asks for path switch: its neighbour announced the capability.
        """
        cp = self.a.links[self.d.nodeID]
        self.assertIn(PATH_SWITCH_CAPABILITY, cp.peerHello.capabilities)
        source = Source(b"")
        self.open(source)
        self.assertIsInstance(source.transport, SwitchableSession)
        self.assertIsInstance(self.far(), SwitchableSession)
        self.assertEqual(source.transport.route, self.via())
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_linkCutMidTransfer(self) -> None:
        """
        The link A-D is cut mid-transfer of 64 MiB: every byte arrives
        once, in order, over A-B-D, and neither plugin sees its session end.
        """
        size = 64 * MiB
        data = pattern(size)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.pumpUntil(lambda: sink.count >= size // 3)
        self.links["ad"].cut()
        self.settle()
        self.pumpUntil(lambda: sink.count >= size or source.lost is not None)
        self.settle(1)
        self.assertIsNone(source.lost)
        self.assertIsNone(sink.lost)
        self.assertEqual(sink.count, size)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        session = source.transport
        self.assertEqual(session.route, self.via(self.b))
        self.assertEqual(session.switch.switches, 1)
        self.assertEqual(self.far().route, self.via(self.b))
        self.assertIn((self.a.nodeID, session.sessionID), self.b.relay.table)
        # Retransmission kept at most the window: all is acknowledged now.
        self.assertEqual(session.layer.buffered, 0)
        session.loseConnection()
        self.settle(1)
        self.assertEqual(sink.lost.value.reason, "normal")
        self.assertNothingLeft()

    def test_linkCutMidTransferTowardOrigin(self) -> None:
        """
        The same the other way: the destination sends 64 MiB to the origin
        and the link is cut mid-transfer.
        """
        size = 64 * MiB
        data = pattern(size)
        self.plugin.reply = data
        sink = Sink()
        self.open(sink)
        far = self.plugin.built[-1]
        far.start()
        self.pumpUntil(lambda: sink.count >= size // 2)
        self.links["ad"].cut()
        self.settle()
        self.pumpUntil(lambda: sink.count >= size or far.lost is not None)
        self.settle(1)
        self.assertIsNone(far.lost)
        self.assertIsNone(sink.lost)
        self.assertEqual(sink.count, size)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertEqual(far.transport.route, self.via(self.b))
        far.transport.loseConnection()
        self.settle(1)
        self.assertEqual(sink.lost.value.reason, "normal")
        self.assertNothingLeft()

    def test_rebindBeforeDestinationNoticed(self) -> None:
        """
        The origin's side of the link fails while the destination's still
        looks fine (the link only went silent): the destination takes the
        origin's authenticated re-BIND all the same and leaves its old
        stream; the session, now off its link, still counts against the
        plugin's limit with A there.
        """
        source = Source(b"")
        self.open(source)
        sink = self.plugin.built[-1]
        source.transport.write(b"before")
        self.settle()
        self.links["ad"].silence()
        source.transport.layer._reading.abortConnection()
        self.settle()
        far = self.far()
        self.assertEqual(far.route, self.via(self.b))
        self.assertEqual(far.switch.switches, 1)
        source.transport.write(b" after")
        self.settle()
        self.assertEqual(sink.count, len(b"before after"))
        self.assertEqual(self.d.routedSessions.adjacent.away, {(self.a.nodeID, "sink"): 1})
        source.transport.loseConnection()
        self.settle(1)
        self.assertEqual(sink.lost.value.reason, "normal")
        self.links["ad"].cut()
        self.settle()
        self.assertNothingLeft()

    def test_stopWhileSwitching(self) -> None:
        """
        A node that stops ends its adjacent sessions waiting for a path
        with shutting-down, at once (origin and destination alike).
        """
        self.routes.routes = []
        source = Source(b"")
        self.open(source)
        sink = self.plugin.built[-1]
        self.links["ad"].cut()
        self.settle()
        self.assertEqual(source.transport.switch.state, "switching")
        self.assertEqual(self.far().switch.state, "holding")
        self.a.stopService()
        self.d.stopService()
        self.net.flush()
        self.assertEqual(source.lost.value.reason, "shutting-down")
        self.assertEqual(sink.lost.value.reason, "shutting-down")
        self.assertNothingLeft()

    def test_bothDirectionsThenRoutedPathFails(self) -> None:
        """
        Data flows both ways; the link A-D is cut, then the relay B's link
        to D: the session, routed by then, switches again (to A-C-D), each
        path with its own end-to-end TLS, and both directions arrive
        complete and in order.
        """
        size = 8 * MiB
        source, far, up, down = startBothWays(self, size, size)
        session = source.transport
        for i, cut in enumerate(("ad", "bd")):
            self.pumpUntil(
                lambda i=i: (
                    far.sink.count >= (i + 1) * size // 3
                    and source.sink.count >= (i + 1) * size // 3
                )
            )
            self.links[cut].cut()
            self.settle()
        self.pumpUntil(lambda: far.sink.count >= size and source.sink.count >= size)
        self.settle(1)
        self.assertEqual(session.switch.switches, 2)
        self.assertEqual(session.route, self.via(self.c))
        for sink, data in ((far.sink, up), (source.sink, down)):
            self.assertEqual(sink.count, size)
            self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        self.assertIsNone(source.lost)
        self.assertIsNone(far.lost)
        farSession = far.transport
        self.assertEqual(farSession.switch.switches, 2)
        self.assertEqual(farSession.switch.path, session.switch.path)
        self.assertEqual((session.layer.buffered, farSession.layer.buffered), (0, 0))
        # The far end closes over the routed path.
        farSession.loseConnection()
        self.settle(1)
        self.assertEqual(source.lost.value.reason, "normal")
        self.assertNothingLeft()

    def test_noRoute(self) -> None:
        """
        With no other path the origin keeps asking for routes for the switch
        timeout, then the session ends with no-route at both ends (the
        destination holds it a BIND timeout longer).
        """
        self.routes.routes = []
        source = Source(b"x" * MiB)
        self.open(source)
        sink = self.plugin.built[-1]
        source.start()
        self.settle()
        self.assertEqual(sink.count, MiB)
        self.links["ad"].cut()
        self.settle()
        self.assertEqual(source.transport.switch.state, "switching")
        self.assertEqual(self.far().switch.state, "holding")
        timeout = self.a.routedSessions.switchTimeout
        self.settle(timeout - 1)
        self.assertIsNone(source.lost)
        self.assertGreater(self.routes.asked, 5)
        self.settle(2)
        self.assertEqual(source.lost.value.reason, "no-route")
        self.assertIsNone(sink.lost)
        self.settle(self.a.routedSessions.bindTimeout)
        self.assertEqual(sink.lost.value.reason, "no-route")
        self.assertNothingLeft()

    def test_pausedWithinWindow(self) -> None:
        """
        While the session has no path the producer writing into it is
        paused, its bytes kept within the window, and resumed after.
        """
        data = pattern(16 * MiB)
        source = Source(data)
        self.open(source)
        sink = self.plugin.built[-1]
        routes, self.routes.routes = self.routes.routes, []
        source.start()
        self.pumpUntil(lambda: sink.count >= MiB)
        self.links["ad"].cut()
        self.settle(0.5)
        self.assertTrue(source.paused)
        layer = source.transport.layer
        self.assertLessEqual(layer.buffered, layer.window + 64 * 1024)
        self.routes.routes = routes
        self.settle(1)
        self.pumpUntil(lambda: sink.count >= len(data))
        self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
        source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_noPathRequested(self) -> None:
        """
        An origin with path switch off opens an ordinary adjacent session:
        cutting its link ends it with link-failure at both ends, as before.
        """
        self.a.routedSessions.pathSwitch = False
        source = Source(b"")
        self.open(source)
        sink = self.plugin.built[-1]
        self.assertNotIsInstance(source.transport, SwitchableSession)
        self.assertIsInstance(source.transport, Session)
        self.links["ad"].cut()
        self.settle(1)
        self.assertEqual(source.lost.value.reason, "link-failure")
        self.assertEqual(sink.lost.value.reason, "link-failure")
        self.assertEqual(self.routes.asked, 0)
        self.assertNothingLeft()

    def test_neighbourWithoutPathSwitch(self) -> None:
        """
        A neighbour that does not end switchable sessions (no routed-session
        ends, so no capability) gets an ordinary adjacent BIND.
        """
        e = self.net.addNode("LAB.E", plugins=[SinkPlugin()])
        self.net.connect(self.a, e)
        cp = self.a.links[e.nodeID]
        self.assertNotIn(PATH_SWITCH_CAPABILITY, cp.peerHello.capabilities)
        source = Source(b"")
        d = cp.openSession("sink", lambda info: source)
        self.net.flush()
        resultOf(d)
        self.assertNotIsInstance(source.transport, SwitchableSession)
        source.transport.loseConnection()
        self.settle(1)

    def test_heldSessionsCount(self) -> None:
        """
        Sessions the destination holds for a neighbour whose link failed
        still count against the plugin's limit with it: re-linking and
        opening more cannot make the destination hold more.
        """
        self.plugin.sessionLimit = 2
        self.routes.routes = []
        sources = [Source(b""), Source(b"")]
        for source in sources:
            self.open(source)
        self.links["ad"].cut()
        self.settle(self.a.routedSessions.switchTimeout + 1)
        # The origin gave up; the destination still holds both.
        self.assertEqual([s.lost.value.reason for s in sources], ["no-route"] * 2)
        self.assertEqual(len(self.d.routedSessions.adjacent.sessions), 2)
        self.links["ad2"] = self.net.connect(self.a, self.d)
        d = self.a.links[self.d.nodeID].openSession("sink", lambda info: Source(b""))
        self.net.flush()
        self.assertEqual(self.failureResultOf(d).value.reason, "limit-reached")
        self.settle(self.a.routedSessions.bindTimeout)
        self.assertEqual(self.d.routedSessions.adjacent.sessions, {})
        late = Source(b"")
        self.open(late)
        late.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()


class HostileRebindTests(AdjacentHarness, RebindProbe):
    """
    Re-BINDs of an adjacent session that are not its origin's own, fresh
    and newer are refused, and the session is untouched.  H is a hostile
    node linked to D and to relay B, with a valid key of its own.
    """

    relays = ("b",)

    def setUp(self) -> None:
        super().setUp()
        self.h = self.addNode("LAB.H")
        self.net.connect(self.h, self.d)
        self.net.connect(self.h, self.b)
        self.captured = self.recordBinds(self.b)
        self.source = Source(b"")
        self.open(self.source)
        self.session = self.far()

    def rebind(self, signer: Any, **fields: Any) -> SessionOpen:
        return self.signRebind(signer, self.session, self.a, self.d, self.h, **fields)

    def assertUntouched(self, route: list[str] | None = None) -> None:
        far = self.session
        self.assertIs(self.d.routedSessions.adjacent.sessions.get(far.sessionID), far)
        self.assertEqual(far.route, route or self.via())
        self.assertEqual(far.switch.state, "up")
        sink = self.plugin.built[-1]
        before = sink.count
        self.source.transport.write(b"still here")
        self.settle()
        self.assertEqual(sink.count - before, len(b"still here"))
        self.assertIsNone(sink.lost)
        self.assertIsNone(self.source.lost)

    def test_ownKeyAsItself(self) -> None:
        """
        H signs a re-BIND of the session's ID with its own valid key, as
        itself: D knows no session of H's by that ID.
        """
        req = self.rebind(
            self.h.identity,
            origin=self.h.nodeID,
            route=[self.h.nodeID, self.b.nodeID, self.d.nodeID],
        )
        answer = self.send(self.h, self.b, req)
        self.assertIsInstance(answer, SessionRefuse)
        self.assertEqual(
            (answer.reason, answer.detail), ("protocol-error", "no such session to switch")
        )
        self.assertUntouched()

    def test_forged(self) -> None:
        """
        H claims to be A: with its own key, or with A's key and its own
        signature.
        """
        for publicKey in (self.h.identity.publicKeyBytes, self.a.identity.publicKeyBytes):
            req = attrs.evolve(self.rebind(self.h.identity), public_key=publicKey)
            answer = self.send(self.h, self.d, req)
            self.assertIsInstance(answer, SessionRefuse)
            self.assertEqual(answer.reason, "bad-signature")
        self.assertUntouched()

    def test_directRebindRefused(self) -> None:
        """
        A re-BIND straight over a link (no relay) is not a path switch.
        """
        req = self.rebind(self.a.identity, route=[])
        answer = self.send(self.a, self.d, attrs.evolve(req, public_key=b"", signature=b""))
        self.assertEqual(answer.reason, "protocol-error")
        self.assertUntouched()

    def test_replayed(self) -> None:
        """
        A's genuine re-BIND, seen by the relay on its path, replayed to D:
        refused as a path that is not newer (a re-BIND takes no place in
        D's replay cache); the session stays on its new path.
        """
        self.links["ad"].cut()
        self.settle()
        (genuine,) = [r for r in self.captured if r.path > 1]
        self.assertEqual(self.session.route, self.via(self.b))
        self.d.routedSessions.verifier.seen.clear()
        answer = self.send(self.b, self.d, genuine)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertIn("not newer", answer.detail)
        self.assertUntouched(self.via(self.b))
        self.source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_tlsPeerMustBeOrigin(self) -> None:
        """
        H holds a re-BIND the origin really signed (as a relay that caught
        it on its way would) and runs the new path's end-to-end TLS itself:
        D accepts the re-BIND, but its TLS does not authenticate the origin,
        so D refuses the path; the session keeps its path and no byte of it
        reaches H.
        """
        req = self.rebind(self.a.identity)
        # A sent that re-BIND (path 9): its next one takes a larger number.
        self.source.transport.switch.nextPath = req.path + 1
        stream, answers = self.stream(self.h, self.d, req)
        self.assertEqual([type(a).__name__ for a in answers], ["SessionAccept"])
        got: list[bytes] = []
        authenticated: list[Any] = []
        carrier = EndToEndCarrier(
            self.h.routedSessions,
            stream,
            True,
            self.d.nodeID,
            authenticated.append,
            lambda c, why: None,
        )
        carrier.protocol = Tap(got)
        self.settle(1)
        self.assertTrue(carrier.ended)
        self.assertEqual(got, [])
        self.assertIsNone(self.session._incoming)
        self.assertEqual(self.session.switch.path, 1)
        # Its replay needs no place in D's replay cache to be refused.
        self.d.routedSessions.verifier.seen.clear()
        answer = self.send(self.h, self.d, req)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertIn("not newer", answer.detail)
        self.assertUntouched()
        # The real origin can still move the session later.
        self.links["ad"].cut()
        self.settle()
        self.assertEqual(self.session.route, self.via(self.b))
        self.assertUntouched(self.via(self.b))
        self.source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()

    def test_tlsPeerMustBeOriginWhileHeld(self) -> None:
        """
        The same while D holds the session (its link to A is gone): the
        impostor's path is refused and the session stays held, then resumes
        when the origin's own re-BIND comes.
        """
        routes, self.routes.routes = self.routes.routes, []
        self.links["ad"].cut()
        self.settle()
        self.assertEqual(self.session.switch.state, "holding")
        req = self.rebind(self.a.identity)
        self.source.transport.switch.nextPath = req.path + 1
        stream, answers = self.stream(self.h, self.d, req)
        self.assertEqual([type(a).__name__ for a in answers], ["SessionAccept"])
        carrier = EndToEndCarrier(
            self.h.routedSessions, stream, True, self.d.nodeID, lambda c: None, lambda c, w: None
        )
        self.settle(1)
        self.assertTrue(carrier.ended)
        self.assertEqual(self.session.switch.state, "holding")
        self.routes.routes = routes
        self.settle(2)
        self.assertUntouched(self.via(self.b))
        self.source.transport.loseConnection()
        self.settle(1)
        self.assertNothingLeft()


class AccountingTests(AdjacentHarness):
    def test_endedWhileSwitchingIsReported(self) -> None:
        """
        An adjacent session that ends while it has no path (its link cut,
        no other route; both plugins abort) is reported ended once at each
        end, as every session is: the metrics, the event stream and the
        log line of its end come from that report.
        """

        def openSession() -> tuple[Any, Any]:
            source = Source(b"")
            self.open(source)
            return source, self.far()

        endedOffPathIsReported(self, (self.a, self.d), openSession, self.links["ad"].cut)
        self.assertNothingLeft()


class CloseRacesLinkFailureTests(AdjacentHarness):
    """
    An UNBIND travels on the control stream, ahead of data still waiting
    for stream window: a link that fails after it may still owe the far
    end the last bytes, which a switch delivers.
    """

    def closeThenCut(self, size: int) -> tuple[Source, Any]:
        source = Source(b"")
        self.open(source)
        sink = self.plugin.built[-1]
        source.transport.write(pattern(size))
        source.transport.loseConnection()
        far = self.far()
        self.pumpUntil(lambda: far._peerReason is not None)
        self.assertLess(sink.count, size)
        self.links["ad"].cut()
        for _ in range(120):
            if sink.lost is not None:
                break
            self.settle(1)
        self.settle(1)
        return source, sink

    def test_closeThenCutStillDelivers(self) -> None:
        """
        The origin writes 3 MiB and closes; the link is cut once the
        destination has the UNBIND but not all the bytes: the session
        switches to A-B-D, every byte arrives, and only then does the
        destination's plugin hear a normal end.
        """
        size = 3 * MiB
        source, sink = self.closeThenCut(size)
        self.assertEqual(sink.count, size)
        self.assertEqual(sink.hash.digest(), hashlib.sha256(pattern(size)).digest())
        self.assertEqual(sink.lost.value.reason, "normal")
        self.assertIsNotNone(source.lost)
        self.assertNothingLeft()

    def test_closeThenCutNoRouteIsNotNormal(self) -> None:
        """
        The same with no other route: the bytes cannot arrive, and the
        destination's plugin is told so (no-route), not a normal end.
        """
        self.routes.routes = []
        size = 3 * MiB
        source, sink = self.closeThenCut(size)
        self.assertLess(sink.count, size)
        self.assertNotEqual(sink.lost.value.reason, "normal")
        self.assertNothingLeft()
