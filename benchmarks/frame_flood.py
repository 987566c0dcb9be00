"""
CPU cost of hostile frame floods at the multiplexer, per frame and per MB of wire.

In process (no sockets, no TLS: what the multiplexer itself spends), the
receiving Multiplexer parses floods that a peer can send cheaply: one-byte
Data frames on an open stream, empty Data frames, Data for an unknown stream,
Pings, zero-delta WindowUpdates; bulk 64 KiB frames are the reference.  Each
flood is fed in 64 KiB reads (what one TCP read delivers).  Reports CPU
seconds per MB of wire and microseconds per frame, medians of the runs, and
the share of one CPU a link can take at most under the worst flood (the
multiplexer reads at most MuxConfig.maxFrameRate frames a second per link).
Frame-budget pauses do not apply here: the clock never advances.

Then over a real link (not in --smoke): a raw TLS client with a node
certificate floods a node in the peer process with one-byte Data frames for
an unknown stream, as fast as TCP takes them, for a few seconds; reported is
the victim's CPU (seconds per second of flood) with the frame budget and,
in a second peer process, without it (maxFrameRate 0), runs alternating.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener, IPushProducer  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from zope.interface import implementer  # noqa: E402

from appnpy.link.yamux import (  # noqa: E402
    FLAG_SYN,
    TYPE_DATA,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Multiplexer,
    MuxConfig,
    encodeHeader,
)

READ = 64 * 1024


class Sink(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def _receiver() -> tuple[Multiplexer, StringTransport]:
    transport = StringTransport()

    def accept(stream: Any) -> None:
        stream.attachProtocol(Sink())

    mux = Multiplexer(
        transport, False, accept, Clock(), MuxConfig(keepaliveInterval=0, keepaliveTimeout=0)
    )
    mux.dataReceived(encodeHeader(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
    transport.clear()
    return mux, transport


def _floods(wire: int) -> dict[str, tuple[bytes, int]]:
    """
    Each flood as (one 64 KiB read of it, frames in that read).
    """
    one = encodeHeader(TYPE_DATA, 0, 1, 1) + b"x"
    kinds = {
        "bulk_64KiB": encodeHeader(TYPE_DATA, 0, 1, 65524) + b"b" * 65524,
        "data_1B": one,
        "data_0B": encodeHeader(TYPE_DATA, 0, 1, 0),
        "data_unknown_stream_1B": encodeHeader(TYPE_DATA, 0, 99, 1) + b"u",
        "ping": encodeHeader(TYPE_PING, FLAG_SYN, 0, 7),
        "window_update_0": encodeHeader(TYPE_WINDOW_UPDATE, 0, 1, 0),
    }
    out = {}
    for name, frame in kinds.items():
        count = max(1, READ // len(frame))
        out[name] = (frame * count, count)
    return out


def measure(read: bytes, frames: int, wire: int) -> tuple[float, float]:
    """
    Feed C{wire} bytes of C{read} repeated; return (CPU s per MB, us per frame).
    """
    mux, transport = _receiver()
    reads = max(1, wire // len(read))
    feed: Callable[[bytes], None] = mux.dataReceived
    t0 = time.process_time()
    for _ in range(reads):
        feed(read)
        if transport.io.tell() > 1 << 20:
            transport.clear()
    t = time.process_time() - t0
    total = reads * len(read)
    return t / (total / 1e6), t / (reads * frames) * 1e6


@implementer(IHandshakeListener, IPushProducer)
class Flooder(Protocol):
    """
    Once TLS is up, writes 64 KiB reads of one-byte frames whenever the
    transport takes them, until told to stop.
    """

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.up: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.transport.registerProducer(self, True)
        self.up.callback(None)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped:
            self.transport.write(self.chunk)
            self.sent += len(self.chunk)

    def stopProducing(self) -> None:
        self.stopped = True


async def floodOnce(reactor: Any, ready: dict[str, Any], seconds: float) -> tuple[float, float]:
    """
    Flood the peer's node for C{seconds}; return (victim CPU s per s, MB/s sent).
    """
    host, port = ready["appn"].rsplit("@", 1)[1].rsplit(":", 1)
    frame = encodeHeader(TYPE_DATA, 0, 99, 1) + b"u"
    flooder = Flooder(frame * (READ // len(frame)))
    factory = TLSMemoryBIOFactory(C.tlsContext(), True, Factory.forProtocol(lambda: flooder))
    await TCP4ClientEndpoint(reactor, host, int(port)).connect(factory)
    await flooder.up
    cpu0, sent0 = C.cpuSeconds(ready["pid"]), flooder.sent
    done: Deferred[None] = Deferred()
    reactor.callLater(seconds, done.callback, None)
    await done
    cpu1, sent1 = C.cpuSeconds(ready["pid"]), flooder.sent
    flooder.stopped = True
    flooder.transport.abortConnection()
    return (cpu1 - cpu0) / seconds, (sent1 - sent0) / seconds / 1e6


async def realFlood(reactor: Any, runs: int, seconds: float) -> dict[str, Any]:
    peers = {}
    for name, mux in (("capped", "{}"), ("uncapped", '{"maxFrameRate": 0}')):
        os.environ["APPN_BENCH_MUX"] = mux
        peers[name] = await C.spawnPeer(reactor, "--mode", "listen")
    os.environ.pop("APPN_BENCH_MUX")
    out: dict[str, list[tuple[float, float]]] = {"capped": [], "uncapped": []}
    try:
        for i in range(runs):
            for name, (_, ready) in peers.items():
                out[name].append(await floodOnce(reactor, ready, seconds))
            C.log(
                f"real run {i + 1}/{runs}: victim CPU s/s capped {out['capped'][-1][0]:.2f},"
                f" uncapped {out['uncapped'][-1][0]:.2f}"
            )
    finally:
        for peer, _ in peers.values():
            await peer.stop()
    figures: dict[str, Any] = {}
    for name, values in out.items():
        figures[f"real_{name}_victim_cpu_s_per_s"] = round(C.median([v[0] for v in values]), 3)
        figures[f"real_{name}_offered_MBps"] = round(C.median([v[1] for v in values]), 2)
    return figures


async def main(reactor: Any, args: Any) -> None:
    wire = C.pick(args, 64 * C.MIB, 16 * C.MIB, 1 * C.MIB)
    runs = args.runs or C.pick(args, 5, 3, 1)
    results: dict[str, list[tuple[float, float]]] = {}
    floods = _floods(wire)
    for i in range(runs):
        for name, (read, frames) in floods.items():
            results.setdefault(name, []).append(measure(read, frames, wire))
        C.log(f"run {i + 1}/{runs} done")
    figures: dict[str, Any] = {"benchmark": "frame_flood", "wire_bytes": wire, "runs": runs}
    for name, values in results.items():
        figures[f"{name}_cpu_s_per_MB"] = round(C.median([v[0] for v in values]), 6)
        figures[f"{name}_us_per_frame"] = round(C.median([v[1] for v in values]), 3)
    # The frame budget caps what a flood of the costliest kind can take.
    rate = MuxConfig().maxFrameRate
    worst = max(
        v for k, v in figures.items() if k.endswith("_us_per_frame") and not k.startswith("bulk")
    )
    figures["max_frame_rate"] = rate
    figures["flood_cpu_share_per_link"] = round(rate * worst / 1e6, 3)
    if not args.smoke:
        figures.update(await realFlood(reactor, runs, C.pick(args, 5.0, 3.0, 1.0)))
    C.emit(figures)


if __name__ == "__main__":
    args = C.parseArgs(__doc__.splitlines()[1])
    C.runMain(lambda reactor: main(reactor, args), args)
