"""
The node's chat events (messages delivered, members coming and going, rooms
joined and left), numbered, kept in a bounded ring, and waited for by the
management API's long poll (C{GET /api/v1/plugins/chat/events?after=N}).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

#: Events kept for clients that fall behind.
MAX_EVENTS = 1000
#: Long polls waiting at once; more are answered at once (empty).
MAX_WAITERS = 64
#: The longest a long poll waits, in seconds.
MAX_WAIT = 30.0


class EventLog:
    """
    Numbered events; C{wait(after)} fires with those after C{after}.
    """

    def __init__(self, reactor: IReactorTime, maxEvents: int = MAX_EVENTS) -> None:
        self.reactor = reactor
        self.events: deque[dict[str, Any]] = deque(maxlen=maxEvents)
        self.last = 0
        self._waiters: list[tuple[int, Deferred[list[dict[str, Any]]]]] = []

    def add(self, kind: str, **fields: Any) -> None:
        self.last += 1
        # "at": this node's clock when it happened (delivery time for messages).
        self.events.append({"id": self.last, "type": kind, "at": self.reactor.seconds(), **fields})
        waiters, self._waiters = self._waiters, []
        for after, d in waiters:
            d.callback(self.since(after))

    def since(self, after: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["id"] > after]

    def wait(self, after: int, timeout: float) -> Deferred[list[dict[str, Any]]]:
        """
        The events after C{after}: at once if there are any (or C{after} is
        ahead of the log, e.g. after a node restart), else when the next one
        comes or C{timeout} seconds pass (then an empty list).
        """
        ready = self.since(after)
        if ready or after > self.last or len(self._waiters) >= MAX_WAITERS or timeout <= 0:
            return succeed(ready)
        entry: tuple[int, Deferred[list[dict[str, Any]]]]

        def cancel(d: Deferred[list[dict[str, Any]]]) -> None:
            self._forget(entry)
            if timer.active():
                timer.cancel()

        d: Deferred[list[dict[str, Any]]] = Deferred(cancel)
        entry = (after, d)

        def expire() -> None:
            self._forget(entry)
            if not d.called:
                d.callback([])

        timer = self.reactor.callLater(min(timeout, MAX_WAIT), expire)
        d.addBoth(_stopTimer, timer)
        self._waiters.append(entry)
        return d

    def _forget(self, entry: tuple[int, Deferred[list[dict[str, Any]]]]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)

    def close(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.callback([])


def _stopTimer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result
