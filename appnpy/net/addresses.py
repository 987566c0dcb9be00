"""
Signed address records and the C{PeerAddresses} control message that
carries them: where a node listens, in a form a neighbour can relay but
cannot forge or alter:

    record = CBOR{node_id, public_key (SPKI DER), addresses, seq, signature}

where C{signature} is the node's Ed25519 signature over the deterministic
CBOR of the other four fields, C{node_id} must be the node ID of
C{public_key}, every address must be C{appn://<node_id>@host:port}, and a
higher C{seq} (milliseconds since the epoch when made) replaces a lower one.

Kept apart from L{appnpy.net.peers} (which floods and remembers records) so
the wire form and its checks read on their own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

import attrs

from appnpy.cp.messages import Message, blob, decodeCBOR, encodeBody, listOf, message
from appnpy.errors import AddressError, ProtocolError
from appnpy.link.identity import Identity, nodeIDFromSPKI, verifySignature
from appnpy.link.tls import LinkAddress, parseAddress

#: Most records in one PeerAddresses message, and most bytes in one record.
MAX_RECORDS = 64
MAX_RECORD_SIZE = 2048
#: Most addresses in one record.
MAX_RECORD_ADDRESSES = 16
_RECORD_KEYS = frozenset({"node_id", "public_key", "addresses", "seq", "signature"})


class BadAddressRecord(ProtocolError):
    """
    A neighbour sent a peer address record that does not verify.
    """


@message("PeerAddresses", capability="peer-exchange")
@attrs.frozen
class PeerAddresses(Message):
    """
    Peer exchange: signed address records (see L{AddressRecord}), each the
    deterministic CBOR encoding of one record.
    """

    records: list[bytes] = attrs.field(validator=listOf(blob(MAX_RECORD_SIZE), MAX_RECORDS))


def _signedBytes(nodeID: str, publicKey: bytes, addresses: list[str], seq: int) -> bytes:
    body = {"node_id": nodeID, "public_key": publicKey, "addresses": addresses, "seq": seq}
    return encodeBody(body)


@attrs.frozen
class AddressRecord:
    """
    Where a node listens, signed by that node.

    @ivar raw: the record's wire form, relayed as is.
    """

    node_id: str
    public_key: bytes = attrs.field(repr=False)
    addresses: tuple[str, ...]
    seq: int
    signature: bytes = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False, eq=False)

    @classmethod
    def create(cls, identity: Identity, addresses: Iterable[str], seq: int) -> AddressRecord:
        """
        Make and sign this node's own record.
        """
        addresses = list(addresses)[:MAX_RECORD_ADDRESSES]
        signed = _signedBytes(identity.nodeID, identity.publicKeyBytes, addresses, seq)
        signature = identity.sign(signed)
        body = {
            "node_id": identity.nodeID,
            "public_key": identity.publicKeyBytes,
            "addresses": addresses,
            "seq": seq,
            "signature": signature,
        }
        raw = encodeBody(body)
        return cls(identity.nodeID, identity.publicKeyBytes, tuple(addresses), seq, signature, raw)

    @classmethod
    def fromBytes(cls, raw: bytes) -> AddressRecord:
        """
        Decode and verify a record.

        @raise BadAddressRecord: saying what is wrong.
        """
        if len(raw) > MAX_RECORD_SIZE:
            raise BadAddressRecord(f"record of {len(raw)} bytes is over {MAX_RECORD_SIZE}")
        try:
            body = decodeCBOR(raw, 4)
        except ProtocolError as e:
            raise BadAddressRecord(str(e)) from None
        if not isinstance(body, dict) or set(body) != _RECORD_KEYS:
            raise BadAddressRecord(f"a record is a map of {', '.join(sorted(_RECORD_KEYS))}")
        nodeID, publicKey = body["node_id"], body["public_key"]
        addresses, seq, signature = body["addresses"], body["seq"], body["signature"]
        if not isinstance(nodeID, str) or not isinstance(publicKey, bytes):
            raise BadAddressRecord("node_id must be text and public_key bytes")
        if type(seq) is not int or not 0 <= seq < 2**63:
            raise BadAddressRecord("seq must be an integer in 0..2**63-1")
        if not isinstance(signature, bytes) or len(signature) > 128:
            raise BadAddressRecord("signature must be at most 128 bytes")
        if (
            not isinstance(addresses, list)
            or len(addresses) > MAX_RECORD_ADDRESSES
            or not all(isinstance(a, str) and len(a) <= 300 for a in addresses)
        ):
            raise BadAddressRecord(f"addresses must be at most {MAX_RECORD_ADDRESSES} strings")
        if encodeBody(body) != raw:
            raise BadAddressRecord("not in deterministic CBOR encoding")
        try:
            derived = nodeIDFromSPKI(publicKey)
        except Exception:
            raise BadAddressRecord("public_key is not a valid public key") from None
        if derived != nodeID:
            raise BadAddressRecord(f"public key is not the key of node {nodeID[:52]}")
        if not verifySignature(
            publicKey, signature, _signedBytes(nodeID, publicKey, addresses, seq)
        ):
            raise BadAddressRecord(f"signature of node {nodeID} does not verify")
        for address in addresses:
            try:
                parsed = parseAddress(address)
            except AddressError:
                raise BadAddressRecord(f"malformed address {address[:300]!r}") from None
            if parsed.nodeID != nodeID:
                raise BadAddressRecord(f"address {address!r} is not pinned to node {nodeID}")
        return cls(nodeID, publicKey, tuple(addresses), seq, signature, raw)

    def linkAddresses(self) -> list[LinkAddress]:
        return [parseAddress(a) for a in self.addresses]


# -- dialable addresses ----------------------------------------------------------

_WILDCARD_HOSTS: dict[str, int] = {"0.0.0.0": socket.AF_INET, "::": socket.AF_INET6}
_LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
#: Documentation addresses (RFC 5737, RFC 3849): a UDP "connect" to one picks
#: the interface of the default route without sending anything.
_PROBE_TARGET: dict[int, str] = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def hostAddresses(family: int) -> list[str]:
    """
    This host's addresses of C{family} that a peer may dial: the address
    of the default route's interface (found by a UDP "connect", which sends
    nothing and asks no DNS server, so it is cheap enough for every
    C{appn status}), and loopback last (always there, so a node on a host
    with no network still shows where a local peer can reach it).
    """
    found: list[str] = []
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect((_PROBE_TARGET[family], 9))
        host = str(probe.getsockname()[0]).split("%")[0]
        ip = ipaddress.ip_address(host)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            found.append(host)
    except (OSError, ValueError):
        pass
    finally:
        probe.close()
    return found + [_LOOPBACK[family]]


def dialableAddresses(
    addresses: Iterable[str], hosts: Callable[[int], list[str]] = hostAddresses
) -> list[str]:
    """
    The listening addresses C{addresses} (C{appn://<id>@host:port}) as a
    peer can dial them: a wildcard host (C{0.0.0.0}, C{::}) stands for
    every address of the host, so it is replaced by each of C{hosts}'s
    answers; other addresses are kept as they are.
    """
    out: list[str] = []
    for text in addresses:
        address = parseAddress(text)
        family = _WILDCARD_HOSTS.get(address.host)
        if family is None:
            expanded = [str(address)]
        else:
            expanded = [str(attrs.evolve(address, host=host)) for host in hosts(family)]
        out.extend(a for a in expanded if a not in out)
    return out
