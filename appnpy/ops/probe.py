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
from collections.abc import Callable
from typing import Any, cast

import attrs
from twisted.application.service import IService
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from appnpy.cp._interfaces import IBoundSession, ILinkHost, NodeObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.cp.messages import (
    Message,
    MessageReader,
    SessionOpen,
    SessionRefuse,
    encodeMessage,
    message,
    text,
)
from appnpy.errors import APPNError, LinkRefused, Reason, SessionClosed, SessionRefused
from appnpy.interfaces import ISessionPlugin
from appnpy.link.tls import LinkAddress, parseAddress
from appnpy.ops._interfaces import IManagedNode
from appnpy.session.adjacent import Session, newSessionID
from appnpy.session.echo import Echo, EchoPlugin

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

    def __init__(self, reactor: IReactorTime) -> None:
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
    if isinstance(reason, (SessionClosed, SessionRefused, LinkRefused)):
        return str(reason.reason)
    return str(Reason.LINK_FAILURE.value)


# -- responder ----------------------------------------------------------------


class _ProbeResponse(Protocol):
    """
    The requesting side of a responder's echo session: writes the nonce,
    checks it comes back, closes normally; C{ended} is called once it is
    gone.
    """

    def __init__(
        self, reactor: IReactorTime, nonce: bytes, peer: str, ended: Callable[[], None]
    ) -> None:
        self.reactor = reactor
        self.nonce = nonce
        self.peer = peer
        self.ended = ended
        self.buffer = b""
        self._timer: IDelayedCall | None = None

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
        self.ended()


class ProbeResponder:
    """
    Answers L{ProbeRequest}s from neighbours: a control message handler
    (C{controlHandlers[ProbeRequest] = responder.handle}) that opens an echo
    session back on the requesting link, at most
    L{MAX_RESPONDER_SESSIONS} per neighbour at a time.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        #: Probe echo sessions running, by neighbour node ID.
        self.active: dict[str, int] = {}

    def handle(self, cp: ControlPoint, msg: ProbeRequest) -> None:
        peer = cp.peerNodeID
        if self.active.get(peer, 0) >= MAX_RESPONDER_SESSIONS:
            log.info("ignored a probe request from {peer}: too many at once", peer=peer)
            return
        self.active[peer] = self.active.get(peer, 0) + 1
        log.info("probe request from {peer}: opening an echo session back", peer=peer)

        def ended() -> None:
            self.active[peer] -= 1
            if not self.active[peer]:
                del self.active[peer]

        def failed(f: Failure) -> None:
            ended()
            log.info(
                "could not open the probe echo session to {peer}: {why}",
                peer=peer,
                why=f.getErrorMessage(),
            )

        nonce = msg.nonce.encode("utf-8")
        cp.openSession(
            "echo",
            lambda info: _ProbeResponse(self.reactor, nonce, peer, ended),
            {"probe": msg.nonce},
        ).addErrback(failed)


def installProbeResponder(host: ILinkHost) -> ProbeResponder:
    """
    Make a node answer L{ProbeRequest}s: register a L{ProbeResponder} for
    them with the node's control-message dispatch.
    """
    responder = ProbeResponder(host.reactor)
    host.addControlHandler(ProbeRequest, responder.handle)
    return responder


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


class _InboundWatcher(NodeObserver):
    """
    A node observer waiting for the echo session a ProbeRequest asked for.
    """

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.started: Deferred[IBoundSession] = Deferred()
        self.ended: Deferred[tuple[bytes, SessionClosed]] = Deferred()
        self.session: IBoundSession | None = None

    def sessionStarted(self, session: IBoundSession) -> None:
        # After a timeout the watcher stays registered on the throwaway
        # node, inert: its Deferreds have fired.
        if (
            self.session is None
            and not self.started.called
            and session.info.parameters.get("probe") == self.nonce
        ):
            self.session = session
            self.started.callback(session)

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        if session is self.session and not self.ended.called:
            # The protocol is still attached while observers hear of the end.
            protocol = session.protocol if isinstance(session, Session) else None
            echoed = protocol.echoed if isinstance(protocol, Echo) else b""
            self.ended.callback((echoed, why))


def _timeout(d: Deferred[Any], seconds: float, reactor: IReactorTime) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


def _why(e: BaseException) -> str:
    if isinstance(e, (TimeoutError, CancelledError)):
        return "timed out"
    return str(e) or type(e).__name__


def proberPlugins() -> list[ISessionPlugin]:
    """
    The plugins a prober's throwaway node runs: its own minimal echo, which
    the "echo opened by the peer" step needs.
    """
    return [EchoPlugin()]


async def probe(
    reactor: IReactorTime, node: IManagedNode, address: str, timeout: float = 10
) -> list[Step]:
    """
    Check the node at C{address} step by step from C{node}, a throwaway node
    built for it (L{appnpy.node.buildProber}): started here, and stopped
    again when the probe is done.

    @param address: C{host:port} or C{appn://<nodeid>@host:port}.
    @param timeout: seconds each step may take.
    @return: the steps run, in order; a failed step ends the probe unless the
        following ones do not depend on it.
    """
    try:
        target = parseAddress(address)
    except APPNError as e:
        return [Step("address", False, str(e))]
    steps: list[Step] = []
    service = IService(node)
    service.startService()
    try:
        await _probeSteps(reactor, node, target, timeout, steps)
    finally:
        await service.stopService()
    return steps


async def _probeSteps(
    reactor: IReactorTime,
    node: IManagedNode,
    target: LinkAddress,
    timeout: float,
    steps: list[Step],
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


async def _echoOurs(reactor: IReactorTime, cp: ControlPoint, timeout: float) -> Step:
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


async def _echoTheirs(
    reactor: IReactorTime, node: IManagedNode, cp: ControlPoint, timeout: float
) -> Step:
    nonce = secrets.token_hex(16)
    watcher = _InboundWatcher(nonce)
    # The node is thrown away after the probe: the watcher is not removed.
    node.addObserver(watcher)
    cp.send(ProbeRequest(nonce=nonce))
    try:
        await _timeout(watcher.started, timeout, reactor)
    except Exception as e:
        return Step("echo-inbound", False, f"the peer opened no echo session: {_why(e)}")
    try:
        echoed, why = await _timeout(watcher.ended, timeout, reactor)
    except Exception as e:
        return Step("echo-inbound", False, f"the peer did not close the session: {_why(e)}")
    session = watcher.session
    assert session is not None  # started fired
    ok = why.reason == Reason.NORMAL and echoed == nonce.encode("ascii")
    return Step(
        "echo-inbound",
        ok,
        f"session {session.info.sessionID} opened by the peer, "
        f"{len(echoed)} of {len(nonce)} nonce bytes echoed{'' if ok or not echoed else ' (altered)'}, "
        f"closed: {why.reason}",
    )


async def _refusal(reactor: IReactorTime, cp: ControlPoint, timeout: float) -> Step:
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
