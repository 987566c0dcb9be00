"""
Calls between in-memory nodes, two hops apart through a relay: results,
errors with their codes, callbacks, timeouts, cancellation, pipelining and
the limits.
"""

from __future__ import annotations

from appnpy_rpc import Caller, RPCClient, RPCError, Service, exported
from appnpy_rpc.examples import Calculator
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from appnpy.testing import resultOf
from tests.rpc.helpers import Line


class CallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.line = Line()

    def test_callAcrossARelay(self) -> None:
        """
        A calls rpc:calc on C through B, by resource name, with results of
        every plain type including a record (an attrs class) as a map.
        """
        calc = self.line.connect("rpc:calc")
        self.assertEqual(calc.connection.peerNodeID, self.line.c.nodeID)
        self.assertEqual(self.line.result(calc.call("add", 2, 40)), 42)
        d = calc.call("stats", [1, 2.5])
        self.line.net.flush()
        self.assertEqual(resultOf(d), {"count": 2, "mean": 1.75})
        d = calc.call("add", a=1, b=2)
        self.line.net.flush()
        self.assertEqual(resultOf(d), 3)

    def test_serviceOfferedBySeveralNodes(self) -> None:
        """
        With rpc:calc on B and C, A connects to a neighbour's (B).
        """
        self.line.plugins[1].expose(Calculator())
        self.line.net.flush(advance=5)
        calc = self.line.connect("rpc:calc")
        self.assertEqual(calc.connection.peerNodeID, self.line.b.nodeID)

    def test_serviceOnlyHere(self) -> None:
        d = self.line.plugins[2].client().connect("rpc:slow")
        e = self.line.failure(d)
        self.assertEqual(e.code, "unknown-service")
        self.assertIn("only by this node", e.message)

    def test_oneShotCall(self) -> None:
        """
        RPCClient(node).call connects, calls and closes.
        """
        client = RPCClient(self.line.a)
        self.assertEqual(self.line.result(client.call("rpc:calc", "sub", 5, 3)), 2)
        self.line.net.flush()
        self.assertEqual(self.line.plugins[2].sessions, set())

    def test_signaturesDescribed(self) -> None:
        """
        connect answers the service's signatures, as describe sent them.
        """
        calc = self.line.connect("calc")
        self.assertEqual(calc.methods["add"].format(), "add(a: int, b: int) -> int")
        self.assertEqual(
            calc.methods["stats"].format(),
            "stats(values: list[float]) -> Stats{count: int, mean: float}",
        )
        self.assertEqual(calc.methods["add"].doc, "The sum of a and b.")

    def test_unknownService(self) -> None:
        proto = self.line.result(self.line.plugins[0].client().open(self.line.c.nodeID))
        e = self.line.failure(proto.describe("nope"))
        self.assertEqual(e.code, "unknown-service")
        e = self.line.failure(proto.callRemote("nope", "x", [], {}))
        self.assertEqual(e.code, "unknown-service")

    def test_unknownMethod(self) -> None:
        """
        A method not in the signature is refused before sending; one that is
        not exported is refused by the callee with unknown-method.
        """
        faulty = self.line.connect("rpc:faulty")
        self.assertNotIn("hidden", faulty.methods)
        self.assertEqual(self.line.failure(faulty.call("hidden")).code, "unknown-method")
        for name in ("hidden", "__init__", "answer", "_protocol"):
            e = self.line.failure(faulty.connection.callRemote("faulty", name, [], {}))
            self.assertEqual(e.code, "unknown-method", name)

    def test_badArgumentsRefusedBeforeSending(self) -> None:
        """
        The caller checks the arguments against the signature: nothing is
        sent for a wrong type, count, name, or data CBOR cannot carry.
        """
        calc = self.line.connect("rpc:calc")
        served = dict(self.line.plugins[2].stats.served)
        for args, kwargs, says in [
            ((1, "2"), {}, "b: expected int, got str"),
            ((1,), {}, "missing b"),
            ((1, 2, 3), {}, "takes 2 arguments"),
            ((1,), {"c": 2}, "no parameter 'c'"),
            ((1,), {"a": 2}, "given twice"),
            ((True, 1), {}, "expected int, got bool"),
            ((2**64, 1), {}, "add: a: integer out of the 64-bit range"),
            ((1, 2**64), {}, "add: b: integer out of the 64-bit range"),
            (({1, 2}, 1), {}, "add: a: expected int, got set"),
            ((object(), 1), {}, "add: a: expected int, got object"),
            ((1,), {"b": [2**64]}, "add: b: expected int, got list"),
        ]:
            d = calc.call("add", *args, **kwargs)
            e = self.line.failure(d)
            self.assertEqual(e.code, "bad-arguments", args)
            self.assertIn(says, e.message)
        self.assertEqual(self.line.plugins[2].stats.served, served)

    def test_badArgumentsCheckedByTheCallee(self) -> None:
        """
        A caller that skips the check (no signature) is refused by the
        callee with bad-arguments.
        """
        calc = self.line.connect("rpc:calc")
        proto = calc.connection
        e = self.line.failure(proto.callRemote("calc", "add", [1, "2"], {}))
        self.assertEqual((e.code, e.message), ("bad-arguments", "add: b: expected int, got str"))
        e = self.line.failure(proto.callRemote("calc", "stats", [[1, "x"]], {}))
        self.assertEqual(e.code, "bad-arguments")
        self.assertIn("values[1]", e.message)
        self.assertEqual(self.line.plugins[2].stats.served[("calc", "bad-arguments")], 2)

    def test_handlerRaisesNoTracebackLeaks(self) -> None:
        """
        A handler's exception reaches the caller as remote-error with the
        method and exception type only: no text, no traceback.
        """
        faulty = self.line.connect("rpc:faulty")
        for method, args in (("boom", ()), ("later", (3,))):
            e = self.line.failure(faulty.call(method, *args))
            self.assertEqual(e.code, "remote-error")
            self.assertNotIn("secret", e.message)
            self.assertNotIn("hunter2", e.message)
            self.assertNotIn("Traceback", e.message)
            self.assertNotIn(".py", e.message)
        self.assertEqual(e.message, "faulty.later failed (KeyError)")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_applicationErrorCode(self) -> None:
        faulty = self.line.connect("rpc:faulty")
        e = self.line.failure(faulty.call("custom"))
        self.assertEqual((e.code, e.message), ("out-of-stock", "no more widgets"))
        calc = self.line.connect("rpc:calc")
        self.assertEqual(self.line.failure(calc.call("div", 1, 0)).code, "division-by-zero")

    def test_badResult(self) -> None:
        """
        A handler answering something its signature does not declare, or
        that is not plain data, is answered bad-result.
        """
        faulty = self.line.connect("rpc:faulty")
        self.assertEqual(self.line.failure(faulty.call("lies")).code, "bad-result")
        self.assertEqual(self.line.failure(faulty.call("unplain")).code, "bad-result")

    def test_resultCheckedByTheCaller(self) -> None:
        """
        The caller checks the result against the signature it was given.
        """
        calc = self.line.connect("rpc:calc")
        # A signature that says add answers text: the real int is refused.
        from appnpy_rpc.service import MethodSpec

        spec = calc.methods["add"]
        calc.methods["add"] = MethodSpec(spec.name, spec.params, "str")
        e = self.line.failure(calc.call("add", 1, 2))
        self.assertEqual(e.code, "bad-result")


