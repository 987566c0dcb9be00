"""
Refusing a connection before TLS (docs/protocol.md section 4.4): the line a
busy listener sends instead of a handshake, and the TLS factory of links,
whose dialled connections read that line and hand its reason to the link
protocol to log.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import ITCPTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

from appnpy.link.bulktls import BulkTLS
from appnpy.link.tls import AuthenticatedProtocol
from appnpy.link.yamux import Multiplexer

#: What a node writes instead of TLS when it refuses a connection before the
#: handshake (admission control, docs/protocol.md section 4.4), followed by
#: a reason code, a space, a detail and CRLF.  No TLS record starts with "A".
REFUSAL_PREFIX = b"APPN-REFUSED "
#: The longest refusal line a dialler reads.
MAX_REFUSAL_LINE = 600
#: A link's TCP transport: most bytes read a call, and unsent bytes above
#: which it pauses the multiplexer ...
LINK_SOCKET_BUFFER = 256 * 1024
#: ... and most bytes sent a call.
LINK_SEND_LIMIT = 512 * 1024


def refusalLine(reason: str, detail: str) -> bytes:
    """
    The line that refuses a connection before TLS, with C{reason} (a token)
    and a one-line C{detail}.
    """
    text = f"{reason} {detail}".encode("ascii", "replace")
    text = bytes(b if 32 <= b < 127 else 63 for b in text)
    return REFUSAL_PREFIX + text[: MAX_REFUSAL_LINE - len(REFUSAL_PREFIX) - 2] + b"\r\n"


def parseRefusalLine(data: bytes) -> tuple[str, str]:
    """
    The (reason, detail) of a refusal line (printable ASCII only; anything
    else becomes "?").
    """
    line = data[len(REFUSAL_PREFIX) : MAX_REFUSAL_LINE].split(b"\n", 1)[0].rstrip(b"\r")
    text = bytes(b if 32 <= b < 127 else 63 for b in line).decode("ascii")
    reason, _, detail = text.partition(" ")
    return reason or "refused", detail


class _LinkTLSProtocol(BulkTLS, TLSMemoryBIOProtocol):
    """
    TLS for a link (L{BulkTLS}: whole writes, one delivery per read).  On a dialled connection, the first bytes may instead be
    the listener's refusal line (admission control refuses before spending a
    handshake): it is read, handed to the link protocol to log, and the
    connection closed.
    """

    _sniffed = b""
    factory: LinkTLSFactory
    #: The TCP transport records are sent on directly (L{_writeRecords}),
    #: or None (another transport: a test's, or one this was not written
    #: for).
    _tcp: Any = None

    def makeConnection(self, transport: Any) -> None:
        if ITCPTransport.providedBy(transport):
            # Twisted's TCP transport reads at most bufferSize (64 KiB) a
            # call, pauses its producer above as much unsent, and sends at
            # most SEND_LIMIT (128 KiB) a call: under bulk data that is a
            # pause and resume of the multiplexer, and its buffered copies,
            # every 64 KiB.  Larger ones cost nothing while the link is idle
            # (no buffer is kept) and measured a quarter less CPU per byte
            # at a relay (benchmarks/routed_bulk.py).
            conn: Any = transport  # Twisted's FileDescriptor attributes
            conn.bufferSize = LINK_SOCKET_BUFFER
            conn.SEND_LIMIT = LINK_SEND_LIMIT
            if isinstance(transport, tcp.Connection) and all(
                hasattr(transport, name) for name in _TCP_WRITE_STATE
            ):
                self._tcp = transport
        super().makeConnection(transport)  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def _deliversViews(self) -> bool:
        # Once authenticated, a link's reads go straight to its multiplexer,
        # which takes memoryviews (it copies what it keeps, and a relay's
        # spliced streams write the slices on at once).
        receiver = getattr(self.wrappedProtocol.dataReceived, "__self__", None)
        return isinstance(receiver, Multiplexer)

    def _writeRecords(self, records: Any) -> None:
        # Records go to the socket at once when Twisted holds nothing unsent
        # for it (so the order is kept), and only what the socket refuses
        # is copied into Twisted's buffer.  Twisted's write instead queues
        # every write for the next reactor turn, re-registers the socket
        # for writing and copies what a send leaves over; and once more
        # than the buffer size is queued (a relay's write of one read's
        # frames) it pauses the multiplexer, which then buffers and copies
        # every frame a second time.
        conn = self._tcp
        if (
            conn is not None
            # The handshake's own records keep Twisted's timing (the next
            # reactor turn): a dialler's ClientHello sent at once, into a
            # listener that answers with a refusal line and closes without
            # reading, makes the listener's kernel reset the connection,
            # and the dialler may lose the line.
            and self._handshakeDone
            and conn.connected
            and not conn.disconnecting
            and not conn._writeDisconnecting
            and not conn._writeDisconnected
            and not conn._tempDataLen
            and conn.offset == len(conn.dataBuffer)
        ):
            try:
                sent = conn.socket.send(records)
            except OSError:
                # Would block, or the connection failed: Twisted's own write
                # finds out which, as it would have without this.
                sent = 0
            if sent >= len(records):
                return
            records = records[sent:]
        else:
            records = records[:]
        self.transport.write(records)

    def dataReceived(self, data: bytes) -> None:
        if not self.factory.isClient:
            self._passThrough(data)
            return
        data = self._sniffed + data
        if not REFUSAL_PREFIX.startswith(data[: len(REFUSAL_PREFIX)]):
            self._passThrough(data)
            return
        if b"\n" not in data and len(data) < MAX_REFUSAL_LINE:
            self._sniffed = data
            return
        self._sniffed = b""
        wrapped = self.wrappedProtocol
        if isinstance(wrapped, AuthenticatedProtocol):
            wrapped.refusedBeforeTLS(*parseRefusalLine(data))
        cast(ITCPTransport, self.transport).abortConnection()

    def _passThrough(self, data: bytes) -> None:
        # Decided: from now on the data path is TLS's own, with no check.
        self.dataReceived = super().dataReceived  # type: ignore[method-assign]
        super().dataReceived(data)


#: What L{_LinkTLSProtocol._writeRecords} reads of Twisted's TCP transport
#: (tcp.Connection and abstract.FileDescriptor) to know its buffer empty.
_TCP_WRITE_STATE = (
    "socket",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "_tempDataLen",
    "offset",
    "dataBuffer",
)


class LinkTLSFactory(TLSMemoryBIOFactory):
    """
    The TLS factory of links (both directions): a dialled connection
    understands a refusal line sent instead of TLS.
    """

    protocol = _LinkTLSProtocol

    def __init__(
        self, contextFactory: Any, isClient: bool, wrappedFactory: Any, clock: Any = None
    ) -> None:
        super().__init__(contextFactory, isClient, wrappedFactory, clock=clock)
        self.isClient = isClient
