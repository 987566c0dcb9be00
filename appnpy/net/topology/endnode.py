"""
An end node's C{end} record: its own signed word for which network node
serves it.

An end node keeps no topology database, but it is the only node that may
say who serves it: it signs an C{end} record (owner: itself, subject: the
network node it chose, body: its public key and CP name) and sends it over
the link to that network node, which floods it.  Routes to the end node then
end at the node it named (L{appnpy.net.topology.database.RecordStore.servingNode});
a network node that merely lists it gains nothing.

The server is chosen by the directory's rule (the first network node
linked; when its link goes, the one linked longest), from the same link
events, so the record names the node the end node registers with.  It is
re-issued under a new, even RSN when the server changes and every
C{refreshInterval} so the network's copies do not age out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from appnpy.cp._interfaces import ILinkObserver, ILinkRegistry
from appnpy.link.identity import Identity
from appnpy.net.topology.flooding import isNetworkPeer
from appnpy.net.topology.records import END, TopologyRecord, TopologyUpdate
from appnpy.net.topology.rsn import OwnRSN

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint

__all__ = ["EndRecord"]


@implementer(ILinkObserver)
class EndRecord(Service):
    """
    Issues this end node's C{end} record to its network-node server.

    @ivar server: the node ID of the server named, or C{None}.
    @ivar record: the last record issued.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        identity: Identity,
        name: str,
        links: ILinkRegistry,
        stateDir: str | None = None,
        refreshInterval: float = 1800.0,
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.name = name
        self.links = links
        self.refreshInterval = refreshInterval
        self.ownRSN = OwnRSN(stateDir, reactor.seconds())
        self.server: str | None = None
        self.record: TopologyRecord | None = None
        self._refresh: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        for cp in list(self.links.links.values()):
            self.linkActive(cp)
        self._schedule()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated Twisted method
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        self._refresh = None

    def _schedule(self) -> None:
        self._refresh = self.reactor.callLater(self.refreshInterval, self._tick)

    def _tick(self) -> None:
        self._schedule()
        self.announce()

    # -- link events (ILinkObserver) ---------------------------------------------

    def linkActive(self, cp: ControlPoint) -> None:
        if self.running and self.server is None and isNetworkPeer(cp):
            self.server = cp.peerNodeID
            self.announce()

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        if not self.running or cp.peerNodeID != self.server:
            return
        self.server = None
        candidates = sorted(
            (c for p, c in self.links.links.items() if p != cp.peerNodeID and isNetworkPeer(c)),
            key=lambda c: c.since,
        )
        if candidates:
            self.server = candidates[0].peerNodeID
            self.announce()

    # -- issuing ---------------------------------------------------------------------

    def announce(self) -> None:
        """
        Sign a new C{end} record naming the current server and send it there.
        """
        cp = self.links.links.get(self.server) if self.server is not None else None
        if cp is None or self.server is None:
            return
        body = {"name": self.name, "public_key": self.identity.publicKeyBytes}
        self.record = TopologyRecord.create(
            self.identity, END, self.server, self.ownRSN.next(), body
        )
        cp.send(TopologyUpdate(epoch="", frsn_from=0, frsn_to=0, records=[self.record.raw]))
