"""
Registration: an end node registers its records with its network-node
server (C{RegisterResources}), and a network node pushes its own and its end
nodes' records, hop by hop, to the central directory server when one is
configured.  Both are refreshed three times per record TTL and whenever what
they carry changes.
"""

from __future__ import annotations

from appnpy.cp.controlpoint import ControlPoint
from appnpy.net.directory._core import DirectoryBase
from appnpy.net.directory.messages import MAX_RECORDS_PER_MESSAGE, RegisterResources
from appnpy.net.directory.records import InvalidRecord, ResourceRecord, validResourceName
from appnpy.net.directory.registry import MAX_RECORDS_PER_REGISTRANT


class RegistrationMixin(DirectoryBase):
    """
    Sending and receiving registrations (a part of L{service.Directory}).
    """

    def register(self, name: str) -> None:
        """
        Offer C{name} from this node (besides what its plugins offer).
        """
        if not validResourceName(name):
            raise ValueError(f"resource names are <kind>:<name>, not {name!r}")
        if name not in self._registered:
            self._registered.add(name)
            self._refreshRegistrations()

    # -- registration ------------------------------------------------------------

    def _refreshRegistrations(self) -> None:
        if self.role == "end":
            server = self._serverCP()
            if server is not None:
                self._send(
                    server,
                    RegisterResources(
                        records=[r.toBlob() for r in self._ownRecords()][:MAX_RECORDS_PER_MESSAGE]
                    ),
                )
        else:
            self._pushToCDS()

    def _schedulePush(self) -> None:
        if self.cdsNode is None or (self._pushScheduled and self._pushScheduled.active()):
            return
        self._pushScheduled = self.reactor.callLater(0, self._pushToCDS)

    def _pushToCDS(self) -> None:
        """
        Central resource registration: send this node's records and its end
        nodes' to the CDS, hop by hop.
        """
        if self.cdsNode is None or self.role != "network" or not self.running:
            return
        blobs = [r.toBlob() for r in self._ownRecords()]
        blobs.extend(r.toBlob() for r in self.registry.registeredVia(self._attached))
        msg = RegisterResources(
            records=blobs[:MAX_RECORDS_PER_MESSAGE], origin=self.nodeID, target=self.cdsNode
        )
        nextHop = self._nextHop(self.cdsNode)
        if nextHop is None:
            self.stats["cds-unreachable"] += 1
            return
        self._send(nextHop, msg)

    def _registerReceived(self, cp: ControlPoint, msg: RegisterResources) -> None:
        peerRole = self._peerRole(cp)
        if msg.target and msg.target != self.nodeID:
            nextHop = self._nextHop(msg.target) if self.role == "network" else None
            if nextHop is None or nextHop is cp:
                self.stats["registrations-dropped"] += 1
            else:
                self._send(nextHop, msg)
            return
        if self.role != "network":
            self.stats["registrations-dropped"] += 1
            return
        fromEndNode = peerRole == "end"
        origin = msg.origin or cp.peerNodeID
        if fromEndNode and origin != cp.peerNodeID:
            self.stats["registrations-dropped"] += 1
            return
        if not fromEndNode and not self.isCDS:
            self.stats["registrations-dropped"] += 1
            return
        records = []
        for raw in msg.records:
            try:
                record = ResourceRecord.fromBlob(raw)
            except InvalidRecord:
                self.stats["forged-records"] += 1
                continue
            if fromEndNode and record.owner != cp.peerNodeID:
                # Squatting: an end node registers only what it signed.
                self.stats["squatting-refused"] += 1
                continue
            records.append(record)
        self._replaceRegistrations(origin, records[:MAX_RECORDS_PER_REGISTRANT])
        if fromEndNode:
            new = cp.peerNodeID not in self._attached
            self._attached[cp.peerNodeID] = cp
            if new:
                self.log.info(
                    "end node {peer} ({name}) registered {count} resources",
                    peer=cp.peerNodeID,
                    name=cp.peerName,
                    count=len(records),
                )
                self._attachedChanged()
            self._schedulePush()

    def _replaceRegistrations(self, via: str, records: list[ResourceRecord]) -> None:
        for name in self.registry.replace(via, records, self.reactor.seconds()):
            # A registration supersedes what we had learnt about the name.
            self.cache.forgetMiss(name)

    def _attachedChanged(self) -> None:
        if self.topology is not None:
            self.topology.setAttachedEndNodes(sorted(self._attached))
