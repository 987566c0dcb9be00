"""
RPC calls per second: appnpy rpc vs AMP over TLS vs Foolscap callRemote.

Each side calls C{add(a, b)} on two small integers and gets the sum back,
first one call at a time (sequential), then with 100 calls in flight
(pipelined: a new call starts as each answer arrives).  Two processes on
loopback TCP for all three: this one calls; a child (this script with
C{--serve}) runs an appnpy node offering the service, an AMP-over-TLS
server (the same mutual TLS 1.3 context the links use) and a Foolscap Tub.
The connections are set up and warmed before the clock starts; runs
alternate appn, AMP, Foolscap, appn, AMP, Foolscap...  The same driver
code drives all three (each is a function returning a Deferred).

The sequential runs also measure the floor: a bare 21-byte round trip on
an APPN echo session (no RPC at all), which bounds what any protocol over
an APPN session can do one call at a time.  With C{APPN_RPC_CPU=1} it
first prints each side's CPU microseconds per sequential call, caller and
callee, for appn, the echo floor, AMP and Foolscap.

Foolscap is a benchmark-only dependency:  python3 -m pip install foolscap
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.protocols import amp  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

from appnpy.link.identity import generateIdentity  # noqa: E402
from appnpy.node import buildNode  # noqa: E402
from appnpy.ops.config import NodeConfig  # noqa: E402

try:
    from foolscap.api import Referenceable, Tub
except ImportError:  # pragma: no cover - said at startup
    Referenceable = object
    Tub = None

from appnpy_echo import Echo, SimplePlugin  # noqa: E402
from appnpy_rpc import RPCClient, RPCPlugin, Service, exported  # noqa: E402

IN_FLIGHT = 100
PAYLOAD = b"\x5a" * 21  # the size of an add(20, 22) CALL frame


class EchoCaller(Protocol):
    """
    The floor: one raw write and its echo on an APPN echo session, as a
    "call" returning a Deferred (one at a time).
    """

    def __init__(self, info: Any = None) -> None:
        self.waiting: Deferred[None] | None = None
        self.got = 0

    def call(self) -> Deferred[None]:
        self.waiting = Deferred()
        self.transport.write(PAYLOAD)  # type: ignore[union-attr]
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(PAYLOAD):
            self.got -= len(PAYLOAD)
            d, self.waiting = self.waiting, None
            assert d is not None
            d.callback(None)


class Bench(Service):
    name = "bench"

    @exported
    def add(self, a: int, b: int) -> int:
        return a + b


class AddCommand(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class AMPAdd(amp.AMP):
    @AddCommand.responder
    def add(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}


class FoolscapAdd(Referenceable):  # type: ignore[misc,valid-type]
    def remote_add(self, a: int, b: int) -> int:
        return a + b


def needFoolscap() -> None:
    if Tub is None:
        sys.exit("this benchmark compares with Foolscap: python3 -m pip install foolscap")


# -- the serving process ---------------------------------------------------------


class _Stdin(LineReceiver):
    delimiter = b"\n"

    def __init__(self, done: Deferred[None]) -> None:
        self.done = done

    def lineReceived(self, line: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)


async def serve(reactor: Any) -> None:
    plugin = RPCPlugin()
    plugin.limits.maxInFlight = 1000
    node = buildNode(
        reactor,
        NodeConfig(dataDir=None, listen=(C.LISTEN,), api=None),
        generateIdentity(),
        [plugin, SimplePlugin("echo", Echo)],
        muxConfig=C.muxConfig(),
        services=False,
        managePeers=False,
        admission=False,
    )
    plugin.expose(Bench())
    node.startService()
    while not node.ports:
        d: Deferred[None] = Deferred()
        reactor.callLater(0, d.callback, None)
        await d
    ampPort = await C.listenTLS(reactor, C.tlsContext(), Factory.forProtocol(AMPAdd))
    tub = Tub()
    tub.startService()
    listener = tub.listenOn("tcp:0:interface=127.0.0.1")
    tub.setLocation(f"127.0.0.1:{listener.getPortnum()}")
    furl = tub.registerReference(FoolscapAdd())
    done: Deferred[None] = Deferred()
    stdin = _Stdin(done)
    StandardIO(stdin, reactor=reactor)
    ready = {
        "appn": node.advertisedAddresses()[0],
        "amp": ampPort.getHost().port,
        "furl": furl,
        "pid": os.getpid(),
    }
    stdin.transport.write(json.dumps(ready).encode() + b"\n")
    await done
    await tub.stopService()


# -- the calling process -----------------------------------------------------------


def sequential(reactor: Any, call: Callable[[], Deferred[Any]], count: int) -> Deferred[float]:
    """
    C{count} calls, each started when the previous one answered; the
    calls per second.
    """
    done: Deferred[float] = Deferred()
    start = reactor.seconds()
    left = [count]

    def answered(result: Any) -> None:
        left[0] -= 1
        if left[0]:
            call().addCallbacks(answered, done.errback)
        else:
            done.callback(count / (reactor.seconds() - start))

    call().addCallbacks(answered, done.errback)
    return done


def pipelined(reactor: Any, call: Callable[[], Deferred[Any]], count: int) -> Deferred[float]:
    """
    C{count} calls, L{IN_FLIGHT} at a time; the calls per second.
    """
    done: Deferred[float] = Deferred()
    start = reactor.seconds()
    state = {"started": 0, "answered": 0}

    def answered(result: Any) -> None:
        state["answered"] += 1
        if state["started"] < count:
            state["started"] += 1
            call().addCallbacks(answered, done.errback)
        elif state["answered"] == count:
            done.callback(count / (reactor.seconds() - start))

    for _ in range(min(IN_FLIGHT, count)):
        state["started"] += 1
        call().addCallbacks(answered, done.errback)
    return done


async def main(reactor: Any, args: Any) -> None:
    needFoolscap()
    count = C.pick(args, 20000, 5000, 200)
    runs = args.runs or C.pick(args, 5, 3, 1)
    peer = C.PeerProcess()
    reactor.spawnProcess(
        peer,
        sys.executable,
        [sys.executable, os.path.abspath(__file__), "--serve"]
        + (["--profile", args.profile + ".peer"] if args.profile else []),
        env=os.environ,
        childFDs={0: "w", 1: "r", 2: 2},
    )
    ready = await peer.ready
    try:
        node = buildNode(
            reactor,
            NodeConfig(dataDir=None, listen=(), api=None),
            generateIdentity(),
            [],
            muxConfig=C.muxConfig(),
            services=False,
            managePeers=False,
            admission=False,
        )
        node.startService()
        cp = await node.connect(ready["appn"])
        client = RPCClient(node)
        proto = await client.open(cp.peerNodeID)
        bench = await proto.service("bench")
        echo = await node.openSession(cp.peerNodeID, "echo", EchoCaller)
        ampClient = await C.connectTLS(
            reactor, C.tlsContext(), ready["amp"], Factory.forProtocol(amp.AMP)
        )
        tub = Tub()
        tub.startService()
        rref = await tub.getReference(ready["furl"])

        calls: dict[str, Callable[[], Deferred[Any]]] = {
            "appn": lambda: bench.call("add", 20, 22),
            "amp": lambda: ampClient.callRemote(AddCommand, a=20, b=22),
            "foolscap": lambda: rref.callRemote("add", 20, 22),
        }
        # Check each answers right, and warm them up.
        assert await calls["appn"]() == 42
        assert (await calls["amp"]())["total"] == 42
        assert await calls["foolscap"]() == 42
        for call in calls.values():
            await sequential(reactor, call, 200)
            await pipelined(reactor, call, 500)
        await sequential(reactor, echo.call, 200)
        results: dict[str, dict[str, list[float]]] = {
            mode: {name: [] for name in calls} for mode in ("seq", "100")
        }
        floor: list[float] = []
        if os.environ.get("APPN_RPC_CPU"):
            pid = ready["pid"]
            for name, call in (
                ("appn", calls["appn"]),
                ("echo", echo.call),
                ("amp", calls["amp"]),
                ("foolscap", calls["foolscap"]),
            ):
                c0, s0 = C.cpuSeconds(), C.cpuSeconds(pid)
                rate = await sequential(reactor, call, count)
                c1, s1 = C.cpuSeconds(), C.cpuSeconds(pid)
                C.log(
                    f"{name}: {rate:.0f}/s, CPU us/call caller {(c1 - c0) / count * 1e6:.1f} callee {(s1 - s0) / count * 1e6:.1f}"
                )
        for i in range(runs):
            for mode, drive in (("seq", sequential), ("100", pipelined)):
                for name, call in calls.items():
                    results[mode][name].append(await drive(reactor, call, count))
                if mode == "seq":
                    floor.append(await sequential(reactor, echo.call, count))
                C.log(
                    f"run {i + 1}/{runs} {mode:>3}: "
                    + ", ".join(f"{n} {results[mode][n][-1]:.0f}/s" for n in calls)
                    + (f", echo-session floor {floor[-1]:.0f}/s" if mode == "seq" else "")
                )
        proto.close()
        echo.transport.loseConnection()
        ampClient.transport.loseConnection()
        await tub.stopService()
        await cp.close()
    finally:
        peer.transport.closeStdin()
        await peer.ended
    med = {mode: {n: C.median(v) for n, v in r.items()} for mode, r in results.items()}

    def paired(mode: str, other: str) -> float:
        # The median of each run's own ratio: the two sides of a pair ran
        # back to back, so a drift of the machine between runs cancels out.
        r = results[mode]
        return round(C.median([x / y for x, y in zip(r["appn"], r[other], strict=True)]), 3)

    C.emit(
        {
            "benchmark": "rpc_calls",
            "calls": count,
            "runs": runs,
            "layout": "two processes, loopback TCP",
            "appn_seq_per_s": round(med["seq"]["appn"]),
            "amp_seq_per_s": round(med["seq"]["amp"]),
            "foolscap_seq_per_s": round(med["seq"]["foolscap"]),
            "ratio_amp_seq": round(med["seq"]["appn"] / med["seq"]["amp"], 3),
            "ratio_foolscap_seq": round(med["seq"]["appn"] / med["seq"]["foolscap"], 3),
            "echo_floor_seq_per_s": round(C.median(floor)),
            "ratio_appn_to_floor_seq": round(med["seq"]["appn"] / C.median(floor), 3),
            "appn_100_per_s": round(med["100"]["appn"]),
            "amp_100_per_s": round(med["100"]["amp"]),
            "foolscap_100_per_s": round(med["100"]["foolscap"]),
            "ratio_amp_100": round(med["100"]["appn"] / med["100"]["amp"], 3),
            "ratio_foolscap_100": round(med["100"]["appn"] / med["100"]["foolscap"], 3),
            "paired_ratio_amp_seq": paired("seq", "amp"),
            "paired_ratio_foolscap_seq": paired("seq", "foolscap"),
            "paired_ratio_amp_100": paired("100", "amp"),
            "paired_ratio_foolscap_100": paired("100", "foolscap"),
            "goal_amp": 0.8,
            "goal_foolscap": 2.0,
            "runs_per_s": {
                mode: {n: [round(x) for x in v] for n, v in r.items()}
                for mode, r in results.items()
            },
        }
    )


if __name__ == "__main__":
    if "--serve" in sys.argv:
        sys.argv.remove("--serve")
        args = C.parseArgs(__doc__.splitlines()[1])
        needFoolscap()
        C.runMain(serve, args)
    else:
        args = C.parseArgs(__doc__.splitlines()[1])
        C.runMain(lambda reactor: main(reactor, args), args)
