"""
The interop probe: checks a node (this implementation or another) against the
protocol, step by step, from a throwaway in-process node.

Two halves:

  - the responder: every node handles the control message L{ProbeRequest} by
    opening an C{echo} session back to the requester with the parameters
    C{{"probe": nonce}}, writing the nonce, expecting it echoed and closing
    normally (L{installProbeResponder});
  - the prober: L{probe} dials the node and reports a L{Step} per check (TLS,
    Hello, ping, an echo session each way, a refused BIND).

docs/interop.md describes the steps and what each one checks.
"""

from __future__ import annotations

import secrets
from typing import Any, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import ITCPTransport, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.cp.messages import (
    Message,
    MessageReader,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
    message,
    text,
)
from appnpy.errors import APPNError, Reason
from appnpy.session.adjacent import newSessionID

log = Logger(namespace="appnpy.ops.probe")

#: Seconds a responder's echo session may take before it is aborted.
RESPONDER_TIMEOUT = 30.0
#: Probe echo sessions a responder runs at once per link; more are ignored.
MAX_RESPONDER_SESSIONS = 2
#: The plugin the refusal step asks for; no node should offer it.
NO_SUCH_PLUGIN = "no-such-plugin"


@message("ProbeRequest", capability="probe")
@attrs.frozen
class ProbeRequest(Message):
    """
    Ask the neighbour to open an C{echo} session back to the sender with the
    parameters C{{"probe": nonce}}, write the nonce and close once it is
    echoed.
    """

    nonce: str = attrs.field(validator=text(64))


# -- echo client: shared with the management API -----------------------------


