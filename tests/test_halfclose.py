"""
Half-close of adjacent sessions (docs/writing-plugins.md, "Half-close"): a
plugin whose protocol provides IHalfCloseableProtocol can finish sending
with C{loseWriteConnection} and still read the reply; a session whose peer
never finishes closing is reset after CLOSE_WAIT_TIMEOUT.
"""

from __future__ import annotations

from typing import Any

from appnpy_echo import SimplePlugin
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from appnpy.session.adjacent import CLOSE_WAIT_TIMEOUT, UNBIND_GRACE
from appnpy.testing import MemoryNetwork, resultOf


@implementer(IHalfCloseableProtocol)
class HalfCloser(Protocol):
    """
    Records every event; sends C{request} on connect, then half-closes.
    """

    def __init__(self, request: bytes = b"") -> None:
        self.request = request
        self.received = b""
        self.events: list[str] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.request:
            self.transport.write(self.request)
            self.transport.loseWriteConnection()
            # Writes after our own FIN go nowhere.
            self.transport.write(b"late")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.events.append("readConnectionLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeConnectionLost")

    def connectionLost(self, reason: Failure) -> None:
        self.events.append("connectionLost")
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class ReplyAtEnd(Protocol):
    """
    A server that answers once the request is complete (the peer's FIN):
    its reply is written after the peer has finished sending.
    """

    def __init__(self) -> None:
        self.request = b""

    def dataReceived(self, data: bytes) -> None:
        self.request += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"reply to " + self.request)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class NeverCloses(Protocol):
    """
    Hears the peer's FIN and never finishes its own side.
    """

    built: list[NeverCloses] = []

    def __init__(self) -> None:
        self.lost: Failure | None = None
        NeverCloses.built.append(self)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


class Plain(Protocol):
    def __init__(self) -> None:
        self.lost: Failure | None = None

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


class HalfCloseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork(services=False)
        plugins = [
            SimplePlugin("reply", ReplyAtEnd),
            SimplePlugin("never", NeverCloses),
            SimplePlugin("plain", Plain),
        ]
        self.a = self.net.addNode("LAB.A", plugins=plugins)
        self.b = self.net.addNode("LAB.B", plugins=plugins)
        self.net.link(self.a, self.b)

    def open(self, plugin: str, protocol: Any) -> Any:
        d = self.a.openSession(self.b.nodeID, plugin, lambda info: protocol)
        self.net.flush()
        return resultOf(d)

    def test_replyAfterFin(self) -> None:
        """
        A client that half-closes still receives the reply the server writes
        after the client's FIN; both ends then end normally, at once (no
        wait for an UNBIND).
        """
        client = self.open("reply", HalfCloser(b"question"))
        self.assertEqual(client.received, b"reply to question")
        self.assertEqual(
            client.events, ["writeConnectionLost", "readConnectionLost", "connectionLost"]
        )
        assert client.lost is not None
        self.assertEqual(client.lost.value.reason, "normal")
        self.assertEqual(self.a.sessions(), [])
        self.assertEqual(self.b.sessions(), [])
        # Nothing waits for an UNBIND (the links' failure detection may
        # still look at the waits that were answered).
        timers = self.net.clock.getDelayedCalls()
        self.assertEqual([c for c in timers if "_failureCheck" not in repr(c)], [])

    def test_peerFinReachesHalfCloseablePlugin(self) -> None:
        """
        The server side of a half-closed session hears readConnectionLost
        and keeps its session (it may still write).
        """
        NeverCloses.built.clear()
        client = self.open("never", HalfCloser(b"q"))
        [server] = NeverCloses.built
        self.assertEqual(client.events, ["writeConnectionLost"])
        self.assertIsNone(server.lost)
        self.assertEqual(len(self.b.sessions()), 1)
        server.transport.write(b"still here")
        self.net.flush()
        self.assertEqual(client.received, b"still here")

    def test_peerNeverFinishes(self) -> None:
        """
        A session whose peer never sends its FIN is reset with reason
        timeout CLOSE_WAIT_TIMEOUT after ours, at both ends; not before.
        """
        NeverCloses.built.clear()
        client = self.open("never", HalfCloser(b"q"))
        [server] = NeverCloses.built
        self.net.flush(advance=CLOSE_WAIT_TIMEOUT - 1)
        self.assertIsNone(client.lost)
        self.net.flush(advance=2)
        assert client.lost is not None and server.lost is not None
        self.assertEqual(client.lost.value.reason, "timeout")
        self.assertEqual(server.lost.value.reason, "timeout")
        self.assertEqual((self.a.sessions(), self.b.sessions()), ([], []))

    def test_notHalfCloseable(self) -> None:
        """
        For a plugin that does not provide IHalfCloseableProtocol, the
        peer's FIN closes the session as a whole, as before.
        """
        client = self.open("plain", HalfCloser(b"q"))
        assert client.lost is not None
        self.assertEqual(client.lost.value.reason, "normal")
        # The server side waits UNBIND_GRACE for an UNBIND that may follow.
        self.net.flush(advance=UNBIND_GRACE)
        self.assertEqual((self.a.sessions(), self.b.sessions()), ([], []))
        self.assertEqual(self.net.clock.getDelayedCalls(), [])
