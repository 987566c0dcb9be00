"""
Registration: an end node registers its records with its network-node
server (C{RegisterResources}), and a network node pushes its own and its end
nodes' records, hop by hop, to the central directory server when one is
configured.  Both are refreshed three times per record TTL and whenever what
they carry changes.

Every registration is signed by its origin with an increasing C{seq}; the
receiver accepts it only if that signature verifies and the seq is newer
than the last one it accepted from that origin, so what a node registered
can be replaced only by that node.  Registrations are rate limited per
neighbour and per origin, carry at most L{MAX_RECORDS_PER_MESSAGE} records,
and a record already registered unchanged is not verified again: one
message costs at most one signature check plus one per new record.
"""

from __future__ import annotations

from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import MAX_MESSAGE_SIZE
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
        if not self.names.mayOffer(name, self.cpName):
            raise ValueError(
                f"in network trust mode this node offers only names under its CP name "
                f"(<kind>:{self.cpName} or <kind>:{self.cpName}/...), not {name!r}"
            )
        if name not in self._registered:
            self._registered.add(name)
            self._refreshRegistrations()

    # -- registration ------------------------------------------------------------

    def _refreshRegistrations(self) -> None:
        if self.role == "end":
            server = self._serverCP()
            if server is not None:
                blobs = [r.toBlob() for r in self._ownRecords()]
                self._send(server, self._registration(blobs, ""))
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
        msg = self._registration(blobs, self.cdsNode)
        nextHop = self._nextHop(self.cdsNode)
        if nextHop is None:
            self.stats["cds-unreachable"] += 1
            return
        self._send(nextHop, msg)

    def _registration(self, blobs: list[bytes], target: str) -> RegisterResources:
        """
        This node's signed registration of as many of C{blobs} as one
        message carries.
        """
        kept: list[bytes] = []
        size = 1024  # the other fields and the framing, generously
        for raw in blobs[:MAX_RECORDS_PER_MESSAGE]:
            size += len(raw) + 3
            if size > MAX_MESSAGE_SIZE:
                self.stats["registration-truncated"] += 1
                break
            kept.append(raw)
        return RegisterResources.create(self.identity, kept, self._nextSeq(), target)

    def _registerAdmitted(self, key: str, scale: float = 1.0) -> bool:
        bucket = self._bucket(
            self._registerBuckets, key, self.registerRate * scale, self.registerBurst * scale
        )
        return bucket.take(self.reactor.seconds())

    def _registerReceived(self, cp: ControlPoint, msg: RegisterResources) -> None:
        # A neighbour may forward the registrations of many origins.
        if not self._registerAdmitted("via:" + cp.peerNodeID, 10.0):
            self.stats["registrations-limited"] += 1
            return
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
        origin = msg.origin
        if fromEndNode and origin != cp.peerNodeID:
            self.stats["registrations-dropped"] += 1
            return
        if not fromEndNode and not self.isCDS:
            self.stats["registrations-dropped"] += 1
            return
        if not self._registerAdmitted("origin:" + origin):
            self.stats["registrations-limited"] += 1
            return
        if not msg.verified():
            self.stats["registrations-forged"] += 1
            self.log.warn(
                "refused a registration from {peer} claiming origin {origin}: "
                "it is not signed by that origin",
                peer=cp.peerNodeID,
                origin=origin,
            )
            return
        if msg.seq <= self._registrationSeqs.get(origin, -1):
            self.stats["registrations-replayed"] += 1
            return
        self._registrationSeqs[origin] = msg.seq
        records = self._registeredRecords(origin, fromEndNode, msg.records)
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

    def _registeredRecords(
        self, origin: str, fromEndNode: bool, blobs: list[bytes]
    ) -> list[ResourceRecord]:
        """
        The records of C{origin}'s registration that it may register: its
        own, and at a CDS those of the end nodes it serves; each one checked
        (signature and name rules) unless already registered unchanged.
        """
        known = {r.toBlob(): r for r in self.registry.registeredVia({origin})}
        now = self.reactor.seconds()
        records = []
        for raw in blobs:
            record = known.get(raw)
            if record is None:
                try:
                    record = ResourceRecord.fromBlob(raw)
                except InvalidRecord:
                    self.stats["forged-records"] += 1
                    continue
                why = self.names.refusal(record, now)
                if why is not None:
                    self.stats["names-refused"] += 1
                    self.log.warn(
                        "refused a registration of {name} by {owner}: {why}",
                        name=record.name,
                        owner=record.owner,
                        why=why,
                    )
                    continue
            if record.owner != origin and (fromEndNode or not self._serves(origin, record.owner)):
                # Squatting: a node registers only what it, or an end node
                # it serves, signed.
                self.stats["squatting-refused"] += 1
                continue
            records.append(record)
        return records

    def _serves(self, origin: str, endNode: str) -> bool:
        topology = self.topology
        if topology is None:
            return False
        try:
            return topology.servingNode(endNode) == origin
        except Exception:
            return False

    def _replaceRegistrations(self, via: str, records: list[ResourceRecord]) -> None:
        for name in self.registry.replace(via, records, self.reactor.seconds()):
            # A registration supersedes what we had learnt about the name.
            self.cache.forgetMiss(name)

    def _attachedChanged(self) -> None:
        if self.topology is not None:
            self.topology.setAttachedEndNodes(sorted(self._attached))
