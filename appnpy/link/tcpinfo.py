"""
What the kernel knows of a link's TCP connection, for failure detection:
how long the network path has been quiet.

A link's Ping can queue behind megabytes of data in the socket's send
buffer (a bulk transfer over a slow path), or wait for a peer whose process
is stopped while its kernel still acknowledges our segments.  Neither is a
failed path.  Linux's C{TCP_INFO} says when the peer's TCP last acknowledged
anything: while that keeps happening, the path is alive, whatever the peer's
process does (a hung peer is left to the keepalive timeout).
"""

from __future__ import annotations

import math
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["pathQuietFor"]

# struct tcp_info (linux/tcp.h): eight u8 fields, then u32s; tcpi_unacked
# (segments in flight) at byte 24, tcpi_last_ack_recv (ms since the last
# ACK arrived) at byte 56.
_UNACKED = struct.Struct("=I")
_UNACKED_AT = 24
_LAST_ACK_AT = 56
_INFO_SIZE = 104


def pathQuietFor(transport: Any) -> Callable[[], float] | None:
    """
    For the TCP transport under a link (or the TLS transport over one), a
    function giving the seconds since the peer's TCP last acknowledged data
    this end has in flight (0 when nothing is in flight: everything sent
    has arrived), or infinity when the kernel cannot say; L{None} where
    C{TCP_INFO} does not exist (not Linux, not a TCP socket).
    """
    tcpInfo = getattr(socket, "TCP_INFO", None)
    if tcpInfo is None or not sys.platform.startswith("linux"):
        return None
    tcp = getattr(transport, "transport", transport)
    getHandle = getattr(tcp, "getHandle", None)
    if getHandle is None:
        return None
    sock = getHandle()
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None

    def quiet() -> float:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, tcpInfo, _INFO_SIZE)
        except OSError:
            return math.inf
        if len(info) < _LAST_ACK_AT + 4:
            return math.inf
        (unacked,) = _UNACKED.unpack_from(info, _UNACKED_AT)
        if not unacked:
            return 0.0
        (lastAck,) = _UNACKED.unpack_from(info, _LAST_ACK_AT)
        return float(lastAck) / 1000.0

    return quiet
