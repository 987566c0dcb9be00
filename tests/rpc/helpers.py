"""
Shared pieces of the RPC tests: a line of in-memory nodes with the rpc
plugin, and small services to call.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from appnpy_rpc import Caller, RPCError, RPCPlugin, Service, exported
from appnpy_rpc.examples import Calculator, KeyValue
from twisted.internet.defer import Deferred

from appnpy.testing import MemoryNetwork, resultOf


class Slow(Service):
    """
    Calls that answer only when the test says so; records cancellations.
    """

    name = "slow"

    def __init__(self) -> None:
        self.waiting: dict[str, Deferred[str]] = {}
        self.cancelled: list[str] = []

    @exported
    def wait(self, tag: str) -> str:
        def cancel(d: Deferred[str]) -> None:
            self.cancelled.append(tag)

        d: Deferred[str] = Deferred(cancel)
        self.waiting[tag] = d
        return d  # type: ignore[return-value]

    def answer(self, tag: str, value: Any = None) -> None:
        self.waiting.pop(tag).callback(tag if value is None else value)


class Faulty(Service):
    name = "faulty"

    @exported
    def boom(self) -> int:
        raise ValueError("secret path /etc/shadow and a password hunter2")

    @exported
    def custom(self) -> int:
        raise RPCError("out-of-stock", "no more widgets")

    @exported
    def lies(self) -> int:
        return "not an int"  # type: ignore[return-value]

    @exported
    def unplain(self) -> dict[str, int]:
        return {"a": object()}  # type: ignore[dict-item]

    @exported
    async def later(self, n: int) -> int:
        raise KeyError(n)

    def hidden(self) -> int:
        return 42


class Bounce(Service):
    """
    bounce(n) calls the caller's bounce(n - 1): a chain n calls deep.
    """

    name = "bounce"

    @exported
    async def bounce(self, n: int, caller: Caller) -> int:
        if n == 0:
            return caller.depth
        result: int = await caller.call("bounce", "bounce", n - 1)
        return result


class Line:
    """
    Nodes A - B - C in a line, each with an rpc plugin; C offers calc, kv,
    slow, faulty and bounce; A offers bounce.
    """

    def __init__(self, sessionLimit: int = 64, **limits: Any) -> None:
        self.net = MemoryNetwork()
        self.plugins = [RPCPlugin(), RPCPlugin(), RPCPlugin()]
        for p in self.plugins:
            p.sessionLimit = sessionLimit
            for k, v in limits.items():
                setattr(p.limits, k, v)
        self.a = self.net.addNode("LAB.A", plugins=[self.plugins[0]])
        self.b = self.net.addNode("LAB.B", plugins=[self.plugins[1]])
        self.c = self.net.addNode("LAB.C", plugins=[self.plugins[2]])
        self.slow = Slow()
        self.kv = KeyValue()
        for s in (Calculator(), self.kv, self.slow, Faulty(), Bounce()):
            self.plugins[2].expose(s)
        self.plugins[0].expose(Bounce())
        self.net.link(self.a, self.b)
        self.net.link(self.b, self.c)
        self.net.flush(advance=5)

    def run(self, coroutine: Coroutine[Any, Any, Any], advance: float = 0) -> Deferred[Any]:
        d = Deferred.fromCoroutine(coroutine)
        self.net.flush()
        if advance:
            self.net.flush(advance=advance)
        return d

    def result(self, work: Coroutine[Any, Any, Any] | Deferred[Any], advance: float = 0) -> Any:
        """
        What a coroutine or Deferred gives once the network is quiet.
        """
        if isinstance(work, Deferred):
            self.net.flush()
            if advance:
                self.net.flush(advance=advance)
            return resultOf(work)
        return resultOf(self.run(work, advance))

    def failure(self, d: Deferred[Any]) -> RPCError:
        self.net.flush()
        try:
            resultOf(d)
        except RPCError as e:
            return e
        raise AssertionError(f"{d!r} did not fail with RPCError")

    def connect(self, service: str, expose: Any = ()) -> Any:
        return self.result(self.plugins[0].client().connect(service, expose))

    def connectC(self, service: str, expose: Any = ()) -> Any:
        """
        A's session to C by node ID, and C's service on it.
        """
        proto = self.result(self.plugins[0].client().open(self.c.nodeID, expose))
        return self.result(proto.service(service))
