"""
docs/protocol.md cannot drift from the code: every example block in it is
decoded with the real decoders and compared with the object the doc says it
is, the node-ID worked example is recomputed, and the constants, reason codes
and message types the doc lists are compared with the code.

The doc marks each example with a line C{<!-- example: NAME -->} directly
before a fenced block (C{```hex} for bytes, C{```text} for the node-ID
example).  L{EXAMPLES} below holds what each named block must decode to.

Regenerate the blocks after a deliberate wire change with::

    python -m tests.test_protocol_doc
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import pkgutil
import re
from collections.abc import Callable
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.trial.unittest import SynchronousTestCase

import appnpy
from appnpy.cp import controlpoint as control
from appnpy.cp import messages
from appnpy.cp.messages import (
    Hello,
    LinkRefused,
    Message,
    MessageReader,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    SessionStarted,
    decodeBody,
    encodeMessage,
)
from appnpy.errors import Reason
from appnpy.link import yamux
from appnpy.link.identity import _spki, nodeIDFromSPKI, verifySignature

DOC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "protocol.md"
)

# RFC 8032 section 7.1, TEST 1 and TEST 2: fixed Ed25519 keys, so the
# examples (signatures included: Ed25519 is deterministic) never change.
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SEED_B = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
# RFC 8032 section 7.1, TEST 3: "node C", the end node of the service examples.
SEED_C = bytes.fromhex("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7")
KEY_A = Ed25519PrivateKey.from_private_bytes(SEED_A)
KEY_B = Ed25519PrivateKey.from_private_bytes(SEED_B)
KEY_C = Ed25519PrivateKey.from_private_bytes(SEED_C)
SPKI_A = _spki(KEY_A.public_key())
SPKI_B = _spki(KEY_B.public_key())
SPKI_C = _spki(KEY_C.public_key())
NODE_A = nodeIDFromSPKI(SPKI_A)
NODE_B = nodeIDFromSPKI(SPKI_B)
NODE_C = nodeIDFromSPKI(SPKI_C)
SESSION = "00112233445566778899aabbccddeeff"
SEARCH = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
REQUEST = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
#: 2025-11-30T00:00:00Z in milliseconds: the seq of the example records.
SEQ = 1764460800000


@attrs.frozen
class _FixedIdentity:
    """
    The part of L{appnpy.link.identity.Identity} the record encoders use, for a
    fixed RFC 8032 key.
    """

    key: Ed25519PrivateKey

    @property
    def publicKeyBytes(self) -> bytes:
        return _spki(self.key.public_key())

    @property
    def nodeID(self) -> str:
        return nodeIDFromSPKI(self.publicKeyBytes)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


ID_A, ID_B, ID_C = _FixedIdentity(KEY_A), _FixedIdentity(KEY_B), _FixedIdentity(KEY_C)


def _importServices() -> None:
    """
    Import every module that registers control messages.
    """
    import appnpy.net.addresses
    import appnpy.net.directory
    import appnpy.net.peers
    import appnpy.net.relay
    import appnpy.net.topology  # noqa: F401


_importServices()


def _exampleHello() -> Hello:
    hello = Hello(
        node_id=NODE_A,
        public_key=SPKI_A,
        name="LAB.ALPHA",
        role="network",
        versions=[2, 2],
        capabilities=["sessions"],
        listen=[f"appn://{NODE_A}@192.0.2.1:7700"],
        plugins={"echo": 64, "ping": 64},
        dial_serial=1764460800000000,
    )
    return attrs.evolve(hello, signature=KEY_A.sign(hello.signedBytes()))


def _probeRequest() -> Message:
    from appnpy.ops.probe import ProbeRequest

    return ProbeRequest(nonce="0123456789abcdef")


# -- the network services' records and messages ---------------------------------


def _addressRecord() -> Any:
    from appnpy.net.addresses import AddressRecord

    return AddressRecord.create(ID_A, [f"appn://{NODE_A}@192.0.2.1:7700"], SEQ)  # type: ignore[arg-type]


def _topologyNodeRecord() -> Any:
    from appnpy.net.topology import NODE, TopologyRecord

    body = {
        "name": "LAB.ALPHA",
        "role": "network",
        "public_key": SPKI_A,
        "resistance": 0,
        "load": 0,
        "cds": False,
        "end_nodes": [],
    }
    return TopologyRecord.create(ID_A, NODE, "", 1002, body)  # type: ignore[arg-type]


def _topologyLinkRecord() -> Any:
    from appnpy.net.topology import LINK, TopologyRecord

    body = {"rtt_ms": 12, "throughput": 1000000, "cost": 0, "security": 128, "up": True}
    return TopologyRecord.create(ID_A, LINK, NODE_B, 1004, body)  # type: ignore[arg-type]


def _resourceRecord() -> Any:
    from appnpy.net.directory import ResourceRecord

    return ResourceRecord.create(ID_C, "files:music", SEQ, 300)


#: name -> (a function building the record, what its raw bytes are called)
RECORD_EXAMPLES: dict[str, Callable[[], Any]] = {
    "peer address record": _addressRecord,
    "topology node record": _topologyNodeRecord,
    "topology link record": _topologyLinkRecord,
    "resource record": _resourceRecord,
}


def _recordBytes(record: Any) -> bytes:
    return record.toBlob() if hasattr(record, "toBlob") else record.raw  # type: ignore[no-any-return]


def _recordSignedBytes(name: str) -> bytes:
    record = RECORD_EXAMPLES[name]()
    if name == "peer address record":
        from appnpy.net.addresses import _signedBytes

        return _signedBytes(record.node_id, record.public_key, list(record.addresses), record.seq)
    if name.startswith("topology"):
        return record.signedBytes(  # type: ignore[no-any-return]
            record.kind, record.owner, record.subject, record.rsn, record.body
        )
    return record.signedBytes()  # type: ignore[no-any-return]


def _decodeRecord(name: str, raw: bytes) -> Any:
    """
    Decode an example record with the code's decoder, signature checked.
    """
    if name == "peer address record":
        from appnpy.net.addresses import AddressRecord

        return AddressRecord.fromBytes(raw)
    if name.startswith("topology"):
        from appnpy.net.topology import TopologyRecord

        record = TopologyRecord.decode(raw)
        if not record.verify({NODE_A: SPKI_A, NODE_B: SPKI_B}[record.owner]):
            raise AssertionError(f"{name}: signature does not verify")
        return record
    from appnpy.net.directory import ResourceRecord

    return ResourceRecord.fromBlob(raw)


def _peerAddresses() -> Message:
    from appnpy.net.addresses import PeerAddresses

    return PeerAddresses(records=[_addressRecord().raw])


def _topologyUpdate() -> Message:
    from appnpy.net.topology import TopologyUpdate

    return TopologyUpdate(
        epoch="0123456789abcdef",
        frsn_from=0,
        frsn_to=2,
        records=[_topologyNodeRecord().raw, _topologyLinkRecord().raw],
    )


def _topologySync() -> Message:
    from appnpy.net.topology import TopologySync

    return TopologySync(epoch="fedcba9876543210", frsn=41)


def _registerResources() -> Message:
    from appnpy.net.directory import RegisterResources

    return RegisterResources.create(ID_C, [_resourceRecord().toBlob()], SEQ + 1)  # type: ignore[arg-type]


def _locateRequest() -> Message:
    from appnpy.net.directory import LocateRequest

    return LocateRequest(
        search_id=SEARCH, origin=NODE_A, name="files:music", hops_left=16, cos="interactive"
    )


def _locateReply() -> Message:
    from appnpy.net.directory import LocateReply

    return LocateReply(search_id=SEARCH, records=[_resourceRecord().toBlob()], final=True)


def _searchRequest() -> Message:
    from appnpy.net.directory import SearchRequest

    return SearchRequest(
        search_id=SEARCH, origin=NODE_A, kind="files", keywords=["jazz"], hops_left=16
    )


def _searchReply() -> Message:
    from appnpy.net.directory import SearchReply

    return SearchReply(
        search_id=SEARCH,
        results=[{"name": "files:music", "title": "So What", "node": NODE_C}],
        final=False,
    )


def _routeRequest() -> Message:
    from appnpy.net.directory import RouteRequest

    return RouteRequest(request_id=REQUEST, destination=NODE_A, cos="batch")


def _routeReply() -> Message:
    from appnpy.net.directory import RouteReply

    return RouteReply(request_id=REQUEST, route=[NODE_C, NODE_B, NODE_A])


def _routedSessionOpen() -> Message:
    bind = SessionOpen(
        session_id=SESSION,
        origin=NODE_A,
        destination=NODE_C,
        plugin="echo",
        cos="interactive",
        window=262144,
        parameters={},
        route=[NODE_A, NODE_B, NODE_C],
        public_key=SPKI_A,
        timestamp=SEQ // 1000,
    )
    return attrs.evolve(bind, signature=KEY_A.sign(bind.signedBytes()))


def _topologyDigest() -> str:
    """
    The digest the topology database computes over the two example records.
    """
    from appnpy.net.topology.database import RecordStore

    store = RecordStore(NODE_B, b"")
    for record in (_topologyNodeRecord(), _topologyLinkRecord()):
        store.apply(record, NODE_A, 0.0)
    return store.digest()


def _digestLines() -> list[str]:
    return [
        f"{r.kind} {r.owner} {r.subject} {r.rsn}"
        for r in sorted(
            (_topologyNodeRecord(), _topologyLinkRecord()),
            key=lambda r: (r.kind, r.owner, r.subject, r.rsn),
        )
    ]


#: name -> ("frame", (type, flags, streamID, length), payload)
YAMUX_EXAMPLES: dict[str, tuple[tuple[int, int, int, int], bytes]] = {
    "yamux Data": ((yamux.TYPE_DATA, 0, 1, 5), b"hello"),
    "yamux Data FIN": ((yamux.TYPE_DATA, yamux.FLAG_FIN, 2, 3), b"bye"),
    "yamux WindowUpdate SYN": ((yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, 0), b""),
    "yamux WindowUpdate ACK": ((yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, 1, 0), b""),
    "yamux WindowUpdate delta": ((yamux.TYPE_WINDOW_UPDATE, 0, 2, 131072), b""),
    "yamux WindowUpdate FIN": ((yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_FIN, 1, 0), b""),
    "yamux WindowUpdate RST": ((yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_RST, 3, 0), b""),
    "yamux Ping SYN": ((yamux.TYPE_PING, yamux.FLAG_SYN, 0, 1), b""),
    "yamux Ping ACK": ((yamux.TYPE_PING, yamux.FLAG_ACK, 0, 1), b""),
    "yamux GoAway normal": ((yamux.TYPE_GO_AWAY, 0, 0, yamux.GOAWAY_NORMAL), b""),
    "yamux GoAway protocol-error": ((yamux.TYPE_GO_AWAY, 0, 0, yamux.GOAWAY_PROTOCOL_ERROR), b""),
    "yamux GoAway internal-error": ((yamux.TYPE_GO_AWAY, 0, 0, yamux.GOAWAY_INTERNAL_ERROR), b""),
}

#: name -> a function building the message the framed example must decode to
MESSAGE_EXAMPLES: dict[str, Callable[[], Message]] = {
    "Hello": _exampleHello,
    "LinkRefused": lambda: LinkRefused(
        reason=Reason.INCOMPATIBLE_VERSION.value,
        detail="this node speaks versions 1..1, the peer 2..3",
    ),
    "SessionOpen": lambda: SessionOpen(
        session_id=SESSION,
        origin=NODE_A,
        destination=NODE_B,
        plugin="echo",
        cos="interactive",
        window=262144,
        parameters={"greeting": "hi"},
    ),
    "SessionAccept": lambda: SessionAccept(session_id=SESSION),
    "SessionRefuse": lambda: SessionRefuse(
        session_id=SESSION,
        reason=Reason.LIMIT_REACHED.value,
        detail="64 echo sessions with this node",
    ),
    "SessionClose": lambda: SessionClose(session_id=SESSION, reason=Reason.NORMAL.value, detail=""),
    "SessionStarted": lambda: SessionStarted(session_id=SESSION),
    "ProbeRequest": _probeRequest,
    "SessionOpen routed": _routedSessionOpen,
    "PeerAddresses": _peerAddresses,
    "TopologyUpdate": _topologyUpdate,
    "TopologySync": _topologySync,
    "RegisterResources": _registerResources,
    "LocateRequest": _locateRequest,
    "LocateReply": _locateReply,
    "SearchRequest": _searchRequest,
    "SearchReply": _searchReply,
    "RouteRequest": _routeRequest,
    "RouteReply": _routeReply,
}

#: Messages registered only by the test suite (never sent by a node).
TEST_ONLY_MODULE_PREFIX = "tests."

#: Names of the constants block in the doc -> their value in the code.
CONSTANTS: dict[str, Callable[[], object]] = {
    "PROTOCOL_VERSION_MIN": lambda: appnpy.PROTOCOL_VERSION_MIN,
    "PROTOCOL_VERSION_MAX": lambda: appnpy.PROTOCOL_VERSION_MAX,
    "MAX_MESSAGE_SIZE": lambda: messages.MAX_MESSAGE_SIZE,
    "yamux.HEADER_SIZE": lambda: yamux.HEADER_SIZE,
    "MuxConfig.initialWindow": lambda: yamux.MuxConfig().initialWindow,
    "MuxConfig.maxStreamWindow": lambda: yamux.MuxConfig().maxStreamWindow,
    "MuxConfig.maxLinkReceiveBuffer": lambda: yamux.MuxConfig().maxLinkReceiveBuffer,
    "MuxConfig.maxFramePayload": lambda: yamux.MuxConfig().maxFramePayload,
    "MuxConfig.maxStreams": lambda: yamux.MuxConfig().maxStreams,
    "MuxConfig.maxPendingOutbound": lambda: yamux.MuxConfig().maxPendingOutbound,
    "MuxConfig.keepaliveInterval": lambda: yamux.MuxConfig().keepaliveInterval,
    "MuxConfig.keepaliveTimeout": lambda: yamux.MuxConfig().keepaliveTimeout,
    "MuxConfig.suspectMinimum": lambda: yamux.MuxConfig().suspectMinimum,
    "MuxConfig.deadFactor": lambda: yamux.MuxConfig().deadFactor,
    "MuxConfig.maxControlBacklog": lambda: yamux.MuxConfig().maxControlBacklog,
    "MuxConfig.maxFrameRate": lambda: yamux.MuxConfig().maxFrameRate,
    "MuxConfig.ownStreams": lambda: yamux.MuxConfig().ownStreams,
    "yamux.SEND_HIGH_WATER": lambda: yamux.SEND_HIGH_WATER,
    "budget.DEFAULT_NODE_RECEIVE_WINDOW": lambda: (
        __import__("appnpy.link.budget", fromlist=["x"]).DEFAULT_NODE_RECEIVE_WINDOW
    ),
    "control.MAX_PENDING_INBOUND": lambda: control.MAX_PENDING_INBOUND,
    "control.FIRST_MESSAGE_TIMEOUT": lambda: control.FIRST_MESSAGE_TIMEOUT,
    "control.CLOSE_TIMEOUT": lambda: control.CLOSE_TIMEOUT,
    "link.DEFAULT_HANDSHAKE_TIMEOUT": lambda: (
        __import__("appnpy.link.tls", fromlist=["x"]).DEFAULT_HANDSHAKE_TIMEOUT
    ),
}


#: Where each short module name of the constants blocks lives.
_MODULES = {
    "peers": "appnpy.net.peers",
    "addresses": "appnpy.net.addresses",
    "probe": "appnpy.ops.probe",
    "topology": "appnpy.net.topology",
    "routing": "appnpy.net.routing",
    "directory": "appnpy.net.directory",
    "relay": "appnpy.net.relay",
    "routed": "appnpy.session.routed",
    "bind": "appnpy.session.bind",
}


def _mod(name: str) -> Any:
    return __import__(_MODULES[name], fromlist=["x"])


#: The second constants block (C{<!-- constants: services -->}): the limits
#: of the network services (section 9.2).
SERVICE_CONSTANTS: dict[str, Callable[[], object]] = {
    "messages.MAX_ROUTE_NODES": lambda: messages.MAX_ROUTE_NODES,
    "peers.MAX_RECORDS": lambda: _mod("addresses").MAX_RECORDS,
    "peers.MAX_RECORD_SIZE": lambda: _mod("addresses").MAX_RECORD_SIZE,
    "peers.MAX_RECORD_ADDRESSES": lambda: _mod("addresses").MAX_RECORD_ADDRESSES,
    "peers.MAX_KNOWN": lambda: _mod("peers").MAX_KNOWN,
    "probe.MAX_RESPONDER_SESSIONS": lambda: _mod("probe").MAX_RESPONDER_SESSIONS,
    "probe.RESPONDER_TIMEOUT": lambda: _mod("probe").RESPONDER_TIMEOUT,
    "topology.MAX_RECORD_BYTES": lambda: _mod("topology").MAX_RECORD_BYTES,
    "topology.MAX_RECORDS_PER_MESSAGE": lambda: _mod("topology").MAX_RECORDS_PER_MESSAGE,
    "topology.MAX_LINKS_PER_ORIGIN": lambda: _mod("topology").MAX_LINKS_PER_ORIGIN,
    "topology.MAX_END_NODES": lambda: _mod("topology").MAX_END_NODES,
    "topology.MAX_NODES": lambda: _mod("topology").MAX_NODES,
    "topology.MAX_RSN": lambda: _mod("topology").MAX_RSN,
    "topology.RSN_RESERVE": lambda: _mod("topology").RSN_RESERVE,
    "topology.DEFAULT_RTT_MS": lambda: _mod("topology").DEFAULT_RTT_MS,
    "topology.DEFAULT_THROUGHPUT": lambda: _mod("topology").DEFAULT_THROUGHPUT,
    "routing.TLS_SECURITY": lambda: _mod("routing").TLS_SECURITY,
    "routing.SECURE_FLOOR": lambda: _mod("routing").SECURE_FLOOR,
    "directory.MAX_RECORD_SIZE": lambda: _mod("directory").MAX_RECORD_SIZE,
    "directory.MAX_TTL": lambda: _mod("directory").MAX_TTL,
    "directory.MAX_RECORDS_PER_MESSAGE": lambda: _mod("directory").MAX_RECORDS_PER_MESSAGE,
    "directory.MAX_RECORDS_PER_ANSWER": lambda: _mod("directory").MAX_RECORDS_PER_ANSWER,
    "directory.MAX_RECORDS_PER_REGISTRANT": lambda: _mod("directory").MAX_RECORDS_PER_REGISTRANT,
    "directory.MAX_REGISTRY": lambda: _mod("directory").MAX_REGISTRY,
    "directory.MAX_SEARCH_RESULTS": lambda: _mod("directory").MAX_SEARCH_RESULTS,
    "directory.MAX_SEARCH_BYTES": lambda: _mod("directory").MAX_SEARCH_BYTES,
    "directory.MAX_RESULT_SIZE": lambda: _mod("directory").MAX_RESULT_SIZE,
    "relay.MAX_RELAYED_SESSIONS": lambda: _mod("relay").MAX_RELAYED_SESSIONS,
    "relay.MAX_RELAYED_PER_ORIGIN": lambda: _mod("relay").MAX_RELAYED_PER_ORIGIN,
    "relay.BIND_TIMEOUT": lambda: _mod("relay").BIND_TIMEOUT,
    "relay.LINGER_TIMEOUT": lambda: _mod("relay").LINGER_TIMEOUT,
    "routed.BIND_TIMEOUT": lambda: _mod("routed").BIND_TIMEOUT,
    "relay.MAX_RELAYED_PER_PREVIOUS_HOP": lambda: _mod("relay").MAX_RELAYED_PER_PREVIOUS_HOP,
    "relay.BIND_RATE": lambda: _mod("relay").BIND_RATE,
    "relay.BIND_BURST": lambda: _mod("relay").BIND_BURST,
    "relay.START_TIMEOUT": lambda: _mod("relay").START_TIMEOUT,
    "relay.RELAY_BUFFER_BUDGET": lambda: _mod("relay").RELAY_BUFFER_BUDGET,
    "relay.RELAY_SEND_HIGH_WATER": lambda: _mod("relay").RELAY_SEND_HIGH_WATER,
    "relay.RELAY_MIN_SEND_HIGH_WATER": lambda: _mod("relay").RELAY_MIN_SEND_HIGH_WATER,
    "routed.MAX_HANDSHAKING": lambda: _mod("routed").MAX_HANDSHAKING,
    "routed.BIND_RATE": lambda: _mod("routed").BIND_RATE,
    "routed.BIND_BURST": lambda: _mod("routed").BIND_BURST,
    "bind.BIND_FRESHNESS": lambda: _mod("bind").BIND_FRESHNESS,
    "bind.REPLAY_CACHE_SIZE": lambda: _mod("bind").REPLAY_CACHE_SIZE,
}

# -- parsing the doc ------------------------------------------------------------

_BLOCK = re.compile(
    r"^<!-- (example|constants)(?::\s*(?P<name>[^>]*?))?\s*-->\s*\n```(?P<lang>\w*)\n(?P<body>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


def readDoc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def exampleBlocks(doc: str) -> dict[str, tuple[str, str]]:
    """
    Every marked block of C{doc}: C{{name: (language, body)}}; the constants
    blocks are named C{"constants"} and C{"constants: NAME"}.
    """
    blocks: dict[str, tuple[str, str]] = {}
    for m in _BLOCK.finditer(doc):
        if m.group(1) == "example":
            name = m.group("name")
        else:
            name = "constants" + (f": {m.group('name')}" if m.group("name") else "")
        if name in blocks:
            raise AssertionError(f"example {name!r} appears twice in docs/protocol.md")
        blocks[name] = (m.group("lang"), m.group("body"))
    return blocks


def hexBytes(body: str) -> bytes:
    """
    The bytes of a hex block: whitespace and C{#} comments are ignored.
    """
    lines = [line.split("#", 1)[0] for line in body.splitlines()]
    return bytes.fromhex("".join("".join(lines).split()))


def keyValues(body: str) -> dict[str, str]:
    out = {}
    for line in body.splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def _messageAvailable(name: str) -> Message | None:
    try:
        return MESSAGE_EXAMPLES[name]()
    except ImportError:
        return None


# -- regenerating -----------------------------------------------------------------


def formatHex(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width))


def renderExamples() -> str:
    """
    The fenced blocks for every example, as the doc should hold them.
    """
    out = []
    for name, (fields, payload) in YAMUX_EXAMPLES.items():
        out.append(
            f"<!-- example: {name} -->\n```hex\n{formatHex(yamux.encodeHeader(*fields) + payload)}\n```"
        )
    for name in MESSAGE_EXAMPLES:
        msg = _messageAvailable(name)
        if msg is not None:
            out.append(f"<!-- example: {name} -->\n```hex\n{formatHex(encodeMessage(msg))}\n```")
    for name, build in RECORD_EXAMPLES.items():
        out.append(f"<!-- example: {name} -->\n```hex\n{formatHex(_recordBytes(build()))}\n```")
        out.append(
            f"<!-- example: {name} signed bytes -->\n```hex\n"
            f"{formatHex(_recordSignedBytes(name))}\n```"
        )
    out.append(
        "<!-- example: topology digest -->\n```text\n"
        + "\n".join(_digestLines())
        + f"\ndigest: {_topologyDigest()}\n```"
    )
    hello = _exampleHello()
    out.append(
        f"<!-- example: Hello signed bytes -->\n```hex\n{formatHex(hello.signedBytes())}\n```"
    )
    digest = hashlib.sha256(SPKI_A).digest()
    out.append(
        "<!-- example: node-id -->\n```text\n"
        f"private key (RFC 8032 seed): {SEED_A.hex()}\n"
        f"public key: {KEY_A.public_key().public_bytes_raw().hex()}\n"
        f"SPKI DER: {SPKI_A.hex()}\n"
        f"SHA-256: {digest.hex()}\n"
        f"base32: {base64.b32encode(digest).decode()}\n"
        f"node ID: {NODE_A}\n```"
    )
    return "\n\n".join(out)


# -- the tests ----------------------------------------------------------------------


class ExampleBlockTests(SynchronousTestCase):
    """
    The example bytes in docs/protocol.md are what the code sends and accepts.
    """

    def setUp(self) -> None:
        self.blocks = exampleBlocks(readDoc())

    def block(self, name: str) -> tuple[str, str]:
        self.assertIn(name, self.blocks, f"docs/protocol.md has no example {name!r}")
        return self.blocks[name]

    def test_noUnknownExamples(self) -> None:
        """
        Every example block in the doc is one this test checks.
        """
        known = set(YAMUX_EXAMPLES) | set(MESSAGE_EXAMPLES)
        known |= set(RECORD_EXAMPLES) | {f"{n} signed bytes" for n in RECORD_EXAMPLES}
        known |= {"Hello signed bytes", "node-id", "constants", "constants: services"}
        known |= {"topology digest", "route selection"}
        self.assertEqual(set(self.blocks) - known, set())

    def test_yamuxHeaders(self) -> None:
        """
        Each yamux example decodes with L{yamux.decodeHeader} to the type,
        flags, stream ID and length the doc names, followed by exactly its
        payload, and is what L{yamux.encodeHeader} produces.
        """
        for name, (fields, payload) in YAMUX_EXAMPLES.items():
            lang, body = self.block(name)
            self.assertEqual(lang, "hex", name)
            data = hexBytes(body)
            self.assertEqual(yamux.decodeHeader(data[: yamux.HEADER_SIZE]), fields, name)
            self.assertEqual(data[yamux.HEADER_SIZE :], payload, name)
            self.assertEqual(data, yamux.encodeHeader(*fields) + payload, name)

    def test_everyFrameTypeHasAnExample(self) -> None:
        """
        The doc shows a header of every yamux frame type.
        """
        shown = {fields[0] for fields, _ in YAMUX_EXAMPLES.values()}
        self.assertEqual(
            shown,
            {yamux.TYPE_DATA, yamux.TYPE_WINDOW_UPDATE, yamux.TYPE_PING, yamux.TYPE_GO_AWAY},
        )

    def test_messages(self) -> None:
        """
        Each framed control-message example is read by L{MessageReader} as
        exactly one message equal to the expected one, with nothing left
        over; its body decodes the same with L{decodeBody}; and encoding the
        expected message gives the same bytes.
        """
        for name in MESSAGE_EXAMPLES:
            expected = _messageAvailable(name)
            if expected is None:
                continue
            lang, body = self.block(name)
            self.assertEqual(lang, "hex", name)
            data = hexBytes(body)
            reader = MessageReader()
            self.assertEqual(reader.feed(data), [expected], name)
            self.assertEqual(reader.leftover(), b"", name)
            length = int.from_bytes(data[:4], "big")
            self.assertEqual(length, len(data) - 4, name)
            self.assertEqual(decodeBody(data[4:]), expected, name)
            self.assertEqual(encodeMessage(expected), data, name)

    def test_everyMessageHasAnExample(self) -> None:
        """
        Every registered message type (L{messages.MESSAGE_TYPES} with every
        service module imported), except those the test suite registers for
        itself, has an example in the doc and is in L{MESSAGE_EXAMPLES}.
        """
        registered = {
            typeName
            for typeName, cls in messages.MESSAGE_TYPES.items()
            if not cls.__module__.startswith(TEST_ONLY_MODULE_PREFIX)
        }
        self.assertEqual(sorted(registered - set(self.blocks)), [])
        self.assertEqual(sorted(registered - set(MESSAGE_EXAMPLES)), [])
        for name in MESSAGE_EXAMPLES:
            self.assertIsNotNone(_messageAvailable(name), name)

    def test_records(self) -> None:
        """
        Each signed record example decodes with the code's decoder (which
        verifies its signature), equals the record the encoder makes, and
        its "signed bytes" example is what the signature covers.
        """
        for name, build in RECORD_EXAMPLES.items():
            lang, body = self.block(name)
            self.assertEqual(lang, "hex", name)
            raw = hexBytes(body)
            expected = build()
            self.assertEqual(raw, _recordBytes(expected), name)
            decoded = _decodeRecord(name, raw)
            self.assertEqual(decoded, expected, name)
            signed = hexBytes(self.block(f"{name} signed bytes")[1])
            self.assertEqual(signed, _recordSignedBytes(name), name)
            key = decoded.public_key if hasattr(decoded, "public_key") else SPKI_A
            self.assertTrue(verifySignature(key, decoded.signature, signed), name)

    def test_recordsInMessages(self) -> None:
        """
        The records inside the message examples are the record examples.
        """
        records = {_recordBytes(build()) for build in RECORD_EXAMPLES.values()}
        for name in ("PeerAddresses", "TopologyUpdate", "RegisterResources", "LocateReply"):
            msg = MessageReader().feed(hexBytes(self.block(name)[1]))[0]
            self.assertTrue(set(msg.records) <= records, name)  # type: ignore[attr-defined]

    def test_topologyDigest(self) -> None:
        """
        The digest example: the lines hashed, and the digest the topology
        database computes over the two example records.
        """
        lang, body = self.block("topology digest")
        lines = body.splitlines()
        self.assertEqual(lines[:-1], _digestLines())
        digest = hashlib.sha256("".join(line + "\n" for line in lines[:-1]).encode()).hexdigest()
        self.assertEqual(lines[-1], f"digest: {digest}")
        self.assertEqual(digest, _topologyDigest())

    def test_routeSelection(self) -> None:
        """
        The worked route-selection example: the route and weights the doc
        gives are what L{appnpy.net.routing.leastWeightRoute} and the built-in
        classes of service compute for the topology it describes.
        """
        from appnpy.net.routing import (
            BUILTIN_COS,
            LinkCharacteristics,
            NodeCharacteristics,
            TopologyGraph,
            leastWeightRoute,
        )

        lang, body = self.block("route selection")
        graph = TopologyGraph()
        expected = []
        for line in body.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "node":
                values = dict(w.split("=") for w in words[2:])
                graph.addNode(
                    words[1], NodeCharacteristics(int(values["resistance"]), int(values["load"]))
                )
            elif words[0] == "link":
                values = dict(w.split("=") for w in words[3:])
                graph.addLink(
                    words[1],
                    words[2],
                    LinkCharacteristics(
                        int(values["rtt_ms"]),
                        int(values["throughput"]),
                        int(values["cost"]),
                        int(values["security"]),
                    ),
                )
            elif words[0] == "route":
                # route COS ORIGIN DESTINATION -> HOP HOP ... weight W (w1 w2 ...)
                arrow = words.index("->")
                wi = words.index("weight")
                expected.append(
                    (
                        words[1],
                        words[2],
                        words[3],
                        words[arrow + 1 : wi],
                        float(words[wi + 1]),
                        [float(x) for x in " ".join(words[wi + 2 :]).strip("()").split()],
                    )
                )
        self.assertTrue(expected)
        for cos, origin, destination, hops, weight, hopWeights in expected:
            route = leastWeightRoute(graph, origin, destination, BUILTIN_COS[cos])
            self.assertEqual(
                (route.hops, route.weight, route.hopWeights), (hops, weight, hopWeights), cos
            )

    def test_helloSignature(self) -> None:
        """
        The doc's "signed bytes" are the Hello example's body without its
        C{signature} entry, and the example's signature verifies over them
        with the public key it carries.
        """
        signed = hexBytes(self.block("Hello signed bytes")[1])
        hello = MessageReader().feed(hexBytes(self.block("Hello")[1]))[0]
        assert isinstance(hello, Hello)
        self.assertEqual(hello.signedBytes(), signed)
        self.assertTrue(verifySignature(hello.public_key, hello.signature, signed))
        self.assertEqual(nodeIDFromSPKI(hello.public_key), hello.node_id)

    def test_nodeIDExample(self) -> None:
        """
        The worked example: the RFC 8032 seed gives the public key, its DER
        SubjectPublicKeyInfo, SHA-256 of that, the padded base32 and the
        node ID the doc shows, step by step.
        """
        lang, body = self.block("node-id")
        values = keyValues(body)
        seed = bytes.fromhex(values["private key (RFC 8032 seed)"])
        key = Ed25519PrivateKey.from_private_bytes(seed)
        self.assertEqual(key.public_key().public_bytes_raw().hex(), values["public key"])
        spki = _spki(key.public_key())
        self.assertEqual(spki.hex(), values["SPKI DER"])
        digest = hashlib.sha256(spki).digest()
        self.assertEqual(digest.hex(), values["SHA-256"])
        self.assertEqual(base64.b32encode(digest).decode(), values["base32"])
        self.assertEqual(nodeIDFromSPKI(spki), values["node ID"])
        self.assertEqual(values["node ID"], NODE_A)
        self.assertEqual(len(values["node ID"]), 52)


class DocumentedValuesTests(SynchronousTestCase):
    """
    The constants, reason codes and message fields the doc lists match the
    code.
    """

    def setUp(self) -> None:
        self.doc = readDoc()
        self.blocks = exampleBlocks(self.doc)

    def test_constants(self) -> None:
        """
        Every entry of the doc's constants block equals the code's value, and
        every constant this test knows is in the block.
        """
        for block, constants in (
            ("constants", CONSTANTS),
            ("constants: services", SERVICE_CONSTANTS),
        ):
            self.assertIn(block, self.blocks)
            values = keyValues(self.blocks[block][1].replace("=", ":"))
            self.assertEqual(set(values), set(constants), block)
            for name, get in constants.items():
                self.assertEqual(float(values[name]), float(get()), name)  # type: ignore[arg-type]

    def test_reasonCodes(self) -> None:
        """
        The table of the "Reason codes" section lists exactly the values of
        L{Reason}, in the enum's order.
        """
        m = re.search(
            r"^## \d+\. Reason codes\n(?P<section>.*?)(?=^## )", self.doc, re.MULTILINE | re.DOTALL
        )
        self.assertIsNotNone(m, "no Reason codes section")
        assert m is not None
        rows = re.findall(r"^\| `([a-z0-9-]+)` \|", m.group("section"), re.MULTILINE)
        self.assertEqual(rows, [r.value for r in Reason])

    def test_messageFields(self) -> None:
        """
        Each message section's field table names exactly the attrs fields of
        its class (the wire keys), in order.
        """
        for typeName in sorted(
            name
            for name, cls in messages.MESSAGE_TYPES.items()
            if not cls.__module__.startswith(TEST_ONLY_MODULE_PREFIX)
        ):
            cls = messages.MESSAGE_TYPES[typeName]
            m = re.search(
                rf"^### `{typeName}`\n(?:(?!\|)[^\n]*\n)*(?P<table>(?:\|[^\n]*\n)+)",
                self.doc,
                re.MULTILINE,
            )
            self.assertIsNotNone(m, f"no section for {typeName}")
            assert m is not None
            rows = re.findall(r"^\| `([a-z_]+)` \|", m.group("table"), re.MULTILINE)
            wire = [f.name for f in attrs.fields(cls) if not f.metadata.get("local")]  # type: ignore[arg-type]
            self.assertEqual(rows, ["type"] + wire, typeName)


class CapabilityTests(SynchronousTestCase):
    """
    The capability table of section 9.1 names every optional message with
    the capability the code gives it.
    """

    def setUp(self) -> None:
        doc = readDoc()
        m = re.search(r"^### 9\.1 .*?\n(?P<section>.*?)(?=^### )", doc, re.MULTILINE | re.DOTALL)
        assert m is not None, "no section 9.1"
        self.table = dict(
            re.findall(r"^\| `([A-Za-z]+)` \| `([a-z0-9-]+)` \|", m.group("section"), re.MULTILINE)
        )

    def _optional(self) -> dict[str, type[Message]]:
        # A message type registers itself when its module is imported: import
        # them all, so that this test sees the same table run alone as in the
        # whole suite.
        for module in pkgutil.walk_packages(appnpy.__path__, "appnpy."):
            importlib.import_module(module.name)
        return {
            name: cls
            for name, cls in messages.MESSAGE_TYPES.items()
            if cls.__module__ != "appnpy.cp.messages"
            and not cls.__module__.startswith(TEST_ONLY_MODULE_PREFIX)
        }

    def test_everyOptionalMessageListed(self) -> None:
        """
        Every message outside the core protocol is in the table.
        """
        self.assertEqual(sorted(self.table), sorted(self._optional()))

    def test_capabilitiesAgreeWithCode(self) -> None:
        """
        Where the code gives a message a capability, it is the doc's.
        """
        for name, cls in self._optional().items():
            if cls.capability is not None:
                self.assertEqual(self.table.get(name), cls.capability, name)

    def test_everyOptionalMessageHasItsCapability(self) -> None:
        """
        Every optional message carries the capability the doc assigns it,
        so it is never sent to a neighbour that did not announce it.
        """
        missing = {
            name: self.table.get(name)
            for name, cls in self._optional().items()
            if cls.capability != self.table.get(name)
        }
        self.assertEqual(missing, {})


if __name__ == "__main__":
    print(renderExamples())
