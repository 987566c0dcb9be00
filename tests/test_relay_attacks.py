"""
Relays and routed-session ends against hostile neighbours (issue 8): BINDs
that claim another origin, replayed BINDs, floods from made-up origins,
splices that never authenticate, the buffer budget, and a graceful relay
stop.  In-memory harness; the hostile nodes are in L{tests.hostile.relay}.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from appnpy.api import SessionRefused
from appnpy.cp.messages import SessionOpen, SessionStarted
from appnpy.link.identity import generateIdentity
from appnpy.link.yamux import MuxConfig
from appnpy.net.relay import installRelay
from appnpy.node import Node
from appnpy.session.bind import BIND_FRESHNESS, BindVerifier
from appnpy.session.routed import installRoutedSessions
from appnpy.testing import resultOf
from tests.hostile.relay import BindSender, CapturingRelay, makeBind
from tests.test_routed import RoutedHarness
from tests.test_sessions import RecordingPlugin


class AttackHarness(RoutedHarness):
    def nodes(self, *names: str, **kw: Any) -> list[Node]:
        """
        Network nodes with relays and routed ends (not linked).
        """
        made = []
        for name in names:
            node = self.net.addNode(f"LAB.{name}", **kw)
            node.relay = installRelay(node)
            node.routedSessions = installRoutedSessions(node)
            made.append(node)
        return made

    def reasons(self, answers: list[list[Any]]) -> set[str]:
        self.assertTrue(all(len(a) == 1 for a in answers))
        return {a[0].reason if a[0].typeName == "SessionRefuse" else a[0].typeName for a in answers}

    def openVia(self, route: list[Node], plugin: str = "rec") -> Any:
        return resultOf(self.open(route, plugin=plugin))


class ForgedOriginTests(AttackHarness):
    def test_claimsOfAnotherOriginNotCounted(self) -> None:
        """
        300 BINDs from a hostile neighbour that claim origin V (unsigned,
        signed by the neighbour's own key, or carrying V's key with a
        signature that is not V's) are all refused with bad-signature and
        count nothing against V: V's own session through the same relay
        works, and the destination's plugin built nothing for them.
        """
        plugin = RecordingPlugin(sessionLimit=1000)
        v, r, d, h = self.nodes("V", "R", "D", "H", plugins=[plugin])
        for a, b in ((v, r), (r, d), (h, r)):
            self.net.connect(a, b)
        route = [v.nodeID, h.nodeID, r.nodeID, d.nodeID]
        hostile = BindSender(self.net, h)
        answers = []
        now = self.net.clock.seconds
        for i in range(300):
            kind = i % 3
            if kind == 0:
                req = makeBind(route, None, now(), plugin="rec")
            elif kind == 1:
                req = makeBind(route, h.identity, now(), plugin="rec")
            else:
                req = makeBind(
                    route, h.identity, now(), plugin="rec", publicKey=v.identity.publicKeyBytes
                )
            answers.append(hostile.send(r, req, flush=False))
            if i % 50 == 49:
                # Within the neighbour's BIND rate: every one is checked.
                self.net.flush(advance=1.0)
        self.net.flush()
        self.assertEqual(self.reasons(answers), {"bad-signature"})
        self.assertEqual(r.relay.perOrigin, {})
        self.assertEqual(plugin.built, [])
        p = self.openVia([v, r, d])
        self.assertEqual(r.relay.perOrigin, {v.nodeID: 1})
        p.transport.write(b"still V")
        self.net.flush()
        self.assertEqual(bytes(plugin.built[0].received), b"still V")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty([v, r, d])

    def test_replayedBindRefused(self) -> None:
        """
        A relay on V's route keeps V's signed BIND and sends it again once
        the session has ended: refused as a replay; later, as stale.
        """
        plugin = RecordingPlugin()
        v, h, r, d = self.nodes("V", "H", "R", "D", plugins=[plugin])
        for a, b in ((v, h), (h, r), (r, d)):
            self.net.connect(a, b)
        capture = CapturingRelay(h)
        p = self.openVia([v, h, r, d])
        p.transport.loseConnection()
        self.net.flush()
        [bind] = capture.captured
        hostile = BindSender(self.net, h)
        [answer] = hostile.send(r, bind)
        self.assertEqual((answer.typeName, answer.reason), ("SessionRefuse", "protocol-error"))
        self.assertEqual(answer.detail, "replayed BIND")
        self.net.flush(advance=BIND_FRESHNESS * 2 + 1)
        [answer] = hostile.send(r, bind)
        self.assertEqual(answer.reason, "protocol-error")
        self.assertIn("timestamp", answer.detail)
        self.assertEqual(len(plugin.built), 1)
        self.assertEqual(hostile.held, [])
        self.assertEmpty([v, h, r, d])


class SessionIDTests(AttackHarness):
    def test_anotherOriginsSessionID(self) -> None:
        """
        H, which knows the ID of V's session through R, BINDs sessions of
        its own under it (from an origin it made up, and its own).  R keys its entries by origin and ID, so over
        other links that is another session, and V's is untouched; over a
        link V's session uses it is refused, since an UNBIND names a session
        by its ID alone and the two could not be told apart there.
        """
        plugin = RecordingPlugin()
        v, r, d, h, x = self.nodes("V", "R", "D", "H", "X", plugins=[plugin])
        for a, b in ((v, r), (r, d), (h, r), (r, x)):
            self.net.connect(a, b)
        p = self.openVia([v, r, d])
        sid = p.transport.sessionID
        hostile = BindSender(self.net, h)
        (sybil,) = hostile.sybils(1)
        now = self.net.clock.seconds()
        [answer] = hostile.send(
            r,
            makeBind([sybil.nodeID, h.nodeID, r.nodeID, d.nodeID], sybil, now, session_id=sid),
        )
        self.assertEqual(
            (answer.reason, answer.detail), ("protocol-error", "session ID in use on the link")
        )
        [answer] = hostile.send(
            r,
            makeBind([h.nodeID, r.nodeID, x.nodeID], h.identity, now, session_id=sid, plugin="rec"),
        )
        self.assertEqual(answer.typeName, "SessionAccept")
        self.assertEqual(set(r.relay.table), {(v.nodeID, sid), (h.nodeID, sid)})
        p.transport.write(b"still V")
        self.net.flush()
        self.assertEqual(bytes(plugin.built[0].received), b"still V")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEqual(set(r.relay.table), {(h.nodeID, sid)})
        for stream in hostile.held:
            stream.abortConnection()
        self.net.flush()
        self.assertEmpty([v, r, d, x])


class FloodTests(AttackHarness):
    def test_madeUpOriginsLeaveHonestOrigin(self) -> None:
        """
        A hostile neighbour floods a relay with validly signed BINDs from
        origins it makes up, and never runs TLS on what it gets: it fills
        only its own share of the relay (per previous hop), an honest
        origin's session still works, the destination's plugin is never
        asked for the flood's sessions, and 120 s later the flood's splices
        are gone at the relay and the destination.
        """
        plugin = RecordingPlugin(sessionLimit=1000)
        v, r, d, h = self.nodes("V", "R", "D", "H", plugins=[plugin])
        for a, b in ((v, r), (r, d), (h, r)):
            self.net.connect(a, b)
        relay = r.relay
        relay.maxSessions, relay.maxPerPreviousHop, relay.maxPerOrigin = 8, 4, 2
        hostile = BindSender(self.net, h)
        now = self.net.clock.seconds()
        answers = [
            hostile.send(
                r, makeBind([s.nodeID, h.nodeID, r.nodeID, d.nodeID], s, now, plugin="rec")
            )
            for s in hostile.sybils(6)
            for _ in range(2)
        ]
        self.assertEqual(self.reasons(answers), {"SessionAccept", "limit-reached"})
        self.assertEqual(len(hostile.held), 4)
        self.assertEqual(relay.sessionCount, 4)
        self.assertEqual(len(d.routedSessions.handshaking), 4)
        p = self.openVia([v, r, d])
        self.assertEqual(len(plugin.built), 1)
        self.assertEqual(d.routedSessions.sessions.keys(), {p.transport.sessionID})
        self.assertEqual(relay.table[v.nodeID, p.transport.sessionID].state, "spliced")
        self.net.flush(advance=120)
        self.assertEqual(relay.sessionCount, 1)
        self.assertEqual(d.routedSessions.handshaking, {})
        self.assertEqual(len(plugin.built), 1)
        p.transport.write(b"after the flood")
        self.net.flush()
        self.assertEqual(bytes(plugin.built[0].received), b"after the flood")
        p.transport.loseConnection()
        self.net.flush()
        self.assertEmpty([v, r, d])

    def test_unauthenticatedSpliceTornDown(self) -> None:
        """
        The relay tears down a splice whose destination has not confirmed
        the end-to-end TLS within its deadline, though the destination
        holds on (here it never answers the handshake): both ends are told
        why (timeout).  A SessionStarted from any neighbour but the
        session's next hop (the origin itself, a stranger) does not count.
        """
        plugin = RecordingPlugin()
        a, r, d, x = self.nodes("A", "R", "D", "X", plugins=[plugin])
        self.net.connect(a, r)
        self.net.connect(r, d)
        self.net.connect(x, r)
        d.handshakeTimeout = 1000
        hostile = BindSender(self.net, a)
        req = makeBind([a.nodeID, r.nodeID, d.nodeID], a.identity, 0, plugin="rec")
        [answer] = hostile.send(r, req)
        self.assertEqual(answer.typeName, "SessionAccept")
        for liar in (a, x):
            liar.links[r.nodeID].send(SessionStarted(session_id=req.session_id))
        self.net.flush()
        self.assertEqual(r.relay.table[a.nodeID, req.session_id].state, "starting")
        self.assertEqual(x.links[r.nodeID].isActive, True)
        self.net.flush(advance=r.relay.startTimeout + 1)
        self.assertEqual(r.relay.table, {})
        self.assertEqual(d.routedSessions.handshaking, {})
        self.assertEqual(plugin.built, [])
        self.net.flush(advance=60)
        self.assertEmpty([a, r, d, x])

    def test_bufferBudget(self) -> None:
        """
        Splices share one buffer budget: as it fills, new splices get
        smaller send buffers, then BINDs are refused (limit-reached); an
        ended session gives its share back.
        """
        a, r, d = self.nodes("A", "R", "D", plugins=[RecordingPlugin()])
        self.net.connect(a, r)
        self.net.connect(r, d)
        relay = r.relay
        fixed = 2 * (256 * 1024 + MuxConfig().maxFramePayload)
        relay.bufferBudget = 2 * (fixed + 2 * 1024 * 1024) + fixed + 2 * 100 * 1024
        opened = [self.openVia([a, r, d]) for _ in range(3)]
        marks = sorted(e.sendHighWater for e in relay.table.values())
        self.assertEqual(marks, [100 * 1024, 1024 * 1024, 1024 * 1024])
        f = self.failureResultOf(self.open([a, r, d]), SessionRefused)
        self.assertEqual(f.value.reason, "limit-reached")
        self.assertEqual(relay.bufferReserved, relay.bufferBudget)
        opened[0].transport.loseConnection()
        self.net.flush()
        opened[0] = self.openVia([a, r, d])
        for p in opened:
            p.transport.loseConnection()
        self.net.flush()
        self.assertEqual(relay.bufferReserved, 0)
        self.assertEmpty([a, r, d])


class StopTests(AttackHarness):
    def test_gracefulRelayStop(self) -> None:
        """
        A relay that stops gracefully gives both ends of the sessions it
        relays shutting-down, not link-failure (sessions that cannot switch
        paths; those that can switch: tests/test_path_switch.py).
        """
        plugin = RecordingPlugin()
        a, r, d = self.nodes("A", "R", "D", plugins=[plugin])
        a.routedSessions.pathSwitch = False
        self.net.connect(a, r)
        self.net.connect(r, d)
        p = self.openVia([a, r, d])
        r.stopService()
        self.net.flush(advance=60)
        self.assertReason(p.lost, "shutting-down")
        self.assertReason(plugin.built[0].lost, "shutting-down")


class VerifierTests(SynchronousTestCase):
    identity = generateIdentity(0)

    def bind(self, now: float) -> SessionOpen:
        other = generateIdentity(0).nodeID
        return makeBind([self.identity.nodeID, other, other[::-1]], self.identity, now)

    @settings(max_examples=60, deadline=None)
    @given(
        field=st.sampled_from(
            ["session_id", "destination", "plugin", "cos", "window", "route", "timestamp"]
        ),
        seed=st.integers(0, 2**31),
    )
    def test_anyChangeBreaksSignature(self, field: str, seed: int) -> None:
        """
        Changing any signed field of a routed BIND makes it refused.
        """
        req = self.bind(1000)
        values = {
            "session_id": f"{seed:032x}"[-32:],
            "destination": generateIdentity(0).nodeID,
            "plugin": f"p{seed % 1000}",
            "cos": f"c{seed % 1000}",
            "window": seed if seed != req.window else seed + 1,
            "route": list(reversed(req.route)),
            "timestamp": 1000 + seed % 100 + 1,
        }
        changed = attrs.evolve(req, **{field: values[field]})
        self.assertIsNotNone(BindVerifier().check(changed, 1000))
        self.assertIsNone(BindVerifier().check(req, 1000))

    def test_freshnessWindow(self) -> None:
        """
        A BIND is accepted within the freshness window either way, and
        refused outside it.
        """
        for skew, ok in ((0, True), (BIND_FRESHNESS, True), (-BIND_FRESHNESS, True)):
            self.assertEqual(BindVerifier().check(self.bind(1000 + skew), 1000) is None, ok)
        for skew in (BIND_FRESHNESS + 1, -BIND_FRESHNESS - 1):
            self.assertIsNotNone(BindVerifier().check(self.bind(1000 + skew), 1000))

    def test_replayCacheBounded(self) -> None:
        """
        The replay cache holds at most its bound: when full of live
        entries it refuses (never forgets a live one); expired ones go.
        """
        verifier = BindVerifier(maxEntries=3)
        for _ in range(3):
            self.assertIsNone(verifier.check(self.bind(1000), 1000))
        self.assertEqual(verifier.check(self.bind(1000), 1000)[0], "limit-reached")  # type: ignore[index]
        later = 1000 + 2 * BIND_FRESHNESS + 1
        self.assertIsNone(verifier.check(self.bind(later), later))
        self.assertEqual(len(verifier.seen), 1)
