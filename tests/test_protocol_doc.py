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
import os
import re
from collections.abc import Callable

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.trial.unittest import SynchronousTestCase

import appnpy
from appnpy import control, messages, yamux
from appnpy.errors import Reason
from appnpy.identity import _spki, nodeIDFromSPKI, verifySignature
from appnpy.messages import (
    Hello,
    LinkRefused,
    Message,
    MessageReader,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    decodeBody,
    encodeMessage,
)

DOC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "protocol.md"
)

# RFC 8032 section 7.1, TEST 1 and TEST 2: fixed Ed25519 keys, so the
# examples (signatures included: Ed25519 is deterministic) never change.
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SEED_B = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
KEY_A = Ed25519PrivateKey.from_private_bytes(SEED_A)
KEY_B = Ed25519PrivateKey.from_private_bytes(SEED_B)
SPKI_A = _spki(KEY_A.public_key())
NODE_A = nodeIDFromSPKI(SPKI_A)
NODE_B = nodeIDFromSPKI(_spki(KEY_B.public_key()))
SESSION = "00112233445566778899aabbccddeeff"


def _exampleHello() -> Hello:
    hello = Hello(
        node_id=NODE_A,
        public_key=SPKI_A,
        name="LAB.ALPHA",
        role="network",
        versions=[1, 1],
        capabilities=["sessions"],
        listen=[f"appn://{NODE_A}@192.0.2.1:7700"],
        plugins={"echo": 64, "ping": 64},
    )
    return attrs.evolve(hello, signature=KEY_A.sign(hello.signedBytes()))


def _probeRequest() -> Message:
    from appnpy.probe import ProbeRequest  # type: ignore[import-not-found]

    return ProbeRequest(nonce="0123456789abcdef")  # type: ignore[no-any-return]


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
    "ProbeRequest": _probeRequest,
}

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
    "control.MAX_PENDING_INBOUND": lambda: control.MAX_PENDING_INBOUND,
    "control.FIRST_MESSAGE_TIMEOUT": lambda: control.FIRST_MESSAGE_TIMEOUT,
    "control.CLOSE_TIMEOUT": lambda: control.CLOSE_TIMEOUT,
    "link.DEFAULT_HANDSHAKE_TIMEOUT": lambda: (
        __import__("appnpy.link", fromlist=["x"]).DEFAULT_HANDSHAKE_TIMEOUT
    ),
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
    block is named C{"constants"}.
    """
    blocks: dict[str, tuple[str, str]] = {}
    for m in _BLOCK.finditer(doc):
        name = m.group("name") if m.group(1) == "example" else "constants"
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
        known |= {"Hello signed bytes", "node-id", "constants"}
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

    def test_everyCoreMessageHasAnExample(self) -> None:
        """
        Every message type defined in L{appnpy.messages} (and every other
        registered one) has an example in the doc.
        """
        missing = [
            typeName
            for typeName, cls in messages.MESSAGE_TYPES.items()
            if typeName not in self.blocks
            and (cls.__module__ == "appnpy.messages" or typeName in MESSAGE_EXAMPLES)
        ]
        self.assertEqual(missing, [])

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
        values = keyValues(self.blocks["constants"][1].replace("=", ":"))
        self.assertEqual(set(values), set(CONSTANTS))
        for name, get in CONSTANTS.items():
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
        for typeName in (
            "Hello",
            "LinkRefused",
            "SessionOpen",
            "SessionAccept",
            "SessionRefuse",
            "SessionClose",
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


if __name__ == "__main__":
    print(renderExamples())
