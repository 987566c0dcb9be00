"""
The files protocol on the wire: frames, requests, answers and their limits.

A frame is a 4-byte big-endian length N, then N bytes of canonical CBOR (a
map with text keys).  N is at most L{MAX_FRAME}; the length is checked before
a byte of the body is buffered.  A C{data} answer is followed at once by
exactly C{length} raw bytes, not counted in N (chunk bytes are never CBOR
wrapped).  docs/protocol.md section 18 is the specification.

Every message is an attrs class with C{toWire()} and C{fromWire(map)}; the
decoders check types, ranges and sizes field by field and never trust a
count the peer sends.  Unknown fields are ignored (a newer peer may add
some); unknown ops get C{bad-request}.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs
import cbor2

# -- limits --------------------------------------------------------------------

#: The largest CBOR body of a frame; a bigger length prefix is a protocol error.
MAX_FRAME = 1024 * 1024
#: The fixed chunk size: every chunk but a file's last is exactly this long.
CHUNK_SIZE = 1024 * 1024
#: The most raw bytes a C{data} answer may announce.
MAX_DATA = CHUNK_SIZE
#: Requests a client keeps outstanding at most.
MAX_OUTSTANDING = 16
#: A server closes a session with more outstanding requests than this.
MAX_OUTSTANDING_HARD = 32
#: Entries in one C{list} answer at most.
MAX_LIST_ENTRIES = 1000
#: Chunk hashes one C{chunks} request may ask for (32 bytes each: 512 KiB).
MAX_CHUNK_HASHES = 16384
#: Shares one C{shares} answer lists at most.
MAX_SHARES = 1000
#: Hits in one C{index-upload} request or C{index-search} answer at most.
MAX_HITS = 1000
#: Keywords in an C{index-search} at most, and characters in each.
MAX_KEYWORDS = 16
MAX_KEYWORD_LENGTH = 64
#: Characters of a share name, an entry name, a path, a password, a message.
MAX_SHARE_NAME = 64
MAX_NAME = 255
MAX_PATH = 4096
MAX_PASSWORD = 1024
MAX_MESSAGE = 1024
MAX_ERROR_CODE = 64
#: Request ids are 32-bit unsigned.
MAX_ID = 2**32 - 1
#: Sizes, offsets and indexes are 64-bit signed, never negative.
MAX_UINT63 = 2**63 - 1
#: The deepest nesting a frame may have (a map of lists of maps of scalars,
#: with room for a hit's own fields).
MAX_DEPTH = 6

SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# -- error codes (stable; docs/protocol.md section 18) ----------------------------

BAD_REQUEST = "bad-request"
NO_SUCH_SHARE = "no-such-share"
NO_SUCH_FILE = "no-such-file"
PASSWORD_REQUIRED = "password-required"
BAD_PASSWORD = "bad-password"
SLOW_DOWN = "slow-down"
FILE_CHANGED = "file-changed"
TOO_MANY_REQUESTS = "too-many-requests"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"

ERROR_CODES = frozenset(
    {
        BAD_REQUEST,
        NO_SUCH_SHARE,
        NO_SUCH_FILE,
        PASSWORD_REQUIRED,
        BAD_PASSWORD,
        SLOW_DOWN,
        FILE_CHANGED,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
        INTERNAL,
    }
)

#: The session close reason for a peer that breaks the framing or the limits.
PROTOCOL_ERROR = "protocol-error"

# -- ops --------------------------------------------------------------------------

OP_AUTH = "auth"
OP_SHARES = "shares"
OP_LIST = "list"
OP_STAT = "stat"
OP_CHUNKS = "chunks"
OP_READ = "read"
OP_INDEX_SEARCH = "index-search"
OP_INDEX_UPLOAD = "index-upload"


class ProtocolError(Exception):
    """
    The peer broke the framing or a limit that leaves no way to answer (no
    usable request id): the session is closed with reason C{protocol-error}.
    """


class BadRequest(Exception):
    """
    A request with a usable id but bad fields: answered with C{bad-request}.
    """

    def __init__(self, requestID: int, message: str) -> None:
        super().__init__(message)
        self.requestID = requestID
        self.message = message


# -- CBOR ---------------------------------------------------------------------------

_LENGTH = struct.Struct(">I")


def _refuseTag(decoder: object, tag: object) -> object:
    raise ProtocolError("CBOR tags are not allowed")


def encodeBody(body: dict[str, Any]) -> bytes:
    return cbor2.dumps(body, canonical=True)


def encodeFrame(body: dict[str, Any]) -> bytes:
    """
    The framed form of C{body}: length prefix plus canonical CBOR.

    @raise ValueError: if the body is over L{MAX_FRAME} (our own bug: every
        answer is bounded so it fits).
    """
    encoded = encodeBody(body)
    if len(encoded) > MAX_FRAME:
        raise ValueError(f"frame of {len(encoded)} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(encoded)) + encoded


def decodeBody(body: bytes) -> dict[str, Any]:
    """
    Decode one frame body strictly: a map with text keys, no tags, no
    indefinite lengths, no duplicate keys, bounded depth, in canonical
    encoding (which also refuses trailing bytes).

    @raise ProtocolError: saying why.
    """
    try:
        value = cbor2.loads(
            body,
            tag_hook=_refuseTag,
            semantic_decoders={},
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except ProtocolError:
        raise
    except Exception as e:
        raise ProtocolError(f"undecodable CBOR: {type(e).__name__}") from None
    if not isinstance(value, dict):
        raise ProtocolError("a frame must hold a CBOR map")
    if not all(isinstance(k, str) for k in value):
        raise ProtocolError("frame keys must be text")
    try:
        canonical = encodeBody(value)
    except Exception:  # pragma: no cover - cbor2 encodes whatever it decoded
        raise ProtocolError("frame cannot be re-encoded") from None
    if canonical != body:
        raise ProtocolError("frame is not in canonical CBOR")
    return value


@attrs.frozen
class Received:
    """
    One message off the wire: the decoded map and, for a C{data} answer, the
    raw bytes that followed it.
    """

    message: dict[str, Any]
    payload: bytes | None = attrs.field(default=None, repr=lambda p: f"<{len(p)} bytes>" if p is not None else "None")


class FrameDecoder:
    """
    Cuts a byte stream into frames as bytes arrive, checking each length
    before buffering its body.

    @param rawAfterData: the client side: a map with a C{"data"} key (and no
        C{"error"}) is followed by C{"length"} raw bytes, returned with it.
    """

    def __init__(self, *, rawAfterData: bool = False, maxFrame: int = MAX_FRAME) -> None:
        self.rawAfterData = rawAfterData
        self.maxFrame = maxFrame
        self._buffer = bytearray()
        self._pending: dict[str, Any] | None = None
        self._rawWanted = 0
        self._raw: list[bytes] = []
        self._rawHave = 0

    def buffered(self) -> int:
        """
        Bytes held waiting for the rest of a frame or payload.
        """
        return len(self._buffer) + self._rawHave

    def feed(self, data: bytes) -> list[Received]:
        """
        Add C{data}; answer every message now complete, in order.

        @raise ProtocolError: for an oversized length, a bad body or a bad
            C{data} length.  The decoder is unusable afterwards.
        """
        out: list[Received] = []
        view = memoryview(data)
        while view:
            if self._pending is not None:
                take = min(len(view), self._rawWanted - self._rawHave)
                self._raw.append(bytes(view[:take]))
                self._rawHave += take
                view = view[take:]
                if self._rawHave == self._rawWanted:
                    out.append(Received(self._pending, b"".join(self._raw)))
                    self._pending = None
                    self._raw = []
                    self._rawHave = self._rawWanted = 0
                continue
            self._buffer += view
            view = view[len(view) :]
            out.extend(self._frames())
            if self._pending is not None and self._buffer:
                # Raw bytes arrived with the header in the same write.
                view = memoryview(bytes(self._buffer))
                self._buffer.clear()
        return out

    def _frames(self) -> Iterable[Received]:
        offset = 0
        buf = self._buffer
        try:
            while self._pending is None and len(buf) - offset >= 4:
                (length,) = _LENGTH.unpack_from(buf, offset)
                if length > self.maxFrame:
                    raise ProtocolError(f"frame length {length} is over {self.maxFrame}")
                if len(buf) - offset - 4 < length:
                    break
                body = bytes(buf[offset + 4 : offset + 4 + length])
                offset += 4 + length
                message = decodeBody(body)
                wanted = self._rawLength(message)
                if wanted is None:
                    yield Received(message)
                elif wanted == 0:
                    yield Received(message, b"")
                else:
                    self._pending = message
                    self._rawWanted = wanted
        finally:
            del buf[:offset]

    def _rawLength(self, message: dict[str, Any]) -> int | None:
        if not self.rawAfterData or "data" not in message or "error" in message:
            return None
        length = message.get("length")
        if type(length) is not int or not 0 <= length <= MAX_DATA:
            raise ProtocolError("a data answer needs a length of 0..1 MiB")
        return length


# -- field checks --------------------------------------------------------------------


class _FieldError(Exception):
    pass


def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = MAX_UINT63) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _FieldError(f"{key} must be a whole number in {lo}..{hi}")
    return v


def _optInt(d: dict[str, Any], key: str, lo: int = 0, hi: int = MAX_UINT63) -> int | None:
    if d.get(key) is None:
        return None
    return _int(d, key, lo, hi)


def _text(d: dict[str, Any], key: str, maxLength: int, *, empty: bool = False) -> str:
    v = d.get(key)
    if type(v) is not str:
        raise _FieldError(f"{key} must be text")
    if len(v) > maxLength:
        raise _FieldError(f"{key} is over {maxLength} characters")
    if not v and not empty:
        raise _FieldError(f"{key} must not be empty")
    return v


def _bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if type(v) is not bool:
        raise _FieldError(f"{key} must be true or false")
    return v


def _sha(d: dict[str, Any], key: str = "sha256") -> str:
    v = d.get(key)
    if type(v) is not str or not SHA256_HEX.fullmatch(v):
        raise _FieldError(f"{key} must be 64 lowercase hex digits")
    return v


def _map(v: object, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _FieldError(f"{what} must be a map")
    return v


def _list(d: dict[str, Any], key: str, maxItems: int) -> list[Any]:
    v = d.get(key)
    if not isinstance(v, list):
        raise _FieldError(f"{key} must be a list")
    if len(v) > maxItems:
        raise _FieldError(f"{key} has over {maxItems} items")
    return v


def validShareName(name: str) -> bool:
    """
    A share name: 1..64 characters, letters, digits, C{-}, C{_} and C{.},
    not starting with C{.} (it becomes the resource C{files:<name>}).
    """
    return bool(_SHARE_NAME.fullmatch(name))


_SHARE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def _shareName(d: dict[str, Any], key: str = "share") -> str:
    v = _text(d, key, MAX_SHARE_NAME)
    if not validShareName(v):
        raise _FieldError(f"{key} is not a share name")
    return v


# -- requests ----------------------------------------------------------------------


@attrs.frozen
class Auth:
    """
    Unlock a protected share for the rest of this session.
    """

    op: ClassVar[str] = OP_AUTH
    id: int
    share: str
    # Never shown by repr, so never in a log line that prints the request.
    password: str = attrs.field(repr=False)

    def toWire(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "share": self.share, "password": self.password}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> Auth:
        return cls(d["id"], _shareName(d), _text(d, "password", MAX_PASSWORD, empty=True))


@attrs.frozen
class Shares:
    """
    List this node's shares.
    """

    op: ClassVar[str] = OP_SHARES
    id: int

    def toWire(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> Shares:
        return cls(d["id"])


@attrs.frozen
class List:
    """
    One page of a directory of a share.
    """

    op: ClassVar[str] = OP_LIST
    id: int
    share: str
    path: str = ""
    cursor: int = 0

    def toWire(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "id": self.id,
            "share": self.share,
            "path": self.path,
            "cursor": self.cursor,
        }

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> List:
        path = _text(d, "path", MAX_PATH, empty=True) if "path" in d else ""
        return cls(d["id"], _shareName(d), path, _optInt(d, "cursor") or 0)


@attrs.frozen
class Stat:
    """
    A file's description, by share and path or by content hash (exactly one).
    """

    op: ClassVar[str] = OP_STAT
    id: int
    share: str | None = None
    path: str | None = None
    sha256: str | None = None

    def toWire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op, "id": self.id}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        else:
            d["share"] = self.share
            d["path"] = self.path
        return d

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> Stat:
        if "sha256" in d:
            if "share" in d or "path" in d:
                raise _FieldError("stat takes share and path, or sha256, not both")
            return cls(d["id"], sha256=_sha(d))
        return cls(d["id"], _shareName(d), _text(d, "path", MAX_PATH))


@attrs.frozen
class Chunks:
    """
    A page of a file's chunk hashes.
    """

    op: ClassVar[str] = OP_CHUNKS
    id: int
    sha256: str
    start: int
    count: int

    def toWire(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "id": self.id,
            "sha256": self.sha256,
            "start": self.start,
            "count": self.count,
        }

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> Chunks:
        return cls(d["id"], _sha(d), _int(d, "start"), _int(d, "count", 0, MAX_CHUNK_HASHES))


@attrs.frozen
class Read:
    """
    One chunk's bytes.
    """

    op: ClassVar[str] = OP_READ
    id: int
    sha256: str
    index: int

    def toWire(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "sha256": self.sha256, "index": self.index}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> Read:
        return cls(d["id"], _sha(d), _int(d, "index"))


@attrs.frozen
class IndexSearch:
    """
    A keyword search of the central directory server's index.
    """

    op: ClassVar[str] = OP_INDEX_SEARCH
    id: int
    keywords: tuple[str, ...]

    def toWire(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "keywords": list(self.keywords)}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> IndexSearch:
        words = _list(d, "keywords", MAX_KEYWORDS)
        for w in words:
            if type(w) is not str or not 0 < len(w) <= MAX_KEYWORD_LENGTH:
                raise _FieldError(f"keywords must be text of 1..{MAX_KEYWORD_LENGTH} characters")
        return cls(d["id"], tuple(words))


@attrs.frozen
class IndexUpload:
    """
    Part of a node's signed hits, sent to the central directory server.
    The hits are only checked to be maps here; hits.py checks them.
    """

    op: ClassVar[str] = OP_INDEX_UPLOAD
    id: int
    hits: tuple[dict[str, Any], ...]
    final: bool

    def toWire(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "hits": list(self.hits), "final": self.final}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> IndexUpload:
        hits = tuple(_map(h, "a hit") for h in _list(d, "hits", MAX_HITS))
        return cls(d["id"], hits, _bool(d, "final"))


Request = Auth | Shares | List | Stat | Chunks | Read | IndexSearch | IndexUpload

REQUEST_TYPES: dict[str, type[Request]] = {
    cls.op: cls for cls in (Auth, Shares, List, Stat, Chunks, Read, IndexSearch, IndexUpload)
}


def requestID(message: dict[str, Any]) -> int:
    """
    The request's id.

    @raise ProtocolError: if it has none usable (nothing can be answered).
    """
    v = message.get("id")
    if type(v) is not int or not 0 <= v <= MAX_ID:
        raise ProtocolError("a request needs an id of 0..2**32-1")
    return v


def parseRequest(message: dict[str, Any]) -> Request:
    """
    The request a decoded frame holds.

    @raise ProtocolError: without a usable id.
    @raise BadRequest: for an unknown op or a bad field (answerable).
    """
    rid = requestID(message)
    op = message.get("op")
    cls = REQUEST_TYPES.get(op) if type(op) is str else None
    if cls is None:
        shown = op[:32] if type(op) is str else type(op).__name__
        raise BadRequest(rid, f"unknown op {shown!r}")
    try:
        return cls.fromWire(message)
    except _FieldError as e:
        raise BadRequest(rid, f"{op}: {e}") from None


# -- answers ----------------------------------------------------------------------


@attrs.frozen
class ErrorAnswer:
    """
    A request refused.  C{code} is one of L{ERROR_CODES} (a client treats an
    unknown one like C{internal}); C{retryAfter} comes with C{slow-down}.
    """

    id: int
    code: str
    message: str = ""
    retryAfter: int | None = None

    def toWire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "error": self.code, "message": self.message}
        if self.retryAfter is not None:
            d["retry_after"] = self.retryAfter
        return d

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> ErrorAnswer:
        message = _text(d, "message", MAX_MESSAGE, empty=True) if "message" in d else ""
        return cls(
            d["id"],
            _text(d, "error", MAX_ERROR_CODE),
            message,
            _optInt(d, "retry_after", 0, 86400),
        )


@attrs.frozen
class OkAnswer:
    """
    The answer to C{auth} and C{index-upload}.
    """

    id: int

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "ok": True}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> OkAnswer:
        if d.get("ok") is not True:
            raise _FieldError("ok must be true")
        return cls(d["id"])


@attrs.frozen
class ShareInfo:
    """
    One share as C{shares} lists it; counts are None for a protected share
    not unlocked in this session.
    """

    name: str
    protected: bool
    files: int | None
    bytes: int | None

    def toWire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protected": self.protected,
            "files": self.files,
            "bytes": self.bytes,
        }

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> ShareInfo:
        return cls(_shareName(d, "name"), _bool(d, "protected"), _optInt(d, "files"), _optInt(d, "bytes"))


@attrs.frozen
class SharesAnswer:
    id: int
    shares: tuple[ShareInfo, ...]

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "shares": [s.toWire() for s in self.shares]}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> SharesAnswer:
        items = _list(d, "shares", MAX_SHARES)
        return cls(d["id"], tuple(ShareInfo.fromWire(_map(s, "a share")) for s in items))


@attrs.frozen
class ListEntry:
    """
    A directory entry: a file (with its hash) or a subdirectory (size 0, no
    hash).  C{mtime} is whole seconds since the Unix epoch.
    """

    name: str
    dir: bool
    size: int
    mtime: int
    sha256: str | None = None

    def toWire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dir": self.dir, "size": self.size, "mtime": self.mtime}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        return d

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> ListEntry:
        name = _text(d, "name", MAX_NAME)
        if "/" in name or "\x00" in name or name in (".", ".."):
            raise _FieldError("an entry name is one path component")
        isDir = _bool(d, "dir")
        sha = None if isDir else _sha(d)
        return cls(name, isDir, _int(d, "size"), _int(d, "mtime", -MAX_UINT63, MAX_UINT63), sha)


@attrs.frozen
class ListAnswer:
    id: int
    entries: tuple[ListEntry, ...]
    next: int | None

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "entries": [e.toWire() for e in self.entries], "next": self.next}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> ListAnswer:
        items = _list(d, "entries", MAX_LIST_ENTRIES)
        return cls(
            d["id"],
            tuple(ListEntry.fromWire(_map(e, "an entry")) for e in items),
            _optInt(d, "next"),
        )


def chunkCount(size: int) -> int:
    """
    The number of chunks of a file of C{size} bytes (0 for an empty file).
    """
    return -(-size // CHUNK_SIZE)


@attrs.frozen
class FileInfo:
    """
    A file as C{stat} describes it.
    """

    share: str
    path: str
    size: int
    mtime: int
    sha256: str
    chunkSize: int = CHUNK_SIZE
    chunkCount: int = 0

    def toWire(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "chunk_size": self.chunkSize,
            "chunk_count": self.chunkCount,
        }

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> FileInfo:
        size = _int(d, "size")
        info = cls(
            _shareName(d),
            _text(d, "path", MAX_PATH),
            size,
            _int(d, "mtime", -MAX_UINT63, MAX_UINT63),
            _sha(d),
            _int(d, "chunk_size", CHUNK_SIZE, CHUNK_SIZE),
            _int(d, "chunk_count"),
        )
        if info.chunkCount != chunkCount(size):
            raise _FieldError("chunk_count does not match size")
        return info


@attrs.frozen
class StatAnswer:
    id: int
    file: FileInfo

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file.toWire()}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> StatAnswer:
        return cls(d["id"], FileInfo.fromWire(_map(d.get("file"), "file")))


@attrs.frozen
class ChunksAnswer:
    id: int
    hashes: bytes = attrs.field(repr=lambda h: f"<{len(h) // 32} hashes>")

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "hashes": self.hashes}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> ChunksAnswer:
        h = d.get("hashes")
        if type(h) is not bytes or len(h) % 32 or len(h) > 32 * MAX_CHUNK_HASHES:
            raise _FieldError("hashes must be bytes, a multiple of 32 long")
        return cls(d["id"], h)


@attrs.frozen
class DataAnswer:
    """
    The header of a chunk's bytes; the C{length} raw bytes follow it.
    """

    id: int
    index: int
    length: int

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "data": self.index, "length": self.length}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> DataAnswer:
        return cls(d["id"], _int(d, "data"), _int(d, "length", 0, MAX_DATA))


@attrs.frozen
class HitsAnswer:
    """
    The central directory server's hits; only checked to be maps here.
    """

    id: int
    hits: tuple[dict[str, Any], ...]

    def toWire(self) -> dict[str, Any]:
        return {"id": self.id, "hits": list(self.hits)}

    @classmethod
    def fromWire(cls, d: dict[str, Any]) -> HitsAnswer:
        return cls(d["id"], tuple(_map(h, "a hit") for h in _list(d, "hits", MAX_HITS)))


Answer = (
    ErrorAnswer | OkAnswer | SharesAnswer | ListAnswer | StatAnswer | ChunksAnswer | DataAnswer | HitsAnswer
)

#: The answer type of each op, when it succeeds.
ANSWER_TYPES: dict[str, type[Answer]] = {
    OP_AUTH: OkAnswer,
    OP_SHARES: SharesAnswer,
    OP_LIST: ListAnswer,
    OP_STAT: StatAnswer,
    OP_CHUNKS: ChunksAnswer,
    OP_READ: DataAnswer,
    OP_INDEX_SEARCH: HitsAnswer,
    OP_INDEX_UPLOAD: OkAnswer,
}


def parseAnswer(op: str, message: dict[str, Any]) -> Answer:
    """
    The answer a decoded frame holds, for a request of C{op} (the client
    knows it from the id).  An error answer is an L{ErrorAnswer} whatever
    the op.

    @raise ProtocolError: for an answer that is malformed: a server that
        sends one is broken or hostile.
    """
    try:
        if type(message.get("id")) is not int or not 0 <= message["id"] <= MAX_ID:
            raise _FieldError("an answer needs an id")
        if "error" in message:
            return ErrorAnswer.fromWire(message)
        return ANSWER_TYPES[op].fromWire(message)
    except _FieldError as e:
        raise ProtocolError(f"bad {op} answer: {e}") from None
    except KeyError:
        raise ProtocolError(f"no answer type for op {op!r}") from None
