"""
The serving side of a files session: an ordinary Twisted protocol over the
session transport that answers a peer's requests (docs/protocol.md section
18).

Per session: requests are answered in the order they arrived, a few
worked on at once (disk reads run in the index's threads); more than
L{wire.MAX_OUTSTANDING_HARD} unanswered requests, an oversized frame or
undecodable bytes close the session with C{protocol-error}.  Answers are
written only while the session's flow control lets us (this protocol is
the transport's push producer), so a slow reader holds at most a few
chunks here.  An optional upload limit, shared by all sessions, paces the
chunk bytes.  Which protected shares are unlocked is per session.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from typing import Protocol as TypingProtocol

from prometheus_client.core import CounterMetricFamily
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.api import ISessionInfo
from appnpy_files import safety, wire
from appnpy_files.hashing import FileChanged
from appnpy_files.index import FileEntry, Index
from appnpy_files.shares import AttemptLimiter, ServeSettings, ShareSet, verifyPassword

#: Requests of one session worked on at once (each may hold a 1 MiB chunk):
#: enough that reading and hashing the next chunks overlaps sending this one.
CONCURRENCY = 8
#: Password checks (scrypt: 32 MiB and tens of ms each) running at once,
#: all sessions together; more wait their turn.
PASSWORD_CHECKS = 2

#: An extra op's handler: called with the session's peer node ID and the
#: parsed request; answers an answer (or an awaitable of one).  To refuse,
#: raise an exception with C{code} (one of L{wire.ERROR_CODES}), C{message}
#: and optionally C{retryAfter} attributes.
Handler = Callable[[str, wire.Request], "wire.Answer | Awaitable[wire.Answer]"]


class CentralIndex(TypingProtocol):
    """
    What the central directory server's index offers the server for the
    C{index-search} and C{index-upload} ops (the plugin's CDS index).
    """

    def searchFor(self, peer: str, keywords: list[str]) -> list[dict[str, Any]]: ...

    def upload(self, peer: str, hits: Any, final: bool) -> None: ...


class _Refusal(Exception):
    def __init__(self, code: str, message: str, retryAfter: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryAfter = retryAfter


class Pacer:
    """
    The upload limit: bytes per second for all sessions together, 0 for
    none.  Each send reserves its bytes on a virtual clock and is told how
    long to wait for its turn.
    """

    def __init__(self, seconds: Callable[[], float], rate: int) -> None:
        self.seconds = seconds
        self.rate = rate
        self._free = 0.0

    def reserve(self, n: int) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.seconds()
        start = max(now, self._free)
        self._free = start + n / self.rate
        return start - now


class FilesServerFactory:
    """
    Builds the server protocol for each files session a peer opens; holds
    what sessions share: the shares, the index, the attempt limiter, the
    upload pacer, the password-check semaphore and the counters.

    @param extraOps: handlers by op for ops this module does not answer
        itself (C{index-search}, C{index-upload}); the plugin may add more
        to the dict later.
    """

    log = Logger(namespace="appnpy.files.server")

    def __init__(
        self,
        reactor: Any,
        shares: ShareSet,
        index: Index,
        limiter: AttemptLimiter,
        settings: ServeSettings,
        extraOps: dict[str, Handler] | None = None,
    ) -> None:
        self.reactor = reactor
        self.shares = shares
        self.index = index
        self.limiter = limiter
        self.settings = settings
        self.extraOps: dict[str, Handler] = dict(extraOps or {})
        self.pacer = Pacer(reactor.seconds, settings.uploadLimit)
        self.passwordChecks = DeferredSemaphore(PASSWORD_CHECKS)
        self.sessions = 0
        self.open = 0
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.bytesSent = 0
        self.chunksSent = 0

    def buildProtocol(self, session: ISessionInfo, cds: CentralIndex | None = None) -> FilesServer:
        """
        The protocol for one session; C{cds}, when this node keeps the
        central directory's index, answers C{index-search}/C{index-upload}
        unless C{extraOps} already has them.
        """
        ops = dict(self.extraOps)
        if cds is not None:
            ops.setdefault(wire.OP_INDEX_SEARCH, _cdsSearch(cds))
            ops.setdefault(wire.OP_INDEX_UPLOAD, _cdsUpload(cds))
        self.sessions += 1
        return FilesServer(self, str(getattr(session, "peerNodeID", "")), ops)

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "open_sessions": self.open,
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "bytes_sent": self.bytesSent,
            "chunks_sent": self.chunksSent,
        }

    def metrics(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily("appn_files_requests", "Files requests answered", labels=["op"])
        for op, n in sorted(self.requests.items()):
            requests.add_metric([op], n)
        yield requests
        errors = CounterMetricFamily("appn_files_errors", "Files requests refused", labels=["code"])
        for code, n in sorted(self.errors.items()):
            errors.add_metric([code], n)
        yield errors
        sent = CounterMetricFamily("appn_files_served_bytes", "Chunk bytes sent to peers")
        sent.add_metric([], self.bytesSent)
        yield sent

    def checkPassword(self, password: str, stored: str) -> Deferred[bool]:
        """
        C{verifyPassword} in the index's I/O threads, a few at a time.
        """
        return self.passwordChecks.run(lambda: self.index.inThread(verifyPassword, password, stored))


def _cdsSearch(cds: CentralIndex) -> Handler:
    def handle(peer: str, request: wire.Request) -> wire.Answer:
        assert isinstance(request, wire.IndexSearch)
        return wire.HitsAnswer(request.id, tuple(cds.searchFor(peer, list(request.keywords))))

    return handle


def _cdsUpload(cds: CentralIndex) -> Handler:
    def handle(peer: str, request: wire.Request) -> wire.Answer:
        assert isinstance(request, wire.IndexUpload)
        cds.upload(peer, list(request.hits), request.final)
        return wire.OkAnswer(request.id)

    return handle


class _Slot:
    """
    One request's place in the answer order.
    """

    __slots__ = ("answer", "payload", "done")

    def __init__(self) -> None:
        self.answer: wire.Answer | None = None
        self.payload: bytes | None = None
        self.done = False


@implementer(IPushProducer)
class FilesServer(Protocol):
    """
    One peer's files session, server side.
    """

    log = Logger(namespace="appnpy.files.server")

    def __init__(self, factory: FilesServerFactory, peer: str, ops: dict[str, Handler]) -> None:
        self.owner = factory
        self.peer = peer
        self.ops = ops
        self.decoder = wire.FrameDecoder()
        self.unlocked: set[str] = set()
        self._waiting: deque[tuple[wire.Request | wire.BadRequest, _Slot]] = deque()
        self._order: deque[_Slot] = deque()
        self._working = 0
        self._barrier = False
        self._paused = False
        self._sending = False
        self._closed = False

    # -- connection

    def connectionMade(self) -> None:
        self.owner.open += 1
        transport: Any = self.transport
        transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._closed:
            self._closed = True
            self.owner.open -= 1
        self._waiting.clear()
        self._order.clear()

    def _protocolError(self, detail: str) -> None:
        if self._closed:
            return
        self.log.info("files session from {peer} closed: {detail}", peer=self.peer, detail=detail)
        self._closed = True
        self.owner.open -= 1
        self._waiting.clear()
        self._order.clear()
        transport: Any = self.transport
        if transport is not None:
            if hasattr(transport, "loseConnectionWithReason"):
                transport.loseConnectionWithReason(wire.PROTOCOL_ERROR, detail[:200])
            else:
                transport.loseConnection()

    # -- IPushProducer: the session's flow control

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()
        self._work()

    def stopProducing(self) -> None:
        self._paused = True

    # -- requests in

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            received = self.decoder.feed(data)
            for r in received:
                try:
                    request: wire.Request | wire.BadRequest = wire.parseRequest(r.message)
                except wire.BadRequest as e:
                    request = e
                slot = _Slot()
                self._waiting.append((request, slot))
                self._order.append(slot)
                if len(self._order) > wire.MAX_OUTSTANDING_HARD:
                    raise wire.ProtocolError(
                        f"more than {wire.MAX_OUTSTANDING_HARD} requests outstanding"
                    )
        except wire.ProtocolError as e:
            self._protocolError(str(e))
            return
        self._work()

    def _work(self) -> None:
        while self._waiting and self._working < CONCURRENCY and not self._closed and not self._paused:
            request, slot = self._waiting[0]
            # An auth changes what later requests may see: it runs alone,
            # after everything before it and before anything after it.
            if self._working and (self._barrier or isinstance(request, wire.Auth)):
                return
            self._waiting.popleft()
            self._barrier = isinstance(request, wire.Auth)
            self._working += 1
            d = Deferred.fromCoroutine(self._handle(request))
            d.addCallbacks(self._answered, self._failed, callbackArgs=(slot,), errbackArgs=(request, slot))

    def _answered(self, result: tuple[wire.Answer, bytes | None], slot: _Slot) -> None:
        slot.answer, slot.payload = result
        slot.done = True
        self._working -= 1
        self._send()
        self._work()

    def _failed(self, f: Failure, request: wire.Request | wire.BadRequest, slot: _Slot) -> None:
        rid = request.requestID if isinstance(request, wire.BadRequest) else request.id
        answer = self._refusal(f, rid)
        self._answered((answer, None), slot)

    def _refusal(self, f: Failure, rid: int) -> wire.ErrorAnswer:
        e = f.value
        code = getattr(e, "code", None)
        if isinstance(e, FileChanged):
            return wire.ErrorAnswer(rid, wire.FILE_CHANGED, "the file changed on disk; ask again")
        if type(code) is str and code in wire.ERROR_CODES:
            retry = getattr(e, "retryAfter", None)
            message = str(getattr(e, "message", ""))[: wire.MAX_MESSAGE]
            return wire.ErrorAnswer(rid, code, message, retry if type(retry) is int else None)
        self.log.failure("files request from {peer} failed", f, peer=self.peer)
        return wire.ErrorAnswer(rid, wire.INTERNAL, "internal error")

    # -- answers out, in order

    def _send(self) -> None:
        if self._sending:
            return
        self._sending = True
        try:
            while self._order and self._order[0].done and not self._paused and not self._closed:
                slot = self._order.popleft()
                assert slot.answer is not None
                if slot.payload is not None:
                    delay = self.owner.pacer.reserve(len(slot.payload))
                    if delay > 0:
                        self._order.appendleft(slot)
                        self._paceFor(delay, slot)
                        return
                self._write(slot)
        finally:
            self._sending = False

    def _paceFor(self, delay: float, slot: _Slot) -> None:
        # The bytes are reserved on the pacer's clock: send this slot at its
        # turn, whatever flow control says (a paused session only buffers
        # this one chunk more).
        def due() -> None:
            if self._closed or not self._order or self._order[0] is not slot:
                return
            self._order.popleft()
            self._write(slot)
            self._send()
            self._work()

        slot.done = False
        self.owner.reactor.callLater(delay, due)

    def _write(self, slot: _Slot) -> None:
        assert slot.answer is not None and self.transport is not None
        answer = slot.answer
        if isinstance(answer, wire.ErrorAnswer):
            self.owner.errors[answer.code] += 1
        self.transport.write(wire.encodeFrame(answer.toWire()))
        if slot.payload is not None:
            self.transport.write(slot.payload)
            self.owner.bytesSent += len(slot.payload)
            self.owner.chunksSent += 1

    # -- the ops

    async def _handle(self, request: wire.Request | wire.BadRequest) -> tuple[wire.Answer, bytes | None]:
        if isinstance(request, wire.BadRequest):
            self.owner.requests["bad"] += 1
            raise _Refusal(wire.BAD_REQUEST, request.message[: wire.MAX_MESSAGE])
        self.owner.requests[request.op] += 1
        if isinstance(request, wire.Auth):
            return await self._auth(request), None
        if isinstance(request, wire.Shares):
            return self._shares(request), None
        if isinstance(request, wire.List):
            return self._list(request), None
        if isinstance(request, wire.Stat):
            return self._stat(request), None
        if isinstance(request, wire.Chunks):
            entry = self._byHash(request.sha256)
            hashes = await self._reading(self.owner.index.chunkHashes(entry, request.start, request.count), entry)
            return wire.ChunksAnswer(request.id, hashes), None
        if isinstance(request, wire.Read):
            entry = self._byHash(request.sha256)
            if request.index >= entry.chunkCount:
                raise _Refusal(wire.BAD_REQUEST, f"chunk {request.index} is past the end ({entry.chunkCount} chunks)")
            data = await self._reading(self.owner.index.readChunk(entry, request.index), entry)
            return wire.DataAnswer(request.id, request.index, len(data)), data
        handler = self.ops.get(request.op)
        if handler is None:
            raise _Refusal(wire.BAD_REQUEST, f"{request.op} is not served by this node")
        result = handler(self.peer, request)
        if isinstance(result, Awaitable):
            return await result, None
        return result, None

    async def _reading(self, d: Deferred[bytes], entry: FileEntry) -> bytes:
        try:
            return await d
        except (FileChanged, safety.NotServable):
            self.log.info(
                "files: {share}/{path} changed while served; indexing it again",
                share=entry.share,
                path=entry.path,
            )
            self.owner.index.reindex(entry)
            raise FileChanged(entry.path) from None

    def _share(self, name: str) -> None:
        share = self.owner.shares.get(name)
        if share is None:
            raise _Refusal(wire.NO_SUCH_SHARE, f"no share named {name!r}")
        if share.protected and name not in self.unlocked:
            raise _Refusal(wire.PASSWORD_REQUIRED, f"share {name!r} needs a password (auth first)")

    def _byHash(self, sha256: str) -> FileEntry:
        entry = self.owner.index.byHash(sha256, self.unlocked)
        if entry is None:
            raise _Refusal(wire.NO_SUCH_FILE, "no file with that hash here")
        return entry

    async def _auth(self, request: wire.Auth) -> wire.Answer:
        share = self.owner.shares.get(request.share)
        if share is None:
            raise _Refusal(wire.NO_SUCH_SHARE, f"no share named {request.share!r}")
        if share.passwordHash is None or request.share in self.unlocked:
            self.unlocked.add(request.share)
            return wire.OkAnswer(request.id)
        limiter = self.owner.limiter
        wait = limiter.retryAfter(self.peer, request.share)
        if wait > 0:
            raise _Refusal(wire.SLOW_DOWN, "too many wrong passwords; wait", math.ceil(wait))
        ok = await self.owner.checkPassword(request.password, share.passwordHash)
        if not ok:
            delay = limiter.failed(self.peer, request.share)
            # The log names the peer and share, never what it sent.
            self.log.warn(
                "files: wrong password for share {share} from {peer}",
                share=request.share,
                peer=self.peer,
            )
            raise _Refusal(
                wire.BAD_PASSWORD, "wrong password", math.ceil(delay) if delay > 0 else None
            )
        limiter.succeeded(self.peer, request.share)
        self.unlocked.add(request.share)
        self.log.info("files: share {share} unlocked by {peer}", share=request.share, peer=self.peer)
        return wire.OkAnswer(request.id)

    def _shares(self, request: wire.Shares) -> wire.Answer:
        out: list[wire.ShareInfo] = []
        for share in self.owner.shares:
            if len(out) >= wire.MAX_SHARES:
                break
            if share.protected and share.name not in self.unlocked:
                out.append(wire.ShareInfo(share.name, True, None, None))
            else:
                files, size = self.owner.index.shareCounts(share.name)
                out.append(wire.ShareInfo(share.name, share.protected, files, size))
        return wire.SharesAnswer(request.id, tuple(out))

    def _path(self, path: str) -> str:
        try:
            safety.splitPath(path)
        except safety.UnsafePath as e:
            raise _Refusal(wire.BAD_REQUEST, f"path refused: {e}") from None
        return path

    def _list(self, request: wire.List) -> wire.Answer:
        self._share(request.share)
        path = self._path(request.path)
        page = self.owner.index.listDir(request.share, path, request.cursor)
        if page is None:
            raise _Refusal(wire.NO_SUCH_FILE, "no such directory")
        entries, nxt = page
        return wire.ListAnswer(request.id, tuple(entries), nxt)

    def _stat(self, request: wire.Stat) -> wire.Answer:
        if request.sha256 is not None:
            entry = self._byHash(request.sha256)
        else:
            assert request.share is not None and request.path is not None
            self._share(request.share)
            found = self.owner.index.entry(request.share, self._path(request.path))
            if found is None:
                raise _Refusal(wire.NO_SUCH_FILE, "no such file")
            entry = found
        return wire.StatAnswer(request.id, entry.info())
