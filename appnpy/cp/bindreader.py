"""
The protocol of a stream until its first message has arrived: a BIND, its
answer, or the peer's Hello.  Control points, session ends and relays all
read that one message the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from appnpy.cp.messages import Message, MessageReader
from appnpy.errors import ProtocolError


class BindReader:
    """
    Reads exactly one message, hands it on with any bytes after it, and
    reports the stream's end if it comes first.
    """

    __slots__ = ("_reader", "_onMessage", "_onLost", "transport")

    def __init__(
        self,
        onMessage: Callable[[Message, bytes], None],
        onLost: Callable[[Failure], None],
    ) -> None:
        self._reader = MessageReader()
        self._onMessage: Callable[[Message, bytes], None] | None = onMessage
        self._onLost = onLost
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        if self._onMessage is None:
            return
        try:
            messages = self._reader.feed(data, maxMessages=1)
        except ProtocolError as e:
            self._onMessage = None
            self._onLost(Failure(e))
            self.transport.abortConnection()
            return
        if messages:
            onMessage, self._onMessage = self._onMessage, None
            onMessage(messages[0], self._reader.leftover())

    def connectionLost(self, reason: Failure) -> None:
        if self._onMessage is not None:
            self._onMessage = None
            self._onLost(reason)
