"""
Tests for how a link's TLS layer sends its records on a real TCP connection
(L{appnpy.link.refusal._LinkTLSProtocol._writeRecords}): straight to the
socket while Twisted holds nothing unsent for it, through Twisted's buffer
otherwise, and in order either way.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from appnpy.link.identity import generateIdentity
from appnpy.link.refusal import LinkTLSFactory
from appnpy.link.tls import LinkContextFactory, TrustPolicy
from tests.test_bulktls import pattern

KiB = 1024
TIMEOUT = 30.0


@implementer(IHandshakeListener)
class _End(Protocol):
    """
    One end of the link: records what arrives, and tells when the handshake
    is done, when C{expected} bytes have arrived and when the connection is
    lost.
    """

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self.received = bytearray()
        self.handshook: Deferred[None] = Deferred()
        self.complete: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.handshook.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.complete.called:
            self.complete.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class LinkSendTests(TestCase):
    """
    Records of a link reach the peer complete and in order whether the
    socket takes them at once or only in part.
    """

    async def _link(self, expected: int) -> tuple[Any, _End, _End]:
        """
        A link on loopback: the dialler's TLS protocol, its end and the
        listener's end (which expects C{expected} bytes).
        """
        server = _End(expected)
        client = _End()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            LinkTLSFactory(
                LinkContextFactory(generateIdentity(), TrustPolicy.open()),
                False,
                Factory.forProtocol(lambda: server),
            )
        )
        self.addCleanup(port.stopListening)
        endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={port.getHost().port}")
        tls = await endpoint.connect(
            LinkTLSFactory(
                LinkContextFactory(generateIdentity(), TrustPolicy.open()),
                True,
                Factory.forProtocol(lambda: client),
            )
        )
        await client.handshook.addTimeout(TIMEOUT, reactor)
        await server.handshook.addTimeout(TIMEOUT, reactor)
        return tls, client, server

    async def test_partialSendsKeepOrder(self) -> None:
        """
        With a small socket send buffer and the peer not reading, the socket
        takes only part of the records: the rest waits in Twisted's buffer,
        later records queue behind it, and everything arrives in order once
        the peer reads.
        """
        sizes = [1, 70 * KiB, 300 * KiB, 5, 2048 * KiB, 16 * KiB, 600 * KiB, 3]
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        total = sum(sizes)
        tls, client, server = await self._link(total)
        tcp = tls.transport
        self.assertIs(tls._tcp, tcp)
        tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * KiB)
        server.transport.pauseProducing()
        buffered: list[int] = []
        write = tcp.write

        def recording(records: bytes) -> None:
            buffered.append(len(records))
            write(records)

        tcp.write = recording
        for chunk in data:
            client.transport.write(chunk)
        # Some records went straight to the socket, the rest through
        # Twisted's buffer.
        self.assertTrue(buffered)
        self.assertLess(sum(buffered), total)
        server.transport.resumeProducing()
        await server.complete.addTimeout(TIMEOUT, reactor)
        self.assertEqual(bytes(server.received), b"".join(data))
        client.transport.loseConnection()
        await server.lost.addTimeout(TIMEOUT, reactor)
        await client.lost.addTimeout(TIMEOUT, reactor)

    async def test_writesThenClose(self) -> None:
        """
        Writes sent at once, followed by closing the link, all arrive before
        the peer sees the connection end.
        """
        sizes = [64 * KiB] * 8 + [7]
        data = [pattern(n, i) for i, n in enumerate(sizes)]
        tls, client, server = await self._link(sum(sizes))
        for chunk in data:
            client.transport.write(chunk)
        client.transport.loseConnection()
        await server.lost.addTimeout(TIMEOUT, reactor)
        self.assertEqual(bytes(server.received), b"".join(data))