class EchoClient(Protocol):
    """
    The client side of an C{echo} session: sends payloads one at a time and
    measures the time until each has come back in full.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.received = bytearray()
        self._expected = 0
        self._started = 0.0
        self._waiter: Deferred[tuple[float, bytes]] | None = None
        self._closed: list[Deferred[BaseException]] = []
        self.lostReason: Failure | None = None

    def roundTrip(self, payload: bytes) -> Deferred[tuple[float, bytes]]:
        """
        Write C{payload}; fires with (seconds, the bytes that came back) once
        as many bytes as were sent have been received.
        """
        d: Deferred[tuple[float, bytes]] = Deferred()
        if self.lostReason is not None:
            d.errback(self.lostReason)
            return d
        self.received.clear()
        self._expected = len(payload)
        self._started = self.reactor.seconds()
        self._waiter = d
        cast(ITransport, self.transport).write(payload)
        return d

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._waiter is not None and len(self.received) >= self._expected:
            d, self._waiter = self._waiter, None
            d.callback((self.reactor.seconds() - self._started, bytes(self.received)))

    def whenClosed(self) -> Deferred[BaseException]:
        """
        Fires with the reason the session ended (usually a L{SessionClosed}).
        """
        d: Deferred[BaseException] = Deferred()
        if self.lostReason is not None:
            d.callback(cast(BaseException, self.lostReason.value))
        else:
            self._closed.append(d)
        return d

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lostReason = reason
        if self._waiter is not None:
            d, self._waiter = self._waiter, None
            d.errback(reason)
        waiters, self._closed = self._closed, []
        for w in waiters:
            w.callback(cast(BaseException, reason.value))


def closeReason(reason: BaseException) -> str:
    """
    The reason code of a session's end.
    """
    return str(getattr(reason, "reason", Reason.LINK_FAILURE.value))


# -- responder ----------------------------------------------------------------


class _ProbeResponse(Protocol):
    """
    The requesting side of a responder's echo session: writes the nonce,
    checks it comes back, closes normally.
    """

    def __init__(self, reactor: Any, nonce: bytes, peer: str) -> None:
        self.reactor = reactor
        self.nonce = nonce
        self.peer = peer
        self.buffer = b""
        self._timer: Any = None

    def connectionMade(self) -> None:
        transport = cast(ITCPTransport, self.transport)
        self._timer = self.reactor.callLater(RESPONDER_TIMEOUT, transport.abortConnection)
        transport.write(self.nonce)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= len(self.nonce):
            if self.buffer[: len(self.nonce)] != self.nonce:
                log.warn("probe echo from {peer} came back altered", peer=self.peer)
            assert self.transport is not None  # set by makeConnection before any data
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted gives reason a default; callers always pass one
        if self._timer is not None and self._timer.active():
            self._timer.cancel()


def installProbeResponder(node: Any) -> None:
    """
    Make C{node} answer L{ProbeRequest}s from its neighbours.
    """
    active: dict[str, int] = {}

    def handle(cp: Any, msg: ProbeRequest) -> None:
        peer = cp.peerNodeID
        if active.get(peer, 0) >= MAX_RESPONDER_SESSIONS:
            log.info("ignored a probe request from {peer}: too many at once", peer=peer)
            return
        active[peer] = active.get(peer, 0) + 1
        log.info("probe request from {peer}: opening an echo session back", peer=peer)

        def done(result: Any) -> None:
            active[peer] -= 1
            if not active[peer]:
                del active[peer]

        def failed(f: Failure) -> None:
            done(None)
            log.info(
                "could not open the probe echo session to {peer}: {why}",
                peer=peer,
                why=f.getErrorMessage(),
            )

        def opened(protocol: _ProbeResponse) -> Deferred[None]:
            finished: Deferred[None] = Deferred()
            original = protocol.connectionLost

            def lost(reason: Failure) -> None:
                original(reason)
                finished.callback(None)

            protocol.connectionLost = lost  # type: ignore[method-assign]
            return finished.addBoth(done)

        cp.openSession(
            "echo",
            lambda info: _ProbeResponse(node.reactor, msg.nonce.encode("utf-8"), peer),
            {"probe": msg.nonce},
        ).addCallbacks(opened, failed)

    node.controlHandlers[ProbeRequest] = handle


# -- prober -------------------------------------------------------------------


@attrs.frozen
class Step:
    """
    The outcome of one probe check.
    """

    name: str
    ok: bool
    detail: str

    def asDict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _recordingEcho() -> type[Protocol]:
    from appnpy_echo import Echo

    class RecordingEcho(Echo):
        """
        Echo that also keeps what it echoed, so the probe can check it.
        """

        echoed = b""

        def dataReceived(self, data: bytes) -> None:
            if len(self.echoed) < 1024:
                self.echoed += data
            super().dataReceived(data)

    return RecordingEcho


class _RefusalReader(Protocol):
    """
    Reads the one answer to a raw BIND on a stream.
    """

    def __init__(self) -> None:
        self.reader = MessageReader()
        self.answer: Deferred[Message] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called:
            return
        try:
            messages = self.reader.feed(data, maxMessages=1)
        except APPNError as e:
            self.answer.errback(e)
            return
        if messages:
            self.answer.callback(messages[0])

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted gives reason a default; callers always pass one
        if not self.answer.called:
            self.answer.errback(reason)


class _InboundWatcher:
    """
    A node observer waiting for the echo session a ProbeRequest asked for.
    """

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.started: Deferred[Any] = Deferred()
        self.ended: Deferred[tuple[Any, Any]] = Deferred()
        self.session: Any = None

    def sessionStarted(self, session: Any) -> None:
        if self.session is None and session.info.parameters.get("probe") == self.nonce:
            self.session = session
            self.started.callback(session)

    def sessionEnded(self, session: Any, why: Any) -> None:
        if session is self.session and not self.ended.called:
            # The protocol is still attached while observers hear of the end.
            echoed = getattr(session.protocol, "echoed", b"")
            self.ended.callback((bytes(echoed), why))


def _timeout(d: Deferred[Any], seconds: float, reactor: Any) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


def _why(e: BaseException) -> str:
    if isinstance(e, (TimeoutError, CancelledError)):
        return "timed out"
    return str(e) or type(e).__name__


async def probe(
    reactor: Any, address: str, identity: Any = None, timeout: float = 10
) -> list[Step]:
    """
    Check the node at C{address} step by step from a throwaway node.

    @param address: C{host:port} or C{appn://<nodeid>@host:port}.
    @param identity: the prober's L{appnpy.link.identity.Identity}; a fresh
        in-memory one if not given.
    @param timeout: seconds each step may take.
    @return: the steps run, in order; a failed step ends the probe unless the
        following ones do not depend on it.
    """
    from appnpy_echo import SimplePlugin

    from appnpy.link.identity import generateIdentity
    from appnpy.link.tls import parseAddress
    from appnpy.node import Node

    steps: list[Step] = []
    try:
        target = parseAddress(address)
    except APPNError as e:
        return [Step("address", False, str(e))]
    node = Node(
        reactor,
        identity or generateIdentity(reactor.seconds()),
        name="PROBE.PROBE",
        handshakeTimeout=timeout,
    )
    RecordingEcho = _recordingEcho()
    node.addSessionPlugin(SimplePlugin("echo", RecordingEcho))
    node.startService()
    try:
        await _probeSteps(reactor, node, target, timeout, steps)
    finally:
        await node.stopService()
    return steps


async def _probeSteps(
    reactor: Any, node: Any, target: Any, timeout: float, steps: list[Step]
) -> None:
    # 1. TCP + TLS 1.3 + mutual authentication (+ Hello, which connect awaits).
    try:
        cp = await _timeout(node.connect(target), timeout, reactor)
    except Exception as e:
        steps.append(Step("tls", False, f"no link to {target}: {_why(e)}"))
        return
    handle = cp.link.transport.getHandle()
    tlsVersion = handle.get_protocol_version_name()
    steps.append(
        Step(
            "tls",
            tlsVersion == "TLSv1.3",
            f"{tlsVersion} {handle.get_cipher_name()}, peer node {cp.peerNodeID}",
        )
    )

    # 2. Hello: already verified (signature, node ID, version range) by connect.
    hello = cp.peerHello
    steps.append(
        Step(
            "hello",
            hello is not None and cp.version is not None,
            f"{hello.name}, role {hello.role}, versions {hello.versions[0]}..{hello.versions[1]}"
            f" (agreed {cp.version}), capabilities {', '.join(hello.capabilities) or '-'}, "
            f"plugins {', '.join(f'{k}:{v}' for k, v in sorted(hello.plugins.items())) or '-'}",
        )
    )

    # 3. yamux ping.
    try:
        rtt = await _timeout(cp.mux.ping(), timeout, reactor)
        steps.append(Step("ping", True, f"RTT {rtt * 1000:.2f} ms"))
    except Exception as e:
        steps.append(Step("ping", False, _why(e)))

    # 4. An echo session we open.
    steps.append(await _echoOurs(reactor, cp, timeout))

    # 5. An echo session they open, asked for with ProbeRequest.
    steps.append(await _echoTheirs(reactor, node, cp, timeout))

    # 6. A BIND for a plugin nobody offers must be refused with unknown-plugin.
    steps.append(await _refusal(reactor, cp, timeout))


async def _echoOurs(reactor: Any, cp: Any, timeout: float) -> Step:
    if "echo" not in cp.limits or cp.limits["echo"] <= 0:
        return Step("echo-outbound", False, "the peer offers no echo plugin")
    payload = secrets.token_bytes(4096)
    try:
        client = await _timeout(
            cp.openSession("echo", lambda info: EchoClient(reactor)), timeout, reactor
        )
    except Exception as e:
        return Step("echo-outbound", False, f"BIND failed: {_why(e)}")
    try:
        seconds, echoed = await _timeout(client.roundTrip(payload), timeout, reactor)
    except Exception as e:
        client.transport.abortConnection()
        return Step("echo-outbound", False, f"no echo: {_why(e)}")
    client.transport.loseConnection()
    try:
        reason = closeReason(await _timeout(client.whenClosed(), timeout, reactor))
    except Exception as e:
        return Step("echo-outbound", False, f"UNBIND not completed: {_why(e)}")
    if echoed != payload:
        return Step("echo-outbound", False, f"{len(echoed)} bytes came back altered")
    return Step(
        "echo-outbound",
        reason == Reason.NORMAL,
        f"{len(payload)} bytes echoed in {seconds * 1000:.2f} ms, closed: {reason}",
    )


async def _echoTheirs(reactor: Any, node: Any, cp: Any, timeout: float) -> Step:
    nonce = secrets.token_hex(16)
    watcher = _InboundWatcher(nonce)
    node.addObserver(watcher)
    try:
        cp.send(ProbeRequest(nonce=nonce))
        try:
            await _timeout(watcher.started, timeout, reactor)
        except Exception as e:
            return Step("echo-inbound", False, f"the peer opened no echo session: {_why(e)}")
        try:
            echoed, why = await _timeout(watcher.ended, timeout, reactor)
        except Exception as e:
            return Step("echo-inbound", False, f"the peer did not close the session: {_why(e)}")
    finally:
        node._observers.remove(watcher)
    session = watcher.session
    ok = why.reason == Reason.NORMAL and echoed == nonce.encode("ascii")
    return Step(
        "echo-inbound",
        ok,
        f"session {session.info.sessionID} opened by the peer, "
        f"{len(echoed)} of {len(nonce)} nonce bytes echoed{'' if ok or not echoed else ' (altered)'}, "
        f"closed: {why.reason}",
    )


async def _refusal(reactor: Any, cp: Any, timeout: float) -> Step:
    # Written by hand: ControlPoint.openSession would refuse it locally,
    # since the peer's Hello does not offer the plugin.
    reader = _RefusalReader()
    sessionID = newSessionID()
    try:
        stream = cp.mux.openStream()
    except APPNError as e:
        return Step("refusal", False, f"could not open a stream: {e}")
    stream.attachProtocol(reader)
    stream.write(
        encodeMessage(
            SessionOpen(
                session_id=sessionID,
                origin=cp.localNodeID,
                destination=cp.peerNodeID,
                plugin=NO_SUCH_PLUGIN,
                cos="interactive",
                window=cp.mux.config.initialWindow,
                parameters={},
            )
        )
    )
    try:
        answer = await _timeout(reader.answer, timeout, reactor)
    except Exception as e:
        stream.abortConnection()
        return Step("refusal", False, f"no answer to a BIND for {NO_SUCH_PLUGIN!r}: {_why(e)}")
    stream.loseConnection()
    if not isinstance(answer, SessionRefuse):
        return Step("refusal", False, f"answered {answer.typeName}, expected SessionRefuse")
    return Step(
        "refusal",
        answer.reason == Reason.UNKNOWN_PLUGIN and answer.session_id == sessionID,
        f"refused: {answer.reason} {answer.detail}".rstrip(),
    )
