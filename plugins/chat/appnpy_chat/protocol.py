"""
The protocol of one chat session: length-prefixed CBOR frames, handed
decoded to whoever handles the session (a room's host or member side, or a
direct-message conversation).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from appnpy.api import ISessionInfo, SessionClosed
from appnpy_chat.wire import MAX_FRAME, ProtocolError, decodeFrame, encodeFrame


class FrameHandler(Protocol):
    """
    What a L{ChatProtocol} reports to.
    """

    def connected(self, proto: ChatProtocol) -> None: ...

    def frameReceived(self, proto: ChatProtocol, frame: dict[str, Any]) -> None: ...

    def disconnected(self, proto: ChatProtocol, reason: str) -> None: ...


class ChatProtocol(Int32StringReceiver):
    """
    Frames in and out of one session.  A frame that does not decode, or that
    its handler refuses with L{ProtocolError}, ends the session with reason
    C{protocol-error}: a peer that breaks the protocol is not argued with.
    """

    MAX_LENGTH = MAX_FRAME
    log = Logger()

    def __init__(self, info: ISessionInfo, handler: FrameHandler) -> None:
        self.info = info
        self.peer: str = info.peerNodeID
        self.handler = handler
        self.closed = False
        self.closing = False
        #: Messages with a bad signature received on this session.
        self.badSignatures = 0
        #: Why this end closed the session ("" if it did not).
        self.closeReason = ""

    def connectionMade(self) -> None:
        self.handler.connected(self)

    def stringReceived(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            frame = decodeFrame(data)
            self.handler.frameReceived(self, frame)
        except ProtocolError as e:
            self.log.info("chat: {peer} broke the protocol: {why}", peer=self.peer, why=str(e))
            self.close("protocol-error", str(e)[:200])

    def lengthLimitExceeded(self, length: int) -> None:
        self.close("protocol-error", f"frame of {length} bytes, over {MAX_FRAME}")

    def send(self, kind: str, **fields: Any) -> None:
        if self.closed or self.closing:
            return
        self.sendString(encodeFrame(kind, **fields))  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def sendBody(self, body: bytes) -> None:
        """
        Send a frame already encoded (the same bytes to many members).
        """
        if self.closed or self.closing:
            return
        self.sendString(body)  # type: ignore[no-untyped-call]  # unannotated Twisted method

    def close(self, reason: str = "normal", detail: str = "") -> None:
        """
        End the session (what was sent is delivered first).
        """
        if self.closed or self.closing:
            return
        self.closing = True
        self.closeReason = reason
        transport: ITransport | None = self.transport
        if transport is None:
            return
        if reason == "normal":
            transport.loseConnection()
        else:
            transport.loseConnectionWithReason(reason, detail)  # type: ignore[attr-defined]  # ISession

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        code = "normal"
        if reason is not None and isinstance(reason.value, SessionClosed):
            code = reason.value.reason
        self.handler.disconnected(self, code)
