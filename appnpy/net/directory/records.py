"""
Resource records: owner-signed statements "node C{owner} offers resource
C{name}", and the answer a locate gives.

    record = CBOR{name, owner, public_key, seq, ttl, cert, signature}

C{signature} is the owner's Ed25519 signature over the deterministic CBOR of
the other six fields and C{owner} must be the node ID of C{public_key}: a
record can only ever name its signer as owner.  Every node that receives a
record checks it, and the requester checks it again, so a relaying or
answering node cannot forge an answer.

Who may offer a name (L{NameRules}):

  - C{network} trust mode: C{cert} is the owner's CA-issued certificate
    (DER), and the owner may offer only names under the CP name it
    certifies: C{<kind>:<CP name>} or C{<kind>:<CP name>/<anything>}
    (C{echo:LAB.D} and C{files:LAB.D/music} only by LAB.D).  Unqualified
    names (C{rpc:calc}) are not offered and are refused: nobody can prove
    they own them;
  - C{open} trust mode: C{cert} is empty and any verified owner may claim
    any name; several owners of one name are a I{conflict}, reported as
    such (every owner in the L{LocateResult}), never resolved silently.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import attrs
from cryptography import x509

from appnpy.cp.messages import decodeCBOR, encodeBody
from appnpy.errors import ProtocolError
from appnpy.link.identity import (
    MAX_CERTIFICATE_SIZE,
    Identity,
    certificateBytes,
    nodeIDFromSPKI,
    verifyCertifiedName,
    verifySignature,
)

__all__ = [
    "MAX_RECORD_SIZE",
    "MAX_TTL",
    "InvalidRecord",
    "LocateResult",
    "NameRules",
    "ResourceRecord",
    "validResourceName",
]

#: C{<kind>:<name>}: a plugin-style token, a colon, then 1..200 printable
#: characters.
RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}:[^\x00-\x1f\x7f]{1,200}\Z")
#: Largest encoded resource record (a certificate included).
MAX_RECORD_SIZE = 512 + MAX_CERTIFICATE_SIZE
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
    cert: bytes = b""
    signature: bytes = b""

    def signedBytes(self) -> bytes:
        return encodeBody(
            {
                "name": self.name,
                "owner": self.owner,
                "public_key": self.public_key,
                "seq": self.seq,
                "ttl": self.ttl,
                "cert": self.cert,
            }
        )

    def toBlob(self) -> bytes:
        return encodeBody(attrs.asdict(self))

    @classmethod
    def create(
        cls, identity: Identity, name: str, seq: int, ttl: int, withCertificate: bool = False
    ) -> ResourceRecord:
        """
        A record signed by C{identity}; C{withCertificate} (network trust
        mode) carries its certificate, which certifies its CP name.
        """
        cert = certificateBytes(identity.certificate) if withCertificate else b""
        unsigned = cls(name, identity.nodeID, identity.publicKeyBytes, seq, ttl, cert)
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
        fields = {"name", "owner", "public_key", "seq", "ttl", "cert", "signature"}
        if not isinstance(value, dict) or set(value) != fields:
            raise InvalidRecord("wrong fields")
        if not validResourceName(value["name"]):
            raise InvalidRecord("bad resource name")
        if not isinstance(value["owner"], str) or not isinstance(value["public_key"], bytes):
            raise InvalidRecord("bad owner or key")
        if not isinstance(value["signature"], bytes):
            raise InvalidRecord("bad signature field")
        if not isinstance(value["cert"], bytes) or len(value["cert"]) > MAX_CERTIFICATE_SIZE:
            raise InvalidRecord("bad cert field")
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


def nameUnder(name: str, cpName: str) -> bool:
    """
    Is resource C{name} one that the node called C{cpName} may offer in
    network trust mode: C{<kind>:<CP name>} or C{<kind>:<CP name>/...}?
    """
    rest = name.partition(":")[2]
    return rest == cpName or rest.startswith(cpName + "/")


#: Certificates whose check is remembered (each check is an X.509 parse and
#: an Ed25519 verification).
CERTIFICATE_CACHE_SIZE = 1024


class NameRules:
    """
    Who may offer which resource name (see the module docstring): in open
    mode (C{caCertificate} None) any verified owner; in network mode only
    names under the CP name that the record's certificate, issued by
    C{caCertificate} for the record's key, certifies.

    Checked certificates are remembered (bounded LRU), so a name check
    costs at most one certificate verification per distinct owner.
    """

    def __init__(self, caCertificate: x509.Certificate | None) -> None:
        self.caCertificate = caCertificate
        self._certified: OrderedDict[tuple[bytes, bytes], str | None] = OrderedDict()

    @property
    def bound(self) -> bool:
        """
        Are names bound to keys (network trust mode)?
        """
        return self.caCertificate is not None

    def certifiedName(self, record: ResourceRecord, now: float) -> str | None:
        """
        The CP name that C{record}'s certificate certifies for its key, or
        C{None}.
        """
        if self.caCertificate is None or not record.cert:
            return None
        key = (record.cert, record.public_key)
        if key in self._certified:
            self._certified.move_to_end(key)
            return self._certified[key]
        name = verifyCertifiedName(record.cert, self.caCertificate, record.public_key, now)
        self._certified[key] = name
        while len(self._certified) > CERTIFICATE_CACHE_SIZE:
            self._certified.popitem(last=False)
        return name

    def refusal(self, record: ResourceRecord, now: float) -> str | None:
        """
        Why C{record}'s owner may not offer C{record.name}, or C{None}.
        """
        if self.caCertificate is None:
            return None
        certified = self.certifiedName(record, now)
        if certified is None:
            return "no valid certificate of the network CA for the owner's key"
        if not nameUnder(record.name, certified):
            return f"{record.name} is not under the owner's certified CP name {certified}"
        return None

    def mayOffer(self, name: str, cpName: str) -> bool:
        """
        May this node, called C{cpName}, offer C{name}?
        """
        return self.caCertificate is None or nameUnder(name, cpName)


@attrs.frozen
class LocateResult:
    """
    The answer to a locate: who owns C{name}, with its signed record and, at
    an end node, the route its network-node server chose (else C{None}).

    C{owners} lists every distinct verified owner found (C{owner} first):
    more than one is a name conflict (open trust mode), which a session by
    name refuses rather than pick one.
    """

    name: str
    owner: str
    record: dict[str, Any]
    route: list[str] | None = None
    owners: tuple[str, ...] = ()

    @property
    def conflict(self) -> bool:
        """
        Do several nodes claim C{name}?
        """
        return len(self.owners) > 1
