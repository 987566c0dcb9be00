"""
Resource records: owner-signed statements "node C{owner} offers resource
C{name}", and the answer a locate gives.

    record = CBOR{name, owner, public_key, seq, ttl, signature}

C{signature} is the owner's Ed25519 signature over the deterministic CBOR of
the other five fields and C{owner} must be the node ID of C{public_key}: a
record can only ever name its signer as owner, so nobody can squat on
another node's resource.  Every node that receives a record checks it, and
the requester checks it again, so a relaying or answering node cannot forge
an answer.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from appnpy.cp.messages import decodeCBOR, encodeBody
from appnpy.errors import ProtocolError
from appnpy.link.identity import Identity, nodeIDFromSPKI, verifySignature

__all__ = [
    "MAX_RECORD_SIZE",
    "MAX_TTL",
    "InvalidRecord",
    "LocateResult",
    "ResourceRecord",
    "validResourceName",
]

#: C{<kind>:<name>}: a plugin-style token, a colon, then 1..200 printable
#: characters.
RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}:[^\x00-\x1f\x7f]{1,200}\Z")
#: Largest encoded resource record.
MAX_RECORD_SIZE = 512
#: Longest record lifetime a node accepts (seconds).
MAX_TTL = 3600


def validResourceName(name: object) -> bool:
    return isinstance(name, str) and RESOURCE_NAME.match(name) is not None


class InvalidRecord(ProtocolError):
    """
    A resource record is malformed or its signature does not verify.
    """


@attrs.frozen
class ResourceRecord:
    """
    An owner-signed statement "node C{owner} offers resource C{name}".
    """

    name: str
    owner: str
    public_key: bytes
    seq: int
    ttl: int
    signature: bytes = b""

    def signedBytes(self) -> bytes:
        return encodeBody(
            {
                "name": self.name,
                "owner": self.owner,
                "public_key": self.public_key,
                "seq": self.seq,
                "ttl": self.ttl,
            }
        )

    def toBlob(self) -> bytes:
        return encodeBody(attrs.asdict(self))

    @classmethod
    def create(cls, identity: Identity, name: str, seq: int, ttl: int) -> ResourceRecord:
        unsigned = cls(name, identity.nodeID, identity.publicKeyBytes, seq, ttl)
        return attrs.evolve(unsigned, signature=identity.sign(unsigned.signedBytes()))

    @classmethod
    def fromBlob(cls, raw: bytes) -> ResourceRecord:
        """
        Decode and check a record: strict CBOR, exact fields, owner bound to
        the key, signature valid.

        @raise InvalidRecord: saying why.
        """
        if not isinstance(raw, bytes) or len(raw) > MAX_RECORD_SIZE:
            raise InvalidRecord("not bytes, or too long")
        try:
            value = decodeCBOR(raw, 2)
        except ProtocolError as e:
            raise InvalidRecord(str(e)) from None
        fields = {"name", "owner", "public_key", "seq", "ttl", "signature"}
        if not isinstance(value, dict) or set(value) != fields:
            raise InvalidRecord("wrong fields")
        if not validResourceName(value["name"]):
            raise InvalidRecord("bad resource name")
        if not isinstance(value["owner"], str) or not isinstance(value["public_key"], bytes):
            raise InvalidRecord("bad owner or key")
        if not isinstance(value["signature"], bytes):
            raise InvalidRecord("bad signature field")
        for key in ("seq", "ttl"):
            if type(value[key]) is not int or not 0 <= value[key] < 2**63:
                raise InvalidRecord(f"bad {key}")
        if value["ttl"] < 1:
            raise InvalidRecord("bad ttl")
        record = cls(**value)
        if record.toBlob() != raw:
            raise InvalidRecord("not in deterministic CBOR encoding")
        if nodeIDFromSPKI(record.public_key) != record.owner:
            raise InvalidRecord("owner is not the node ID of the record's key")
        if not verifySignature(record.public_key, record.signature, record.signedBytes()):
            raise InvalidRecord("signature does not verify")
        return record

    def asDict(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "seq": self.seq, "ttl": self.ttl}


@attrs.frozen
class LocateResult:
    """
    The answer to a locate: who owns C{name}, with its signed record and, at
    an end node, the route its network-node server chose (else C{None}).
    """

    name: str
    owner: str
    record: dict[str, Any]
    route: list[str] | None = None
