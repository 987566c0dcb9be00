"""
appnpy: symmetric peer-to-peer networks for Twisted.

IBM's APPN architecture (control points, topology and directory services, class
of service routing, BIND/UNBIND) rebuilt on mutual TLS 1.3 and yamux.  Plugin
authors import from L{appnpy.api}; the layers are packages, bottom up:
L{appnpy.link}, L{appnpy.cp}, L{appnpy.session}, L{appnpy.net} and
L{appnpy.ops}, composed into a node by L{appnpy.node.buildNode}.
"""

__version__ = "0.1.0"

# The wire protocol versions this implementation speaks (docs/protocol.md).
PROTOCOL_VERSION_MIN = 2
PROTOCOL_VERSION_MAX = 2

#: The node roles (DESIGN.md, "Node roles"): a network node keeps the
#: topology database and relays; an end node is a leaf served by one.
ROLES = ("network", "end")
