"""
The node's live web page: node, neighbours, the topology graph, sessions and
the sections plugins contribute.

The server sends data, never markup built from data: L{pageSnapshot} is the
JSON the page's script (C{page.js}, served by the node itself: the machine
may have no network) renders with C{textContent}, first from the copy
embedded in the page and then from every snapshot of the event stream
(L{appnpy.ops.events}).  So a name chosen by a peer or a plugin can never
become HTML, and the Content-Security-Policy allows only the node's own
script and style sheet.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from appnpy.ops._interfaces import IManagedNode
from appnpy.ops.access import Credentials
from appnpy.ops.describe import describeNeighbour, describeNode, describeSession
from appnpy.ops.events import SnapshotStream
from appnpy.ops.extensions import APIError, pageSections

#: The static files of the page, by URL path: (file in this package, content type).
STATIC = {
    b"/page.js": ("page.js", b"text/javascript; charset=utf-8"),
    b"/page.css": ("page.css", b"text/css; charset=utf-8"),
}

#: The page's Content-Security-Policy: its own script, style and API only.
PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def staticFile(name: str) -> bytes:
    """
    A static file of the page, read from the package (so the page works
    without any network).
    """
    return resources.files("appnpy.ops").joinpath(name).read_bytes()


def humanDuration(seconds: float) -> str:
    """
    A duration as an operator reads it: C{"12 s"}, C{"4 min 34 s"},
    C{"2 h 5 min"}, C{"3 d 4 h"}.
    """
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _topologyGraph(node: IManagedNode) -> dict[str, Any]:
    """
    The graph the page draws: on a network node, the network nodes this
    node can reach over routable links (so a node that leaves disappears
    once its links are withdrawn, though its record stays in the database
    until it ages out); on an end node, which keeps no database, itself and
    its neighbours.
    """
    names: dict[str, str | None] = {node.nodeID: node.name}
    edges: set[tuple[str, str]] = set()
    digest = None
    topology = node.topology
    if topology is None:
        for cp in node.links.values():
            names[cp.peerNodeID] = cp.peerName
            edges.add(tuple(sorted((node.nodeID, cp.peerNodeID))))
    else:
        info = topology.asDict()
        digest = info["digest"]
        known = {n["node_id"]: n["name"] for n in info["nodes"]}
        adjacency: dict[str, set[str]] = {}
        for link in info["links"]:
            if link.get("routable"):
                adjacency.setdefault(link["owner"], set()).add(link["peer"])
                adjacency.setdefault(link["peer"], set()).add(link["owner"])
        reached, frontier = {node.nodeID}, [node.nodeID]
        while frontier:
            here = frontier.pop()
            for there in adjacency.get(here, ()):
                edges.add(tuple(sorted((here, there))))
                if there not in reached:
                    reached.add(there)
                    frontier.append(there)
        for nid in reached:
            names.setdefault(nid, known.get(nid))
    roles = {cp.peerNodeID: cp.peerHello.role for cp in node.links.values() if cp.peerHello}
    return {
        "has_database": topology is not None,
        "digest": digest,
        "nodes": [
            {
                "node_id": nid,
                "name": name,
                "self": nid == node.nodeID,
                "role": node.role if nid == node.nodeID else roles.get(nid, "network"),
            }
            for nid, name in sorted(names.items())
        ],
        "links": [{"a": a, "b": b} for a, b in sorted(edges)],
    }


def pageSnapshot(node: IManagedNode) -> dict[str, Any]:
    """
    Everything the page shows, as JSON values: sent whole on each update
    (a few kilobytes), so a client that reconnects needs no history.
    """
    info = describeNode(node)
    info["uptime"] = humanDuration(info["uptime_s"])
    return {
        "node": info,
        "neighbours": sorted(
            (describeNeighbour(cp) for cp in node.links.values()),
            key=lambda n: (n["name"] or "", n["node_id"]),
        ),
        "sessions": sorted(
            (describeSession(s) for s in node.sessions()), key=lambda s: s["since"] or 0
        ),
        "topology": _topologyGraph(node),
        "sections": [
            {
                "title": str(section.title),
                "headers": [str(h) for h in section.headers],
                "rows": [["" if v is None else str(v) for v in row] for row in section.rows],
            }
            for section in pageSections(node.plugins.values())
        ],
    }


def _embedded(value: Any) -> str:
    """
    JSON safe inside a C{<script type="application/json">} element: no
    C{<}, C{>} or C{&} can close the element or start markup.
    """
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def renderStatusPage(node: IManagedNode, csrf: str) -> str:
    """
    The page: a skeleton, the first snapshot as data, and the script that
    renders it and follows the event stream.  C{csrf} is the value the
    script sends back in C{X-APPN-CSRF} with every action.
    """
    e = html.escape
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>appnpy {e(node.name or node.nodeID[:12])}</title>"
        '<link rel="stylesheet" href="/page.css">'
        f'<meta name="appn-csrf" content="{e(csrf)}">'
        f'<script type="application/json" id="appn-snapshot">{_embedded(pageSnapshot(node))}'
        "</script>"
        '<script src="/page.js" defer></script></head><body>'
        '<header><h1 id="node-name"></h1><span id="live">connecting</span></header>'
        '<table id="node" class="kv"></table>'
        '<div class="grid"><section><h2>Neighbours</h2>'
        '<form id="connect-form"><input name="address" required '
        'placeholder="host:port or appn://node-id@host:port" aria-label="address">'
        '<button type="submit">Connect</button></form>'
        '<table id="neighbours"></table>'
        '<p id="action-result" role="status"></p></section>'
        '<section><h2>Topology</h2><p id="topology-summary"></p>'
        '<svg id="topology" viewBox="0 0 400 300" role="img" aria-label="topology graph">'
        "</svg></section></div>"
        '<section><h2>Sessions</h2><table id="sessions"></table></section>'
        '<div id="plugin-sections"></div>'
        "<noscript><p>This page needs JavaScript; <code>appn status</code> and the API "
        "(docs/management-api.md) give the same data.</p></noscript>"
        "</body></html>\n"
    )


def renderLoginPage(wrong: bool) -> str:
    """
    The page shown without a valid cookie: a form that takes the token once
    (a POST, so it is in no URL); the node answers with the cookie.
    """
    why = "<p>That token is not this node's current token.</p>" if wrong else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<title>appnpy</title><link rel="stylesheet" href="/page.css"></head><body>'
        f"<h1>appnpy</h1>{why}<p>Paste the contents of <code>api-token</code> from the "
        "node's data directory (or open this page with <code>?token=</code>).</p>"
        '<form method="post" action="/"><input name="token" type="password" '
        'autocomplete="off" required aria-label="API token">'
        '<button type="submit">Open</button></form></body></html>\n'
    )


class PageResource:
    """
    The page's URLs (C{/}, its static files, C{/events}), dispatched to by
    the management resource, which answers an L{APIError} as JSON.
    """

    def __init__(
        self, node: IManagedNode, credentials: Credentials, events: SnapshotStream
    ) -> None:
        self.node = node
        self.credentials = credentials
        self.events = events

    def page(self, request: Request) -> bytes:
        """
        The page, for the bearer header or the page cookie.  A token in the
        query (or the login form's body) is taken once: the answer sets the
        cookie and redirects to C{/}, so the token stays in no URL the
        browser shows, keeps or sends on.
        """
        if request.method not in (b"GET", b"POST"):
            raise APIError(405, "method-not-allowed", "GET only")
        credentials = self.credentials
        request.setHeader(b"content-security-policy", PAGE_POLICY)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        offered = request.args.get(b"token")
        if offered:
            if credentials.checkToken(offered[0].strip()):
                credentials.setPageCookie(request)
                request.redirect(b"/")
                request.setResponseCode(303)
                return b""
            request.setResponseCode(401)
            return renderLoginPage(wrong=True).encode("utf-8")
        if request.method != b"GET":
            raise APIError(405, "method-not-allowed", "GET only")
        if not (credentials.bearer(request) or credentials.pageCookie(request)):
            request.setResponseCode(401)
            return renderLoginPage(wrong=False).encode("utf-8")
        return renderStatusPage(self.node, credentials.csrf).encode("utf-8")

    def static(self, request: Request) -> bytes:
        """
        The page's script and style sheet: no data in them, so no token.
        """
        if request.method != b"GET":
            raise APIError(405, "method-not-allowed", "GET only")
        name, contentType = STATIC[request.path]
        request.setHeader(b"content-type", contentType)
        return staticFile(name)

    def stream(self, request: Request) -> object:
        """
        The page's event stream (L{appnpy.ops.events}), for the cookie (an
        C{EventSource} sends no headers) or the bearer token.
        """
        if request.method != b"GET":
            raise APIError(405, "method-not-allowed", "GET only")
        if not (self.credentials.bearer(request) or self.credentials.pageCookie(request)):
            raise APIError(401, "unauthorized", "missing or wrong API token or page cookie")
        if not self.events.add(request):
            raise APIError(503, "too-many-clients", "too many event streams open")
        return NOT_DONE_YET