class AuthorizationTests(SynchronousTestCase):
    def test_authorize(self) -> None:
        """
        A service's authorize decides by the caller's authenticated node
        ID: a refused call is answered not-authorized and never runs.
        """
        line = Line()
        ran = []

        class Private(Service):
            name = "private"

            def authorize(self, peerNodeID: str, method: str) -> bool:
                return peerNodeID == line.b.nodeID and method != "never"

            @exported
            def hello(self) -> str:
                ran.append("hello")
                return "hi"

            @exported
            def never(self) -> str:
                ran.append("never")
                return "no"

        line.plugins[2].expose(Private())
        line.net.flush(advance=5)
        fromA = line.connect("rpc:private")
        e = line.failure(fromA.call("hello"))
        self.assertEqual(e.code, "not-authorized")
        fromB = line.result(line.plugins[1].client().connect("rpc:private"))
        self.assertEqual(line.result(fromB.call("hello")), "hi")
        self.assertEqual(line.failure(fromB.call("never")).code, "not-authorized")
        self.assertEqual(ran, ["hello"])


class CallbackTests(SynchronousTestCase):
    def test_kvWatchCallsTheClientBack(self) -> None:
        """
        The kv example calls its watcher back over the same session, from
        C to A through B.
        """
        line = Line()
        seen = []

        class Watcher(Service):
            name = "kv-watcher"

            @exported
            def changed(self, key: str, value: str | None) -> None:
                seen.append((key, value))

        kv = line.connect("rpc:kv", expose=[Watcher()])
        line.result(kv.call("watch", "colour"))
        line.result(kv.call("set", "colour", "blue"))
        line.result(kv.call("set", "size", "L"))
        line.result(kv.call("delete", "colour"))
        line.net.flush()
        self.assertEqual(seen, [("colour", "blue"), ("colour", None)])
        self.assertEqual(line.result(kv.call("keys")), ["size"])
        # The watcher's session ends: the store forgets it.
        kv.close()
        line.net.flush()
        other = line.connect("rpc:kv")
        line.result(other.call("set", "colour", "red"))
        line.net.flush()
        self.assertEqual(line.kv.watchers, {})

    def test_bothSidesCallAtOnce(self) -> None:
        """
        Both ends call each other at the same moment with the same ids (each
        counts from 0): the id spaces are separate, every answer reaches its
        own caller.
        """
        line = Line()
        calcOnC = line.connectC("calc")
        proto = calcOnC.connection
        (served,) = [p for p in line.plugins[2].sessions if p.peerNodeID == line.a.nodeID]
        served.local.clear()
        line.plugins[0].expose(Calculator())
        fromA = [calcOnC.call("add", i, 100) for i in range(20)]
        fromC = [served.call("calc", "add", i, 1000) for i in range(20)]
        line.net.flush()
        self.assertEqual([resultOf(d) for d in fromA], [i + 100 for i in range(20)])
        self.assertEqual([resultOf(d) for d in fromC], [i + 1000 for i in range(20)])
        self.assertEqual((proto.inFlight(), served.inFlight()), (0, 0))

    def test_serverCallsTheClientsNodeServices(self) -> None:
        """
        On a session from the plugin's client, the peer may call this
        node's own services too (A offers bounce).
        """
        line = Line()
        bounce = line.connectC("bounce")
        # A.bounce(3) -> C -> A -> C: the innermost sees depth 4.
        self.assertEqual(line.result(bounce.call("bounce", 3)), 4)


