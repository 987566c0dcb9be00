"""
Control messages: length-prefixed, deterministically encoded CBOR maps.

Every message is an attrs class registered under its wire C{type} name.  The
wire form is a CBOR map holding C{"type"} and one key per field (the field
names below are the wire keys).  Decoding is strict, in the manner of
Foolscap's constraints:

  - the 4-byte length prefix is checked against the limit before a byte of the
    body is buffered;
  - the body must be one CBOR item in deterministic encoding (RFC 8949
    section 4.2), with no tags, no indefinite lengths and no duplicate keys,
    so a signed message verifies byte for byte;
  - every field is type- and size-checked; a missing required field is an
    error; an unknown field is ignored (that is how newer minor versions add
    fields); an unknown message type is an error naming it.

docs/protocol.md is the normative description of every message.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import attrs
import cbor2

from appnpy.errors import ProtocolError

#: Largest control message body accepted or sent.
MAX_MESSAGE_SIZE = 64 * 1024

_LENGTH = struct.Struct(">I")
_NODE_ID = re.compile(r"[a-z2-7]{52}\Z")
_SESSION_ID = re.compile(r"[0-9a-f]{32}\Z")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


def isToken(text: object) -> bool:
    """
    Whether C{text} is a valid plugin name, role, capability or reason code.
    """
    return isinstance(text, str) and _TOKEN.match(text) is not None


_MAX_DEPTH = 8
_MAX_TEXT = 1024
_MAX_ITEMS = 256
#: The most nodes a route may name, origin and destination included.
MAX_ROUTE_NODES = 16


class UnknownMessage(ProtocolError):
    """
    The neighbour sent a control message of a type this node does not know.
    It probably runs a newer protocol version; upgrade this node.
    """


_T = TypeVar("_T")
MESSAGE_TYPES: dict[str, type[Message]] = {}


def message(name: str, capability: str | None = None) -> Callable[[type[_T]], type[_T]]:
    """
    Register an attrs class as the control message with wire type C{name}.

    @param capability: for an optional message, the capability (announced
        in Hello) a peer must have for the message to be sent to it.  A
        message with no capability is part of the core protocol.
    """

    def register(cls: type[_T]) -> type[_T]:
        cls.typeName = name  # type: ignore[attr-defined]
        cls.capability = capability  # type: ignore[attr-defined]
        MESSAGE_TYPES[name] = cls  # type: ignore[assignment]
        return cls

    return register


class Message:
    """
    Base of every control message.
    """

    typeName: ClassVar[str]
    capability: ClassVar[str | None] = None

    def toWire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.typeName}
        for name in wireFields(type(self)):
            body[name] = getattr(self, name)
        return body


_WIRE_FIELDS: dict[type, tuple[str, ...]] = {}


def wireFields(cls: type) -> tuple[str, ...]:
    """
    The names of a message class's fields that go on the wire (computed
    once per class: every message sent or received needs them).
    """
    names = _WIRE_FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in attrs.fields(cls) if not f.metadata.get("local"))
        _WIRE_FIELDS[cls] = names
    return names


# -- validators: limits checked per field, before the object exists -----------


def _check(ok: bool, field: attrs.Attribute[Any], why: str) -> None:
    if not ok:
        raise ProtocolError(f"field {field.name!r}: {why}")


def _refuse(field: attrs.Attribute[Any], why: str) -> None:
    raise ProtocolError(f"field {field.name!r}: {why}")


# The validators run on every message sent and received: each checks with
# plain conditions and builds its error text only when a check fails.


def text(maxLength: int = _MAX_TEXT, pattern: re.Pattern[str] | None = None) -> Any:
    def validate(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str):
            _refuse(field, "must be text")
        elif len(value) > maxLength:
            _refuse(field, f"longer than {maxLength}")
        elif pattern is not None and pattern.match(value) is None:
            _refuse(field, "malformed")

    return validate


def integer(minimum: int = 0, maximum: int = 2**63 - 1) -> Any:
    def validate(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not int:
            _refuse(field, "must be an integer")
        elif not minimum <= value <= maximum:
            _refuse(field, f"outside {minimum}..{maximum}")

    return validate


def blob(maxLength: int) -> Any:
    def validate(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bytes):
            _refuse(field, "must be bytes")
        elif len(value) > maxLength:
            _refuse(field, f"longer than {maxLength} bytes")

    return validate


def listOf(item: Any, maxItems: int = _MAX_ITEMS) -> Any:
    def validate(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, list):
            _refuse(field, "must be a list")
        elif len(value) > maxItems:
            _refuse(field, f"more than {maxItems} items")
        else:
            for v in value:
                item(inst, field, v)

    return validate


def mapOf(key: Any, value: Any, maxItems: int = _MAX_ITEMS) -> Any:
    def validate(inst: object, field: attrs.Attribute[Any], mapping: object) -> None:
        if not isinstance(mapping, dict):
            _refuse(field, "must be a map")
        elif len(mapping) > maxItems:
            _refuse(field, f"more than {maxItems} entries")
        else:
            for k, v in mapping.items():
                key(inst, field, k)
                value(inst, field, v)

    return validate


def plainData(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """
    Plugin parameters: any plain CBOR data (text-keyed maps, lists, text,
    bytes, 64-bit integers, floats, booleans, null), nested at most
    C{_MAX_DEPTH} deep.
    """
    _check(isinstance(value, dict), field, "must be a map")
    for _ in _walk(value, field, 0):
        pass


def _walk(value: object, field: attrs.Attribute[Any], depth: int) -> Iterator[None]:
    _check(depth <= _MAX_DEPTH, field, "nested too deeply")
    if isinstance(value, dict):
        for k, v in value.items():
            _check(isinstance(k, str), field, "map keys must be text")
            yield from _walk(v, field, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, field, depth + 1)
    elif type(value) is int:
        _check(-(2**63) <= value <= 2**64 - 1, field, "integer out of 64-bit range")
    else:
        _check(
            value is None or type(value) in (str, bytes, float, bool),
            field,
            f"unsupported value of type {type(value).__name__}",
        )
    yield None


nodeID = text(52, _NODE_ID)
sessionID = text(32, _SESSION_ID)
token = text(32, _TOKEN)
reasonCode = token


# -- the messages ------------------------------------------------------------


@message("Hello")
@attrs.frozen
class Hello(Message):
    """
    The first message on each control stream (APPN XID + CP capabilities).
    Signed by the sender's node key over the deterministic encoding of every
    other field.
    """

    node_id: str = attrs.field(validator=nodeID)
    public_key: bytes = attrs.field(validator=blob(256))
    name: str = attrs.field(validator=text(17))
    role: str = attrs.field(validator=token)
    versions: list[int] = attrs.field(validator=listOf(integer(0, 65535), 2))
    capabilities: list[str] = attrs.field(validator=listOf(token, 64))
    listen: list[str] = attrs.field(validator=listOf(text(300), 16))
    plugins: dict[str, int] = attrs.field(validator=mapOf(token, integer(0, 2**31 - 1), 64))
    #: On a link the sender dialled, a number larger than on any link it
    #: dialled before (its clock in microseconds, kept strictly increasing);
    #: 0 on a link it accepted.  Two links between the same pair of nodes
    #: dialled by the same node: the higher serial survives (section 7.4).
    dial_serial: int = attrs.field(validator=integer(0, 2**63 - 1))
    signature: bytes = attrs.field(default=b"", validator=blob(128))
    #: The map as received, unknown fields included: the signature covers
    #: them too, so a newer peer's Hello verifies.  Not sent.
    received: dict[str, Any] | None = attrs.field(
        default=None, init=False, eq=False, repr=False, metadata={"local": True}
    )

    def signedBytes(self) -> bytes:
        """
        The bytes the signature covers: the message as sent (or received),
        every field but the signature.
        """
        body = dict(self.received) if self.received is not None else self.toWire()
        del body["signature"]
        return encodeBody(body)

    def __attrs_post_init__(self) -> None:
        if len(self.versions) != 2 or self.versions[0] > self.versions[1]:
            raise ProtocolError("field 'versions': must be [lowest, highest]")


@message("LinkRefused")
@attrs.frozen
class LinkRefused(Message):
    """
    Sent on a control stream just before the sender closes the link.
    """

    reason: str = attrs.field(validator=reasonCode)
    detail: str = attrs.field(default="", validator=text(512))


@message("SessionOpen")
@attrs.frozen
class SessionOpen(Message):
    """
    BIND: the first message on a stream that carries a session.
    """

    session_id: str = attrs.field(validator=sessionID)
    origin: str = attrs.field(validator=nodeID)
    destination: str = attrs.field(validator=nodeID)
    plugin: str = attrs.field(validator=token)
    cos: str = attrs.field(validator=token)
    window: int = attrs.field(validator=integer(0, 2**32 - 1))
    parameters: dict[str, Any] = attrs.field(factory=dict, validator=plainData)
    #: The route selection control vector: every node from origin to
    #: destination.  Empty for a session between neighbours.
    route: list[str] = attrs.field(factory=list, validator=listOf(nodeID, MAX_ROUTE_NODES))
    #: A routed BIND is signed by its origin, so a relay can count it against
    #: the origin's cap without trusting the neighbour that passed it on.
    #: The origin's public key (DER SubjectPublicKeyInfo; the origin's node
    #: ID is derived from it, so the BIND is self-certifying).  Empty on an
    #: adjacent BIND (the link has authenticated the origin).
    public_key: bytes = attrs.field(default=b"", validator=blob(256))
    #: When the origin signed the BIND, in whole seconds of its clock (the
    #: session ID, 128 random bits, is the nonce).  0 on an adjacent BIND.
    timestamp: int = attrs.field(default=0, validator=integer(0, 2**63 - 1))
    #: The origin's Ed25519 signature over L{signedBytes}.  Empty on an
    #: adjacent BIND.
    signature: bytes = attrs.field(default=b"", validator=blob(128))
    #: Path switch (docs/protocol.md 15.8): 0 for a session that cannot
    #: switch paths; 1 on the first BIND of one that can; every re-BIND of
    #: the session on a new path carries a larger number than the last.
    path: int = attrs.field(default=0, validator=integer(0, 2**31 - 1))
    #: On a re-BIND: how many bytes of the destination's numbered stream
    #: the origin has received (where the destination resumes).
    resume: int = attrs.field(default=0, validator=integer(0, 2**63 - 1))

    def toWire(self) -> dict[str, Any]:
        # The origin's key, time and signature, and the path-switch fields,
        # are left out while they have their defaults, so an adjacent BIND
        # is as short as it always was.
        body = super().toWire()
        for name, default in _UNSIGNED_BIND:
            if body[name] == default:
                del body[name]
        return body

    def signedBytes(self) -> bytes:
        """
        The bytes the origin signs: the BIND's deterministic encoding
        without its C{signature} (its C{type} keeps a BIND's signature from
        verifying as any other message's).
        """
        body = self.toWire()
        body.pop("signature", None)
        return encodeBody(body)


#: The fields of a BIND that only a routed one carries, with their defaults.
_UNSIGNED_BIND: tuple[tuple[str, object], ...] = (
    ("public_key", b""),
    ("timestamp", 0),
    ("signature", b""),
    ("path", 0),
    ("resume", 0),
)


@message("SessionAccept")
@attrs.frozen
class SessionAccept(Message):
    """
    Positive BIND response; after it the stream carries the plugin's bytes.
    """

    session_id: str = attrs.field(validator=sessionID)


@message("SessionRefuse")
@attrs.frozen
class SessionRefuse(Message):
    """
    Negative BIND response; the stream is closed after it.
    """

    session_id: str = attrs.field(validator=sessionID)
    reason: str = attrs.field(validator=reasonCode)
    detail: str = attrs.field(default="", validator=text(512))


@message("SessionStarted")
@attrs.frozen
class SessionStarted(Message):
    """
    SESSST: the destination of a routed session has authenticated the
    origin by end-to-end TLS.  Sent on the destination's control stream to
    the last relay, and by each relay to the one before it (not to the
    origin): until it arrives a relay holds the splice only for a deadline.
    """

    session_id: str = attrs.field(validator=sessionID)


@message("SessionClose")
@attrs.frozen
class SessionClose(Message):
    """
    UNBIND, sent on the sender's control stream when it closes a session.
    """

    session_id: str = attrs.field(validator=sessionID)
    reason: str = attrs.field(validator=reasonCode)
    detail: str = attrs.field(default="", validator=text(512))


# -- encoding ----------------------------------------------------------------


# Value types whose CBOR encoding is the same in canonical and plain mode
# (canonical mode only sorts map keys and shortens floats).
_PLAIN = frozenset({str, int, bytes, bool, type(None)})
# Canonical key orders by the keys' insertion order, for the few shapes
# messages have (bounded: a peer's decoded maps can have any keys).
_KEY_ORDERS: dict[tuple[str, ...], tuple[str, ...]] = {}
_MAX_KEY_ORDERS = 1024


def _canonicalKey(key: str) -> tuple[int, bytes]:
    # RFC 7049 canonical order of text keys: shorter encoding first, then
    # bytewise; a text header grows with the UTF-8 length, so this is it.
    encoded = key.encode("utf-8")
    return len(encoded), encoded


def _plainValue(value: object) -> bool:
    kind = type(value)
    if kind in _PLAIN:
        return True
    if isinstance(value, (list, tuple)) and (kind is list or kind is tuple):
        return all(type(item) in _PLAIN for item in value)
    return kind is dict and not value


def encodeBody(body: dict[str, Any]) -> bytes:
    """
    The deterministic (RFC 7049 canonical) CBOR encoding of C{body}.

    A flat map (text keys; text, integer, bytes, boolean or null values,
    lists of those, empty maps) is encoded with its keys put in canonical
    order and cbor2's plain encoder, which then gives the same bytes as its
    canonical mode at a quarter of the cost (every message sent and received
    is encoded once); anything else goes through the canonical mode.
    """
    keys = tuple(body)
    order = _KEY_ORDERS.get(keys)
    if order is None:
        if not all(type(k) is str for k in keys):
            return cbor2.dumps(body, canonical=True)
        order = tuple(sorted(keys, key=_canonicalKey))
        if len(_KEY_ORDERS) < _MAX_KEY_ORDERS:
            _KEY_ORDERS[keys] = order
    plain = _PLAIN
    for value in body.values():
        if type(value) not in plain and not _plainValue(value):
            return cbor2.dumps(body, canonical=True)
    if order == keys:
        return cbor2.dumps(body)
    return cbor2.dumps({k: body[k] for k in order})


def encodeMessage(msg: Message) -> bytes:
    """
    The framed wire form: 4-byte big-endian length, then the CBOR body.
    """
    body = encodeBody(msg.toWire())
    if len(body) > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"{msg.typeName} is {len(body)} bytes, over {MAX_MESSAGE_SIZE}")
    return _LENGTH.pack(len(body)) + body


def _refuseTag(decoder: object, tag: object) -> object:
    raise ProtocolError("CBOR tags are not allowed")


def _refuseSemanticTag(*args: object) -> object:
    raise ProtocolError("CBOR tags are not allowed")


#: The tags cbor2 decodes itself (dates, bignums, decimals, sets, shared
#: references, ...) without asking C{tag_hook}, even with no semantic
#: decoders passed: each is refused explicitly.  The list is cbor2 6's;
#: tests/test_messages.py checks that every tag is refused.
_SEMANTIC_TAGS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100)
_SEMANTIC_TAGS += (256, 258, 260, 261, 1004, 43000, 55799)
_NO_SEMANTIC_TAGS = {tag: _refuseSemanticTag for tag in _SEMANTIC_TAGS}


def decodeCBOR(data: bytes, maxDepth: int) -> Any:
    """
    Decode one CBOR item from a peer, strictly: no tags (so no dates,
    bignums or other semantic types), no indefinite lengths, no duplicate
    map keys, nesting at most C{maxDepth} deep.  Used for messages and for
    the signed records they carry.

    @raise ProtocolError: saying why the bytes were refused.
    """
    try:
        return cbor2.loads(
            data,
            tag_hook=_refuseTag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            max_depth=maxDepth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except ProtocolError:
        raise
    except Exception as e:
        raise ProtocolError(f"undecodable CBOR: {e}") from None


def decodePeerCBOR(data: bytes, maxDepth: int) -> Any:
    """
    L{decodeCBOR} for plugins' own wire formats (C{appnpy.api.decodeCBOR}):
    the same checks, the reason raised as a plain C{ValueError} for the
    plugin to wrap in its own error.
    """
    try:
        return decodeCBOR(data, maxDepth)
    except ProtocolError as e:
        raise ValueError(e.args[0] if e.args else "undecodable CBOR") from None


def decodeBody(body: bytes) -> Message:
    """
    Decode one message body (without its length prefix).

    @raise ProtocolError: with the reason, for anything but a valid message.
    """
    value = decodeCBOR(body, _MAX_DEPTH + 4)
    if not isinstance(value, dict):
        raise ProtocolError("a message must be a CBOR map")
    if not all(isinstance(k, str) for k in value):
        raise ProtocolError("message keys must be text")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no text 'type'")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise UnknownMessage(repr(kind[:64]))
    known = wireFields(cls)
    try:
        msg = cls(**{k: v for k, v in value.items() if k in known})
    except TypeError as e:
        raise ProtocolError(f"{kind}: {e}") from None
    # Deterministic encoding is required (signatures are checked over the
    # re-encoded form); this also rejects trailing bytes.  Unknown fields are
    # allowed, so compare against the full decoded map.
    try:
        canonical = encodeBody(value)
    except Exception as e:  # pragma: no cover - cbor2 encodes whatever it decoded
        raise ProtocolError(f"{kind}: {e}") from None
    if canonical != body:
        raise ProtocolError(f"{kind}: not in deterministic CBOR encoding")
    if isinstance(msg, Hello):
        object.__setattr__(msg, "received", value)
    return msg


class MessageReader:
    """
    Incremental reader of framed messages, limits checked as bytes arrive.

    C{feed} returns the messages completed so far, at most C{maxMessages} of
    them; any bytes that followed the last message returned are available as
    C{leftover()}, unexamined (a session stream switches to raw plugin bytes
    right after its BIND answer).
    """

    __slots__ = ("_buffer", "_limit")

    def __init__(self, limit: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes, maxMessages: int | None = None) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        buf = self._buffer
        while len(buf) >= 4 and (maxMessages is None or len(out) < maxMessages):
            (length,) = _LENGTH.unpack_from(buf)
            if length > self._limit:
                raise ProtocolError(f"message of {length} bytes is over the {self._limit} limit")
            if len(buf) < 4 + length:
                break
            body = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            out.append(decodeBody(body))
        # Every header the loop looked at has been checked against the limit.
        # When maxMessages stopped it, the bytes after the last message are
        # not a message at all (a session stream's RESUME, TLS records or
        # plugin data follow its BIND answer): they stay for leftover()
        # unread.
        return out

    def leftover(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data
