"""
BIND acceptance: the one path on which an end of a session, adjacent or
routed, accepts or refuses an inbound BIND for one of its plugins; and the
structural check of a routed session's route, shared by relays and ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from appnpy.cp.messages import MAX_ROUTE_NODES, SessionAccept, SessionOpen, encodeMessage
from appnpy.errors import Reason, SessionRefused
from appnpy.interfaces import ISessionInfo, ISessionPlugin

if TYPE_CHECKING:
    from appnpy.cp.controlpoint import ControlPoint
    from appnpy.link.yamux import Stream

__all__ = ["acceptBind", "checkRoute"]

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
        protocol = plugin.buildProtocol(info)
    except SessionRefused as e:
        cp.refuse(stream, sid, e.reason, e.detail)
        return None
    except Exception:
        log.failure("plugin {plugin} failed to build a protocol", plugin=req.plugin)
        cp.refuse(stream, sid, Reason.REFUSED_BY_PLUGIN, "plugin error")
        return None
    if protocol is None:
        cp.refuse(stream, sid, Reason.REFUSED_BY_PLUGIN, "")
        return None
    stream.write(encodeMessage(SessionAccept(session_id=sid)))
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
