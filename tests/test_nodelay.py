"""
TCP_NODELAY on real links: both ends' sockets have Nagle off, and a
write-write-read exchange over real TLS on loopback costs one round trip,
not the ~40 ms of Nagle plus delayed ACK.
"""

from __future__ import annotations

import socket
import statistics
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from appnpy.cp.controlpoint import ControlPoint
from appnpy.link.identity import generateIdentity
from appnpy.link.yamux import TYPE_WINDOW_UPDATE, MuxConfig, encodeHeader
from appnpy.node import Node

TIMEOUT = 10.0

# A frame the peer ignores without answering: a window update for stream 0.
_SILENT_FRAME = encodeHeader(TYPE_WINDOW_UPDATE, 0, 0, 0)


def _later(delay: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(delay, d.callback, None)
    return d


def _socket(cp: ControlPoint) -> socket.socket:
    """
    The TCP socket under a link (test-only digging through the layers: the
    link's TLS transport wraps the TCP transport that owns the socket).
    """
    tls: Any = cp.link.transport
    sock = tls.transport.getHandle()
    assert isinstance(sock, socket.socket)
    return sock


class NoDelayTests(TestCase):
    timeout = 30

    async def startNode(self) -> Node:
        node = Node(
            reactor,
            generateIdentity(),
            listen=["tcp:0:interface=127.0.0.1"],
            muxConfig=MuxConfig(keepaliveInterval=0, keepaliveTimeout=0),
        )
        node.startService()
        self.addCleanup(node.stopService)
        while not node.ports:
            await _later(0.01)
        return node

    async def linkedPair(self) -> tuple[ControlPoint, ControlPoint]:
        listener = await self.startNode()
        dialler = await self.startNode()
        port = listener.ports[0].getHost().port
        cp = await dialler.connect(f"127.0.0.1:{port}").addTimeout(TIMEOUT, reactor)
        for _ in range(int(TIMEOUT / 0.01)):
            if dialler.nodeID in listener.links:
                break
            await _later(0.01)
        return cp, listener.links[dialler.nodeID]

    async def test_noDelayOnBothEnds(self) -> None:
        """
        The dialled and the accepted link both have TCP_NODELAY set.
        """
        dialled, accepted = await self.linkedPair()
        for cp in (dialled, accepted):
            sock = _socket(cp)
            self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def test_writeWriteReadRoundTrip(self) -> None:
        """
        A small write, then a second one a moment later, then waiting for the
        answer to the second: with Nagle on, the second write waits for the
        peer's delayed ACK of the first (about 40 ms on Linux).  The median
        of 20 such exchanges stays far below that.
        """
        dialled, _ = await self.linkedPair()
        transport: Any = dialled.link.transport
        rtts = []
        for _ in range(20):
            transport.write(_SILENT_FRAME)
            # Let the first write reach the socket on its own (the TLS layer
            # gathers writes made in one reactor turn).
            await _later(0.002)
            rtts.append(await dialled.mux.ping().addTimeout(TIMEOUT, reactor))
        median = statistics.median(rtts)
        self.assertLess(median, 0.020, f"median RTT {median * 1000:.1f} ms: {rtts}")
