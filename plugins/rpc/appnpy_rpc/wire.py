"""
The RPC wire format: length-prefixed canonical CBOR frames
(docs/protocol.md, section 20).

Each frame is a 4-byte big-endian length and one CBOR array whose first
element is the message type:

    CALL      [0, id, service, method, args, kwargs, depth, timeout_ms]
    RESULT    [1, id, value]
    ERROR     [2, id, code, message]
    CANCEL    [3, id]
    DESCRIBE  [4, id, service or null]

Arrays rather than maps keep the hot path small.  Decoding is strict: the
length is checked against the limit before the body is buffered; the body
is one CBOR item in deterministic encoding (RFC 8949 section 4.2) with no
tags, no indefinite lengths and no duplicate keys; every element is type
and range checked.  Elements after the last known one are ignored: that is
how a later minor version adds some.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import cbor2

from appnpy_rpc.errors import CODE_PATTERN, MAX_MESSAGE

CALL, RESULT, ERROR, CANCEL, DESCRIBE = 0, 1, 2, 3, 4
#: The largest frame body either side sends or accepts.
MAX_FRAME = 1024 * 1024
#: Call ids are below this.
MAX_ID = 2**63
#: Deepest CBOR nesting accepted (data nests at most 32 below the message).
MAX_NESTING = 40
#: Longest service or method name.
MAX_NAME = 64
#: Longest timeout a call may carry, in milliseconds (one day).
MAX_TIMEOUT_MS = 86_400_000
MAX_DEPTH_FIELD = 255

_LENGTH = struct.Struct(">I")
_pack = _LENGTH.pack
_dumps = cbor2.dumps


class WireError(Exception):
    """
    A peer sent something that is not a valid RPC frame; the session is
    closed with this text as the reason's detail.
    """


#: Finds any byte that could start a float or a non-empty map.  cbor2's
#: default encoding differs from the deterministic one only in floats
#: (always 8 bytes) and map key order; where neither occurs the two are the
#: same bytes, and the default encoder is about twice as fast.  A match
#: inside a string or an integer is harmless: it only costs the slow path.
_MAYBE_FLOAT_OR_MAP = re.compile(rb"[\xa1-\xbb\xf9-\xfb]").search


def _canonical(value: Any) -> bytes:
    plain: bytes = _dumps(value)
    if _MAYBE_FLOAT_OR_MAP(plain) is None:
        return plain
    encoded: bytes = _dumps(value, canonical=True)
    return encoded


def frame(message: list[Any]) -> bytes:
    """
    The framed canonical encoding of C{message}.

    @raise WireError: if it is over L{MAX_FRAME}.
    @raise cbor2.CBOREncodeError: if it holds something CBOR cannot carry.
    """
    body = _canonical(message)
    if len(body) > MAX_FRAME:
        raise WireError(f"frame of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return _pack(len(body)) + body


def _refuseTag(decoder: object, tag: object) -> object:
    raise WireError("CBOR tags are not allowed")


def _refuseSemantic(*args: Any) -> Any:
    raise WireError("CBOR tags are not allowed")


# cbor2 decodes these tags itself (dates, bignums, decimals, shared and
# cyclic references, regular expressions, sets, ...) without asking
# tag_hook: each is refused explicitly.  The list is cbor2 6's; a test
# checks it is complete.
_SEMANTIC_TAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)
_NO_SEMANTICS = {tag: _refuseSemantic for tag in _SEMANTIC_TAGS}


def decodeBody(body: bytes) -> list[Any]:
    """
    One frame body (without its length prefix) as a checked message list.

    @raise WireError: saying why it was refused.
    """
    try:
        value = cbor2.loads(
            body,
            tag_hook=_refuseTag,
            semantic_decoders=_NO_SEMANTICS,
            max_depth=MAX_NESTING,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except WireError:
        raise
    except Exception as e:
        if "semantic tag" in str(e) or isinstance(e.__cause__, WireError):
            raise WireError("CBOR tags are not allowed") from None
        raise WireError(f"undecodable CBOR: {str(e)[:200]}") from None
    # Deterministic encoding; re-encoding also catches trailing bytes.
    try:
        canonical = _canonical(value)
    except Exception as e:  # pragma: no cover - cbor2 encodes what it decoded
        raise WireError(f"unencodable value: {e}") from None
    if canonical != body:
        raise WireError("frame is not in deterministic CBOR encoding")
    if type(value) is not list or not value:
        raise WireError("a frame holds a non-empty CBOR array")
    kind = value[0]
    check = _CHECKS.get(kind) if type(kind) is int else None
    if check is None:
        raise WireError(f"unknown message type {str(kind)[:16]}")
    check(value)
    return value


def _id(value: Any) -> None:
    if type(value) is not int or not 0 <= value < MAX_ID:
        raise WireError("a call id is an integer 0 .. 2**63-1")


def _name(value: Any, what: str) -> None:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        raise WireError(f"{what} must be text of 1 to {MAX_NAME} characters")


def _need(message: list[Any], n: int, what: str) -> None:
    if len(message) < n:
        raise WireError(f"{what} has {len(message)} elements, needs {n}")


def _checkCall(m: list[Any]) -> None:
    _need(m, 8, "CALL")
    _id(m[1])
    _name(m[2], "a service name")
    _name(m[3], "a method name")
    if type(m[4]) is not list:
        raise WireError("CALL arguments must be an array")
    if type(m[5]) is not dict or not all(type(k) is str for k in m[5]):
        raise WireError("CALL keyword arguments must be a map with text keys")
    if type(m[6]) is not int or not 0 <= m[6] <= MAX_DEPTH_FIELD:
        raise WireError("CALL depth must be an integer 0 .. 255")
    if type(m[7]) is not int or not 0 < m[7] <= MAX_TIMEOUT_MS:
        raise WireError(f"CALL timeout must be 1 .. {MAX_TIMEOUT_MS} ms")


def _checkResult(m: list[Any]) -> None:
    _need(m, 3, "RESULT")
    _id(m[1])


def _checkError(m: list[Any]) -> None:
    _need(m, 4, "ERROR")
    _id(m[1])
    if type(m[2]) is not str or not CODE_PATTERN.match(m[2]):
        raise WireError("ERROR code must be 1-64 of a-z 0-9 - starting with a letter")
    if type(m[3]) is not str or len(m[3]) > MAX_MESSAGE:
        raise WireError(f"ERROR message must be text of at most {MAX_MESSAGE} characters")


def _checkCancel(m: list[Any]) -> None:
    _need(m, 2, "CANCEL")
    _id(m[1])


def _checkDescribe(m: list[Any]) -> None:
    _need(m, 3, "DESCRIBE")
    _id(m[1])
    if m[2] is not None:
        _name(m[2], "a service name")


_CHECKS = {
    CALL: _checkCall,
    RESULT: _checkResult,
    ERROR: _checkError,
    CANCEL: _checkCancel,
    DESCRIBE: _checkDescribe,
}


class FrameReader:
    """
    Splits a byte stream into frame bodies, refusing an over-long length
    before buffering its body.
    """

    def __init__(self, maxFrame: int = MAX_FRAME) -> None:
        self.maxFrame = maxFrame
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        The complete frame bodies C{data} finishes.

        @raise WireError: for a length over the limit.
        """
        buf = self._buffer + data if self._buffer else data
        bodies = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length > self.maxFrame:
                self._buffer = b""
                raise WireError(f"frame of {length} bytes is over the {self.maxFrame}-byte limit")
            if end - pos - 4 < length:
                break
            bodies.append(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
        self._buffer = buf[pos:] if pos else buf
        return bodies

    @property
    def buffered(self) -> int:
        return len(self._buffer)
