"""
appnpy: symmetric peer-to-peer networks for Twisted.

IBM's APPN architecture (control points, topology and directory services, class
of service routing, BIND/UNBIND) rebuilt on mutual TLS 1.3 and yamux.  Plugin
authors import from L{appnpy.api}; the layers live one per module.
"""

__version__ = "0.1.0"

# The wire protocol versions this implementation speaks (docs/protocol.md).
PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 1