class DepthTests(SynchronousTestCase):
    def test_depthLimit(self) -> None:
        """
        A chain A -> C -> A -> ... stops with depth-exceeded at the limit,
        and the error travels back up the chain.
        """
        line = Line(maxDepth=5)
        bounce = line.connectC("bounce")
        self.assertEqual(line.result(bounce.call("bounce", 4)), 5)
        e = line.failure(bounce.call("bounce", 5))
        self.assertEqual(e.code, "depth-exceeded")
        for p in line.plugins:
            self.assertEqual(p.counter.inFlight, {})

    def test_callerCarriesTheDepthLater(self) -> None:
        """
        A Caller kept and used later (from a timer, outside the handler)
        still calls back with its call's depth plus one.
        """
        line = Line()
        kept = []
        depths = []

        class Later(Service):
            name = "later"

            @exported
            def remember(self, caller: Caller) -> None:
                kept.append(caller)

        class Probe(Service):
            name = "probe"

            @exported
            def depth(self, caller: Caller) -> int:
                depths.append(caller.depth)
                return caller.depth

        line.plugins[2].expose(Later())
        line.net.flush(advance=5)
        later = line.connect("rpc:later", expose=[Probe()])
        line.result(later.call("remember"))
        line.net.clock.callLater(1, lambda: kept[0].call("probe", "depth"))
        line.net.flush(advance=2)
        self.assertEqual(depths, [2])

    def test_depthCarriedAcrossSessions(self) -> None:
        """
        A call made by a handler over another session (its own client)
        carries the depth too.
        """
        line = Line(maxDepth=3)
        client = line.plugins[2].client()

        class Relay(Service):
            name = "relay"

            @exported
            async def relay(self, n: int) -> int:
                remote = await client.connect("rpc:relay-a")
                try:
                    result: int = await remote.call("relay", n)
                    return result
                finally:
                    remote.close()

        class RelayA(Service):
            name = "relay-a"

            @exported
            async def relay(self, n: int) -> int:
                remote = await line.plugins[0].client().connect("rpc:relay")
                try:
                    result: int = await remote.call("relay", n)
                    return result
                finally:
                    remote.close()

        line.plugins[2].expose(Relay())
        line.plugins[0].expose(RelayA())
        line.net.flush(advance=5)
        relay = line.connect("rpc:relay")
        e = line.failure(relay.call("relay", 1))
        line.net.flush()
        self.assertEqual(e.code, "depth-exceeded")


class TimeoutAndCancelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.line = Line()
        self.slow = self.line.connect("rpc:slow")
        self.start = self.line.net.clock.seconds()

    def test_timeout(self) -> None:
        """
        A call with no answer fails with timeout after its timeout (the
        clock moves), and the callee's handler is cancelled.
        """
        d = self.slow.withTimeout(5).call("wait", "t")
        self.line.net.flush(advance=4.9)
        self.assertNoResult(d)
        self.line.net.flush(advance=0.2)
        self.assertEqual(self.line.failure(d).code, "timeout")
        self.assertEqual(self.line.slow.cancelled, ["t"])
        self.assertEqual(self.line.plugins[2].counter.inFlight, {})

    def test_mixedTimeouts(self) -> None:
        """
        Calls with different timeouts on one session each time out at their
        own deadline, whatever order they were made in; answered ones never.
        """
        ds = {t: self.slow.withTimeout(t).call("wait", f"t{t}") for t in (10, 2, 5, 7)}
        self.line.net.flush()
        self.line.slow.answer("t7")
        for now, expired in (
            (1.9, []),
            (2.2, [2]),
            (5.2, [2, 5]),
            (9.8, [2, 5]),
            (10.3, [2, 5, 10]),
        ):
            self.line.net.flush(advance=now - self.line.net.clock.seconds() + self.start)
            done = sorted(t for t, d in ds.items() if t != 7 and d.called)
            self.assertEqual(done, expired, now)
        self.assertEqual(resultOf(ds[7]), "t7")
        for t in (2, 5, 10):
            self.assertEqual(self.line.failure(ds[t]).code, "timeout")

    def test_defaultTimeout(self) -> None:
        d = self.slow.call("wait", "t")
        self.line.net.flush(advance=29)
        self.assertNoResult(d)
        self.line.net.flush(advance=2)
        self.assertEqual(self.line.failure(d).code, "timeout")

    def test_calleeEnforcesItsOwnTimeout(self) -> None:
        """
        The callee cancels a handler that overruns its max-timeout even if
        the caller would wait longer, and answers timeout.
        """
        self.line.plugins[2].limits.maxTimeout = 2
        d = self.slow.withTimeout(100).call("wait", "t")
        self.line.net.flush(advance=2.1)
        self.assertEqual(self.line.failure(d).code, "timeout")
        self.assertEqual(self.line.slow.cancelled, ["t"])

    def test_cancelReachesTheCallee(self) -> None:
        """
        Cancelling the Deferred fails it with cancelled at once and cancels
        the remote handler's Deferred.
        """
        d = self.slow.call("wait", "c")
        self.line.net.flush()
        self.assertIn("c", self.line.slow.waiting)
        d.cancel()
        self.assertEqual(self.line.failure(d).code, "cancelled")
        self.line.net.flush()
        self.assertEqual(self.line.slow.cancelled, ["c"])
        self.assertEqual(self.line.plugins[2].counter.inFlight, {})
        # The session still works.
        d = self.slow.call("wait", "next")
        self.line.net.flush()
        self.line.slow.answer("next")
        self.line.net.flush()
        self.assertEqual(resultOf(d), "next")

    def test_cancelNotCancelledError(self) -> None:
        d = self.slow.call("wait", "c")
        d.cancel()
        e = self.line.failure(d)
        self.assertIsInstance(e, RPCError)
        self.assertNotIsInstance(e, CancelledError)

    def test_sessionClosedFailsPendingCalls(self) -> None:
        d1 = self.slow.call("wait", "x")
        d2 = self.slow.call("wait", "y")
        self.line.net.flush()
        self.slow.close()
        self.line.net.flush()
        for d in (d1, d2):
            self.assertEqual(self.line.failure(d).code, "session-closed")
        self.assertEqual(sorted(self.line.slow.cancelled), ["x", "y"])
        self.assertEqual(self.line.failure(self.slow.call("wait", "z")).code, "session-closed")

    def test_relayLostFailsPendingCalls(self) -> None:
        """
        With every link cut, the routed session looks for another path for
        the path-switch timeout (30 s), then ends: a pending call (with a
        longer timeout of its own) fails with session-closed.
        """
        d = self.slow.withTimeout(120).call("wait", "x")
        self.line.net.flush()
        for link in self.line.net.links:
            link.cut()
        for _ in range(31):
            self.line.net.flush(advance=1)
        self.assertEqual(self.line.failure(d).code, "session-closed")


