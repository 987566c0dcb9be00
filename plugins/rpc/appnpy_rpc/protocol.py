"""
One RPC session, both ways: L{RPCProtocol} calls the peer's services and
serves this side's, over one appnpy session.

Either end may call: ids are chosen by the caller and live in the caller's
own space, so a RESULT or ERROR always answers a call the receiver made.
Every call gets exactly one answer (RESULT or ERROR) unless the session
ends first; a caller that timed out or was cancelled sends CANCEL and
ignores the late answer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.api import implementer
from appnpy_rpc import data
from appnpy_rpc.accounting import Limits, PeerCounter, Stats
from appnpy_rpc.errors import (
    BAD_ARGUMENTS,
    BAD_RESULT,
    CANCELLED,
    DEPTH_EXCEEDED,
    NOT_AUTHORIZED,
    REMOTE_ERROR,
    SESSION_CLOSED,
    TIMEOUT,
    TOO_MANY_CALLS,
    UNKNOWN_METHOD,
    UNKNOWN_SERVICE,
    RPCError,
)
from appnpy_rpc.service import (
    Caller,
    MethodSpec,
    ServiceSpec,
    currentDepth,
    describedService,
    inspectService,
)
from appnpy_rpc.wire import (
    CALL,
    CANCEL,
    DESCRIBE,
    ERROR,
    MAX_TIMEOUT_MS,
    RESULT,
    FrameReader,
    WireError,
    decodeBody,
    frame,
)

ServiceLookup = Callable[[str], "ServiceSpec | None"]
ServiceList = Callable[[], "list[ServiceSpec]"]


class _Pending:
    """
    A call or describe this side made, awaiting its answer.
    """

    __slots__ = ("deferred", "deadline", "check", "what")

    def __init__(
        self,
        deferred: Deferred[Any],
        deadline: float,
        check: Callable[[Any], Any] | None,
        what: str,
    ) -> None:
        self.deferred = deferred
        self.deadline = deadline
        self.check = check
        self.what = what


class _Serving:
    """
    A call from the peer whose handler has not answered yet.
    """

    __slots__ = ("deferred", "timer", "service", "spec")

    def __init__(self, deferred: Deferred[Any], service: str, spec: MethodSpec) -> None:
        self.deferred = deferred
        self.timer: IDelayedCall | None = None
        self.service = service
        self.spec = spec


@implementer(IPushProducer)
class RPCProtocol(Protocol):
    """
    The protocol of an RPC session (either direction).

    @ivar local: services exposed on this session only (callbacks).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        limits: Limits,
        lookup: ServiceLookup | None = None,
        listServices: ServiceList | None = None,
        counter: PeerCounter | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.reactor = reactor
        self.limits = limits
        self._lookup = lookup
        self._listServices = listServices
        self.counter = counter or PeerCounter()
        self.stats = stats or Stats()
        self.local: dict[str, ServiceSpec] = {}
        self.peerNodeID = ""
        self.peerName = ""
        self.connected = False
        self.closed: Deferred[None] = Deferred()
        self._reader = FrameReader()
        self._specs: dict[str, dict[str, MethodSpec]] = {}
        self._nextID = 0
        self._deadlines: list[tuple[float, int]] = []
        self._timer: IDelayedCall | None = None
        self._pending: dict[int, _Pending] = {}
        self._serving: dict[int, _Serving] = {}
        # While our transport's write buffer is full we still read (answers
        # to our own calls must get through, or two busy peers could wait
        # on each other for ever), but calls wait here instead of running,
        # counted against the peer's limit: what the peer can make us
        # buffer is bounded by the limit, not by how fast it sends.
        self._paused = False
        self._queued: list[list[Any]] = []
        self._broken = False
        self._out: list[bytes] | None = None

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.peerNodeID = getattr(transport, "peerNodeID", "") or ""
        self.peerName = getattr(transport, "peerName", "") or ""
        self.connected = True
        self.stats.sessions += 1
        transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.connected:
            return
        self.connected = False
        self.stats.sessions -= 1
        pending, self._pending = self._pending, {}
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._deadlines = []
        for p in pending.values():
            self.stats.madeOne(SESSION_CLOSED)
            p.deferred.errback(RPCError(SESSION_CLOSED, "the RPC session ended"))
        serving, self._serving = self._serving, {}
        for s in serving.values():
            if s.timer is not None and s.timer.active():
                s.timer.cancel()
            self.counter.release(self.peerNodeID)
            s.deferred.cancel()
        for _ in self._queued:
            self.counter.release(self.peerNodeID)
        self._queued = []
        self.closed.callback(None)

    def close(self) -> None:
        """
        End the session (pending calls fail with C{session-closed}).
        """
        if self.connected and self.transport is not None:
            self.transport.loseConnection()

    def _protocolError(self, detail: str) -> None:
        # Answers already made go out before the session closes.
        self._flush()
        self.stats.protocolErrors += 1
        self.log.warn(
            "rpc: closing session with {peer}: {detail}", peer=self.peerNodeID, detail=detail
        )
        transport: Any = self.transport
        if hasattr(transport, "loseConnectionWithReason"):
            transport.loseConnectionWithReason("protocol-error", detail[:200])
        else:
            transport.loseConnection()
        # Nothing more from this peer is read while the session closes.
        self._broken = True

    # -- IPushProducer: our transport tells us its write buffer is full ----------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queued and not self._paused and self.connected:
            message = self._queued.pop(0)
            self.counter.release(self.peerNodeID)
            self._serveCall(message)

    def stopProducing(self) -> None:
        self._paused = True

    # -- receiving -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            bodies = self._reader.feed(data)
        except WireError as e:
            self._protocolError(str(e))
            return
        if self._out is not None:
            self._handle(bodies)  # re-entered: the outer call flushes
            return
        # Everything written while these frames are handled (answers, and
        # calls made from their callbacks) goes out in one write: with many
        # calls in flight that is one multiplexer frame and one TLS record
        # instead of one per message.
        self._out = []
        try:
            self._handle(bodies)
        finally:
            self._flush()

    def _handle(self, bodies: list[bytes]) -> None:
        for body in bodies:
            if not self.connected or self._broken:
                return
            try:
                message = decodeBody(body)
                self._dispatch[message[0]](self, message)
            except WireError as e:
                self._protocolError(str(e))
                return

    def _onCall(self, m: list[Any]) -> None:
        callID = m[1]
        if callID in self._serving:
            raise WireError(f"call id {callID} is already in use")
        if self._paused:
            if any(q[1] == callID for q in self._queued):
                raise WireError(f"call id {callID} is already in use")
            if not self.counter.acquire(self.peerNodeID, self.limits.maxInFlight):
                self._refuse(
                    m[1],
                    m[2],
                    TOO_MANY_CALLS,
                    f"over {self.limits.maxInFlight} calls in flight from this node",
                )
                return
            self._queued.append(m)
            return
        self._serveCall(m)

    def _onResult(self, m: list[Any]) -> None:
        p = self._answered(m[1])
        if p is None:
            return
        if p.check is not None:
            try:
                value = p.check(m[2])
            except data.Mismatch as e:
                self.stats.madeOne(BAD_RESULT)
                p.deferred.errback(RPCError(BAD_RESULT, f"{p.what}: {e}"))
                return
            except RPCError as e:
                self.stats.madeOne(e.code)
                p.deferred.errback(e)
                return
        else:
            value = m[2]
        self.stats.madeOne("ok")
        p.deferred.callback(value)

    def _onError(self, m: list[Any]) -> None:
        p = self._answered(m[1])
        if p is None:
            return
        self.stats.madeOne(m[2])
        p.deferred.errback(RPCError(m[2], m[3]))

    def _answered(self, callID: int) -> _Pending | None:
        p = self._pending.pop(callID, None)
        if p is None:
            if callID >= self._nextID:
                raise WireError(f"answer to call id {callID}, which was never made")
            return None  # a late answer to a call that timed out or was cancelled
        return p

    def _onCancel(self, m: list[Any]) -> None:
        s = self._serving.get(m[1])
        if s is not None:
            s.deferred.cancel()
            return
        for i, q in enumerate(self._queued):
            if q[1] == m[1]:
                del self._queued[i]
                self.counter.release(self.peerNodeID)
                self._send([ERROR, m[1], CANCELLED, "cancelled by the caller"])
                return

    def _onDescribe(self, m: list[Any]) -> None:
        name = m[2]
        if name is None:
            services = list(self.local.values())
            if self._listServices is not None:
                services += [s for s in self._listServices() if s.name not in self.local]
            self._send([RESULT, m[1], {"services": [s.describe() for s in services]}])
            return
        spec = self._find(name)
        if spec is None:
            self._send([ERROR, m[1], UNKNOWN_SERVICE, f"no service {name!r} here"])
        else:
            self._send([RESULT, m[1], spec.describe()])

    _dispatch: dict[int, Callable[[RPCProtocol, list[Any]], None]] = {
        CALL: _onCall,
        RESULT: _onResult,
        ERROR: _onError,
        CANCEL: _onCancel,
        DESCRIBE: _onDescribe,
    }

    # -- serving ---------------------------------------------------------------------

    def _find(self, name: str) -> ServiceSpec | None:
        spec = self.local.get(name)
        if spec is None and self._lookup is not None:
            spec = self._lookup(name)
        return spec

    def _send(self, message: list[Any]) -> None:
        self._write(frame(message))

    def _write(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        elif self.connected and self.transport is not None:
            self.transport.write(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.connected and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _refuse(self, callID: int, service: str, code: str, message: str) -> None:
        self.stats.servedOne(service, code)
        self._send([ERROR, callID, code, message])

    def _serveCall(self, m: list[Any]) -> None:
        _, callID, serviceName, methodName, args, kwargs, depth, timeoutMS = m[:8]
        service = self._find(serviceName)
        if service is None:
            self._refuse(callID, "", UNKNOWN_SERVICE, f"no service {serviceName!r} here")
            return
        if depth > self.limits.maxDepth:
            self._refuse(
                callID,
                serviceName,
                DEPTH_EXCEEDED,
                f"call chain {depth} deep, over this node's limit of {self.limits.maxDepth}",
            )
            return
        method = service.methods.get(methodName)
        if method is None:
            self._refuse(
                callID, serviceName, UNKNOWN_METHOD, f"{serviceName} has no method {methodName!r}"
            )
            return
        if service.authorize is not None:
            try:
                allowed = service.authorize(self.peerNodeID, methodName) is True
            except Exception:
                self.log.failure("rpc: {service}.authorize raised", service=serviceName)
                allowed = False
            if not allowed:
                self._refuse(
                    callID,
                    serviceName,
                    NOT_AUTHORIZED,
                    f"this node may not call {serviceName}.{methodName}",
                )
                return
        spec = method.spec
        try:
            args, kwargs = spec.checkArguments(args, kwargs)
        except RPCError as e:
            self._refuse(callID, serviceName, e.code, e.message)
            return
        if not self.counter.acquire(self.peerNodeID, self.limits.maxInFlight):
            self._refuse(
                callID,
                serviceName,
                TOO_MANY_CALLS,
                f"over {self.limits.maxInFlight} calls in flight from this node",
            )
            return
        if method.callerParam is not None:
            kwargs[method.callerParam] = Caller(self.peerNodeID, self.peerName, self, depth)
        token = currentDepth.set(depth)
        try:
            result = method.function(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = Deferred.fromCoroutine(result)
        except Exception as e:
            self.counter.release(self.peerNodeID)
            self._answerFailure(callID, serviceName, methodName, Failure(e))
            return
        finally:
            currentDepth.reset(token)
        if not isinstance(result, Deferred):
            self.counter.release(self.peerNodeID)
            self._answerValue(callID, serviceName, spec, result)
            return
        serving = _Serving(result, serviceName, spec)
        self._serving[callID] = serving
        timeout = min(timeoutMS / 1000.0, self.limits.maxTimeout)
        serving.timer = self.reactor.callLater(timeout, self._handlerTimedOut, callID)
        result.addBoth(self._handlerDone, callID, serviceName, methodName)

    def _handlerTimedOut(self, callID: int) -> None:
        s = self._serving.get(callID)
        if s is not None:
            s.timer = None
            s.deferred.cancel()

    def _handlerDone(self, result: Any, callID: int, serviceName: str, methodName: str) -> None:
        s = self._serving.pop(callID, None)
        if s is None:
            return None  # the session ended; nothing to answer
        self.counter.release(self.peerNodeID)
        timedOut = s.timer is None
        if s.timer is not None:
            s.timer.cancel()
        if isinstance(result, Failure):
            if result.check(CancelledError):
                if timedOut:
                    self._refuse(callID, serviceName, TIMEOUT, "the call took too long")
                else:
                    self._refuse(callID, serviceName, CANCELLED, "cancelled by the caller")
            else:
                self._answerFailure(callID, serviceName, methodName, result)
            return None
        self._answerValue(callID, serviceName, s.spec, result)
        return None

    def _answerValue(self, callID: int, serviceName: str, spec: MethodSpec, result: Any) -> None:
        try:
            value = spec.checkResult(data.toWire(result), "result")
            encoded = frame([RESULT, callID, value])
        except (data.Mismatch, WireError) as e:
            self.log.warn(
                "rpc: {service}.{method} returned a bad result: {why}",
                service=serviceName,
                method=spec.name,
                why=str(e),
            )
            self._refuse(callID, serviceName, BAD_RESULT, f"{spec.name}: {e}")
            return
        self.stats.servedOne(serviceName, "ok")
        self._write(encoded)

    def _answerFailure(
        self, callID: int, serviceName: str, methodName: str, failure: Failure
    ) -> None:
        error = failure.value
        if isinstance(error, RPCError):
            self._refuse(callID, serviceName, error.code, error.message)
            return
        # Never the exception's text or traceback: they may say more than
        # the caller should know.  The log here has everything.
        self.log.failure(
            "rpc: {service}.{method} raised", failure, service=serviceName, method=methodName
        )
        self._refuse(
            callID,
            serviceName,
            REMOTE_ERROR,
            f"{serviceName}.{methodName} failed ({type(error).__name__})",
        )

    # -- calling -----------------------------------------------------------------------

    def callRemote(
        self,
        service: str,
        method: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        spec: MethodSpec | None = None,
        timeout: float | None = None,
        depth: int | None = None,
    ) -> Deferred[Any]:
        """
        Call C{service.method} on the peer.  Arguments are checked against
        C{spec} when given (as L{appnpy_rpc.client.RemoteService} does with
        what C{describe} answered), and always for being plain data.

        @return: a Deferred firing with the result or failing with
            L{RPCError}; cancelling it cancels the remote call.
        """
        if not self.connected:
            return fail(RPCError(SESSION_CLOSED, "the RPC session has ended"))
        if depth is None:
            depth = currentDepth.get() + 1
        if depth > self.limits.maxDepth:
            return fail(
                RPCError(
                    DEPTH_EXCEEDED,
                    f"call chain {depth} deep, over the limit of {self.limits.maxDepth}",
                )
            )
        check: Callable[[Any], Any] | None = None
        try:
            if spec is None:
                wireArgs = data.toWire(list(args))
                wireKwargs = data.toWire(kwargs) if kwargs else {}
            else:
                check = spec.checkAnswer
                try:
                    # The common case: arguments already plain data.
                    wireArgs, wireKwargs = spec.checkArguments(args, kwargs)
                except RPCError as first:
                    # Records and tuples become plain data first; a real
                    # mismatch fails again, with its message.
                    try:
                        plainArgs = data.toWire(list(args))
                        plainKwargs = data.toWire(kwargs) if kwargs else {}
                    except data.Mismatch:
                        # Not plain data at all: the signature's message names
                        # the parameter ("a: ..."), toWire's only its index.
                        raise first from None
                    wireArgs, wireKwargs = spec.checkArguments(plainArgs, plainKwargs)
        except data.Mismatch as e:
            return fail(RPCError(BAD_ARGUMENTS, f"{method}: {e}"))
        except RPCError as e:
            return fail(e)
        timeout = self.limits.callTimeout if timeout is None else timeout
        timeoutMS = max(1, min(int(timeout * 1000), MAX_TIMEOUT_MS))
        callID = self._nextID
        try:
            encoded = frame([CALL, callID, service, method, wireArgs, wireKwargs, depth, timeoutMS])
        except WireError as e:
            return fail(RPCError(BAD_ARGUMENTS, f"{method}: {e}"))
        self._nextID = callID + 1
        return self._start(callID, encoded, timeout, check, f"{service}.{method}")

    def describe(self, service: str | None = None, timeout: float | None = None) -> Deferred[Any]:
        """
        Ask the peer for C{service}'s methods (or, with None, every service
        reachable on this session): fires with C{(name, {method: MethodSpec})}
        or a list of them.
        """
        if not self.connected:
            return fail(RPCError(SESSION_CLOSED, "the RPC session has ended"))
        callID = self._nextID
        self._nextID = callID + 1
        return self._start(
            callID,
            frame([DESCRIBE, callID, service]),
            self.limits.callTimeout if timeout is None else timeout,
            _parseDescription if service is not None else _parseDescriptions,
            f"describe {service or '*'}",
        )

    def _start(
        self,
        callID: int,
        encoded: bytes,
        timeout: float,
        check: Callable[[Any], Any] | None,
        what: str,
    ) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: self._cancelled(callID, d))
        deadline = self.reactor.seconds() + timeout
        self._pending[callID] = _Pending(d, deadline, check, what)
        # One timer per session, for the earliest deadline, rather than one
        # per call: calls answered in time cost a heap push and nothing
        # more (their entries are skipped when they come up, or compacted).
        heappush(self._deadlines, (deadline, callID))
        if self._timer is None:
            self._timer = self.reactor.callLater(timeout, self._expire)
        elif deadline < self._timer.getTime():
            self._timer.reset(timeout)
        elif len(self._deadlines) > 4 * len(self._pending) + 64:
            self._deadlines = [(p.deadline, i) for i, p in self._pending.items()]
            heapify(self._deadlines)
        self._write(encoded)
        return d

    def _expire(self) -> None:
        """
        Fail the calls whose deadline has passed, then wait for the next.
        """
        self._timer = None
        now = self.reactor.seconds()
        heap = self._deadlines
        while heap:
            deadline, callID = heap[0]
            p = self._pending.get(callID)
            if p is None or p.deadline != deadline:
                heappop(heap)  # answered, cancelled or already expired
                continue
            if deadline > now:
                self._timer = self.reactor.callLater(deadline - now, self._expire)
                return
            heappop(heap)
            del self._pending[callID]
            self._send([CANCEL, callID])
            self.stats.madeOne(TIMEOUT)
            p.deferred.errback(RPCError(TIMEOUT, f"{p.what}: no answer in time"))

    def _cancelled(self, callID: int, d: Deferred[Any]) -> None:
        p = self._pending.pop(callID, None)
        if p is None:
            return
        self._send([CANCEL, callID])
        self.stats.madeOne(CANCELLED)
        d.errback(RPCError(CANCELLED, f"{p.what}: cancelled"))

    # -- the connection API (docs/rpc.md) ------------------------------------------

    def expose(self, service: object) -> None:
        """
        Offer C{service} (a L{appnpy_rpc.Service}) to the peer on this
        session only: the way to receive callbacks.
        """
        spec = inspectService(service)
        self.local[spec.name] = spec

    def service(self, name: str) -> Deferred[RemoteService]:
        """
        The peer's service C{name}, with its signatures (one C{describe}).
        """
        if name.startswith("rpc:"):
            name = name[4:]

        def described(result: tuple[str, dict[str, MethodSpec]]) -> RemoteService:
            self._specs[name] = result[1]
            return RemoteService(self, name, result[1])

        return self.describe(name).addCallback(described)

    def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{service.method} on the peer; the service is described once
        per session (its signature checks the arguments) and remembered.
        """
        methods = self._specs.get(service)
        depth = currentDepth.get() + 1
        if methods is not None:
            return self._callKnown(service, methods, method, args, kwargs, None, depth)
        d = self.describe(service)

        def described(result: tuple[str, dict[str, MethodSpec]]) -> Deferred[Any]:
            self._specs[service] = result[1]
            return self._callKnown(service, result[1], method, args, kwargs, None, depth)

        return d.addCallback(described)

    def _callKnown(
        self,
        service: str,
        methods: dict[str, MethodSpec],
        method: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        depth: int | None,
    ) -> Deferred[Any]:
        spec = methods.get(method)
        if spec is None:
            return fail(RPCError(UNKNOWN_METHOD, f"{service} has no method {method!r}"))
        return self.callRemote(service, method, args, kwargs, spec, timeout, depth)

    def inFlight(self) -> int:
        """
        Calls this side made that await an answer.
        """
        return len(self._pending)

    def serving(self) -> int:
        """
        Calls from the peer running or queued here.
        """
        return len(self._serving) + len(self._queued)


def _parseDescription(value: Any) -> tuple[str, dict[str, MethodSpec]]:
    try:
        return describedService(value)
    except data.Mismatch as e:
        raise RPCError(BAD_RESULT, f"describe: {e}") from None


def _parseDescriptions(value: Any) -> list[tuple[str, dict[str, MethodSpec]]]:
    if not isinstance(value, dict) or not isinstance(value.get("services"), list):
        raise RPCError(BAD_RESULT, "describe: expected a map with a list of services")
    return [_parseDescription(v) for v in value["services"][:1024]]


class RemoteService:
    """
    A service of the peer: C{await remote.call("add", 1, 2)}.

    @ivar methods: the signatures C{describe} answered, by name.
    """

    def __init__(
        self,
        connection: RPCProtocol,
        name: str,
        methods: dict[str, MethodSpec],
        timeout: float | None = None,
    ) -> None:
        self.connection = connection
        self.name = name
        self.methods = methods
        self.timeout = timeout

    def call(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{method}; the arguments are checked against its signature
        before anything is sent.
        """
        spec = self.methods.get(method)
        if spec is None:
            return fail(RPCError(UNKNOWN_METHOD, f"{self.name} has no method {method!r}"))
        return self.connection.callRemote(self.name, method, args, kwargs, spec, self.timeout)

    def withTimeout(self, seconds: float) -> RemoteService:
        """
        The same service, its calls waiting at most C{seconds}.
        """
        return RemoteService(self.connection, self.name, self.methods, seconds)

    def close(self) -> None:
        """
        End the session this service was reached through.
        """
        self.connection.close()
