"""
Shared pieces of the benchmarks: benchmark session plugins, the raw TLS and
AMP baselines, a push-producer source, the peer-process controller, and the
run/median/JSON helpers.

Both processes of a benchmark import this module, so the APPN side and the
baseline side run exactly the same source, sink and echo code.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from appnpy_echo import Echo, SimplePlugin
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import globalLogBeginner
from twisted.protocols import amp
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from appnpy.api import ISessionInfo, ISessionPlugin
from appnpy.link.budget import DEFAULT_NODE_RECEIVE_WINDOW, MuxBudget
from appnpy.link.identity import generateIdentity
from appnpy.link.tls import LinkContextFactory, TrustPolicy
from appnpy.link.yamux import MuxConfig
from appnpy.node import Node, buildNode
from appnpy.ops.config import NodeConfig

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "_peer.py")
CHUNK = b"\xa5" * (64 * 1024)
LISTEN = "tcp:0:interface=127.0.0.1"
#: Enough for memory.py's 10,000 sessions on one link.
SESSION_LIMIT = 20000
MIB = 1024 * 1024


def quietLogging() -> None:
    """
    Send Twisted log events nowhere.  Without a started log, twisted.logger
    keeps the last 65,536 events in memory, which would distort RSS figures
    (and a real node logs to a file, not to a ring buffer).
    """
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)


def rssKiB() -> int:
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpuSeconds(pid: int | None = None) -> float:
    """
    User + system CPU seconds of this process, or of process C{pid}.
    """
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- a push producer ------------------------------------------------------------


class Pusher:
    """
    Push producer writing C{total} bytes in 64 KiB writes to C{transport}.
    """

    def __init__(self, transport: Any, total: int) -> None:
        self.transport = transport
        self.remaining = total
        self.paused = True
        self._running = False

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._running:
            return
        self._running = True
        write = self.transport.write
        chunk = CHUNK
        size = len(chunk)
        while not self.paused and self.remaining > 0:
            self.remaining -= size
            write(chunk)
        self._running = False
        if self.remaining <= 0 and self.transport is not None:
            transport, self.transport = self.transport, None
            self.paused = True
            transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.paused = True
        self.remaining = 0


# -- receiving ends (identical for APPN sessions and raw TLS) ---------------------


class Sink(Protocol):
    """
    Counts bytes; once C{expected} have arrived, answers one byte C{!}.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expected:
            self.expected = 1 << 62
            self.transport.write(b"!")


class _ParamPlugin:
    version = "0"
    defaultCOS = "batch"

    def __init__(self, name: str, sessionLimit: int = SESSION_LIMIT) -> None:
        self.name = name
        self.sessionLimit = sessionLimit

    def configure(self, section: dict[str, Any]) -> None:
        pass

    def resources(self) -> list[str]:
        return []


@implementer(ISessionPlugin)
class SinkPlugin(_ParamPlugin):
    """
    The C{sink} plugin: the session's C{n} parameter is how many bytes to
    expect before answering C{!}.
    """

    def __init__(self, sessionLimit: int = SESSION_LIMIT) -> None:
        super().__init__("sink", sessionLimit)

    def buildProtocol(self, session: ISessionInfo) -> Protocol:
        return Sink(int(session.parameters.get("n", 0)))


class TLSServerProtocol(Protocol):
    """
    The raw TLS baseline server: the first byte chooses the role, C{E} for
    echo, C{S} + 8-byte big-endian count for a sink; after that the data path
    is the same L{Sink} / L{Echo} code the sessions run.
    """

    def __init__(self) -> None:
        self._head = b""

    def dataReceived(self, data: bytes) -> None:
        head = self._head + data
        if head[:1] == b"E":
            inner: Protocol = Echo()
            rest = head[1:]
        elif head[:1] == b"S":
            if len(head) < 9:
                self._head = head
                return
            inner = Sink(struct.unpack(">Q", head[1:9])[0])
            rest = head[9:]
        else:
            self._head = head
            return
        inner.makeConnection(self.transport)
        self.dataReceived = inner.dataReceived  # type: ignore[method-assign]
        self.connectionLost = inner.connectionLost  # type: ignore[method-assign]
        if rest:
            inner.dataReceived(rest)


# -- AMP baseline ----------------------------------------------------------------


class EchoCommand(amp.Command):
    arguments = [(b"data", amp.String())]
    response = [(b"data", amp.String())]


class AMPEcho(amp.AMP):
    @EchoCommand.responder
    def echo(self, data: bytes) -> dict[str, bytes]:
        return {"data": data}


# -- building both sides -----------------------------------------------------------


def muxConfig() -> MuxConfig:
    """
    The benchmarks' multiplexer settings: defaults, with room for memory.py's
    sessions (streams per link and the node receive budget: idle streams
    reserve window but hold no memory).  C{APPN_BENCH_MUX} (JSON, e.g.
    C{{"initialWindow": 16777216}}) overrides fields in both processes, for
    experiments.
    """
    overrides = json.loads(os.environ.get("APPN_BENCH_MUX", "{}"))
    streams = SESSION_LIMIT + 100
    budget = MuxBudget(maxWindow=streams * MuxConfig().initialWindow + DEFAULT_NODE_RECEIVE_WINDOW)
    return MuxConfig(**{"maxStreams": streams, "budget": budget, **overrides})


