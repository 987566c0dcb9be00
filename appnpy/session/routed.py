"""
The ends of routed sessions: a BIND that travels through relays
(L{appnpy.net.relay}), then TLS 1.3 end to end over the chain of streams.

The origin sends L{SessionOpen} with the route to the first hop, signed with
its node key (L{signBind}), waits for the answer, and runs a TLS client over
the stream; the destination checks the signature, accepts and runs a TLS
server.  Both use the node's own TLS context (its certificate and
trust policy) and each pins the other end's node ID, as a link does, so the
relays in between carry bytes they can neither read nor alter undetected.
The plugin's protocol runs on top of that TLS layer, with a L{RoutedSession}
as its transport: the same L{ISession} an adjacent session offers.

Nothing is built or counted for an origin that has not authenticated: the
destination calls the plugin's C{buildProtocol} only once its TLS server has
verified the origin, then sends L{SessionStarted} back along the route (the
relays hold the splice only for a deadline until it passes); the origin
connects its protocol (and its caller's request completes) when that
arrives, so a plugin's refusal still fails the open.

A routed session is registered in the C{sessions} of the control point of the
link it rides (so UNBIND for it is dispatched there, C{node.sessions()} lists
it, and a graceful link close UNBINDs it) and in L{RoutedSessions.sessions}
(which counts routed sessions per plugin and far end against the plugin's
session limit) once both ends are authenticated; until then the
destination keeps it in L{RoutedSessions.handshaking} only.

The session itself (the plugin's transport over the end-to-end TLS) is
L{appnpy.session.endtoend.RoutedSession}.

Path switch (docs/protocol.md 15.8, L{appnpy.session.pathswitch}): the
origin asks for it in its BIND (C{path} 1); when the path fails it re-BINDs
the session on another route under the same session ID, with a larger
C{path}, signed like any routed BIND; the destination accepts a re-BIND
only from the session's origin, fresh, never seen, for a newer path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from appnpy.cp._interfaces import ADJACENT, ROUTED_END, IBindHandler
from appnpy.cp.bindreader import BindReader
from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    SessionAccept,
    SessionClose,
    SessionOpen,
    SessionRefuse,
    SessionStarted,
    encodeMessage,
)
from appnpy.errors import (
    GoAwayReceived,
    Reason,
    SessionClosed,
    SessionRefused,
    StreamLimitExceeded,
)
from appnpy.interfaces import ISessionInfo, ISessionPlugin
from appnpy.link.identity import Identity
from appnpy.link.ratelimit import TokenBucket
from appnpy.link.tls import LinkContextFactory
from appnpy.session._interfaces import IRoutedSessionsHost, IRouteSource, ISessionHost
from appnpy.session.adjacent import (
    INBOUND,
    OUTBOUND,
    AdjacentSessions,
    SessionInfo,
    newSessionID,
)
from appnpy.session.bind import (
    BindVerifier,
    buildPluginProtocol,
    chainStartedHandler,
    checkRoute,
    signBind,
)
from appnpy.session.endtoend import RoutedSession
from appnpy.session.pathswitch import (
    ALTERNATIVE_ROUTES,
    NO_SUCH_SESSION,
    SWITCH_TIMEOUT,
    SWITCH_WINDOW,
)
from appnpy.session.resumable import PROGRESS_TIMEOUT
from appnpy.session.switchable import AdjacentPathSwitch

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream
    from appnpy.session.switchable import SwitchableSession

__all__ = ["RoutedSession", "RoutedSessions", "installRoutedSessions"]

#: Seconds the origin waits for the answer to its BIND.
BIND_TIMEOUT = 30.0
#: Routed sessions a destination holds at once whose origin has not yet
#: authenticated (each for at most the handshake timeout).
MAX_HANDSHAKING = 1024
#: Routed BINDs (re-BINDs included) a destination takes from one neighbour,
#: per second and in a burst: as a relay does (relay check 3), checked
#: before a BIND costs a signature check or a place in the replay cache.
BIND_RATE = 500.0
BIND_BURST = 1000.0
#: Neighbours' BIND buckets kept before full ones (no different from new
#: ones) are forgotten.
_BUCKETS_KEPT = 64


class _Factory:
    """
    The smallest wrapped factory C{TLSMemoryBIOFactory} needs.
    """

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


@implementer(IBindHandler)
class RoutedSessions:
    """
    The routed-session ends of one node (every node has them).

    @ivar sessions: routed sessions ending here, by session ID.
    """

    log = Logger()

    def __init__(
        self,
        host: ISessionHost,
        plugins: Mapping[str, ISessionPlugin],
        routes: IRouteSource,
        contextFactory: LinkContextFactory,
        trustMode: str,
        identity: Identity,
    ) -> None:
        """
        @param plugins: the node's session plugins by name (its live mapping).
        @param routes: where routes and the far ends' CP names come from.
        @param contextFactory: the node's link TLS context, used end to end.
        @param trustMode: the trust policy's mode, for pinning the far end.
        @param identity: the node's key, which signs the BINDs it originates.
        """
        self.host = host
        self.nodeID: str = host.nodeID
        self.reactor = host.reactor
        self.plugins = plugins
        self.routes = routes
        self.contextFactory = contextFactory
        self.trustMode = trustMode
        self.identity = identity
        self.sessions: dict[str, RoutedSession] = {}
        #: Sessions accepted here whose origin has not yet authenticated.
        self.handshaking: dict[str, RoutedSession] = {}
        self.maxHandshaking = MAX_HANDSHAKING
        self.pending: dict[str, Stream] = {}
        self.bindTimeout = BIND_TIMEOUT
        self.bindRate = BIND_RATE
        self.bindBurst = BIND_BURST
        #: Each neighbour's BIND rate, by node ID.
        self._bindBuckets: dict[str, TokenBucket] = {}
        self.verifier = BindVerifier()
        self._tlsFactories: dict[bool, TLSMemoryBIOFactory] = {}
        #: Whether sessions opened here ask for path switch.
        self.pathSwitch = True
        #: Seconds a switchable session may be without a path (no-route then).
        self.switchTimeout = SWITCH_TIMEOUT
        #: Unacknowledged bytes each end of a switchable session keeps.
        self.switchWindow = SWITCH_WINDOW
        #: Seconds a switchable session with bytes unacknowledged waits for
        #: an ACK before it takes its path for failed (0: never).
        self.progressTimeout = PROGRESS_TIMEOUT
        #: Path switches: re-BINDs accepted here (destination).
        self.rebinds = 0
        #: Path switch of the node's adjacent sessions (15.9): they move to
        #: routed paths, re-bound and authenticated as routed sessions are.
        self.adjacent = AdjacentPathSwitch(self)

    def tlsFactory(self, isClient: bool) -> TLSMemoryBIOFactory:
        factory = self._tlsFactories.get(isClient)
        if factory is None:
            factory = TLSMemoryBIOFactory(
                self.contextFactory,
                isClient,
                cast(IProtocolFactory, _Factory()),  # all of it TLSMemoryBIOFactory uses
                clock=self.reactor,
            )
            self._tlsFactories[isClient] = factory
        return factory

    def alternativeRoutes(self, destination: str, cos: str) -> Deferred[list[list[str]]]:
        """
        Routes to C{destination}, best first, for a path switch.
        """
        return self.routes.alternativeRoutes(destination, cos, ALTERNATIVE_ROUTES)

    def count(self, plugin: str, peerNodeID: str) -> int:
        """
        Routed sessions of C{plugin} with C{peerNodeID}.
        """
        return sum(
            1
            for s in self.sessions.values()
            if s.info.plugin == plugin and s.info.peerNodeID == peerNodeID
        )

    # -- origin --------------------------------------------------------------------

    def open(
        self,
        destination: str,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None = None,
        cos: str | None = None,
        route: list[str] | None = None,
    ) -> Deferred[Any]:
        """
        Open a session with C{destination} (a node ID) through relays; fires
        with the plugin protocol once the far end is authenticated by TLS.
        """
        return Deferred.fromCoroutine(
            self._open(destination, plugin, protocolFactory, parameters, cos, route)
        )

    async def _open(
        self,
        destination: str,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None,
        cos: str | None,
        route: list[str] | None,
    ) -> Any:
        host = self.host
        if host.shuttingDown:
            raise SessionRefused(Reason.SHUTTING_DOWN.value, "this node is stopping")
        localPlugin = self.plugins.get(plugin)
        cos = cos or (localPlugin.defaultCOS if localPlugin else "interactive")
        if route is None:
            route = list(await self.routes.routeTo(destination, cos))
        route = list(route)
        if not route or route[0] != self.nodeID or route[-1] != destination:
            raise SessionRefused(
                Reason.NO_ROUTE.value, "the route must run from this node to the destination"
            )
        if len(route) == 2:
            # A neighbour: an ordinary adjacent session.
            return await host.findNeighbour(destination).openSession(
                plugin, protocolFactory, parameters, cos
            )
        why = checkRoute(route, 0, MAX_ROUTE_NODES)
        if why is not None:
            raise SessionRefused(Reason.PROTOCOL_ERROR.value, why)
        if not self.pathSwitch:
            return await self._bind(destination, plugin, protocolFactory, parameters, cos, route, 0)
        try:
            return await self._bind(destination, plugin, protocolFactory, parameters, cos, route, 1)
        except SessionRefused as e:
            if e.reason != Reason.BAD_SIGNATURE.value:
                raise
        # A node on the route that does not know path switch cannot verify
        # a BIND carrying its fields: open one that cannot switch.
        self.log.info(
            "BIND to {dest} refused bad-signature; again without path switch", dest=destination
        )
        return await self._bind(destination, plugin, protocolFactory, parameters, cos, route, 0)

    async def _bind(
        self,
        destination: str,
        plugin: str,
        protocolFactory: Callable[[Any], Any],
        parameters: dict[str, Any] | None,
        cos: str,
        route: list[str],
        path: int,
    ) -> Any:
        host = self.host
        cp = host.activeLink(route[1])
        if cp is None or not cp.isActive:
            raise SessionRefused(Reason.NO_ROUTE.value, f"{route[1]} is not a neighbour")
        try:
            stream = cp.mux.openStream()
        except (GoAwayReceived, StreamLimitExceeded) as e:
            raise SessionRefused(Reason.LIMIT_REACHED.value, str(e)) from None
        request = SessionOpen(
            session_id=newSessionID(),
            origin=self.nodeID,
            destination=destination,
            plugin=plugin,
            cos=cos,
            window=cp.mux.config.initialWindow,
            parameters=dict(parameters or {}),
            route=route,
            path=path,
        )
        identity = self.identity
        request = signBind(request, identity.publicKeyBytes, identity.sign, self.reactor.seconds())
        answered: Deferred[tuple[Message, bytes]] = Deferred()
        sid = request.session_id

        def onAnswer(msg: Message, leftover: bytes) -> None:
            answered.callback((msg, leftover))

        def onLost(reason: Failure) -> None:
            why = (
                reason.value.reason
                if isinstance(reason.value, SessionClosed)
                else Reason.LINK_FAILURE.value
            )
            answered.errback(SessionRefused(why, reason.getErrorMessage()))

        def timedOut() -> None:
            if not answered.called:
                answered.errback(
                    SessionRefused(Reason.TIMEOUT.value, f"no answer within {self.bindTimeout:g} s")
                )
                cp.sendUnbind(sid, Reason.TIMEOUT.value, "BIND timed out")
                stream.abortConnection()

        self.pending[sid] = stream
        timer = self.reactor.callLater(self.bindTimeout, timedOut)
        stream.attachProtocol(BindReader(onAnswer, onLost))
        stream.write(encodeMessage(request))
        try:
            answer, leftover = await answered
        finally:
            self.pending.pop(sid, None)
            if timer.active():
                timer.cancel()
        if isinstance(answer, SessionRefuse):
            stream.loseConnection()
            raise SessionRefused(answer.reason, answer.detail)
        if not isinstance(answer, SessionAccept) or answer.session_id != sid:
            stream.abortConnection()
            raise SessionRefused(Reason.PROTOCOL_ERROR.value, f"unexpected {answer.typeName}")
        if not cp.isActive:
            stream.abortConnection()
            raise SessionRefused(Reason.LINK_FAILURE.value, "the link went down")
        info = SessionInfo(
            sid,
            plugin,
            cos,
            request.parameters,
            OUTBOUND,
            self.nodeID,
            destination,
            self.routes.nodeName(destination),
        )
        ready: Deferred[Any] = Deferred()
        session = RoutedSession(
            self,
            cp,
            stream,
            info,
            route,
            protocolFactory=protocolFactory,
            ready=ready,
            switchable=request.path > 0,
        )
        self._started(cp, session)
        session.startTLS(isClient=True, leftover=leftover)
        return await ready

    # -- destination -------------------------------------------------------------------

    def bindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        A BIND for this node that came through relays.
        """
        sid = req.session_id
        route = list(req.route)
        if self.host.shuttingDown:
            cp.refuse(stream, sid, Reason.SHUTTING_DOWN, "the node is stopping")
            return
        if not self._bindAllowed(cp.peerNodeID):
            cp.refuse(stream, sid, Reason.RATE_LIMITED, "too many BINDs from this neighbour")
            return
        why = checkRoute(route, len(route) - 1, MAX_ROUTE_NODES)
        if why is None:
            if route[-1] != self.nodeID or req.destination != self.nodeID:
                why = "the route does not end at this node"
            elif route[0] != req.origin:
                why = "the route does not start at the origin"
            elif route[-2] != cp.peerNodeID:
                why = "the BIND came from a node that is not the previous hop"
        if why is not None:
            cp.refuse(stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        if req.path > 1:
            self._rebindReceived(cp, stream, req)
            return
        problem = self.verifier.check(req, self.reactor.seconds())
        if problem is not None:
            cp.refuse(stream, sid, *problem)
            return
        plugin = self.plugins.get(req.plugin)
        if plugin is None:
            cp.refuse(stream, sid, Reason.UNKNOWN_PLUGIN, f"no plugin {req.plugin!r}")
            return
        if (
            sid in self.sessions
            or sid in self.handshaking
            or sid in cp.sessions
            or sid in self.adjacent.sessions
        ):
            cp.refuse(stream, sid, Reason.PROTOCOL_ERROR, "session ID in use")
            return
        limit = plugin.sessionLimit
        if self.count(req.plugin, req.origin) >= limit:
            cp.refuse(
                stream, sid, Reason.LIMIT_REACHED, f"{limit} {req.plugin} sessions with this node"
            )
            return
        if len(self.handshaking) >= self.maxHandshaking:
            cp.refuse(
                stream, sid, Reason.LIMIT_REACHED, f"{self.maxHandshaking} sessions authenticating"
            )
            return
        info = SessionInfo(
            sid,
            req.plugin,
            req.cos,
            req.parameters,
            INBOUND,
            self.nodeID,
            req.origin,
            self.routes.nodeName(req.origin),
        )

        def build(info: ISessionInfo) -> Any:
            # Runs once the origin is authenticated: only then does it
            # count, and only then is the plugin asked.
            assert plugin is not None
            if self.count(info.plugin, info.peerNodeID) >= plugin.sessionLimit:
                raise SessionRefused(
                    Reason.LIMIT_REACHED.value,
                    f"{plugin.sessionLimit} {info.plugin} sessions with this node",
                )
            return buildPluginProtocol(plugin, info)

        stream.write(encodeMessage(SessionAccept(session_id=sid)))
        session = RoutedSession(
            self, cp, stream, info, route, protocolFactory=build, switchable=req.path == 1
        )
        self.handshaking[sid] = session
        session.startTLS(isClient=False)

    def _rebindReceived(self, cp: ControlPoint, stream: Stream, req: SessionOpen) -> None:
        """
        A re-BIND: the origin moves one of its sessions ending here to a new
        path.  Nothing of the session changes before every check passed.
        """
        sid = req.session_id
        session: RoutedSession | SwitchableSession | None = self.sessions.get(sid)
        if session is None:
            # An adjacent session moving to a routed path (15.9).
            session = self.adjacent.sessions.get(sid)
        if (
            session is None
            or session.direction != INBOUND
            or session.peerNodeID != req.origin
            or session.plugin != req.plugin
        ):
            # Also what a node that is not the session's origin hears.
            cp.refuse(stream, sid, Reason.PROTOCOL_ERROR, NO_SUCH_SESSION)
            return
        # No place in the replay cache (which a flood of first BINDs may
        # have filled): the session takes each path number once
        # (checkRebind), which refuses a replay of this re-BIND already.
        problem = self.verifier.verify(req, self.reactor.seconds())
        if problem is not None:
            cp.refuse(stream, sid, *problem)
            return
        why = session.checkRebind(req)
        if why is not None:
            cp.refuse(stream, sid, Reason.PROTOCOL_ERROR, why)
            return
        self.rebinds += 1
        session.rebindReceived(cp, stream, req)

    def _bindAllowed(self, neighbour: str) -> bool:
        """
        Whether C{neighbour} is within its BIND rate (one BIND taken).
        """
        now = self.reactor.seconds()
        buckets = self._bindBuckets
        bucket = buckets.get(neighbour)
        if bucket is None:
            if len(buckets) >= _BUCKETS_KEPT:
                # A bucket that has filled up again is what a new one would
                # be: forgetting it changes nothing, and keeps this table to
                # the neighbours sending BINDs now.
                for peer, b in list(buckets.items()):
                    if b.tokens + (now - b.last) * b.rate >= b.burst:
                        del buckets[peer]
            bucket = buckets[neighbour] = TokenBucket(self.bindRate, self.bindBurst, now)
        return bucket.take(now)

    def authenticated(self, session: RoutedSession) -> None:
        """
        The origin of C{session} (ending here) is authenticated and the
        plugin built its protocol: the session counts from now on, and the
        relays learn that it started.
        """
        self.handshaking.pop(session.sessionID, None)
        cp = session.viaLink
        self._started(cp, session)
        cp.send(SessionStarted(session_id=session.sessionID))

    def startedReceived(self, cp: ControlPoint, msg: SessionStarted) -> bool:
        """
        The destination of a session opened here started it (if C{cp} is
        the link the session rides).

        @return: whether the session was one of this node's.
        """
        session = self.sessions.get(msg.session_id)
        if session is None or session.viaLink is not cp or session.direction != OUTBOUND:
            return False
        session.destinationStarted()
        return True

    def unbindReceived(self, cp: ControlPoint, msg: SessionClose) -> None:
        # A routed session's UNBIND reaches it through the control point of
        # the link it rides; one for no session is late: nothing to do.
        pass

    # -- registry -----------------------------------------------------------------------

    def _started(self, cp: ControlPoint, session: RoutedSession) -> None:
        self.sessions[session.sessionID] = session
        cp.sessionStarted(session)

    def sessionEnded(self, session: RoutedSession, why: SessionClosed) -> None:
        if self.handshaking.get(session.sessionID) is session:
            # Never counted, never bound on the link.
            del self.handshaking[session.sessionID]
            return
        if self.sessions.get(session.sessionID) is session:
            del self.sessions[session.sessionID]
        session.viaLink.sessionEnded(session, why)

    def stop(self) -> None:
        """
        The node is stopping: sessions without a path (switching or held)
        end now with shutting-down (the others end with their links).
        """
        for session in list(self.sessions.values()):
            if session.switch is not None and session.switch.state in ("switching", "holding"):
                session.endSwitch(Reason.SHUTTING_DOWN.value, "the node is stopping")
        self.adjacent.stop()

    def asDict(self) -> dict[str, Any]:
        return {
            "sessions": [
                {
                    "session_id": s.sessionID,
                    "plugin": s.plugin,
                    "direction": s.direction,
                    "peer": s.peerNodeID,
                    "route": s.route,
                    "since": s.since,
                }
                for s in self.sessions.values()
            ]
        }


def installRoutedSessions(node: IRoutedSessionsHost) -> RoutedSessions:
    """
    Make C{node}'s routed-session ends, registered as the handler of BINDs
    that end here (L{appnpy.node.buildNode} keeps them as
    C{node.routedSessions}).
    """
    routed = RoutedSessions(
        node, node.plugins, node, node.linkContextFactory, node.trust.mode, node.identity
    )
    node.setBindHandler(ROUTED_END, routed)
    chainStartedHandler(node, routed.startedReceived)
    adjacent = node.bindHandler(ADJACENT)
    if isinstance(adjacent, AdjacentSessions):
        # Its adjacent sessions can switch paths from now on.
        adjacent.pathSwitch = routed.adjacent
    return routed
