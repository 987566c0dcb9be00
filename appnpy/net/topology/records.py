"""
Topology records and the two topology messages, as they travel.

Records travel as opaque signed blobs in L{TopologyUpdate} messages (APPN's
TDUs) between neighbouring network nodes; L{TopologySync} asks a neighbour for
what changed since the last flow-reduction sequence number (FRSN) we hold.

Wire form of a record: the deterministic CBOR map
C{{kind, owner, subject, rsn, body, sig}}; the signature covers the same map
without C{sig}.  Three kinds: a network node's C{node} record, a C{link}
record per (owner, neighbour), and an end node's C{end} record naming the
network node that serves it (signed by the end node, whose key it carries,
so no other node can speak for it).  Bodies have fixed key sets: an unknown
key is refused, so a record cannot be padded.  RSNs are even (APPN's rule:
the owner adds 2 per issue); an odd one is refused.  L{TopologyRecord.decode} checks the form (size first, then
types and ranges of every field) before anything else looks at a record; a
record that fails raises L{BadRecord} naming the statistic that counts it.
"""

from __future__ import annotations

from typing import Any

import attrs

from appnpy.cp.messages import (
    MAX_MESSAGE_SIZE,
    Message,
    blob,
    decodeCBOR,
    encodeBody,
    integer,
    listOf,
    message,
    text,
)
from appnpy.errors import ProtocolError
from appnpy.link.identity import Identity, isNodeID, validateCPName, verifySignature

__all__ = [
    "MAX_RECORD_BYTES",
    "MAX_RECORDS_PER_MESSAGE",
    "MAX_LINKS_PER_ORIGIN",
    "MAX_END_NODES",
    "MAX_NODES",
    "MAX_RSN",
    "MESSAGE_BUDGET",
    "NODE",
    "LINK",
    "END",
    "MAX_CERT_BYTES",
    "Key",
    "BadRecord",
    "TopologyRecord",
    "TopologySync",
    "TopologyUpdate",
]

#: Largest signed record accepted.
MAX_RECORD_BYTES = 4096
#: Most records in one TopologyUpdate.
MAX_RECORDS_PER_MESSAGE = 256
#: Most link records one owner may have in the database.
MAX_LINKS_PER_ORIGIN = 256
#: Most end nodes one node record may list.
MAX_END_NODES = 64
#: Most node records kept (a backbone is tens to a few thousand nodes).
MAX_NODES = 10_000
#: Highest RSN accepted; RSNs are 64-bit and never wrap (an owner issues far fewer).
MAX_RSN = 2**62
#: Bytes of records per message, under the control-message limit (flooding batches by it).
MESSAGE_BUDGET = MAX_MESSAGE_SIZE - 4096

#: Largest CA-issued certificate (DER) a node record may carry.
MAX_CERT_BYTES = 2048

_RECORD_KEYS = frozenset({"kind", "owner", "subject", "rsn", "body", "sig"})
_NODE_KEYS = frozenset({"name", "role", "public_key", "resistance", "load", "cds", "end_nodes"})
_NODE_OPTIONAL = frozenset({"cert"})
_LINK_KEYS = frozenset({"rtt_ms", "throughput", "cost", "security", "up"})
_END_KEYS = frozenset({"name", "public_key"})
NODE, LINK, END = "node", "link", "end"
Key = tuple[str, str, str]


class BadRecord(Exception):
    """
    A topology record that cannot be used; C{counter} names the statistic.
    """

    def __init__(self, counter: str, detail: str) -> None:
        super().__init__(detail)
        self.counter = counter


# -- messages ---------------------------------------------------------------------

_EPOCH = text(32)