def makeNode(
    reactor: Any,
    sessionLimit: int = SESSION_LIMIT,
    listen: tuple[str, ...] | list[str] = (),
    services: bool = False,
) -> Node:
    """
    A node built by the composition root, with the benchmark plugins (echo,
    sink) and raised limits; no data directory, API or peer manager.  With
    C{services}, the network services of a network node (relaying, routed
    sessions, topology, directory).
    """
    return buildNode(
        reactor,
        NodeConfig(dataDir=None, listen=tuple(listen), api=None),
        generateIdentity(),
        [SimplePlugin("echo", Echo, sessionLimit=sessionLimit), SinkPlugin(sessionLimit)],
        muxConfig=muxConfig(),
        services=services,
        managePeers=False,
        # The benchmarks measure links and sessions, not the accept-rate
        # limit that protects a deployed node from connection floods.
        admission=False,
    )


def tlsContext() -> LinkContextFactory:
    """
    The same TLS context the links use (TLS 1.3, mutual, Ed25519), for a
    fresh identity.
    """
    return LinkContextFactory(generateIdentity(), TrustPolicy.open())


async def listenTLS(reactor: Any, ctx: LinkContextFactory, factory: Factory) -> Any:
    wrapped = TLSMemoryBIOFactory(ctx, False, factory, clock=reactor)
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapped)


def connectTLS(reactor: Any, ctx: LinkContextFactory, port: int, factory: Factory) -> Deferred:
    """
    Connect with TLS; fires with the I{wrapped} protocol.
    """
    wrapped = TLSMemoryBIOFactory(ctx, True, factory, clock=reactor)
    d = TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(wrapped)
    d.addCallback(lambda tls: tls.wrappedProtocol)
    return d


@implementer(IHandshakeListener)
class HandshakeWaiter(Protocol):
    """
    Client protocol that fires C{self.ready} when the mutual handshake is done
    and C{self.answered} on the first byte received.
    """

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.answered: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.ready.callback(None)

    def dataReceived(self, data: bytes) -> None:
        d, self.answered = self.answered, Deferred()
        d.callback(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


class SessionClient(Protocol):
    """
    Client protocol for sessions: fires C{answered} on data received and
    C{lost} on close.
    """

    def __init__(self, info: Any = None) -> None:
        self.answered: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        d, self.answered = self.answered, Deferred()
        d.callback(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


# -- the peer process --------------------------------------------------------------


class PeerProcess(ProcessProtocol):
    """
    A C{_peer.py} child: JSON lines on stdout, requests as JSON lines on its
    stdin, answered in order.
    """

    def __init__(self) -> None:
        self._buf = b""
        self.ready: Deferred[dict[str, Any]] = Deferred()
        self._waiting: list[Deferred[dict[str, Any]]] = []
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if not self.ready.called:
                self.ready.callback(msg)
            else:
                self._waiting.pop(0).callback(msg)

    def request(self, **cmd: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiting.append(d)
        self.transport.write(json.dumps(cmd).encode() + b"\n")
        return d

    def processEnded(self, reason: Any) -> None:
        for d in self._waiting:
            d.errback(reason)
        if not self.ready.called:
            self.ready.errback(reason)
        self.ended.callback(None)

    async def stop(self) -> None:
        self.transport.closeStdin()
        await self.ended


async def spawnPeer(reactor: Any, *args: str) -> tuple[PeerProcess, dict[str, Any]]:
    """
    Start C{_peer.py} and wait for its ready line (no sleeping).
    """
    proto = PeerProcess()
    reactor.spawnProcess(
        proto,
        sys.executable,
        [sys.executable, PEER, *args],
        env=os.environ,
        childFDs={0: "w", 1: "r", 2: 2},
    )
    ready = await proto.ready
    return proto, ready


# -- running -----------------------------------------------------------------------


def parseArgs(
    description: str, extra: Sequence[tuple[tuple[str, ...], dict[str, Any]]] = ()
) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    for flags, options in extra:
        p.add_argument(*flags, **options)
    p.add_argument("--quick", action="store_true", help="short run (about 10-20 s)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run (for tests)")
    p.add_argument("--runs", type=int, default=None, help="runs per side")
    p.add_argument("--profile", default=None, help="write a cProfile of this process here")
    return p.parse_args()


def pick(args: argparse.Namespace, full: Any, quick: Any, smoke: Any) -> Any:
    return smoke if args.smoke else quick if args.quick else full


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def emit(result: dict[str, Any]) -> None:
    """
    The one JSON line a benchmark ends with.
    """
    print(json.dumps(result, sort_keys=False), flush=True)


def runMain(main: Callable[[Any], Any], args: argparse.Namespace) -> None:
    """
    Run C{async main(reactor)} on the real reactor, optionally profiled.
    """
    from twisted.internet import reactor
    from twisted.internet.task import react

    quietLogging()

    def start(r: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(main(r))

    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            react(start)
        finally:
            prof.disable()
            prof.dump_stats(args.profile)
    else:
        react(start)
    del reactor


async def timedPush(reactor: Any, proto: Any, total: int, header: bytes = b"") -> float:
    """
    Push C{total} bytes through C{proto}'s transport with a L{Pusher} (after
    C{header}, if any) and return the seconds until the receiver reports it
    has them all; then close and wait for the close.
    """
    start = reactor.seconds()
    answered = proto.answered
    if header:
        proto.transport.write(header)
    Pusher(proto.transport, total).start()
    await answered
    elapsed: float = reactor.seconds() - start
    proto.transport.loseConnection()
    await proto.lost
    return elapsed


async def tlsBulkRun(reactor: Any, ctx: Any, port: int, total: int) -> float:
    """
    The raw-TLS baseline: seconds to push C{total} bytes to the peer's TLS
    sink over a new mutual TLS 1.3 connection (handshake not timed).
    """
    proto = await connectTLS(reactor, ctx, port, Factory.forProtocol(HandshakeWaiter))
    await proto.ready
    return await timedPush(reactor, proto, total, b"S" + struct.pack(">Q", total))
