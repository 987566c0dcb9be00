"""
Twisted's memory-BIO TLS layer with fewer Python calls per byte, for links
and for the end-to-end TLS of routed sessions.

Twisted's C{TLSMemoryBIOProtocol} hands OpenSSL 16 KiB at a time (pyOpenSSL
turns partial writes on, so one C{SSL_write} writes one record), reads the
send BIO once per record and writes every record to its transport; on
receipt it hands the protocol above one call per record.  Python call
overhead per record, not the cipher, sets its ceiling
(shared/reference/performance.md), and on a relayed session every byte goes
through three such layers at each end and two at every relay.

L{BulkTLS} changes only that:

  - L{bulkContext} turns partial writes off, so one C{SSL_write} encrypts a
    whole write, every record of it (the memory BIO never refuses bytes, so
    nothing is lost by waiting for all of them); one BIO read takes the
    records out and the transport gets them in one write;
  - the records decrypted from one read of the transport are joined and
    handed up in one call: one copy of the bytes is cheaper than running the
    layers above once per 16 KiB record (a link's multiplexer gets them as
    a memoryview over a buffer of their own, without that copy);
  - what the protocol above writes while it handles one read leaves in one
    transport write when it is done (up to L{_HOLD_LIMIT});
  - once the handshake is done, C{SSL_write}, C{BIO_write}, C{BIO_read} and
    C{SSL_read} are called through pyOpenSSL's cffi library directly, the
    BIO is read into a shared buffer (a link sends it to its socket from
    there), and only failures go through pyOpenSSL's translation of
    errors.

Everything else (handshake, shutdown, errors, producers) is Twisted's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL.SSL import Connection, Context, Error, WantReadError, ZeroReturnError
from twisted.python.failure import Failure

__all__ = ["BulkTLS", "bulkContext", "framedSendAvailable", "sendFramed"]

#: OpenSSL's SSL_MODE_ENABLE_PARTIAL_WRITE (ssl.h; part of its stable ABI).
#: pyOpenSSL sets it on every context it makes and exports no name for it.
_MODE_ENABLE_PARTIAL_WRITE = 0x1
#: A TLS 1.3 record adds at most this to 16 KiB of plaintext: a 5-byte
#: header, the content type byte and a 16-byte AEAD tag.
_RECORD_OVERHEAD = 22
#: Room in the BIO read after a write for anything else OpenSSL queued
#: (an alert, a key update answer).
_SEND_SLACK = 1024
#: The most a protocol writes during the delivery of a read before its
#: records are sent anyway (about one read of a link).
_HOLD_LIMIT = 256 * 1024
#: The most one C{SSL_read} returns: a record's plaintext.  Asking for more
#: costs an allocation per call for nothing.
_RECORD_PLAINTEXT = 16 * 1024


def bulkContext(context: Context) -> Context:
    """
    Turn partial writes off on C{context} (before it makes a connection),
    so that one C{SSL_write} writes all of its bytes.  Harmless for Twisted's
    own TLS layer, which writes at most a record at a time anyway.
    """
    context.clear_mode(_MODE_ENABLE_PARTIAL_WRITE)
    return context


class BulkTLS:
    """
    Mixin for a C{TLSMemoryBIOProtocol} subclass (first in its bases) whose
    context went through L{bulkContext}: whole writes into OpenSSL, one
    transport write per write, one delivery per read.
    """

    # What the mixin uses of TLSMemoryBIOProtocol.
    _tlsConnection: Any
    _lostTLSConnection: bool
    _aborted: bool
    transport: Any
    wrappedProtocol: Any
    #: Whether the protocol above is handling what a read brought (its
    #: writes are then sent when it is done), and how many bytes it wrote
    #: since the records were last sent.
    _delivering = False
    _heldBack = 0
    _handshakeDone: bool
    _appSendBuffer: list[bytes]
    #: Its write takes any buffer, not only bytes (it hands it to OpenSSL
    #: at once, or keeps it until the handshake is done): a multiplexer
    #: over it may write memoryviews (yamux's Stream.writeWithRoom).
    takesBuffers = True

    def dataReceived(self, data: bytes) -> None:
        # Twisted's dataReceived, with pyOpenSSL's bio_write without its
        # Python layers once the connection is established.
        rbio = getattr(self._tlsConnection, "_into_ssl", None)
        if (
            _BIO_write is not None
            and rbio is not None
            and self._handshakeDone
            and not self._appSendBuffer
        ):
            n = len(data)
            if _BIO_write(rbio, _ffi.from_buffer(data), n) == n:
                self._flushReceiveBIO()
                return
            # A memory BIO writes all or nothing (nothing only when out of
            # memory): Twisted's own path reports why.
        if isinstance(data, memoryview):
            # (A numbered stream hands views over; older pyOpenSSL releases
            # take only bytes in bio_write.)
            data = bytes(data)
        super().dataReceived(data)  # type: ignore[misc]  # TLSMemoryBIOProtocol's

    def _write(self, bytes: bytes) -> None:
        # Twisted's name for the data (this overrides its _write).
        if self._lostTLSConnection or not bytes:
            return
        conn = self._tlsConnection
        try:
            # Partial writes are off: this encrypts all of it, or nothing
            # (and then the same bytes are offered again, as OpenSSL needs).
            if _SSL_write is not None and self._handshakeDone and len(bytes) <= _MAX_WRITE:
                # pyOpenSSL's send without its Python layers; its own
                # translation of a failure.
                result = _SSL_write(conn._ssl, _ffi.from_buffer(bytes), len(bytes))
                if result <= 0:
                    conn._raise_ssl_error(conn._ssl, result)
            else:
                conn.send(bytes)
        except WantReadError:
            self._bufferedWrite(bytes)  # type: ignore[attr-defined]  # TLSMemoryBIOProtocol's
            return
        except Error:
            self._tlsShutdownFinished(Failure())  # type: ignore[attr-defined]  # TLSMemoryBIOProtocol's
            return
        n = len(bytes)
        if self._delivering:
            # Written by the protocol while it handles a read of ours (an
            # origin writing its next 64 KiB for every acknowledgement the
            # read brings): the records wait in the BIO and leave together
            # when the delivery is done, one transport write and one send
            # instead of one per write, up to a bound.
            held = self._heldBack + n
            if held < _HOLD_LIMIT:
                self._heldBack = held
                return
            self._heldBack = 0
        self._sendRecords(n + ((n >> 14) + 1) * _RECORD_OVERHEAD + _SEND_SLACK)

    def _flushSendBIO(self) -> None:
        # Twisted's name (this overrides its _flushSendBIO, which reads 32
        # KiB and raises and catches an exception whenever the BIO is empty:
        # after every read of the transport).
        self._sendRecords(_SEND_BUFFER_SIZE)

    def _sendRecords(self, size: int) -> None:
        """
        Write what the send BIO holds to the transport: straight out of the
        shared send buffer (L{_writeRecords}) when this pyOpenSSL allows,
        else in one write of pieces of C{size} (normally one piece).
        """
        wbio = getattr(self._tlsConnection, "_from_ssl", None)
        if wbio is not None and _SEND_BUFFER is not None:
            buf = _SEND_BUFFER
            while True:
                # A memory BIO returns <= 0 only when it is empty.
                got = _BIO_read(wbio, buf, _SEND_BUFFER_SIZE)
                if got <= 0:
                    return
                self._writeRecords(_ffi.buffer(buf, got))
                if got < _SEND_BUFFER_SIZE:
                    return
        read = self._tlsConnection.bio_read
        pieces = []
        while True:
            try:
                piece = read(size)
            except WantReadError:
                break
            pieces.append(piece)
            if len(piece) < size:
                break
        if pieces:
            self.transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _writeRecords(self, records: Any) -> None:
        """
        Write C{records} (a buffer over the shared send buffer, valid only
        for this call) to the transport.  Subclasses whose transport can
        send from the buffer itself override this to skip the copy.
        """
        self.transport.write(records[:])

    def _deliversViews(self) -> bool:
        """
        Whether the protocol above takes what a read brought as a
        memoryview over a buffer of its own (never reused, so it may keep
        slices of it) instead of bytes: one copy less per byte.  Subclasses
        whose protocol does say so.
        """
        return False

    def _flushReceiveBIO(self) -> None:
        # Twisted's loop (tls.py), but the records go up joined, after the
        # loop; an end or an error found by the loop is handled after them,
        # which is the order Twisted delivers them in.
        if self._lostTLSConnection:
            self._flushSendBIO()
            return
        ended = False
        failure = None
        try:
            data = _readRecords(self._tlsConnection, self._deliversViews())
        except _EndOfTLS as e:
            data = e.data
            ended = e.failure is None
            failure = e.failure
        if data and not self._aborted:
            self._delivering = True
            try:
                self.wrappedProtocol.dataReceived(data)
            finally:
                self._delivering = False
                if self._heldBack:
                    self._heldBack = 0
                    self._flushSendBIO()
        if not self._lostTLSConnection:
            if ended:
                # TLS has shut down: answer, and let the transport's
                # reason reach the protocol.
                self._shutdownTLS()  # type: ignore[attr-defined]  # TLSMemoryBIOProtocol's
                self._tlsShutdownFinished(None)  # type: ignore[attr-defined]  # TLSMemoryBIOProtocol's
            elif failure is not None:
                self._tlsShutdownFinished(failure)  # type: ignore[attr-defined]  # TLSMemoryBIOProtocol's
        # What the records may have made OpenSSL answer (handshake messages).
        self._flushSendBIO()


def framedSendAvailable() -> bool:
    """
    Whether L{sendFramed} can be used with this pyOpenSSL.
    """
    return _FRAMED


def sendFramed(
    conn: Connection, head: int, limit: int, write: Callable[[memoryview], None]
) -> None:
    """
    Take what C{conn}'s send BIO holds out in pieces of at most C{limit}
    bytes, each read straight into a fresh buffer after C{head} bytes of
    room, and call C{write} with a writable memoryview over each buffer
    (the room first).  The buffer is never reused, so the caller may keep
    it, and fill the room with its own frame header instead of copying
    the records behind one.  Only when L{framedSendAvailable}.
    """
    wbio = conn._from_ssl  # pyOpenSSL's
    while True:
        pending = _BIO_get_mem_data(wbio, _MEM_DATA)
        if pending <= 0:
            return
        n = pending if pending < limit else limit
        buf = _allocate("char[]", head + n)
        got = _BIO_read(wbio, buf + head, n)
        if got <= 0:
            return
        write(memoryview(_ffi.buffer(buf, head + got)))


class _EndOfTLS(Exception):
    """
    Reading records stopped at the TLS connection's end (C{failure} None:
    close_notify) or at an error; C{data} is what came before.
    """

    def __init__(self, data: bytes, failure: Failure | None) -> None:
        self.data = data
        self.failure = failure


def _readRecordsPublic(conn: Connection, views: bool = False) -> bytes:
    """
    The plaintext of every whole record in C{conn}'s receive BIO, through
    pyOpenSSL's public C{recv}: one call, one allocation and one copy per
    record, and a join.
    """
    recv = conn.recv
    pieces = []
    while True:
        try:
            pieces.append(recv(_RECORD_PLAINTEXT))
        except WantReadError:
            break
        except ZeroReturnError:
            raise _EndOfTLS(b"".join(pieces), None) from None
        except Error:
            raise _EndOfTLS(b"".join(pieces), Failure()) from None
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _readRecordsDirect(conn: Connection, views: bool = False) -> Any:
    """
    The same as L{_readRecordsPublic}, calling C{SSL_read} straight into one
    buffer shared by every connection of the process.  It is only used
    inside this loop, which runs no Python code of anyone else's (the bytes
    are copied out before they are delivered), so connections whose
    delivery feeds another connection (a link carrying end-to-end TLS) do
    not disturb each other.  pyOpenSSL's C{recv} allocates a buffer and
    copies each record once more; this measured a third less CPU for
    receiving (decryption included), the largest single cost of a relay
    and a routed session's destination.

    With C{views}, the records are read into a buffer of their own instead,
    sized for what the receive BIO holds, and handed out as a memoryview
    over it without the copy.
    """
    ssl = getattr(conn, "_ssl", None)
    if ssl is None:
        return _readRecordsPublic(conn)
    buf = _BUFFER
    size = _BUFFER_SIZE
    if views:
        rbio = getattr(conn, "_into_ssl", None)
        if rbio is not None:
            # The plaintext is at most the ciphertext in the BIO and the
            # rest of a record OpenSSL has already taken part of.
            # Twice that rest: the loop below keeps room for a whole record.
            size = _BIO_get_mem_data(rbio, _MEM_DATA) + 2 * (_RECORD_PLAINTEXT + _RECORD_OVERHEAD)
            buf = _allocate("char[]", size)
        else:
            views = False
    pieces = []
    filled = 0
    while True:
        result = _SSL_read(ssl, buf + filled, _RECORD_PLAINTEXT)
        if result <= 0:
            break
        filled += result
        if filled > size - _RECORD_PLAINTEXT:
            pieces.append(_ffi.buffer(buf, filled)[:])
            filled = 0
    if filled:
        if views and not pieces:
            pieces.append(memoryview(_ffi.buffer(buf, filled)))
        else:
            pieces.append(_ffi.buffer(buf, filled)[:])
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if _SSL_get_error(ssl, result) == _SSL_ERROR_WANT_READ:
        # The usual end (all whole records read), without raising and
        # catching pyOpenSSL's exception for it.
        return data
    try:
        # pyOpenSSL's own translation of why SSL_read stopped.
        conn._raise_ssl_error(ssl, result)
    except WantReadError:
        return data
    except ZeroReturnError:
        raise _EndOfTLS(data, None) from None
    except Error:
        raise _EndOfTLS(data, Failure()) from None
    # _raise_ssl_error always raises for a result <= 0.
    raise _EndOfTLS(data, Failure(Error("SSL_read failed")))


def _directReadAvailable() -> bool:
    """
    Whether this pyOpenSSL has the private pieces L{_readRecordsDirect}
    uses, with the shapes it expects.
    """
    return (
        _lib is not None
        and hasattr(_lib, "SSL_read")
        and hasattr(_lib, "BIO_get_mem_data")
        and hasattr(_lib, "SSL_get_error")
        and callable(getattr(Connection, "_raise_ssl_error", None))
    )


try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # a pyOpenSSL without them: the public path only
    _ffi = _lib = None

_BUFFER_SIZE = 512 * 1024
#: The send buffer: what one BIO read takes out.  A relay's write of one
#: read's frames (about 256 KiB and its records' overhead) fits whole.
_SEND_BUFFER_SIZE = 512 * 1024
_SEND_BUFFER: Any = None
_BIO_read: Any = None
_SSL_write: Any = None
_BIO_write: Any = None
#: The most pyOpenSSL's send takes at once (it refuses more).
_MAX_WRITE = 2**31 - 1
if (
    _lib is not None
    and hasattr(_lib, "SSL_write")
    and hasattr(_lib, "BIO_write")
    and callable(getattr(Connection, "_raise_ssl_error", None))
):
    _SSL_write = _lib.SSL_write
    _BIO_write = _lib.BIO_write
if _lib is not None and hasattr(_lib, "BIO_read") and hasattr(Connection, "bio_read"):
    # Shared by every connection of the process as the receive buffer is:
    # each use ends before any other code runs (L{BulkTLS._writeRecords}
    # copies or sends it before anything else can reach a TLS layer).
    _BIO_read = _lib.BIO_read
    _SEND_BUFFER = _ffi.new("char[]", _SEND_BUFFER_SIZE)
if _directReadAvailable():
    _SSL_read = _lib.SSL_read
    _SSL_get_error = _lib.SSL_get_error
    _SSL_ERROR_WANT_READ = _lib.SSL_ERROR_WANT_READ
    _BUFFER = _ffi.new("char[]", _BUFFER_SIZE)
    _BIO_get_mem_data = _lib.BIO_get_mem_data
    _MEM_DATA = _ffi.new("char **")
    # Every byte of a fresh buffer is written before it is read.
    _allocate = _ffi.new_allocator(should_clear_after_alloc=False)
    _readRecords = _readRecordsDirect
else:
    _readRecords = _readRecordsPublic
_FRAMED = _BIO_read is not None and _directReadAvailable() and hasattr(Connection, "bio_read")
