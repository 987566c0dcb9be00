"""
The page's event stream (C{GET /events}, C{text/event-stream}): each client
gets the whole snapshot at once, again soon after the node changes (links,
sessions, the topology database) and at least every L{PERIOD} seconds (RTTs,
byte counts and uptime change without an event).

Bounded on purpose: at most L{MAX_CLIENTS} streams; a client that does not
read is paused by the HTTP channel and is sent only the newest snapshot when
it reads again, so a slow browser costs at most one snapshot in buffers.
Every event is a complete snapshot, so a client that reconnects (the
browser's C{EventSource} does so by itself, after C{retry} ms) is current
with its first event and needs no replay of what it missed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from appnpy.cp._interfaces import IBoundSession, NodeObserver
from appnpy.cp.controlpoint import ControlPoint
from appnpy.errors import SessionClosed

#: Streams served at once; one more is answered 503.
MAX_CLIENTS = 8
#: Seconds between snapshots when nothing happens.
PERIOD = 2.0
#: Seconds a change waits for others, so a burst of changes is one event.
COALESCE = 0.2
#: What the browser waits before it reconnects, in ms.
RETRY_MS = 2000


@implementer(IPushProducer)
class _Client:
    """
    One open stream; the HTTP channel pauses it while its transport's
    buffer is full.
    """

    def __init__(self, request: Request, caughtUp: Callable[[_Client], None]) -> None:
        self.request = request
        self.paused = False
        self.missed = False
        self._caughtUp = caughtUp

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.missed:
            self._caughtUp(self)

    def stopProducing(self) -> None:
        self.paused = True


class SnapshotStream:
    """
    Serves C{snapshot()} to every client of the event stream.
    """

    log = Logger(namespace="appnpy.ops.events")

    def __init__(
        self,
        reactor: IReactorTime,
        snapshot: Callable[[], dict[str, Any]],
        maxClients: int = MAX_CLIENTS,
        period: float = PERIOD,
    ) -> None:
        self.reactor = reactor
        self.snapshot = snapshot
        self.maxClients = maxClients
        self.clients: list[_Client] = []
        self.eventID = 0
        self._soon: IDelayedCall | None = None
        self._ticker = LoopingCall(self.push)
        self._ticker.clock = reactor
        #: Seconds between snapshots when nothing happens (read when the first client comes).
        self.period = period

    def add(self, request: Request) -> bool:
        """
        Start streaming to C{request}; C{False} (and nothing written) when
        L{MAX_CLIENTS} streams are open already.
        """
        if len(self.clients) >= self.maxClients:
            return False
        client = _Client(request, self._caughtUp)
        self.clients.append(client)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.registerProducer(client, True)
        request.write(b"retry: %d\n\n" % RETRY_MS)
        request.notifyFinish().addBoth(self._gone, client)
        if not self._ticker.running:
            self._ticker.start(self.period, now=False)
        self._send(client, self._encode())
        return True

    def changed(self) -> None:
        """
        The node changed: push a snapshot soon (one for a burst of changes).
        """
        if self.clients and self._soon is None:
            self._soon = self.reactor.callLater(COALESCE, self._fire)

    def _fire(self) -> None:
        self._soon = None
        self.push()

    def push(self) -> None:
        """
        Send the current snapshot to every client that reads.
        """
        if not self.clients:
            return
        try:
            event = self._encode()
        except Exception:
            self.log.failure("the page snapshot failed")
            return
        for client in list(self.clients):
            self._send(client, event)

    def _encode(self) -> bytes:
        self.eventID += 1
        data = json.dumps(self.snapshot(), separators=(",", ":"))
        return f"id: {self.eventID}\nevent: snapshot\ndata: {data}\n\n".encode()

    def _send(self, client: _Client, event: bytes) -> None:
        if client.paused:
            # The browser is not reading: skip; the next snapshot is whole.
            client.missed = True
            return
        client.missed = False
        client.request.write(event)

    def _caughtUp(self, client: _Client) -> None:
        if client in self.clients:
            self._send(client, self._encode())

    def _gone(self, result: None | Failure, client: _Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if not self.clients:
            self._stopTimers()

    def _stopTimers(self) -> None:
        if self._ticker.running:
            self._ticker.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None

    def stop(self) -> None:
        """
        End every stream (the node's API is stopping).
        """
        self._stopTimers()
        for client in list(self.clients):
            self.clients.remove(client)
            client.request.unregisterProducer()
            client.request.finish()


class NodeChanges(NodeObserver):
    """
    Tells a L{SnapshotStream} of the node's link and session changes.
    """

    def __init__(self, events: SnapshotStream) -> None:
        self.events = events

    def linkActive(self, cp: ControlPoint) -> None:
        self.events.changed()

    def linkLost(self, cp: ControlPoint, why: tuple[str, str]) -> None:
        self.events.changed()

    def sessionStarted(self, session: IBoundSession) -> None:
        self.events.changed()

    def sessionEnded(self, session: IBoundSession, why: SessionClosed) -> None:
        self.events.changed()
