"""
The link layer: node identity (keys, certificates, node IDs), mutually
authenticated TLS 1.3 links between adjacent nodes, and the yamux stream
multiplexer that carries many flow-controlled streams over one link.

Nothing here knows about control messages, sessions or the network services
above it.
"""
