"""
The link protocol: what runs under TLS on one connection.  Once TLS has
authenticated the peer it starts the link's multiplexer and control point;
it tracks the connection's end for both.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import ILinkHost, ILinkTransport
from appnpy.cp.controlpoint import LINGER_TIMEOUT, ControlPoint
from appnpy.errors import Reason
from appnpy.link.tcpinfo import pathQuietFor
from appnpy.link.tls import AuthenticatedProtocol
from appnpy.link.yamux import Multiplexer, Stream


@implementer(ILinkTransport)
class LinkProtocol(AuthenticatedProtocol):
    """
    The protocol under TLS: once the peer is authenticated it runs the
    multiplexer and the link's control point.
    """

    log = Logger()

    def __init__(
        self, host: ILinkHost, isClient: bool, expectedNodeID: str | None, address: str
    ) -> None:
        super().__init__(
            reactor=host.reactor,
            ownNodeID=host.nodeID,
            expectedNodeID=expectedNodeID,
            handshakeTimeout=host.handshakeTimeout,
            trustMode=host.trust.mode,
        )
        self.host = host
        self.isClient = isClient
        self.address = address
        self.mux: Multiplexer | None = None
        self.cp: ControlPoint | None = None
        self._lostWaiters: list[Deferred[None]] = []
        self._authWaiters: list[Deferred[None]] = []
        self.lost = False
        self._lostReason: Failure | None = None
        #: Why this end refused the link before it came up, if it did.
        self.refusal: tuple[str, str] | None = None
        self._lingerCall: IDelayedCall | None = None

    def addressText(self) -> str:
        if self.address:
            return self.address
        # Any: IAddress declares no host/port; the hasattr below guards them.
        peer: Any = self.transport.getPeer() if self.transport else None
        return f"{peer.host}:{peer.port}" if peer is not None and hasattr(peer, "host") else ""

    def closeTransport(self) -> None:
        """
        Close the TLS connection after what is already written.  The
        multiplexer is unregistered first: a transport with a registered
        producer would otherwise wait for it forever.
        """
        if self.transport is None or self.lost:
            return
        if self.mux is not None:
            # Frames the multiplexer collected during this read go first.
            self.mux.flush()
        cast(IConsumer, self.transport).unregisterProducer()
        self.transport.loseConnection()

    def dropUnauthenticated(self) -> None:
        """
        Close a connection still in its handshake (the node is stopping):
        the TCP connection is closed under TLS, which has nothing to flush.
        """
        if self.transport is not None and not self.lost:
            tcp = getattr(self.transport, "transport", None) or self.transport
            tcp.loseConnection()

    def abortTransport(self) -> None:
        if self.transport is not None and not self.lost:
            cast(ITCPTransport, self.transport).abortConnection()

    def whenLost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.lost:
            d.callback(None)
        else:
            self._lostWaiters.append(d)
        return d

    def whenAuthenticatedOrLost(self) -> Deferred[None]:
        """
        Fires once TLS has authenticated the peer (C{self.cp} is then set) or
        the connection is gone.
        """
        d: Deferred[None] = Deferred()
        if self.cp is not None or self.lost:
            d.callback(None)
        else:
            self._authWaiters.append(d)
        return d

    def failureReason(self) -> str:
        if self._lostReason is None:
            return "the link was closed"
        return self._lostReason.getErrorMessage()

    def _fireAuthWaiters(self) -> None:
        waiters, self._authWaiters = self._authWaiters, []
        for d in waiters:
            d.callback(None)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.host.linkPending(self)

    def authenticationFailed(self, why: str) -> None:
        self.host.handshakeFailed(why)

    def linkAuthenticated(self, peerNodeID: str) -> None:
        self.host.linkSettled(self)
        if peerNodeID == self.host.nodeID:
            self.log.info(
                "dropped a link to this node itself ({address})", address=self.addressText()
            )
            self.refusal = (Reason.SELF_DIAL.value, "this node dialled its own address")
            cast(ITCPTransport, self.transport).abortConnection()
            return
        mux = Multiplexer(
            self.transport,
            self.isClient,
            self._streamAccepted,
            self.host.reactor,
            self.host.muxConfig,
            onClose=self._muxClosed,
        )
        self.mux = mux
        mux.pathQuiet = pathQuietFor(self.transport)
        # The data path goes straight from TLS to the multiplexer.
        self.dataReceived = mux.dataReceived  # type: ignore[method-assign]
        self.cp = ControlPoint(self.host, mux, self, peerNodeID)
        self.cp.start()
        self._fireAuthWaiters()

    def _streamAccepted(self, stream: Stream) -> None:
        assert self.cp is not None
        self.cp.streamAccepted(stream)

    def _muxClosed(self, reason: Failure) -> None:
        # The multiplexer failed (protocol error, keepalive timeout) or the
        # connection is gone.  Record the real cause before the streams end,
        # then close so that a GoAway already written still goes out.
        if self.cp is not None:
            self.cp.multiplexerClosed(reason)
        if self.transport is not None and not self.lost:
            self.closeTransport()
            self._lingerCall = self.host.reactor.callLater(LINGER_TIMEOUT, self.abortTransport)

    def authenticatedDataReceived(self, data: bytes) -> None:
        assert self.mux is not None
        self.mux.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.host.linkSettled(self)
        self.lost = True
        self._lostReason = reason
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        if self.mux is not None:
            self.mux.connectionLost(reason)
        if self.cp is not None:
            self.cp.linkLost(reason)
        self._fireAuthWaiters()
        waiters, self._lostWaiters = self._lostWaiters, []
        for d in waiters:
            d.callback(None)
