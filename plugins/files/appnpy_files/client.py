"""
The client side of the files protocol, over one files session.

L{FilesClient} is an ordinary Twisted protocol: connect it with
C{node.openSession(nodeID, "files", lambda info: FilesClient(...))}.  Its
methods send one request each and answer a Deferred of the decoded answer;
up to L{wire.MAX_OUTSTANDING} requests are in flight at once (more wait in
a queue), answers are matched to requests in order and by id, and an answer
that is malformed or out of order closes the session with C{protocol-error}
(the server is broken or hostile; the caller sees L{SourceGone}).

A C{slow-down} answer to a C{read} is retried after the delay the server
asks for (a bounded number of times); every other error answer fails the
request with L{RemoteError}, carrying the stable code.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy_files import wire

#: Retries of one C{read} answered C{slow-down}, and the longest wait honoured.
SLOW_DOWN_RETRIES = 5
MAX_RETRY_AFTER = 30


class RemoteError(Exception):
    """
    The node answered a request with an error code.
    """

    def __init__(self, code: str, message: str, retryAfter: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code
        self.retryAfter = retryAfter


class SourceGone(Exception):
    """
    The session ended (closed, failed, or the server broke the protocol)
    before the answer came.
    """

    code = "session-closed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FilesClient(Protocol):
    """
    One files session, from the side that asks.

    @ivar nodeID: the node at the other end.
    """

    log = Logger(namespace="appnpy.files.client")

    def __init__(self, reactor: IReactorTime, nodeID: str) -> None:
        self.reactor = reactor
        self.nodeID = nodeID
        self._decoder = wire.FrameDecoder(rawAfterData=True)
        self._nextID = 0
        self._sent: deque[tuple[int, str, Deferred[wire.Answer]]] = deque()
        self._queue: deque[tuple[dict[str, Any], str, Deferred[wire.Answer]]] = deque()
        self._lost: str | None = None
        self.whenClosed: Deferred[None] = Deferred()

    # -- protocol --

    def dataReceived(self, data: bytes) -> None:
        if self._lost is not None:
            return
        try:
            for received in self._decoder.feed(data):
                self._answer(received)
        except wire.ProtocolError as e:
            self.log.warn("{peer} broke the files protocol: {why}", peer=self.nodeID, why=str(e))
            self._failAll(f"the node broke the files protocol: {e}")
            assert self.transport is not None
            self.transport.loseConnectionWithReason(wire.PROTOCOL_ERROR, str(e)[:200])  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        detail = (
            (getattr(reason.value, "reason", None) or reason.getErrorMessage())
            if reason is not None
            else "closed"
        )
        self._failAll(f"the session ended ({detail})")
        if not self.whenClosed.called:
            self.whenClosed.callback(None)

    def _answer(self, received: wire.Received) -> None:
        if not self._sent:
            raise wire.ProtocolError("an answer to no request")
        # Checked before it is taken off the queue, so a bad answer fails
        # this request too when the session closes.
        rid, op, d = self._sent[0]
        answer = wire.parseAnswer(op, received.message)
        if answer.id != rid:
            raise wire.ProtocolError(f"answer for id {answer.id} where {rid} was next")
        self._sent.popleft()
        self._sendQueued()
        if isinstance(answer, wire.DataAnswer):
            d.callback(_WithPayload(answer, received.payload or b""))  # type: ignore[arg-type]
        else:
            d.callback(answer)

    def _failAll(self, message: str) -> None:
        if self._lost is None:
            self._lost = message
        pending = [d for _, _, d in self._sent] + [d for _, _, d in self._queue]
        self._sent.clear()
        self._queue.clear()
        for d in pending:
            d.errback(Failure(SourceGone(message)))

    # -- requests --

    def _call(self, request: dict[str, Any]) -> Deferred[wire.Answer]:
        op = request["op"]
        d: Deferred[wire.Answer] = Deferred()
        if self._lost is not None:
            d.errback(Failure(SourceGone(self._lost)))
            return d
        self._queue.append((request, op, d))
        self._sendQueued()
        return d

    def _sendQueued(self) -> None:
        while self._queue and len(self._sent) < wire.MAX_OUTSTANDING and self._lost is None:
            request, op, d = self._queue.popleft()
            rid = self._nextID
            self._nextID = (self._nextID + 1) & wire.MAX_ID
            request["id"] = rid
            self._sent.append((rid, op, d))
            assert self.transport is not None
            self.transport.write(wire.encodeFrame(request))

    async def _ask(self, request: dict[str, Any], expect: type[Any]) -> Any:
        answer = await self._call(request)
        if isinstance(answer, wire.ErrorAnswer):
            raise RemoteError(answer.code, answer.message, answer.retryAfter)
        if isinstance(answer, _WithPayload):
            return answer
        if not isinstance(answer, expect):
            raise SourceGone(f"unexpected answer {type(answer).__name__}")
        return answer

    def auth(self, share: str, password: str) -> Deferred[None]:
        async def go() -> None:
            await self._ask(
                {"op": wire.OP_AUTH, "share": share, "password": password}, wire.OkAnswer
            )

        return Deferred.fromCoroutine(go())

    def shares(self) -> Deferred[list[wire.ShareInfo]]:
        async def go() -> list[wire.ShareInfo]:
            a = await self._ask({"op": wire.OP_SHARES}, wire.SharesAnswer)
            return list(a.shares)

        return Deferred.fromCoroutine(go())

    def listPage(self, share: str, path: str, cursor: int = 0) -> Deferred[wire.ListAnswer]:
        return Deferred.fromCoroutine(
            self._ask(
                {"op": wire.OP_LIST, "share": share, "path": path, "cursor": cursor},
                wire.ListAnswer,
            )
        )

    def stat(
        self, share: str | None = None, path: str | None = None, sha256: str | None = None
    ) -> Deferred[wire.FileInfo]:
        request: dict[str, Any] = {"op": wire.OP_STAT}
        if sha256 is not None:
            request["sha256"] = sha256
        else:
            request["share"] = share
            request["path"] = path

        async def go() -> wire.FileInfo:
            a = await self._ask(request, wire.StatAnswer)
            return a.file  # type: ignore[no-any-return]

        return Deferred.fromCoroutine(go())

    def chunkHashes(self, sha256: str, start: int, count: int) -> Deferred[bytes]:
        async def go() -> bytes:
            a = await self._ask(
                {"op": wire.OP_CHUNKS, "sha256": sha256, "start": start, "count": count},
                wire.ChunksAnswer,
            )
            if len(a.hashes) != 32 * count:
                raise SourceGone(f"asked for {count} chunk hashes, got {len(a.hashes) // 32}")
            return a.hashes  # type: ignore[no-any-return]

        return Deferred.fromCoroutine(go())

    def read(self, sha256: str, index: int) -> Deferred[bytes]:
        async def go() -> bytes:
            for attempt in range(SLOW_DOWN_RETRIES + 1):
                try:
                    a = await self._ask(
                        {"op": wire.OP_READ, "sha256": sha256, "index": index}, _WithPayload
                    )
                except RemoteError as e:
                    if e.code != wire.SLOW_DOWN or attempt == SLOW_DOWN_RETRIES:
                        raise
                    await _sleep(self.reactor, min(e.retryAfter or 1, MAX_RETRY_AFTER))
                    continue
                if a.header.index != index:
                    raise SourceGone(f"asked for chunk {index}, got {a.header.index}")
                return a.payload  # type: ignore[no-any-return]
            raise AssertionError("unreachable")

        return Deferred.fromCoroutine(go())

    def indexSearch(self, keywords: list[str]) -> Deferred[list[dict[str, Any]]]:
        async def go() -> list[dict[str, Any]]:
            a = await self._ask({"op": wire.OP_INDEX_SEARCH, "keywords": keywords}, wire.HitsAnswer)
            return list(a.hits)

        return Deferred.fromCoroutine(go())

    def indexUpload(self, hits: list[dict[str, Any]], final: bool) -> Deferred[None]:
        async def go() -> None:
            await self._ask(
                {"op": wire.OP_INDEX_UPLOAD, "hits": hits, "final": final}, wire.OkAnswer
            )

        return Deferred.fromCoroutine(go())

    def close(self) -> None:
        """
        End the session (answers still due are failed with L{SourceGone}).
        """
        if self.transport is not None and self._lost is None:
            self._failAll("closed")
            self.transport.loseConnection()


class _WithPayload:
    """
    A C{data} answer with the raw bytes that followed it.
    """

    def __init__(self, header: wire.DataAnswer, payload: bytes) -> None:
        self.header = header
        self.payload = payload
        self.id = header.id


def _sleep(reactor: IReactorTime, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
