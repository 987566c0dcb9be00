"""
TLS 1.3 end to end over one routed stream, as the transport of an adjacent
session's numbered stream once the session has moved to a routed path
(L{EndToEndCarrier}; docs/protocol.md 15.9).

An adjacent session's numbered stream (L{appnpy.session.resumable}) runs
over the plaintext: on the direct link the link's TLS protects it, and the
neighbour is the far end.  On a routed path there are relays in between,
so each new path gets a fresh TLS connection between the two ends, each
pinning the other's node ID as any routed session does (15.6), and the
numbered stream continues inside it.  To the numbered stream the carrier
is a stream like any other: it writes, reads, pauses and half-closes it.
Nothing read from the TLS reaches it before the far end has authenticated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IHandshakeListener
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.errors import PeerAuthenticationError
from appnpy.link.tls import checkPeer
from appnpy.session.endtoend import _EndToEndTLS

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProtocol

    from appnpy.link.yamux import Stream
    from appnpy.session.routed import RoutedSessions

__all__ = ["EndToEndCarrier"]


class _Records:
    """
    The protocol of the routed stream under the carrier: the TLS records go
    to the TLS layer (its C{dataReceived}, set per instance).
    """

    def __init__(self, tls: Any) -> None:
        self.dataReceived = tls.dataReceived
        self._tls: Any = tls  # Twisted's TLS layer is unannotated

    def makeConnection(self, transport: Any) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._tls.connectionLost(reason)


@implementer(IHandshakeListener)
class EndToEndCarrier:
    """
    One routed path of an adjacent session: the TLS connection between the
    two ends over C{stream}, with the numbered stream as its protocol.

    @ivar protocol: what the plaintext goes to (the numbered stream's side
        of this path, once attached).
    @ivar authenticated: whether the far end's certificate passed the pin.
    """

    def __init__(
        self,
        owner: RoutedSessions,
        stream: Stream,
        isClient: bool,
        peerNodeID: str,
        onAuthenticated: Callable[[EndToEndCarrier], None],
        onFailed: Callable[[EndToEndCarrier, str], None],
    ) -> None:
        """
        @param peerNodeID: the node the far end must authenticate as.
        @param onAuthenticated: called once the far end is authenticated.
        @param onFailed: called with why, if the path fails before its
            numbered stream is attached (after, the stream hears of it).
        """
        self.protocol: Any = None
        self.authenticated = False
        self.ended = False
        #: Whether this path was given up (its stream is being reset).
        self._failed = False
        self._owner = owner
        self._stream = stream
        self._peerNodeID = peerNodeID
        self._onAuthenticated = onAuthenticated
        self._onFailed = onFailed
        self._timer: IDelayedCall | None = owner.reactor.callLater(
            owner.host.handshakeTimeout, self._fail, "end-to-end TLS handshake timed out"
        )
        tls = _EndToEndTLS(owner.tlsFactory(isClient), cast("IProtocol", self))
        self._tls: Any = tls  # Twisted's TLS layer is unannotated
        tls.makeConnection(stream)  # type: ignore[no-untyped-call]  # unannotated Twisted method
        stream.attachProtocol(_Records(tls))

    def feed(self, data: bytes) -> None:
        """
        TLS records that came with the BIND answer.
        """
        if data:
            self._tls.dataReceived(data)

    # -- the TLS layer's protocol ------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        pass

    def handshakeCompleted(self) -> None:
        if self.ended or self._failed:
            return
        owner = self._owner
        try:
            checkPeer(self._tls, self._peerNodeID, owner.nodeID, trustMode=owner.trustMode)
        except PeerAuthenticationError as e:
            self._fail(f"end-to-end authentication failed: {e}")
            return
        self.authenticated = True
        self._cancelTimer()
        self._onAuthenticated(self)

    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        protocol = self.protocol
        if protocol is None or not self.authenticated:
            # The origin sends nothing before the destination's RESUME,
            # which the destination sends once it has authenticated it.
            self._fail("data before the path was resumed")
            return
        protocol.dataReceived(data)

    def _tlsFailed(self, reason: Failure) -> None:
        # _EndToEndTLS tells of a TLS failure before the stream closes; the
        # path's end (connectionLost) follows and says the rest.
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self.ended:
            return
        self.ended = True
        self._cancelTimer()
        protocol = self.protocol
        if protocol is None:
            self._onFailed(self, reason.getErrorMessage())
            return
        if reason.check(ConnectionDone) and IHalfCloseableProtocol.providedBy(protocol):
            # A TLS close (close_notify both ways): the far end finished.
            protocol.readConnectionLost()
        protocol.connectionLost(reason)

    # -- the numbered stream's transport ----------------------------------------

    def attachProtocol(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self._tls.write(data)

    def writeSequence(self, data: Any) -> None:
        self._tls.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._tls.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if not self._tls.ended:
            self._tls.unregisterProducer()

    def pauseProducing(self) -> None:
        self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        self._stream.resumeProducing()

    def loseConnection(self) -> None:
        # close_notify after what is written, then FIN.  Twisted's TLS layer
        # holds its shutdown back while a producer is registered; nothing is
        # written after the FIN but acknowledgements, which a closing
        # session can do without.
        tls = self._tls
        if tls.ended or not self.authenticated:
            self._stream.loseConnection()
            return
        if tls._producer is not None:
            tls.unregisterProducer()
        tls.loseConnection()

    def abortConnection(self) -> None:
        # Never from inside the TLS layer's own call chain (a record being
        # processed): the stream would end the TLS layer under it.
        self._owner.reactor.callLater(0, self._stream.abortConnection)

    @property
    def unsent(self) -> int:
        """
        Bytes of this path's TLS records not yet sent on its stream.
        """
        return int(self._stream.unsent)

    def getPeer(self) -> Any:
        return self._stream.getPeer()

    def getHost(self) -> Any:
        return self._stream.getHost()

    # -- failures ---------------------------------------------------------------------

    def _fail(self, detail: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._cancelTimer()
        self._owner.log.info(
            "end-to-end TLS of a switched session with {peer}: {detail}",
            peer=self._peerNodeID,
            detail=detail,
        )
        self.abortConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
