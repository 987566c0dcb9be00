"""
Chat message latency across two intermediate nodes, and room fan-out to 100
members, against the same bytes on plain sessions: in memory.

All nodes run in this one process on L{appnpy.testing.MemoryNetwork}: real
TLS 1.3 end to end, the real multiplexer, relays and routed sessions, but
in-memory connections instead of sockets and every node's work serialized on
one CPU.  The figures are therefore the processing cost of a message along
its whole path (signing, every TLS layer, every relay, verification), the
part chat adds on top of the transport; they leave out socket and scheduling
delays of real processes.

  latency   a line A-B-C-D; A sends D a direct message (signed, verified)
            through B and C; the time from the send call to D's delivery.
            Baseline: a length-prefixed frame of the same size on a plain
            routed session A-B-C-D (no signature, no checks).
  fanout    one host with 100 members (end nodes attached to it); the time
            from the host's send to the last member's delivery.  Baseline:
            the same frame written to 100 plain sessions.

Rounds alternate chat and baseline (A B A B); medians (and p99 of the
latency samples) over all rounds; one JSON line at the end.

With C{--processes}, the latency is also measured between real processes:
four C{twist appnnode} processes in a line A-B-C-D on loopback TCP (the
chat plugin must be installed, as the README's command does).  A sends D
direct messages through its management API, one at a time; the latency is
D's delivery time minus A's send time, both from the nodes' own chat events
(the same machine clock), so the API's HTTP does not count.  Baseline: half
the round trip of an echo session A-B-C-D (C{POST /api/v1/echo}).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "plugins", "echo"), os.path.join(ROOT, "plugins", "chat")]

import _common as C  # noqa: E402
from appnpy_chat import ChatPlugin  # noqa: E402
from appnpy_chat.service import ChatConfig  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.protocols.basic import Int32StringReceiver  # noqa: E402

from appnpy.api import ISessionInfo, ISessionPlugin, implementer  # noqa: E402
from appnpy.testing import MemoryNetwork, resultOf  # noqa: E402

TEXT = "x" * 100


class FrameSink(Int32StringReceiver):
    """
    The baseline's receiver: calls back on every frame.
    """

    def __init__(self, arrived: Callable[[], None]) -> None:
        self.arrived = arrived

    def stringReceived(self, data: bytes) -> None:
        self.arrived()


@implementer(ISessionPlugin)
class FramePlugin:
    name = "frames"
    version = "1"
    defaultCOS = "interactive"
    sessionLimit = 1000

    def __init__(self) -> None:
        self.arrived: Callable[[], None] = lambda: None

    def configure(self, section: dict[str, Any]) -> None:
        pass

    def resources(self) -> list[str]:
        return []

    def buildProtocol(self, session: ISessionInfo) -> FrameSink:
        return FrameSink(lambda: self.arrived())


def chatConfig() -> ChatConfig:
    # No rate limit in the way of a benchmark's sequential sends.
    return ChatConfig(rate=1e6, burst=1_000_000, maxMembers=1024)


def quiet(reactor: Any) -> None:
    C.quietLogging()


def delivered(plugin: ChatPlugin, node: Any, hook: Callable[[], None]) -> None:
    """
    Call C{hook} whenever C{node}'s chat delivers a message from a peer.
    """
    service = plugin.services[node.nodeID]
    add = service.events.add

    def spy(kind: str, **fields: Any) -> None:
        add(kind, **fields)
        if kind == "message" and fields["message"]["sender"] != node.nodeID:
            hook()

    service.events.add = spy  # type: ignore[method-assign]


# -- latency across two intermediate nodes -----------------------------------------


class Line:
    def __init__(self) -> None:
        self.net = MemoryNetwork()
        self.net.clock.advance(1_700_000_000)
        self.chats = [ChatPlugin(chatConfig()) for _ in range(4)]
        self.frames = [FramePlugin() for _ in range(4)]
        self.nodes = [
            self.net.addNode(f"LAB.{n}", plugins=[self.chats[i], self.frames[i]])
            for i, n in enumerate("ABCD")
        ]
        for a, b in zip(self.nodes, self.nodes[1:], strict=False):
            self.net.link(a, b)
        for _ in range(5):
            self.net.flush(advance=1)
        self.arrival = 0.0

        def arrived() -> None:
            self.arrival = time.perf_counter()

        delivered(self.chats[3], self.nodes[3], arrived)
        self.frames[3].arrived = arrived
        a = self.chats[0].services[self.nodes[0].nodeID]
        self.chatA = a
        # Open both sessions once; rounds measure messages, not session setup.
        d = Deferred.fromCoroutine(a.sayDirect(self.nodes[3].nodeID, "warm up"))
        self.net.flush()
        resultOf(d)
        self.raw: Any = None

        def keep(info: ISessionInfo) -> FrameSink:
            self.raw = FrameSink(lambda: None)
            return self.raw

        d2 = self.nodes[0].openSession(self.nodes[3].nodeID, "frames", keep)
        self.net.flush()
        resultOf(d2)
        self.frame = b"\x00" * len(a.sign("@" + self.nodes[3].nodeID, TEXT).toWire()["text"])

    def chatOnce(self) -> float:
        start = time.perf_counter()
        d = Deferred.fromCoroutine(self.chatA.sayDirect(self.nodes[3].nodeID, TEXT))
        self.net.flush()
        resultOf(d)
        return self.arrival - start

    def rawOnce(self) -> float:
        start = time.perf_counter()
        self.raw.sendString(self.frame)
        self.net.flush()
        return self.arrival - start


# -- fan-out to 100 members ---------------------------------------------------------


class Star:
    def __init__(self, members: int) -> None:
        self.net = MemoryNetwork()
        self.net.clock.advance(1_700_000_000)
        self.hostChat = ChatPlugin(chatConfig())
        self.hostFrames = FramePlugin()
        self.host = self.net.addNode("LAB.HOST", plugins=[self.hostChat, self.hostFrames])
        self.count = 0
        self.sessions: list[Any] = []
        chats = []

        def arrived() -> None:
            self.count += 1
            self.last = time.perf_counter()

        for i in range(members):
            chat, frames = ChatPlugin(chatConfig()), FramePlugin()
            frames.arrived = arrived
            node = self.net.addNode(f"LAB.M{i}", plugins=[chat, frames], role="end")
            self.net.connect(node, self.host, flush=False)
            chats.append((chat, node))
        self.net.flush(advance=1)
        service = self.hostChat.services[self.host.nodeID]
        d = service.join("r")
        for _ in range(60):  # until the directory says nobody has the room yet
            if d.called:
                break
            self.net.flush(advance=1)
        resultOf(d)
        for chat, node in chats:
            delivered(chat, node, arrived)
            chat.services[node.nodeID].join("r")
        for _ in range(3):
            self.net.flush(advance=1)
        assert len(service.rooms["r"].members) == members + 1, len(service.rooms["r"].members)
        self.service = service
        for _, node in chats:
            d = self.host.openSession(node.nodeID, "frames", lambda info: FrameSink(lambda: None))
            self.net.flush()
            self.sessions.append(resultOf(d))
        self.members = members
        self.frame = b"\x00" * 300

    def chatOnce(self) -> float:
        self.count = 0
        start = time.perf_counter()
        self.service.sayInRoom("r", TEXT)
        self.net.flush()
        assert self.count == self.members, self.count
        return self.last - start

    def rawOnce(self) -> float:
        self.count = 0
        start = time.perf_counter()
        for s in self.sessions:
            s.sendString(self.frame)
        self.net.flush()
        assert self.count == self.members, self.count
        return self.last - start


# -- real processes -------------------------------------------------------------------


class _Cleanups:
    """
    What the interop harness wants from a test case.
    """

    def __init__(self) -> None:
        self.cleanups: list[Callable[[], Any]] = []

    def addCleanup(self, f: Callable[[], Any]) -> None:
        self.cleanups.append(f)


class NodeAPI:
    """
    One node process's management API.
    """

    def __init__(self, reactor: Any, dataDir: str) -> None:
        import json

        from twisted.web.client import Agent, HTTPConnectionPool

        with open(os.path.join(dataDir, "api.json"), encoding="utf-8") as f:
            self.url = json.load(f)["url"].rstrip("/")
        with open(os.path.join(dataDir, "api-token"), encoding="ascii") as f:
            self.token = f.read().strip()
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor))

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import json

        from twisted.web.client import FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        producer = None
        if body is not None:
            import io

            producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
        response = await self.agent.request(
            method.encode(),
            f"{self.url}/api/v1/{path}".encode(),
            Headers(
                {
                    b"authorization": [f"Bearer {self.token}".encode()],
                    b"content-type": [b"application/json"],
                }
            ),
            producer,
        )
        answer = json.loads(await readBody(response))
        if response.code != 200:
            raise RuntimeError(f"{path}: {answer}")
        return answer


async def processLatency(reactor: Any, rounds: int, perRound: int) -> dict[str, list[float]]:
    from tests.interop.harness import NodeHarness
    from tests.interop.test_network import topology

    cleanups = _Cleanups()
    harness = NodeHarness(cleanups, reactor)
    # Sequential sends as fast as the answers come: above a sender's default
    # rate limit, which would drop them.
    config = os.path.join(harness.root, "chat.toml")
    with open(config, "w") as f:
        f.write("[plugin.chat]\nrate = 100000.0\nburst = 100000\n")

    def options(name: str) -> list[str]:
        return ["--name", name, "--config", config]

    try:
        a = await harness.startReady("a", maxPeers=1, extra=options("LAB.A"))
        b = await harness.startReady("b", peers=[a.hostPort()], maxPeers=1, extra=options("LAB.B"))
        c = await harness.startReady("c", peers=[b.hostPort()], maxPeers=1, extra=options("LAB.C"))
        d = harness.start("d", peers=[c.hostPort()], maxPeers=1, extra=options("LAB.D"))
        converged = [topology(a, 4, links=3), topology(d, 4, links=3)]
        await d.whenReady()
        for waiting in converged:
            await waiting
        apiA, apiD = NodeAPI(reactor, a.dataDir), NodeAPI(reactor, d.dataDir)
        await apiA.call("POST", "plugins/chat/send", {"target": d.nodeID, "text": "warm up"})
        seen = (await apiD.call("GET", f"plugins/chat/events?after={2**40}"))["last"]
        samples: dict[str, list[float]] = {"proc": [], "procraw": []}
        for r in range(rounds):
            sentAfter = (await apiA.call("GET", f"plugins/chat/events?after={2**40}"))["last"]
            delivered: dict[int, float] = {}
            for _ in range(perRound):
                sent = await apiA.call(
                    "POST", "plugins/chat/send", {"target": d.nodeID, "text": TEXT}
                )
                for _ in range(3):  # long polls of up to 10 s each
                    if sent["seq"] in delivered:
                        break
                    answer = await apiD.call("GET", f"plugins/chat/events?after={seen}&timeout=10")
                    for event in answer["events"]:
                        seen = event["id"]
                        if event["type"] == "message":
                            delivered[event["message"]["seq"]] = event["at"]
                if sent["seq"] not in delivered:
                    raise RuntimeError(f"message {sent['seq']} was not delivered to D")
            sentAt = {
                e["message"]["seq"]: e["at"]
                for e in (await apiA.call("GET", f"plugins/chat/events?after={sentAfter}"))[
                    "events"
                ]
                if e["type"] == "message"
            }
            xs = [delivered[seq] - at for seq, at in sentAt.items() if seq in delivered]
            samples["proc"] += xs
            echo = await apiA.call(
                "POST", "echo", {"node": d.nodeID, "count": perRound, "size": 300}
            )
            samples["procraw"] += [rtt / 2000 for rtt in echo["rtt_ms"]]
            C.log(
                f"processes round {r + 1}/{rounds}: chat {statistics.median(xs) * 1e3:.3f} ms, "
                f"echo one-way {statistics.median(samples['procraw'][-perRound:]) * 1e3:.3f} ms"
            )
        return samples
    finally:
        for f in cleanups.cleanups:
            await f()


def p99(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(samples: dict[str, list[float]], rounds: int, members: int, processes: bool) -> None:
    ms = {k: statistics.median(v) * 1e3 for k, v in samples.items() if v}
    p = {k: p99(v) * 1e3 for k, v in samples.items() if v}
    print(f"chat latency and fan-out; {rounds} alternated rounds")
    print(f"{'':44}{'median ms':>10}{'p99 ms':>9}{'baseline ms':>13}{'ratio':>7}")
    rows = [
        ("chat", "raw", "DM, 2 intermediate nodes (in memory)"),
        ("fan", "fanraw", f"room fan-out to {members} members (in memory)"),
    ]
    if processes:
        rows.insert(1, ("proc", "procraw", "DM, 2 intermediate nodes (processes)"))
    for kind, base, label in rows:
        print(f"{label:44}{ms[kind]:10.3f}{p[kind]:9.3f}{ms[base]:13.3f}{ms[kind] / ms[base]:7.2f}")
    print(
        "baselines: in memory, the same bytes on plain sessions (no signing or checks);"
        " processes, half an echo round trip on the same route"
    )
    result: dict[str, Any] = {
        "benchmark": "chat_latency",
        "mode": "in-memory+processes" if processes else "in-memory",
        "latency_median_ms": round(ms["chat"], 4),
        "latency_p99_ms": round(p["chat"], 4),
        "raw_median_ms": round(ms["raw"], 4),
        "latency_ratio": round(ms["chat"] / ms["raw"], 3),
        "members": members,
        "fanout_median_ms": round(ms["fan"], 4),
        "fanout_p99_ms": round(p["fan"], 4),
        "fanout_raw_median_ms": round(ms["fanraw"], 4),
        "fanout_ratio": round(ms["fan"] / ms["fanraw"], 3),
    }
    if processes:
        result.update(
            {
                "processes_latency_median_ms": round(ms["proc"], 4),
                "processes_latency_p99_ms": round(p["proc"], 4),
                "processes_echo_one_way_ms": round(ms["procraw"], 4),
                "processes_ratio": round(ms["proc"] / ms["procraw"], 3),
            }
        )
    C.emit(result)


def main() -> None:
    processes = "--processes" in sys.argv
    if processes:
        sys.argv.remove("--processes")
    args = C.parseArgs(__doc__ or "")
    C.quietLogging()
    rounds = args.runs or C.pick(args, 6, 4, 2)
    perRound = C.pick(args, 200, 60, 10)
    members = C.pick(args, 100, 100, 10)
    fanRuns = C.pick(args, 10, 5, 2)
    C.log(f"building the line A-B-C-D and a host with {members} members (in memory)")
    line = Line()
    star = Star(members)
    samples: dict[str, list[float]] = {k: [] for k in ("chat", "raw", "fan", "fanraw")}
    for r in range(rounds):
        medians = []
        for kind, once in (
            ("chat", line.chatOnce),
            ("raw", line.rawOnce),
            ("fan", star.chatOnce),
            ("fanraw", star.rawOnce),
        ):
            xs = [once() for _ in range(perRound if kind in ("chat", "raw") else fanRuns)]
            samples[kind] += xs
            medians.append(f"{kind} {statistics.median(xs) * 1e3:.3f} ms")
        C.log(f"round {r + 1}/{rounds}: " + ", ".join(medians))
    if not processes:
        report(samples, rounds, members, False)
        return

    from twisted.internet.task import react

    async def inProcesses(reactor: Any) -> None:
        samples.update(await processLatency(reactor, rounds, min(perRound, 100)))
        report(samples, rounds, members, True)

    react(lambda reactor: Deferred.fromCoroutine(inProcesses(reactor)))


if __name__ == "__main__":
    main()
