"""
Admission control: how a busy node (a seed) sheds a flood of inbound
connections before they cost it a TLS handshake each.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from appnpy.cp.linkprotocol import LinkProtocol


class _AdmittingFactory(Factory[Protocol]):
    # The port logs "<logPrefix> starting on <port>": words, not a class name.
    noisy = False

    def logPrefix(self) -> str:
        return "appnpy link listener"

    def __init__(self, admission: AdmissionControl, wrapped: Factory[Protocol]) -> None:
        self.admission = admission
        self.wrapped = wrapped

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return self.admission.admit(self.wrapped, addr)


class AdmissionControl:
    """
    Protects a busy node (a seed) from a flood of connections: at most
    C{rate} new connections a second (a token bucket of C{burst}), and at
    most C{maxUnauthenticated} connections still in the TLS handshake.  An
    excess connection is closed at once; refusals are summarised in at most
    one log line a second.

    Set as C{node.admission}; the node listens with C{wrap(factory)}.
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
        self.rate = rate
        self.burst = burst
        self.maxUnauthenticated = maxUnauthenticated
        self.reportInterval = reportInterval
        self.tokens = float(burst)
        self._filled = reactor.seconds()
        self.unauthenticated = 0
        self.refused = {"rate": 0, "handshakes": 0}
        self._report: IDelayedCall | None = None

    def wrap(self, factory: Factory[Protocol]) -> Factory[Protocol]:
        return _AdmittingFactory(self, factory)

    def _refill(self) -> None:
        now = self.reactor.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self._filled) * self.rate)
        self._filled = now

    def admit(self, factory: Factory[Protocol], addr: IAddress | None) -> Protocol | None:
        """
        The protocol for a new connection, or L{None} (the reactor then
        closes it at once) when over either limit.
        """
        self._refill()
        if self.unauthenticated >= self.maxUnauthenticated:
            self._refuse("handshakes")
            return None
        if self.tokens < 1:
            self._refuse("rate")
            return None
        self.tokens -= 1
        protocol = factory.buildProtocol(addr)
        # A link is its TLS wrapper's wrapped protocol (TLSMemoryBIOProtocol
        # is a ProtocolWrapper); anything else is not counted.
        link = protocol.wrappedProtocol if isinstance(protocol, ProtocolWrapper) else protocol
        if isinstance(link, LinkProtocol):
            self.unauthenticated += 1
            link.whenAuthenticatedOrLost().addBoth(self._authenticatedOrLost)
        return protocol

    def _authenticatedOrLost(self, result: object) -> None:
        self.unauthenticated -= 1

    def _refuse(self, why: str) -> None:
        self.refused[why] += 1
        if self._report is None:
            self._report = self.reactor.callLater(self.reportInterval, self._summarise)

    def _summarise(self) -> None:
        self._report = None
        rate, handshakes = self.refused["rate"], self.refused["handshakes"]
        self.refused = {"rate": 0, "handshakes": 0}
        self.log.warn(
            "refused {count} inbound connections in the last {interval:g} s: {rate} over "
            "the accept rate, {handshakes} over {max} unauthenticated",
            count=rate + handshakes,
            interval=self.reportInterval,
            rate=rate,
            handshakes=handshakes,
            max=self.maxUnauthenticated,
        )

    def stop(self) -> None:
        if self._report is not None and self._report.active():
            self._report.cancel()
        self._report = None
