"""
The chat protocol's wire forms (docs/protocol.md, section 19): frames and the
signed chat message.

A chat session carries frames: a 4-byte big-endian length, then one CBOR map
with a text key C{"t"} naming the frame type.  Every field is checked here,
strictly, before anything else looks at it; a frame that fails is a
L{ProtocolError} and ends the session with reason C{protocol-error}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import cbor2

from appnpy.api import decodeCBOR, verifyNodeSignature
from appnpy_chat.text import BadText, checkNick, checkRoom, checkText

#: The largest frame accepted (a member list of 256 members fits).
MAX_FRAME = 128 * 1024
#: Node IDs are 52 lowercase base32 characters (32 bytes).
NODE_ID_LENGTH = 52
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
#: Sequence numbers and times must fit a CBOR unsigned 64-bit integer.
MAX_SEQ = 2**63 - 1
#: The signing context: no other signature of the node can be taken for one.
SIGNING_CONTEXT = "appnpy-chat-msg-v1"
#: Protocol version, in the session parameters.
VERSION = 1
PRESENCES = ("online", "away", "gone")


class ProtocolError(Exception):
    """
    A peer sent something the chat protocol does not allow.
    """



def decodeFrame(data: bytes) -> dict[str, Any]:
    """
    Decode one frame body: a CBOR map with text keys and a text C{"t"}.
    No tags, no indefinite lengths, no duplicate keys, shallow nesting.
    """
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes, over {MAX_FRAME}")
    try:
        value = decodeCBOR(data, 8)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ProtocolError("a frame must be a CBOR map with text keys")
    if not isinstance(value.get("t"), str):
        raise ProtocolError("a frame needs a text 't'")
    return value


def encodeFrame(kind: str, **fields: Any) -> bytes:
    """
    The body of a frame of type C{kind} (without its length prefix).
    """
    body: bytes = cbor2.dumps({"t": kind, **fields}, canonical=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{kind} frame of {len(body)} bytes, over {MAX_FRAME}")
    return body


def field(frame: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """
    C{frame[name]}, which must be of exactly C{kind} (C{bool} is not an int).
    """
    value = frame.get(name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        raise ProtocolError(f"field {name!r} must be {'/'.join(k.__name__ for k in kinds)}")
    return value


def checkNodeID(value: object) -> str:
    if not isinstance(value, str) or len(value) != NODE_ID_LENGTH or not _BASE32.issuperset(value):
        raise ProtocolError("a node ID is 52 lowercase base32 characters")
    return value


def checkPresence(value: object) -> str:
    if value not in PRESENCES:
        raise ProtocolError(f"presence must be one of {', '.join(PRESENCES)}")
    assert isinstance(value, str)
    return value


def dmConversation(recipient: str) -> str:
    """
    The C{room} field of a direct message to C{recipient}: C{@<node ID>}, so
    a signed DM can never be replayed into a room or to another node.
    """
    return "@" + recipient


@attrs.frozen
class ChatMessage:
    """
    One message as its sender signed it.  Relayed untouched; anyone can check
    it with L{verify} against the sender's public key, which travels with it.

    @ivar room: the room name, or C{@<recipient node ID>} for a direct message.
    @ivar seq: the sender's sequence number, increasing per sender (across
        its rooms and conversations; gaps are allowed).
    @ivar time: the sender's clock (seconds since the epoch), shown, never
        trusted for ordering.
    """

    room: str
    sender: str
    seq: int
    time: float
    nick: str
    text: str
    key: bytes
    sig: bytes

    def signedBytes(self) -> bytes:
        return signedBytes(self.room, self.sender, self.seq, self.time, self.nick, self.text)

    def verify(self) -> bool:
        """
        The signature is the sender's (its key derives its node ID) over
        exactly these fields.
        """
        return verifyNodeSignature(
            self.sender, self.key, SIGNING_CONTEXT, self.signedBytes(), self.sig
        )

    def toWire(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "sender": self.sender,
            "seq": self.seq,
            "time": self.time,
            "nick": self.nick,
            "text": self.text,
            "key": self.key,
            "sig": self.sig,
        }

    @classmethod
    def fromWire(cls, value: object) -> ChatMessage:
        """
        Check the form of a message from a peer (not its signature: see
        L{verify}).
        """
        if not isinstance(value, dict):
            raise ProtocolError("a message must be a map")
        room = field(value, "room", str)
        if room.startswith("@"):
            checkNodeID(room[1:])
        else:
            try:
                checkRoom(room)
            except BadText as e:
                raise ProtocolError(str(e)) from None
        seq = field(value, "seq", int)
        if not 0 < seq <= MAX_SEQ:
            raise ProtocolError("seq must be 1 .. 2**63-1")
        time = field(value, "time", (int, float))
        if not 0 <= time < 1e12:
            raise ProtocolError("time out of range")
        key = field(value, "key", bytes)
        sig = field(value, "sig", bytes)
        if len(key) > 256 or len(sig) > 256:
            raise ProtocolError("key or signature too long")
        try:
            nick = checkNick(value.get("nick"))
            text = checkText(value.get("text"))
        except BadText as e:
            raise ProtocolError(str(e)) from None
        return cls(room, checkNodeID(value.get("sender")), seq, float(time), nick, text, key, sig)

    def toJSON(self) -> dict[str, Any]:
        """
        What the management API shows (no key or signature: they were checked).
        """
        return {
            "room": self.room,
            "sender": self.sender,
            "seq": self.seq,
            "time": self.time,
            "nick": self.nick,
            "text": self.text,
        }


def signedBytes(room: str, sender: str, seq: int, time: float, nick: str, text: str) -> bytes:
    """
    The bytes a chat message's signature covers: canonical CBOR of its fields.
    """
    data: bytes = cbor2.dumps(
        {"room": room, "sender": sender, "seq": seq, "time": time, "nick": nick, "text": text},
        canonical=True,
    )
    return data


@attrs.frozen
class MemberInfo:
    """
    A room member as the host reports it (the host's word: membership and
    presence are not signed, messages are).
    """

    node: str
    nick: str
    presence: str

    def toWire(self) -> dict[str, Any]:
        return {"node": self.node, "nick": self.nick, "presence": self.presence}

    @classmethod
    def fromWire(cls, value: object) -> MemberInfo:
        if not isinstance(value, dict):
            raise ProtocolError("a member must be a map")
        try:
            nick = checkNick(value.get("nick"))
        except BadText as e:
            raise ProtocolError(str(e)) from None
        return cls(checkNodeID(value.get("node")), nick, checkPresence(value.get("presence")))
