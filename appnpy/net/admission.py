"""
Admission control: how a node sheds a flood of inbound connections before
they cost it a TLS handshake each, and keeps room for honest peers while
idle or slow connections (slowloris) are held open against it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.errors import Reason
from appnpy.link.tls import refusalLine
from appnpy.net.ratelimit import TokenBucket


class _AdmittingFactory(Factory[Protocol]):
    def __init__(self, admission: AdmissionControl, wrapped: Factory[Protocol]) -> None:
        self.admission = admission
        self.wrapped = wrapped

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return self.admission.admit(self.wrapped, addr)


class _Refusal(Protocol):
    """
    A refused connection: the refusal line instead of TLS, then close, so
    that the dialler can log why (docs/protocol.md section 4.4).
    """

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)
        self.transport.loseConnection()


class AdmissionControl:
    """
    Protects a node from a flood of connections and from connections held
    open without finishing the handshake:

      - at most C{rate} new connections a second (a token bucket of
        C{burst}); an excess connection is answered with a refusal line
        (reason C{busy}) instead of TLS and closed;
      - at most C{maxUnauthenticated} connections still in the TLS handshake
        (the handshake deadline ends each after 10 s anyway).  A new
        connection beyond that drops the B{oldest} unauthenticated one
        (OpenSSH's MaxStartups drops at random; the oldest is what idle and
        slow connections are), so an honest peer always gets a slot and,
        with connections arriving at most at C{rate}, keeps it for at least
        C{maxUnauthenticated / rate} seconds (about a second by default),
        enough for a handshake.

    Refusals and drops are summarised in at most one log line per
    C{reportInterval}.  Set as C{node.admission}; the node listens with
    C{wrap(factory)}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        rate: float = 50.0,
        burst: int = 100,
        maxUnauthenticated: int = 64,
        reportInterval: float = 1.0,
    ) -> None:
        self.reactor = reactor
        self.maxUnauthenticated = maxUnauthenticated
        self.reportInterval = reportInterval
        self._bucket = TokenBucket(rate, burst, reactor.seconds())
        #: Connections still in the handshake, oldest first.
        self._pending: OrderedDict[LinkProtocol, None] = OrderedDict()
        self.refused = {"rate": 0, "dropped": 0}
        self._report: IDelayedCall | None = None

    @property
    def unauthenticated(self) -> int:
        """
        How many admitted connections are still in the handshake.
        """
        return len(self._pending)

    def wrap(self, factory: Factory[Protocol]) -> Factory[Protocol]:
        return _AdmittingFactory(self, factory)

    def admit(self, factory: Factory[Protocol], addr: IAddress | None) -> Protocol | None:
        """
        The protocol for a new connection: the link's, or a refusal when
        over the accept rate.  Over the unauthenticated cap, the oldest
        connection still in its handshake is dropped to make room.
        """
        if not self._bucket.take(self.reactor.seconds()):
            self._count("rate")
            return _Refusal(
                refusalLine(Reason.BUSY.value, "too many new connections; retry in a few seconds")
            )
        protocol = factory.buildProtocol(addr)
        # A link is its TLS wrapper's wrapped protocol (TLSMemoryBIOProtocol
        # is a ProtocolWrapper); anything else is not counted.
        link = protocol.wrappedProtocol if isinstance(protocol, ProtocolWrapper) else protocol
        if isinstance(link, LinkProtocol):
            while len(self._pending) >= self.maxUnauthenticated:
                oldest, _ = self._pending.popitem(last=False)
                self._count("dropped")
                oldest.evict()
            self._pending[link] = None
            link.whenAuthenticatedOrLost().addBoth(self._authenticatedOrLost, link)
        return protocol

    def _authenticatedOrLost(self, result: object, link: LinkProtocol) -> None:
        self._pending.pop(link, None)

    def _count(self, why: str) -> None:
        self.refused[why] += 1
        if self._report is None:
            self._report = self.reactor.callLater(self.reportInterval, self._summarise)

    def _summarise(self) -> None:
        self._report = None
        rate, dropped = self.refused["rate"], self.refused["dropped"]
        self.refused = {"rate": 0, "dropped": 0}
        self.log.warn(
            "in the last {interval:g} s: refused {rate} inbound connections over the "
            "accept rate, dropped {dropped} still in the handshake (oldest first, "
            "over {max} unauthenticated)",
            count=rate + dropped,
            interval=self.reportInterval,
            rate=rate,
            dropped=dropped,
            max=self.maxUnauthenticated,
        )

    def stop(self) -> None:
        """
        The node stops: log what is still to be summarised, now.
        """
        if self._report is not None and self._report.active():
            self._report.cancel()
            self._summarise()
        self._report = None
