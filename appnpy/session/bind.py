"""
BIND acceptance: how an end of an adjacent session accepts or refuses an
inbound BIND (L{acceptBind}), and how any end asks its plugin for the
session's protocol (L{buildPluginProtocol}: a routed end does so only after
the end-to-end TLS); the structural check of a routed session's route; and
the origin's signature on a routed BIND (L{signBind}, L{BindVerifier}),
shared by relays and ends.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from appnpy.cp._interfaces import ILinkHost
from appnpy.cp.messages import (
    MAX_ROUTE_NODES,
    Message,
    SessionAccept,
    SessionOpen,
    SessionStarted,
    encodeMessage,
)
from appnpy.errors import Reason, SessionRefused
from appnpy.interfaces import ISessionInfo, ISessionPlugin
from appnpy.link.identity import nodeIDFromSPKI, verifySignature

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream

__all__ = [
    "BIND_FRESHNESS",
    "REPLAY_CACHE_SIZE",
    "BindVerifier",
    "acceptBind",
    "buildPluginProtocol",
    "chainStartedHandler",
    "checkRoute",
    "signBind",
]

#: Seconds a routed BIND's timestamp may differ from this node's clock,
#: either way (clock skew plus the time the BIND takes along its route).
BIND_FRESHNESS = 60.0
#: Routed BINDs a node remembers to refuse their replay (see L{BindVerifier}).
REPLAY_CACHE_SIZE = 262144

log = Logger()


def acceptBind(
    cp: ControlPoint,
    stream: Stream,
    req: SessionOpen,
    plugin: ISessionPlugin | None,
    inUse: bool,
    count: int,
    limit: int,
    info: ISessionInfo,
) -> Any:
    """
    Accept BIND C{req} for C{plugin}, or refuse it on C{cp}.

    The caller has worked out what differs between adjacent and routed
    sessions: whether the session ID is taken (C{inUse}), how many sessions
    of the plugin count against C{limit}, and the session's C{info}.

    @return: the plugin's protocol for the session, once the accept is
        written on C{stream}; L{None} if the BIND was refused.
    """
    sid = req.session_id
    if plugin is None:
        cp.refuse(stream, sid, Reason.UNKNOWN_PLUGIN, f"no plugin {req.plugin!r}")
        return None
    if inUse:
        cp.refuse(stream, sid, Reason.PROTOCOL_ERROR, "session ID in use")
        return None
    if count >= limit:
        cp.refuse(
            stream, sid, Reason.LIMIT_REACHED, f"{limit} {req.plugin} sessions with this node"
        )
        return None
    try:
        protocol = buildPluginProtocol(plugin, info)
    except SessionRefused as e:
        cp.refuse(stream, sid, e.reason, e.detail)
        return None
    stream.write(encodeMessage(SessionAccept(session_id=sid)))
    return protocol


def buildPluginProtocol(plugin: ISessionPlugin, info: ISessionInfo) -> Any:
    """
    The plugin's protocol for the session C{info}.

    @raise SessionRefused: if the plugin refuses it (its reason), fails
        (C{refused-by-plugin}, "plugin error") or returns no protocol.
    """
    try:
        protocol = plugin.buildProtocol(info)
    except SessionRefused:
        raise
    except Exception:
        log.failure("plugin {plugin} failed to build a protocol", plugin=info.plugin)
        raise SessionRefused(Reason.REFUSED_BY_PLUGIN.value, "plugin error") from None
    if protocol is None:
        raise SessionRefused(Reason.REFUSED_BY_PLUGIN.value, "")
    return protocol


def checkRoute(route: list[str], here: int, maxNodes: int = MAX_ROUTE_NODES) -> str | None:
    """
    Structural checks shared by relays and session ends.

    @param here: the index this node must have in C{route}.
    @return: why the route is malformed, or L{None}.
    """
    if len(route) < 3:
        return f"a routed session needs at least 3 nodes, the route has {len(route)}"
    if len(route) > maxNodes:
        return f"the route has {len(route)} nodes, at most {maxNodes} are allowed"
    if len(set(route)) != len(route):
        return "the route visits a node twice (loop)"
    if not 0 <= here < len(route):
        return "this node is not on the route"
    return None


def signBind(
    req: SessionOpen, publicKey: bytes, sign: Callable[[bytes], bytes], now: float
) -> SessionOpen:
    """
    C{req} as the origin sends it on a route: with its public key, the time
    C{now} (whole seconds) and its signature (C{sign}, the node key's) over
    the rest.
    """
    unsigned = attrs.evolve(req, public_key=publicKey, timestamp=max(0, int(now)), signature=b"")
    return attrs.evolve(unsigned, signature=sign(unsigned.signedBytes()))


class BindVerifier:
    """
    Checks the origin's signature on routed BINDs and refuses replays.

    A BIND is accepted once: its origin's key must derive the C{origin}
    node ID (self-certifying, no directory needed), the signature must
    verify, the timestamp must be within L{BIND_FRESHNESS} of this node's
    clock, and the pair (origin, session ID) must not have been seen.  The
    session ID (128 random bits chosen by the origin, covered by the
    signature) is the nonce.  Each accepted pair is remembered for
    C{2 * freshness + 1} s (after that the timestamp alone refuses it), at most
    C{maxEntries} pairs: when that many are still live, further BINDs are
    refused (C{limit-reached}) until some expire, so a replay is never
    accepted for lack of room.
    """

    def __init__(
        self, freshness: float = BIND_FRESHNESS, maxEntries: int = REPLAY_CACHE_SIZE
    ) -> None:
        self.freshness = freshness
        self.maxEntries = maxEntries
        #: (origin, session ID), as 16 bytes of their hash -> when the entry
        #: may be forgotten; in insertion order, which is also expiry order.
        self.seen: OrderedDict[bytes, float] = OrderedDict()
        #: Signatures checked (for metrics and the benchmark).
        self.checked = 0

    def check(self, req: SessionOpen, now: float) -> tuple[str, str] | None:
        """
        Why routed BIND C{req} must be refused, as (reason code, detail);
        L{None} if it is the origin's, fresh and not seen before (it is
        then remembered).
        """
        problem = self.verify(req, now)
        if problem is not None:
            return problem
        # A path switch re-BINDs the session under its ID with a larger path
        # number (docs/protocol.md 15.8): each (origin, ID, path) once.
        pair = f"{req.origin} {req.session_id}"
        if req.path > 1:
            pair += f" {req.path}"
        key = hashlib.sha256(pair.encode()).digest()[:16]
        self._expire(now)
        if key in self.seen:
            return Reason.PROTOCOL_ERROR.value, "replayed BIND"
        if len(self.seen) >= self.maxEntries:
            return Reason.LIMIT_REACHED.value, f"{self.maxEntries} recent BINDs remembered"
        # Forgotten only once the timestamp alone refuses the BIND, even
        # if this node's clock jumps ahead: a replay is never accepted.
        self.seen[key] = now + 2 * self.freshness + 1
        return None

    def verify(self, req: SessionOpen, now: float) -> tuple[str, str] | None:
        """
        Why routed BIND C{req} must be refused for its signature or its
        time, as (reason code, detail); L{None} if it is the origin's and
        fresh.  Nothing is remembered: for a caller that refuses replays
        another way (a session's destination takes each re-BIND path
        number once).
        """
        if not req.public_key or not req.signature:
            return Reason.BAD_SIGNATURE.value, "the BIND is not signed by its origin"
        if nodeIDFromSPKI(req.public_key) != req.origin:
            return Reason.BAD_SIGNATURE.value, "the BIND's public key is not the origin's"
        skew = now - req.timestamp
        if not -self.freshness <= skew <= self.freshness:
            return (
                Reason.PROTOCOL_ERROR.value,
                f"the BIND's timestamp is {skew:+.0f} s off this node's clock",
            )
        self.checked += 1
        if not verifySignature(req.public_key, req.signature, req.signedBytes()):
            return Reason.BAD_SIGNATURE.value, "the BIND's signature does not verify"
        return None

    def _expire(self, now: float) -> None:
        seen = self.seen
        while seen:
            key, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[key]


def chainStartedHandler(
    host: ILinkHost, handler: Callable[[ControlPoint, SessionStarted], bool]
) -> None:
    """
    Deliver L{SessionStarted} to C{handler} first, then to whichever
    handler C{host} had (the relay's and the routed ends' both want it;
    each returns whether the session was its own).  One for no session is
    late (the session already ended): dropped.
    """
    previous = host.controlHandler(SessionStarted)

    def dispatch(cp: ControlPoint, msg: Message) -> None:
        assert isinstance(msg, SessionStarted)
        if not handler(cp, msg):
            if previous is not None:
                previous(cp, msg)
            else:
                log.debug("SessionStarted for unknown session {sid}", sid=msg.session_id)

    host.addControlHandler(SessionStarted, dispatch)