@message("TopologyUpdate", capability="topology")
@attrs.frozen
class TopologyUpdate(Message):
    """
    A TDU: signed topology records.  C{frsn_from}/C{frsn_to} say which range
    of the sender's FRSNs this message completes (C{frsn_from} > the
    receiver's last FRSN from us means a gap: the receiver does not advance);
    both 0 for an answer that makes no such claim.  Records are size-checked
    one by one by the database (an oversized one is dropped, not fatal).
    """

    epoch: str = attrs.field(validator=_EPOCH)
    frsn_from: int = attrs.field(validator=integer(0, 2**63 - 1))
    frsn_to: int = attrs.field(validator=integer(0, 2**63 - 1))
    records: list[bytes] = attrs.field(
        validator=listOf(blob(MAX_MESSAGE_SIZE), MAX_RECORDS_PER_MESSAGE)
    )


@message("TopologySync", capability="topology")
@attrs.frozen
class TopologySync(Message):
    """
    Sent when a link between network nodes comes up: "the last FRSN I
    received from you was C{frsn}, in your epoch C{epoch}" (empty: none).
    """

    epoch: str = attrs.field(validator=_EPOCH)
    frsn: int = attrs.field(validator=integer(0, 2**63 - 1))


# -- records ----------------------------------------------------------------------


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = body.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise BadRecord("malformed", f"{key} must be an integer in {lo}..{hi}")
    return v


def _bool(body: dict[str, Any], key: str) -> bool:
    v = body.get(key)
    if type(v) is not bool:
        raise BadRecord("malformed", f"{key} must be a boolean")
    return v


