"""
A public, in-memory network harness for tests and benchmarks.

L{MemoryNetwork} builds any number of L{Node}s in one process, joined by
in-memory connections (C{twisted.test.iosim} pumps) that carry real TLS 1.3
and real yamux, driven by one L{Clock}: deterministic, no sockets, no sleeps.

    net = MemoryNetwork()
    a, b = net.addNode("LAB.A"), net.addNode("LAB.B")
    net.link(a, b)
    d = a.openSession(b.nodeID, "echo", lambda info: MyProtocol())
    net.flush()
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect

from appnpy.cp.controlpoint import ControlPoint
from appnpy.interfaces import ISessionPlugin
from appnpy.link.identity import Identity, generateIdentity
from appnpy.link.tls import LinkAddress, TrustPolicy
from appnpy.link.yamux import MuxConfig
from appnpy.node import Node, buildNode
from appnpy.ops.config import NodeConfig
from appnpy.session.echo import EchoPlugin

__all__ = ["EchoPlugin", "MemoryNetwork", "MemoryLink", "resultOf"]


@attrs.define
class MemoryLink:
    """
    One in-memory connection between two nodes.
    """

    dialer: Node
    listener: Node
    pump: IOPump

    def cut(self) -> None:
        """
        Drop the connection as a failed network would (both ends see it lost).
        """
        self.pump.clientIO.disconnectReason = Failure(ConnectionError("link cut"))
        self.pump.serverIO.disconnectReason = Failure(ConnectionError("link cut"))
        self.pump.clientIO.loseConnection()
        self.pump.serverIO.loseConnection()

    def silence(self) -> None:
        """
        Stop carrying bytes either way without closing anything, as a
        network that drops every packet: both ends only see silence.  A
        close still reaches both ends (an end that gives up closes its side).
        """
        for io in (self.pump.clientIO, self.pump.serverIO):
            # What is written is dropped, not kept for later.
            io.getOutBuffer = lambda io=io: io.stream.clear()


class MemoryNetwork:
    """
    N nodes in one process, linked by in-memory pumps and one clock.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        muxConfig: MuxConfig | None = None,
        services: bool = True,
        topologyOptions: Mapping[str, Any] | None = None,
        directoryOptions: Mapping[str, Any] | None = None,
    ) -> None:
        """
        @param services: give every node its network services (topology
            database and relaying on network nodes, directory and routed
            sessions on all), as C{twist appnnode} does; C{False} gives bare
            nodes that only reach their neighbours (for tests of links and
            adjacent sessions).
        @param topologyOptions: tuning of every topology database.
        @param directoryOptions: tuning of every directory.
        """
        self.clock = clock or Clock()
        # No keepalive pings (they would keep the pumps busy forever), and
        # no keepalive timeout either: simulated time can jump far ahead.
        self.muxConfig = muxConfig or MuxConfig(keepaliveInterval=0, keepaliveTimeout=0)
        self.services = services
        self.topologyOptions = topologyOptions
        self.directoryOptions = directoryOptions
        self.nodes: list[Node] = []
        self.links: list[MemoryLink] = []
        self._ports = itertools.count(40000)

    def addNode(
        self,
        name: str | None = None,
        plugins: Iterable[ISessionPlugin] = (),
        role: str = "network",
        identity: Identity | None = None,
        muxConfig: MuxConfig | None = None,
        trust: TrustPolicy | None = None,
        dataDir: str | None = None,
        **config: Any,
    ) -> Node:
        """
        Make a started node, built by L{appnpy.node.buildNode} as
        C{twist appnnode} builds one, but with no listening port, no
        management API and no peer manager (the harness links nodes
        explicitly).  With no plugins given, the harness's own L{EchoPlugin}
        is enabled.

        @param dataDir: the node's data directory (default: none, so the
            node keeps no state and C{node.dataDirectory(plugin)} is None).
        @param config: further L{NodeConfig} fields (C{cds=True}, ...).
        """
        nodeConfig = NodeConfig(dataDir=dataDir, name=name, role=role, listen=(), api=None, **config)
        node = buildNode(
            self.clock,
            nodeConfig,
            identity or generateIdentity(),
            list(plugins) or [EchoPlugin()],
            trust,
            muxConfig=muxConfig or self.muxConfig,
            services=self.services,
            managePeers=False,
            topologyOptions=self.topologyOptions,
            directoryOptions=self.directoryOptions,
        )
        node.startService()
        self.nodes.append(node)
        return node

    def connect(
        self,
        dialer: Node,
        listener: Node,
        pin: bool = True,
        expect: str | None = None,
        flush: bool = True,
    ) -> MemoryLink:
        """
        Open an in-memory TCP connection from C{dialer} to C{listener} and run
        TLS and the Hello exchange over it.

        @param pin: the dialer pins the listener's node ID (as
            C{appn://<id>@host:port} does); with C{False} it accepts any.
        @param expect: pin this node ID instead (to test a wrong pin).
        @param flush: settle the network; with C{False} nothing has moved
            yet (the caller pumps, e.g. to interleave two handshakes).
        """
        port = next(self._ports)
        serverAddr = IPv4Address("TCP", "127.0.0.1", port)
        clientAddr = IPv4Address("TCP", "127.0.0.1", next(self._ports))
        expected = expect or (listener.nodeID if pin else None)
        server = listener.serverFactory().buildProtocol(clientAddr)
        client = dialer.clientFactory(LinkAddress("127.0.0.1", port, expected)).buildProtocol(
            serverAddr
        )
        serverIO = FakeTransport(
            server, isServer=True, hostAddress=serverAddr, peerAddress=clientAddr
        )
        clientIO = FakeTransport(
            client, isServer=False, hostAddress=clientAddr, peerAddress=serverAddr
        )
        pump = connect(server, serverIO, client, clientIO, greet=False, clock=self.clock)
        link = MemoryLink(dialer, listener, pump)
        self.links.append(link)
        if flush:
            self.flush()
        return link

    def link(self, dialer: Node, listener: Node) -> ControlPoint:
        """
        Connect two nodes and return the dialer's active control point.
        """
        self.connect(dialer, listener)
        return dialer.links[listener.nodeID]

    def flush(self, advance: float = 0.0) -> None:
        """
        Move data over every connection until all are quiet, running due
        timers; then advance the clock by C{advance} seconds and settle again.
        """
        for _ in range(100000):
            moved = False
            self.clock.advance(0)
            for link in self.links:
                if link.pump.pump(advanceClock=False):
                    moved = True
            if not moved:
                break
        if advance:
            self.clock.advance(advance)
            self.flush()

    def stop(self) -> None:
        """
        Stop every node gracefully and settle.
        """
        for node in self.nodes:
            d = node.stopService()
            self.flush()
            self.clock.advance(10)
            self.flush()
            resultOf(d)


def resultOf(d: Deferred[Any]) -> Any:
    """
    The result a Deferred has already fired with; raises its failure, or
    AssertionError if it has not fired (drive the network with C{flush} first).
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired yet")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
