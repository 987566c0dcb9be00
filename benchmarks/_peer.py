"""
The other process of every benchmark.

  --mode listen   an APPN node (echo and sink plugins), a raw TLS server and
                  an AMP-over-TLS server, all on 127.0.0.1 with port 0 and the
                  same kind of TLS context; prints one ready line
                  C{{"appn": "appn://<id>@127.0.0.1:<port>", "tls": port, "amp": port, "rss": KiB}}
  --mode dialer   prints C{{"rss": KiB}} and waits for commands

Then it reads JSON requests on stdin, one a line, and answers each with one
JSON line on stdout (see L{Commands}).  It exits when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.internet.stdio import StandardIO  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, reactor: Any, state: dict[str, Any], done: Deferred[None]) -> None:
        self.reactor = reactor
        self.state = state
        self.done = done
        self._queue: Deferred[None] = Deferred()
        self._queue.callback(None)

    def connectionMade(self) -> None:
        pass

    def lineReceived(self, line: bytes) -> None:
        cmd = json.loads(line)
        # Commands run one at a time, answered in order.
        self._queue.addCallback(lambda _: Deferred.fromCoroutine(self._run(cmd)))
        self._queue.addErrback(lambda f: self._reply({"error": f.getErrorMessage()}))

    def _reply(self, msg: dict[str, Any]) -> None:
        self.transport.write(json.dumps(msg).encode() + b"\n")

    async def _run(self, cmd: dict[str, Any]) -> None:
        method = getattr(self, "cmd_" + cmd.pop("cmd"))
        result = await method(**cmd)
        self._reply(result)

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)

    # -- commands ----------------------------------------------------------------

    async def cmd_rss(self) -> dict[str, Any]:
        node = self.state.get("node")
        nodes = self.state.get("nodes", [])
        return {
            "rss": C.rssKiB(),
            "sessions": len(node.sessions()) if node else sum(len(n.sessions()) for n in nodes),
            "links": len(node.links) if node else sum(len(n.links) for n in nodes),
        }

    async def cmd_nodes(self, n: int) -> dict[str, Any]:
        """
        Create C{n} nodes (not listening) to dial from.
        """
        self.state["nodes"] = [C.makeNode(self.reactor) for _ in range(n)]
        return {"nodes": n}

    async def cmd_connect(self, target: str, parallel: int = 20) -> dict[str, Any]:
        """
        Every node dials C{target}; answers once all links are active.
        """
        nodes = list(self.state["nodes"])
        cps = []
        for i in range(0, len(nodes), parallel):
            batch = nodes[i : i + parallel]
            cps += await gatherResults([n.connect(target) for n in batch])
        self.state["cps"] = cps
        return {"links": len(cps)}

    async def cmd_dial(self, target: str) -> dict[str, Any]:
        """
        The listening node dials C{target}; answers once the link is active.
        """
        cp = await self.state["node"].connect(target)
        return {"linked": cp.peerNodeID}

    async def cmd_tls(self, n: int, port: int, parallel: int = 20) -> dict[str, Any]:
        """
        C{n} raw TLS connections (one context), each after one echo round trip.
        """
        ctx = self.state.setdefault("ctx", C.tlsContext())
        conns = self.state.setdefault("conns", [])
        for i in range(0, n, parallel):
            batch = await gatherResults(
                [
                    C.connectTLS(self.reactor, ctx, port, Factory.forProtocol(C.HandshakeWaiter))
                    for _ in range(min(parallel, n - i))
                ]
            )
            answers = [p.answered for p in batch]
            for p in batch:
                p.transport.write(b"E" + b"x" * 32)
            await gatherResults(answers)
            conns += batch
        return {"conns": len(conns)}

    async def cmd_sessions(self, n: int, inFlight: int = 200) -> dict[str, Any]:
        """
        The first node opens C{n} echo sessions on its link and leaves them
        idle (after one 32-byte round trip each, so both ends are settled).
        """
        node = self.state["nodes"][0]
        cp = self.state["cps"][0]
        protos = self.state.setdefault("sessionProtos", [])

        async def one() -> None:
            p = await node.openSession(cp.peerNodeID, "echo", C.SessionClient)
            answered = p.answered
            p.transport.write(b"x" * 32)
            await answered
            protos.append(p)

        for i in range(0, n, inFlight):
            await gatherResults(
                [Deferred.fromCoroutine(one()) for _ in range(min(inFlight, n - i))]
            )
        return {"sessions": len(protos)}


async def main(reactor: Any, args: argparse.Namespace) -> None:
    state: dict[str, Any] = {}
    ready: dict[str, Any] = {}
    if args.mode == "listen":
        node = C.makeNode(reactor, listen=[C.LISTEN], services=args.services)
        node.startService()
        while not node.ports:
            # startService listens asynchronously; the port is bound within
            # the same reactor turn or the next.
            d: Deferred[None] = Deferred()
            reactor.callLater(0, d.callback, None)
            await d
        state["node"] = node
        ready["appn"] = node.advertisedAddresses()[0]
        ctx = C.tlsContext()
        tlsPort = await C.listenTLS(reactor, ctx, Factory.forProtocol(C.TLSServerProtocol))
        ampPort = await C.listenTLS(reactor, ctx, Factory.forProtocol(C.AMPEcho))
        ready["tls"] = tlsPort.getHost().port
        ready["amp"] = ampPort.getHost().port
    ready["rss"] = C.rssKiB()
    ready["pid"] = os.getpid()
    done: Deferred[None] = Deferred()
    proto = Commands(reactor, state, done)
    StandardIO(proto, reactor=reactor)
    proto._reply(ready)
    await done


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["listen", "dialer"], default="listen")
    p.add_argument("--profile", default=None)
    p.add_argument(
        "--services", action="store_true", help="listen: network services (relay, routed ends)"
    )
    a = p.parse_args()
    C.runMain(lambda reactor: main(reactor, a), a)
