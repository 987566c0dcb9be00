"""
The node's HTML status page: node, neighbours, the topology database drawn,
sessions, and the sections plugins contribute.  Every value is escaped; the
page is served with a Content-Security-Policy that forbids scripts.
"""

from __future__ import annotations

import html
import math
from typing import Any

from appnpy.ops._interfaces import IManagedNode, TopologyView
from appnpy.ops.describe import describeNeighbour, describeNode, describeSession
from appnpy.ops.extensions import PageSection, pageSections


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><tr>{head}</tr>{body}</table>"


def _topologySection(node: IManagedNode) -> str:
    """
    The topology database as a drawing (network nodes on a circle, routable
    links as lines) and a table of links; nothing on an end node.
    """
    topology: TopologyView | None = node.topology
    if topology is None:
        return ""
    e = html.escape
    info = topology.asDict()
    names = {n["node_id"]: n["name"] or n["node_id"][:12] for n in info["nodes"]}
    order = sorted(names, key=lambda nid: names[nid])
    size, radius = 360, 140
    where = {
        nid: (
            size / 2 + radius * math.cos(2 * math.pi * i / max(len(order), 1)),
            size / 2 + radius * math.sin(2 * math.pi * i / max(len(order), 1)),
        )
        for i, nid in enumerate(order)
    }
    routable = {
        tuple(sorted((link["owner"], link["peer"])))
        for link in info["links"]
        if link.get("routable") and link["owner"] in where and link["peer"] in where
    }
    lines = "".join(
        f'<line x1="{where[a][0]:.0f}" y1="{where[a][1]:.0f}" '
        f'x2="{where[b][0]:.0f}" y2="{where[b][1]:.0f}" stroke="#888"/>'
        for a, b in sorted(routable)
    )
    dots = "".join(
        f'<circle cx="{x:.0f}" cy="{y:.0f}" r="6" '
        f'fill="{"#c33" if nid == node.nodeID else "#36c"}"/>'
        f'<text x="{x + 9:.0f}" y="{y + 4:.0f}" font-size="12">{e(names[nid])}</text>'
        for nid, (x, y) in where.items()
    )
    svg = (
        f'<svg width="{size + 120}" height="{size}" role="img" '
        f'aria-label="topology graph">{lines}{dots}</svg>'
    )
    return (
        f"<h2>Topology</h2><p>digest {e(str(info['digest']))}, "
        f"{len(order)} network nodes, {len(routable)} routable links</p>"
        + svg
        + _table(
            ["from", "to", "RTT (ms)", "throughput", "cost", "security", "routable"],
            [
                [
                    names.get(link["owner"], link["owner"][:12]),
                    names.get(link["peer"], link["peer"][:12]),
                    link["rtt_ms"],
                    link["throughput"],
                    link["cost"],
                    link["security"],
                    "yes" if link.get("routable") else "no",
                ]
                for link in info["links"]
            ],
        )
    )


def renderStatusPage(node: IManagedNode) -> str:
    """
    The HTML status page: node, neighbours, sessions; every value escaped.
    """
    e = html.escape
    info = describeNode(node)
    neighbours = [describeNeighbour(cp) for cp in node.links.values()]
    sessions = [describeSession(s) for s in node.sessions()]
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="5; url=/">'
        f"<title>appnpy {e(info['name'])}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#eee}</style>"
        f"</head><body><h1>{e(info['name'])}</h1>"
        + _table(
            ["node ID", "role", "version", "listening on", "uptime (s)"],
            [
                [
                    info["node_id"],
                    info["role"],
                    info["version"],
                    " ".join(info["listen"]),
                    info["uptime_s"],
                ]
            ],
        )
        + "<h2>Neighbours</h2>"
        + _table(
            [
                "name",
                "node ID",
                "address",
                "direction",
                "RTT (ms)",
                "bytes in",
                "bytes out",
                "sessions",
            ],
            [
                [
                    n["name"],
                    n["node_id"],
                    n["address"],
                    n["direction"],
                    n["rtt_ms"],
                    n["bytes_in"],
                    n["bytes_out"],
                    n["sessions"],
                ]
                for n in neighbours
            ],
        )
        + _topologySection(node)
        + "<h2>Sessions</h2>"
        + _table(
            ["session ID", "plugin", "peer", "direction", "bytes in", "bytes out"],
            [
                [
                    s["session_id"],
                    s["plugin"],
                    s["peer_name"] or s["peer_node_id"],
                    s["direction"],
                    s["bytes_in"],
                    s["bytes_out"],
                ]
                for s in sessions
            ],
        )
        + "".join(_pluginSection(section) for section in pageSections(node.plugins.values()))
        + "</body></html>\n"
    )


def _pluginSection(section: PageSection) -> str:
    """
    A plugin's section of the page: its title and table, all escaped.
    """
    return f"<h2>{html.escape(section.title)}</h2>" + _table(
        [str(h) for h in section.headers], [list(row) for row in section.rows]
    )
