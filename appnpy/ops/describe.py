"""
The JSON views of a node, its neighbours, sessions and plugins, shared by the
management API and the status page: docs/management-api.md documents every
key, which C{appn --json} users rely on.
"""

from __future__ import annotations

from typing import Any

import appnpy
from appnpy.cp._interfaces import IBoundSession
from appnpy.cp.controlpoint import ControlPoint
from appnpy.interfaces import ISessionPlugin
from appnpy.net.addresses import dialableAddresses
from appnpy.ops._interfaces import IManagedNode


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def describeNode(node: IManagedNode) -> dict[str, Any]:
    return {
        "node_id": node.nodeID,
        "name": node.name,
        "role": node.role,
        "version": appnpy.__version__,
        "protocol_versions": [appnpy.PROTOCOL_VERSION_MIN, appnpy.PROTOCOL_VERSION_MAX],
        # Dialable: a wildcard listener is shown as the host's addresses.
        "listen": dialableAddresses(node.advertisedAddresses()),
        "uptime_s": round(node.reactor.seconds() - node.startedAt, 3),
    }


def describeNeighbour(cp: ControlPoint) -> dict[str, Any]:
    return {
        "node_id": cp.peerNodeID,
        "name": cp.peerName,
        "address": cp.address,
        "role": cp.peerHello.role if cp.peerHello else None,
        "version": cp.version,
        "rtt_ms": ms(cp.mux.rtt),
        "bytes_in": cp.mux.bytesReceived,
        "bytes_out": cp.mux.bytesSent,
        "sessions": len(cp.sessions),
        "since": cp.since,
        "direction": "outbound" if cp.isDialer else "inbound",
    }


def describeSession(session: IBoundSession) -> dict[str, Any]:
    info = session.info
    return {
        "session_id": info.sessionID,
        "plugin": info.plugin,
        "cos": info.cos,
        "peer_node_id": info.peerNodeID,
        "peer_name": info.peerName,
        "direction": info.direction,
        "bytes_in": session.bytesReceived,
        "bytes_out": session.bytesSent,
        "since": session.since,
    }


def describePlugin(plugin: ISessionPlugin) -> dict[str, Any]:
    return {
        "name": plugin.name,
        "version": plugin.version,
        "default_cos": plugin.defaultCOS,
        "session_limit": plugin.sessionLimit,
    }
