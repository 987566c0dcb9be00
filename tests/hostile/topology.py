"""
Hostile network nodes for the topology database: a real node of the harness
(real key, real TLS link, real control messages) that sends topology
records it made up, signed for real, by itself or by fresh identities it
mints by the thousand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appnpy.link.identity import Identity, generateIdentity, nodeIDFromSPKI
from appnpy.net.topology import MAX_RECORDS_PER_MESSAGE, TopologyRecord, TopologyUpdate
from appnpy.net.topology.records import MESSAGE_BUDGET
from appnpy.node import Node
from appnpy.testing import MemoryNetwork

__all__ = [
    "FreshIdentity",
    "HostileTopologyNode",
    "identityBelow",
    "linkBody",
    "nodeBody",
]

LINK_BODY: dict[str, Any] = {
    "rtt_ms": 5,
    "throughput": 10**6,
    "cost": 0,
    "security": 128,
    "up": True,
}


class FreshIdentity:
    """
    A bare Ed25519 key with the parts of Identity that records need: what
    a hostile node mints for every identity it floods with.
    """

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.publicKeyBytes = self.key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.nodeID = nodeIDFromSPKI(self.publicKeyBytes)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def identityBelow(nodeID: str) -> Identity:
    """
    A real identity whose node ID sorts below C{nodeID} (what wins every
    "lowest node ID" tie-break).
    """
    for _ in range(1000):
        identity = generateIdentity()
        if identity.nodeID < nodeID:
            return identity
    raise AssertionError("no lower node ID found")  # pragma: no cover


def nodeBody(identity: Any, name: str = "LAB.X", **values: Any) -> dict[str, Any]:
    return {
        "name": name,
        "role": "network",
        "public_key": identity.publicKeyBytes,
        "resistance": 0,
        "load": 0,
        "cds": False,
        "end_nodes": [],
        **values,
    }


def linkBody(**values: Any) -> dict[str, Any]:
    return {**LINK_BODY, **values}


class HostileTopologyNode:
    """
    A network node of C{net} that lies in the topology.

    @ivar node: the real node (its own topology database runs too, so it
        links and syncs as any network node does).
    """

    def __init__(
        self, net: MemoryNetwork, name: str = "LAB.EVIL", identity: Identity | None = None
    ) -> None:
        self.net = net
        self.node: Node = net.addNode(name, identity=identity)
        self.rsn = 2

    @property
    def nodeID(self) -> str:
        return self.node.nodeID

    def nextRSN(self) -> int:
        self.rsn += 2
        return self.rsn

    def claimEndNode(self, endNodeID: str) -> None:
        """
        Announce, in its own genuinely signed node record, that it serves
        C{endNodeID} (which never attached to it).
        """
        topology = self.node.topology
        assert topology is not None
        topology.setAttachedEndNodes([endNodeID])

    def push(self, peer: Node, records: Iterable[TopologyRecord | bytes]) -> int:
        """
        Send C{records} to the neighbour C{peer}, as many per message as
        allowed; returns how many messages (0 once C{peer} cut the link).
        """
        cp = self.node.links.get(peer.nodeID)
        if cp is None:  # the victim cut us off
            return 0
        count = 0
        chunk: list[bytes] = []
        size = 0
        for r in records:
            raw = r if isinstance(r, bytes) else r.raw
            if chunk and (
                len(chunk) >= MAX_RECORDS_PER_MESSAGE or size + len(raw) > MESSAGE_BUDGET
            ):
                cp.send(TopologyUpdate(epoch="", frsn_from=0, frsn_to=0, records=chunk))
                count += 1
                chunk, size = [], 0
            chunk.append(raw)
            size += len(raw) + 8
        if chunk:
            cp.send(TopologyUpdate(epoch="", frsn_from=0, frsn_to=0, records=chunk))
            count += 1
        return count

    def mint(self, count: int) -> list[FreshIdentity]:
        return [FreshIdentity() for _ in range(count)]

    def sybilRecords(
        self, identities: Iterable[FreshIdentity], pad: int = 0, linked: bool = False
    ) -> Iterator[TopologyRecord]:
        """
        A valid node record per fresh identity (with C{pad} bytes of a
        certificate-sized field, the most a body may carry), and with
        C{linked} a link record from each to this node and back, so they
        look tied to the network through it.
        """
        for i, fake in enumerate(identities):
            extra = {"cert": b"\0" * pad} if pad else {}
            yield TopologyRecord.create(fake, "node", "", 2, nodeBody(fake, f"SYB.S{i}", **extra))
            if linked:
                yield TopologyRecord.create(fake, "link", self.nodeID, 2, linkBody())
                yield TopologyRecord.create(self.node.identity, "link", fake.nodeID, 2, linkBody())