class InFlightTests(SynchronousTestCase):
    def test_manyInFlightAnsweredOutOfOrder(self) -> None:
        """
        200 calls in flight on one session, answered in reverse order, each
        reach their own Deferred.
        """
        line = Line()
        slow = line.connect("rpc:slow")
        ds = [slow.call("wait", f"t{i}") for i in range(200)]
        line.net.flush()
        self.assertEqual(len(line.slow.waiting), 200)
        for i in reversed(range(200)):
            line.slow.answer(f"t{i}", f"answer {i}")
        line.net.flush()
        self.assertEqual([resultOf(d) for d in ds], [f"answer {i}" for i in range(200)])

    def test_deadlinesStayBounded(self) -> None:
        """
        Thousands of calls answered in time leave no per-call timer and a
        bounded deadline heap behind.
        """
        line = Line()
        calc = line.connect("rpc:calc")
        proto = calc.connection
        before = len(line.net.clock.getDelayedCalls())
        for i in range(3000):
            d = calc.call("add", i, 1)
            line.net.flush()
            self.assertEqual(resultOf(d), i + 1)
        self.assertLessEqual(len(proto._deadlines), 4 * proto.inFlight() + 65)
        self.assertLessEqual(len(line.net.clock.getDelayedCalls()), before + 1)

    def test_perPeerLimit(self) -> None:
        """
        Over max-calls-in-flight from one peer node, across its sessions,
        calls are refused with too-many-calls; answered ones free room.
        """
        line = Line(maxInFlight=10)
        one = line.connect("rpc:slow")
        two = line.connect("rpc:slow")
        ds = [one.call("wait", f"a{i}") for i in range(6)] + [
            two.call("wait", f"b{i}") for i in range(6)
        ]
        line.net.flush()
        self.assertEqual(len(line.slow.waiting), 10)
        self.assertEqual([line.failure(d).code for d in ds[-2:]], ["too-many-calls"] * 2)
        line.slow.answer("a0")
        line.net.flush()
        d = two.call("wait", "again")
        line.net.flush()
        self.assertIn("again", line.slow.waiting)
        self.assertEqual(resultOf(ds[0]), "a0")
        # Another peer is not affected by A's use.
        b = line.result(line.plugins[1].client().connect("rpc:slow"))
        db = b.call("wait", "from-b")
        line.net.flush()
        self.assertIn("from-b", line.slow.waiting)
        del d, db
