"""
Sequential 32-byte round trips on one APPN echo session vs AMP over TLS.

The APPN side writes 32 bytes on a session to the peer's echo plugin and
writes the next 32 when they are back.  The baseline is an AMP command that
echoes its bytes argument, over the same mutual TLS 1.3 context, called one
call at a time.  Both connections are set up before the clock starts; runs
alternate APPN, AMP, APPN, AMP...
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.protocols import amp  # noqa: E402

PAYLOAD = b"\x5a" * 32


class PingPong(Protocol):
    """
    Sends 32 bytes, waits for all 32 back, repeats C{count} times.
    """

    def __init__(self, info: Any = None) -> None:
        self.finished: Deferred[None] | None = None
        self.left = 0
        self.got = 0

    def go(self, count: int) -> Deferred[None]:
        self.finished = Deferred()
        self.left = count
        self.got = 0
        self.transport.write(PAYLOAD)
        return self.finished

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= 32:
            self.got -= 32
            self.left -= 1
            if self.left:
                self.transport.write(PAYLOAD)
            else:
                d, self.finished = self.finished, None
                d.callback(None)


async def appnRun(reactor: Any, proto: PingPong, count: int) -> float:
    start = reactor.seconds()
    await proto.go(count)
    return reactor.seconds() - start


def ampRun(reactor: Any, client: amp.AMP, count: int) -> Deferred[float]:
    done: Deferred[float] = Deferred()
    start = reactor.seconds()
    left = [count]

    def answered(result: dict[str, bytes]) -> None:
        left[0] -= 1
        if left[0]:
            client.callRemote(C.EchoCommand, data=PAYLOAD).addCallbacks(answered, done.errback)
        else:
            done.callback(reactor.seconds() - start)

    client.callRemote(C.EchoCommand, data=PAYLOAD).addCallbacks(answered, done.errback)
    return done


async def main(reactor: Any, args: Any) -> None:
    count = C.pick(args, 10000, 2000, 200)
    runs = args.runs or C.pick(args, 5, 3, 1)
    peer, ready = await C.spawnPeer(reactor, "--mode", "listen", *args.peerArgs)
    try:
        node = C.makeNode(reactor)
        cp = await node.connect(ready["appn"])
        proto = await node.openSession(cp.peerNodeID, "echo", PingPong)
        client = await C.connectTLS(
            reactor, C.tlsContext(), ready["amp"], Factory.forProtocol(amp.AMP)
        )
        # Warm both up (handshake done, code paths hot).
        await proto.go(50)
        await ampRun(reactor, client, 50)
        appn: list[float] = []
        ampr: list[float] = []
        for i in range(runs):
            appn.append(count / await appnRun(reactor, proto, count))
            ampr.append(count / await ampRun(reactor, client, count))
            C.log(f"run {i + 1}/{runs}: appn {appn[-1]:.0f}/s, amp {ampr[-1]:.0f}/s")
        proto.transport.loseConnection()
        client.transport.loseConnection()
        await cp.close()
    finally:
        await peer.stop()
    a, b = C.median(appn), C.median(ampr)
    C.emit(
        {
            "benchmark": "echo_rtt",
            "round_trips": count,
            "runs": runs,
            "appn_rtps": round(a),
            "amp_rtps": round(b),
            "ratio": round(a / b, 3),
            "goal": 1.0,
            "appn_runs": [round(x) for x in appn],
            "amp_runs": [round(x) for x in ampr],
        }
    )


if __name__ == "__main__":
    args = C.parseArgs(__doc__.splitlines()[1])
    args.peerArgs = ["--profile", args.profile + ".peer"] if args.profile else []
    C.runMain(lambda reactor: main(reactor, args), args)
