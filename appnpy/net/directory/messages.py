"""
The directory's seven control messages (capability C{directory}) and their
limits.  The field layout is the wire format (docs/protocol.md): change
nothing here without changing the protocol document.
"""

from __future__ import annotations

import os
import re
from typing import Any

import attrs

from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    blob,
    encodeBody,
    integer,
    listOf,
    mapOf,
    message,
    nodeID,
    plainData,
    text,
    token,
)
from appnpy.errors import ProtocolError
from appnpy.link.identity import Identity, nodeIDFromSPKI, verifySignature
from appnpy.net.directory.records import MAX_RECORD_SIZE, RESOURCE_NAME

__all__ = [
    "LocateReply",
    "LocateRequest",
    "RegisterResources",
    "RouteReply",
    "RouteRequest",
    "SearchReply",
    "SearchRequest",
    "newSearchID",
]

_SEARCH_ID = re.compile(r"[0-9a-f]{32}\Z")
#: Most records one registration carries: this bounds the signature checks
#: one message can cost (one for the registration, one per new record).
MAX_RECORDS_PER_MESSAGE = 64
#: Most records a locate answer carries.
MAX_RECORDS_PER_ANSWER = 16
#: Most node names a route explanation's answer carries.
MAX_EXPLAINED_NODES = 256
#: Most results a keyword search request may ask for.
MAX_SEARCH_RESULTS = 1000
#: Most results, and encoded bytes, of one C{SearchReply}.
REPLY_CHUNK_ITEMS = 64
REPLY_CHUNK_BYTES = 16 * 1024


def _optionalNodeID(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value != "":
        nodeID(inst, field, value)


def _boolean(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ProtocolError(f"field {field.name!r}: must be a boolean")


def _optionalReason(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value != "":
        token(inst, field, value)


searchID = text(32, _SEARCH_ID)
resourceName = text(240, RESOURCE_NAME)


def newSearchID() -> str:
    return os.urandom(16).hex()


@message("RegisterResources", capability="directory")
@attrs.frozen
class RegisterResources(Message):
    """
    End node -> its network-node server, or network node -> the CDS (then
    forwarded hop by hop toward C{target}): C{origin}'s current records,
    replacing everything registered before by C{origin}.

    Signed by C{origin} (C{public_key} is its key, C{signature} covers every
    other field) with an increasing C{seq}, so the receiver accepts it only
    from the node it concerns and never a replay of an older one: a
    neighbour that relays or invents a registration claiming origin X
    changes nothing of X's.
    """

    records: list[bytes] = attrs.field(
        validator=listOf(blob(MAX_RECORD_SIZE), MAX_RECORDS_PER_MESSAGE)
    )
    origin: str = attrs.field(validator=nodeID)
    seq: int = attrs.field(validator=integer(0, 2**63 - 1))
    public_key: bytes = attrs.field(validator=blob(256))
    target: str = attrs.field(default="", validator=_optionalNodeID)
    signature: bytes = attrs.field(default=b"", validator=blob(128))

    def signedBytes(self) -> bytes:
        body = self.toWire()
        del body["signature"]
        return encodeBody(body)

    @classmethod
    def create(
        cls, identity: Identity, records: list[bytes], seq: int, target: str = ""
    ) -> RegisterResources:
        """
        A registration of C{records} signed by C{identity}.
        """
        unsigned = cls(
            records=records,
            origin=identity.nodeID,
            seq=seq,
            public_key=identity.publicKeyBytes,
            target=target,
        )
        return attrs.evolve(unsigned, signature=identity.sign(unsigned.signedBytes()))

    def verified(self) -> bool:
        """
        Is this registration signed by its C{origin}?
        """
        return nodeIDFromSPKI(self.public_key) == self.origin and verifySignature(
            self.public_key, self.signature, self.signedBytes()
        )


@message("LocateRequest", capability="directory")
@attrs.frozen
class LocateRequest(Message):
    """
    Find the owner of C{name}.  C{target} empty: broadcast search (or, sent by
    an end node to its server, "run the whole locate for me"); else a
    directed search forwarded hop by hop to C{target}.
    """

    search_id: str = attrs.field(validator=searchID)
    origin: str = attrs.field(validator=nodeID)
    name: str = attrs.field(validator=resourceName)
    hops_left: int = attrs.field(validator=integer(0, 64))
    target: str = attrs.field(default="", validator=_optionalNodeID)
    cos: str = attrs.field(default="interactive", validator=token)


@message("LocateReply", capability="directory")
@attrs.frozen
class LocateReply(Message):
    """
    Records found for a search, travelling the reverse path.  C{final}: the
    sender has nothing more for this search.  C{route}: for an end node's
    locate, the route from it to the owner.  C{reason}: why a final answer is
    empty when that is not simply "not found" (C{busy}, C{no-route}).
    """

    search_id: str = attrs.field(validator=searchID)
    records: list[bytes] = attrs.field(
        factory=list, validator=listOf(blob(MAX_RECORD_SIZE), MAX_RECORDS_PER_ANSWER)
    )
    final: bool = attrs.field(default=True, validator=_boolean)
    route: list[str] = attrs.field(factory=list, validator=listOf(nodeID, MAX_ROUTE_NODES))
    reason: str = attrs.field(default="", validator=_optionalReason)


@message("SearchRequest", capability="directory")
@attrs.frozen
class SearchRequest(Message):
    """
    A plugin keyword search, flooded like a broadcast locate.
    """

    search_id: str = attrs.field(validator=searchID)
    origin: str = attrs.field(validator=nodeID)
    kind: str = attrs.field(validator=token)
    keywords: list[str] = attrs.field(validator=listOf(text(64), 16))
    hops_left: int = attrs.field(validator=integer(0, 64))
    max_results: int = attrs.field(default=100, validator=integer(1, MAX_SEARCH_RESULTS))


@message("SearchReply", capability="directory")
@attrs.frozen
class SearchReply(Message):
    """
    Some results of a keyword search; C{final} as for L{LocateReply}.
    """

    search_id: str = attrs.field(validator=searchID)
    results: list[dict[str, Any]] = attrs.field(
        factory=list, validator=listOf(plainData, REPLY_CHUNK_ITEMS)
    )
    final: bool = attrs.field(default=True, validator=_boolean)


@message("RouteRequest", capability="directory")
@attrs.frozen
class RouteRequest(Message):
    """
    End node -> its server: the route from the end node to C{destination};
    with C{explain}, also why it is the one chosen (for C{appn route}).
    """

    request_id: str = attrs.field(validator=searchID)
    destination: str = attrs.field(validator=nodeID)
    cos: str = attrs.field(default="interactive", validator=token)
    explain: bool = attrs.field(default=False, validator=_boolean)


@message("RouteReply", capability="directory")
@attrs.frozen
class RouteReply(Message):
    """
    The route (node IDs, requester first) or the reason there is none.  To
    an C{explain} request also the server's explanation (checked field by
    field by L{appnpy.net.routing.explanationFromWire}) and the CP names of
    the nodes it mentions.
    """

    request_id: str = attrs.field(validator=searchID)
    route: list[str] = attrs.field(factory=list, validator=listOf(nodeID, MAX_ROUTE_NODES))
    reason: str = attrs.field(default="", validator=_optionalReason)
    detail: str = attrs.field(default="", validator=text(512))
    explanation: dict[str, Any] = attrs.field(factory=dict, validator=plainData)
    names: dict[str, str] = attrs.field(
        factory=dict, validator=mapOf(nodeID, text(17), MAX_EXPLAINED_NODES)
    )