def _checkKeys(
    body: dict[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    keys = set(body)
    if not required <= keys or not keys <= required | optional:
        extra = sorted(keys - required - optional)[:3]
        missing = sorted(required - keys)[:3]
        raise BadRecord("malformed", f"body keys: unknown {extra}, missing {missing}")


def _checkName(body: dict[str, Any]) -> None:
    name = body.get("name")
    if not isinstance(name, str) or len(name) > 17:
        raise BadRecord("malformed", "name must be a CP name")
    try:
        validateCPName(name)
    except Exception:
        raise BadRecord("malformed", f"invalid CP name {name[:20]!r}") from None


def _checkKey(body: dict[str, Any]) -> None:
    pk = body.get("public_key")
    if not isinstance(pk, bytes) or len(pk) > 256:
        raise BadRecord("malformed", "public_key must be bytes")


def _checkNodeBody(body: dict[str, Any]) -> None:
    _checkKeys(body, _NODE_KEYS, _NODE_OPTIONAL)
    _checkName(body)
    _checkKey(body)
    if "cert" in body and (
        not isinstance(body["cert"], bytes) or len(body["cert"]) > MAX_CERT_BYTES
    ):
        raise BadRecord("malformed", f"cert must be up to {MAX_CERT_BYTES} bytes")
    if body.get("role") != "network":
        raise BadRecord("malformed", "node records are for network nodes")
    _int(body, "resistance", 0, 255)
    _int(body, "load", 0, 255)
    _bool(body, "cds")
    ends = body.get("end_nodes")
    if (
        not isinstance(ends, list)
        or len(ends) > MAX_END_NODES
        or not all(isNodeID(e) for e in ends)
    ):
        raise BadRecord("malformed", f"end_nodes must be up to {MAX_END_NODES} node IDs")


def _checkLinkBody(body: dict[str, Any]) -> None:
    _checkKeys(body, _LINK_KEYS)
    _int(body, "rtt_ms", 0, 2**31 - 1)
    _int(body, "throughput", 0, 2**63 - 1)
    _int(body, "cost", 0, 255)
    _int(body, "security", 0, 255)
    _bool(body, "up")


def _checkEndBody(body: dict[str, Any]) -> None:
    _checkKeys(body, _END_KEYS)
    _checkName(body)
    _checkKey(body)


@attrs.frozen
class TopologyRecord:
    """
    One signed node or link record, with its wire form C{raw}.
    """

    kind: str
    owner: str
    subject: str
    rsn: int
    body: dict[str, Any] = attrs.field(eq=False, repr=False)
    signature: bytes = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False, eq=False)

    @property
    def key(self) -> Key:
        """
        What a newer version replaces: an end node has one C{end} record
        (naming its current server), so its subject is not in the key.
        """
        return (self.kind, self.owner, "" if self.kind == END else self.subject)

    @property
    def publicKey(self) -> bytes | None:
        """
        The key a C{node} or C{end} record carries (its owner's, if genuine).
        """
        if self.kind == LINK:
            return None
        pk: bytes = self.body["public_key"]
        return pk

    @staticmethod
    def signedBytes(kind: str, owner: str, subject: str, rsn: int, body: dict[str, Any]) -> bytes:
        return encodeBody(
            {"kind": kind, "owner": owner, "subject": subject, "rsn": rsn, "body": body}
        )

    @classmethod
    def create(
        cls, identity: Identity, kind: str, subject: str, rsn: int, body: dict[str, Any]
    ) -> TopologyRecord:
        """
        Make and sign a record owned by C{identity}.
        """
        owner = identity.nodeID
        signature = identity.sign(cls.signedBytes(kind, owner, subject, rsn, body))
        raw = encodeBody(
            {
                "kind": kind,
                "owner": owner,
                "subject": subject,
                "rsn": rsn,
                "body": body,
                "sig": signature,
            }
        )
        return cls(kind, owner, subject, rsn, body, signature, raw)

    @classmethod
    def decode(cls, raw: bytes) -> TopologyRecord:
        """
        Decode and check the form of a record (not its signature).

        @raise BadRecord: C{oversized} or C{malformed}.
        """
        if not isinstance(raw, bytes) or len(raw) > MAX_RECORD_BYTES:
            raise BadRecord("oversized", f"record over {MAX_RECORD_BYTES} bytes")
        try:
            value = decodeCBOR(raw, 6)
        except ProtocolError as e:
            raise BadRecord("malformed", str(e)) from None
        if not isinstance(value, dict) or set(value) != _RECORD_KEYS:
            raise BadRecord("malformed", "not a topology record")
        kind, owner, subject, rsn = value["kind"], value["owner"], value["subject"], value["rsn"]
        body, sig = value["body"], value["sig"]
        if kind not in (NODE, LINK, END) or not isNodeID(owner):
            raise BadRecord("malformed", "bad kind or owner")
        if type(rsn) is not int or not 0 <= rsn <= MAX_RSN:
            raise BadRecord("malformed", "bad RSN")
        if rsn % 2:
            raise BadRecord("odd_rsn", "RSNs are even")
        if not isinstance(sig, bytes) or len(sig) > 128 or not isinstance(body, dict):
            raise BadRecord("malformed", "bad signature or body")
        if not all(isinstance(k, str) for k in body):
            raise BadRecord("malformed", "body keys must be text")
        if kind == NODE:
            if subject != "":
                raise BadRecord("malformed", "a node record has no subject")
            _checkNodeBody(body)
        elif kind == END:
            if not isNodeID(subject) or subject == owner:
                raise BadRecord("malformed", "an end record's subject is its server's node ID")
            _checkEndBody(body)
        else:
            if not isNodeID(subject) or subject == owner:
                raise BadRecord("malformed", "a link record's subject is a neighbour's node ID")
            _checkLinkBody(body)
        try:
            canonical = encodeBody(value)
        except Exception:  # pragma: no cover
            raise BadRecord("malformed", "unencodable") from None
        if canonical != raw:
            raise BadRecord("malformed", "not in deterministic CBOR encoding")
        return cls(kind, owner, subject, rsn, body, sig, raw)

    def verify(self, publicKey: bytes) -> bool:
        return verifySignature(
            publicKey,
            self.signature,
            self.signedBytes(self.kind, self.owner, self.subject, self.rsn, self.body),
        )

    def asDict(self) -> dict[str, Any]:
        body = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in self.body.items()}
        return {
            "kind": self.kind,
            "owner": self.owner,
            "subject": self.subject,
            "rsn": self.rsn,
            "body": body,
        }
