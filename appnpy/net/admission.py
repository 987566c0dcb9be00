"""
Admission control: how a node sheds a flood of inbound connections before
they cost it a TLS handshake each, and keeps room for honest peers while
idle or slow connections (slowloris) are held open against it.
"""

from __future__ import annotations

import resource
from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from appnpy.cp.linkprotocol import LinkProtocol
from appnpy.errors import Reason
from appnpy.link.ratelimit import TokenBucket
from appnpy.link.refusal import refusalLine

#: File descriptors kept free for everything but inbound links (dialled links,
#: the management API and its clients, state files, logs).
FD_RESERVE = 32
#: Seconds a refused connection, its line sent and its direction closed,
#: reads and drops what the dialler sends (its TLS ClientHello) before it
#: closes: a socket closed with bytes unread makes the kernel reset the
#: connection, and a reset can discard the refusal line before the dialler
#: reads it.  An honest dialler closes as soon as it has read the line.
REFUSAL_LINGER = 1.0


def defaultMaxConnections() -> int:
    """
    How many inbound connections the process's file-descriptor limit (the
    soft C{RLIMIT_NOFILE}, C{ulimit -n}) leaves room for, after
    L{FD_RESERVE}.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, soft - FD_RESERVE)


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


class _Refusal(Protocol):
    """
    A refused connection: the refusal line instead of TLS, then close, so
    that the dialler can log why (docs/protocol.md section 4.4).
    """

    def __init__(self, line: bytes, closed: Any, clock: Any) -> None:
        self.line = line
        self._closed = closed
        self._clock = clock
        self._linger: Any = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)
        # FIN after the line; the dialler's FIN (or the linger) ends it.
        self.transport.loseWriteConnection()  # type: ignore[attr-defined]
        self._linger = self._clock.callLater(REFUSAL_LINGER, self.transport.abortConnection)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        pass  # read only so that closing does not reset the connection

    def cutShort(self) -> None:
        """
        Close now: the node needs the descriptor.
        """
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: object = None) -> None:
        linger, self._linger = self._linger, None
        if linger is not None and linger.active():
            linger.cancel()
        self._closed(self)


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
        enough for a handshake;
      - at most C{maxConnections} inbound connections open at all,
        counting those still closing (by default what C{ulimit -n} leaves
        after L{FD_RESERVE}), so that the node never runs out of file
        descriptors.  At the limit a newcomer is closed at once (no refusal
        line: that would hold its descriptor a moment longer), and the
        oldest connection still in its handshake, if any, is dropped to make
        room for the next; with none (every open one an authenticated link)
        the node logs once that it is out of descriptors, and once that it
        accepts again.

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
        maxConnections: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.maxUnauthenticated = maxUnauthenticated
        self.maxConnections = maxConnections or defaultMaxConnections()
        self.reportInterval = reportInterval
        self._bucket = TokenBucket(rate, burst, reactor.seconds())
        #: Connections still in the handshake, oldest first.
        self._pending: OrderedDict[LinkProtocol, None] = OrderedDict()
        #: Every admitted connection not yet lost.
        self._open: set[LinkProtocol] = set()
        #: Refused for lack of file descriptors since running out, or None.
        self._fdRefusals: int | None = None
        #: Refusal lines still being written.
        #: Refused connections still open (their line sent, lingering),
        #: oldest first.
        self._refusals: dict[_Refusal, None] = {}
        self.refused = {"rate": 0, "dropped": 0, "full": 0}
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
        The protocol for a new connection: the link's, a refusal when over
        the accept rate, or L{None} (closed at once) at the connection
        limit.  Over the unauthenticated cap, the oldest connection still in
        its handshake is dropped to make room.
        """
        if len(self._open) + len(self._refusals) >= self.maxConnections:
            # Closed by the reactor before it accepts the next one.
            if self._pending:
                self._evictOldest()
                self._count("full")
            elif self._refusals:
                # A lingering refusal has sent its line: it makes room.
                next(iter(self._refusals)).cutShort()
                self._count("full")
            else:
                self._outOfDescriptors()
            return None
        if not self._bucket.take(self.reactor.seconds()):
            self._count("rate")
            refusal = _Refusal(
                refusalLine(Reason.BUSY.value, "too many new connections; retry in a few seconds"),
                self._refusalClosed,
                self.reactor,
            )
            self._refusals[refusal] = None
            return refusal
        protocol = factory.buildProtocol(addr)
        # A link is its TLS wrapper's wrapped protocol (TLSMemoryBIOProtocol
        # is a ProtocolWrapper); anything else is not counted.
        link = protocol.wrappedProtocol if isinstance(protocol, ProtocolWrapper) else protocol
        if isinstance(link, LinkProtocol):
            while len(self._pending) >= self.maxUnauthenticated:
                self._evictOldest()
            self._pending[link] = None
            self._open.add(link)
            link.whenAuthenticatedOrLost().addBoth(self._authenticatedOrLost, link)
            link.whenLost().addBoth(self._lost, link)
        return protocol

    def _evictOldest(self) -> None:
        # It stays in _open (its descriptor) until it is gone.
        oldest, _ = self._pending.popitem(last=False)
        self._count("dropped")
        oldest.evict()

    def _refusalClosed(self, refusal: _Refusal) -> None:
        self._refusals.pop(refusal, None)

    def _authenticatedOrLost(self, result: object, link: LinkProtocol) -> None:
        self._pending.pop(link, None)

    def _lost(self, result: object, link: LinkProtocol) -> None:
        self._open.discard(link)
        if self._fdRefusals is not None and len(self._open) < self.maxConnections:
            self.log.info(
                "accepting inbound connections again ({open} open); refused {count} "
                "while out of file descriptors",
                open=len(self._open),
                count=self._fdRefusals,
            )
            self._fdRefusals = None

    def _outOfDescriptors(self) -> None:
        if self._fdRefusals is None:
            self._fdRefusals = 0
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.log.warn(
                "out of file descriptors for inbound connections: {open} open, the most "
                "that ulimit -n {limit} leaves room for; refusing new ones until some "
                "close (raise ulimit -n to allow more)",
                open=len(self._open),
                limit=soft,
            )
        self._fdRefusals += 1

    def _count(self, why: str) -> None:
        self.refused[why] += 1
        if self._report is None:
            self._report = self.reactor.callLater(self.reportInterval, self._summarise)

    def _summarise(self) -> None:
        self._report = None
        rate, dropped, full = (self.refused[k] for k in ("rate", "dropped", "full"))
        self.refused = {"rate": 0, "dropped": 0, "full": 0}
        self.log.warn(
            "in the last {interval:g} s: refused {rate} inbound connections over the "
            "accept rate, closed {full} at the connection limit ({maxConnections}), "
            "dropped {dropped} still in the handshake (oldest first)",
            count=rate + full,
            interval=self.reportInterval,
            rate=rate,
            full=full,
            dropped=dropped,
            maxConnections=self.maxConnections,
        )

    def stop(self) -> None:
        """
        The node stops: log what is still to be summarised, now.
        """
        if self._report is not None and self._report.active():
            self._report.cancel()
            self._summarise()
        self._report = None
