"""
The example services, and the template for writing one (docs/rpc.md).

Enable them in a node with::

    [plugin.rpc]
    services = ["calc", "kv"]

C{calc} is a calculator; C{kv} a small key-value store whose C{watch}
calls the client back, over the same session, whenever a key changes.
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger

from appnpy_rpc.errors import SESSION_CLOSED, RPCError
from appnpy_rpc.service import Caller, Service, exported


@attrs.frozen
class Stats:
    """
    A record type: travels as the map C{{"count": ..., "mean": ...}}.
    """

    count: int
    mean: float


class Calculator(Service):
    """
    rpc:calc: arithmetic.
    """

    name = "calc"

    @exported
    def add(self, a: int, b: int) -> int:
        """The sum of a and b."""
        return a + b

    @exported
    def sub(self, a: int, b: int) -> int:
        """a minus b."""
        return a - b

    @exported
    def mul(self, a: float, b: float) -> float:
        """The product of a and b."""
        return a * b

    @exported
    def div(self, a: float, b: float) -> float:
        """a divided by b; error code division-by-zero for b == 0."""
        if b == 0:
            raise RPCError("division-by-zero", "cannot divide by zero")
        return a / b

    @exported
    def stats(self, values: list[float]) -> Stats:
        """How many values there are and their mean."""
        if not values:
            raise RPCError("empty", "no values given")
        return Stats(len(values), sum(values) / len(values))


#: The service a KeyValue client exposes to receive change callbacks.
WATCHER_SERVICE = "kv-watcher"
MAX_KEY = 256
MAX_VALUE = 64 * 1024
MAX_KEYS = 10_000
MAX_WATCHERS = 1_000


class KeyValue(Service):
    """
    rpc:kv: a key-value store of text.  A client that calls C{watch(key)}
    and exposes C{kv-watcher} on its session has C{changed(key, value)}
    called back each time the key is set (value None when deleted).
    """

    name = "kv"
    log = Logger()

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.watchers: dict[str, list[Caller]] = {}

    @exported
    def get(self, key: str) -> str | None:
        """The value of key, or None."""
        return self.values.get(key)

    @exported
    def keys(self) -> list[str]:
        """Every key, sorted."""
        return sorted(self.values)

    @exported
    def set(self, key: str, value: str) -> None:
        """Set key to value and tell its watchers."""
        if not 0 < len(key) <= MAX_KEY or len(value) > MAX_VALUE:
            raise RPCError(
                "too-large", f"keys are 1-{MAX_KEY} and values at most {MAX_VALUE} characters"
            )
        if key not in self.values and len(self.values) >= MAX_KEYS:
            raise RPCError("full", f"the store holds at most {MAX_KEYS} keys")
        self.values[key] = value
        self._notify(key, value)

    @exported
    def delete(self, key: str) -> bool:
        """Remove key; whether it was there."""
        if key not in self.values:
            return False
        del self.values[key]
        self._notify(key, None)
        return True

    @exported
    def watch(self, key: str, caller: Caller) -> None:
        """Call the caller's kv-watcher.changed(key, value) when key changes."""
        watchers = self.watchers.setdefault(key, [])
        if sum(len(w) for w in self.watchers.values()) >= MAX_WATCHERS:
            raise RPCError("full", f"at most {MAX_WATCHERS} watches")
        if caller.connection not in [w.connection for w in watchers]:
            watchers.append(caller)

    def _notify(self, key: str, value: str | None) -> None:
        for caller in list(self.watchers.get(key, [])):
            d = caller.call(WATCHER_SERVICE, "changed", key, value)
            d.addErrback(self._callbackFailed, key, caller)

    def _callbackFailed(self, failure: object, key: str, caller: Caller) -> None:
        # A watcher whose session ended (or that cannot take the callback)
        # is forgotten; the change itself has happened.
        error = getattr(failure, "value", None)
        code = error.code if isinstance(error, RPCError) else "error"
        if code != SESSION_CLOSED:
            self.log.info("kv: dropping watcher {peer}: {code}", peer=caller.peerNodeID, code=code)
        watchers = self.watchers.get(key, [])
        if caller in watchers:
            watchers.remove(caller)
        if not watchers:
            self.watchers.pop(key, None)
