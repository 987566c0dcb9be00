"""
The chat plugin's management API routes, below C{/api/v1/plugins/chat/}
(docs/chat.md lists them).  Each checks its input and answers JSON; errors
are L{APIError}s with stable codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from twisted.internet.defer import Deferred

from appnpy.api import APIError, PluginRequest
from appnpy_chat.events import MAX_WAIT
from appnpy_chat.service import ChatError, ChatService
from appnpy_chat.text import BadText, checkRoom, parseRoom

#: The longest C{POST join} waits to be a member or the host.
JOIN_WAIT = 15.0

Handler = Callable[[PluginRequest], object]


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise APIError(400, "bad-field", f"field {name!r} must be non-empty text")
    return value


def _room(value: str) -> str:
    try:
        return parseRoom(value) or checkRoom(value.lower())
    except BadText as e:
        raise APIError(400, "bad-room", str(e)) from None


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, "bad-query", f"{name} must be a whole number") from None
    return max(low, min(high, value))


def routes(serviceOf: Callable[[], ChatService]) -> dict[tuple[str, str], Handler]:
    """
    The routes, each finding the node's chat service when called.
    """

    def guarded(f: Callable[[ChatService, PluginRequest], Any]) -> Handler:
        async def run(request: PluginRequest) -> Any:
            try:
                result = f(serviceOf(), request)
                if isinstance(result, Deferred) or hasattr(result, "__await__"):
                    result = await result
                return result
            except ChatError as e:
                raise APIError(
                    409 if e.code != "no-such-node" else 404, e.code, e.message
                ) from None
            except BadText as e:
                raise APIError(400, "bad-text", str(e)) from None

        return run

    def send(service: ChatService, request: PluginRequest) -> Awaitable[Any] | Any:
        target, text = _text(request.body, "target"), _text(request.body, "text")
        room = _roomOrNone(target)
        if room is not None:
            return service.sayInRoom(room, text)
        return Deferred.fromCoroutine(service.sayDirect(target, text))

    def rooms(service: ChatService, request: PluginRequest) -> Any:
        mine = [r.summary() for r in sorted(service.rooms.values(), key=lambda r: r.name)]
        if request.query.get("known") not in ("1", "true", "yes"):
            return {"rooms": mine}
        d = cast("Deferred[list[dict[str, Any]]]", service.node.search("chat", [], maxResults=100))

        def known(results: list[dict[str, Any]]) -> dict[str, Any]:
            seen: dict[str, dict[str, Any]] = {}
            for r in results:
                name = r.get("room")
                if isinstance(name, str) and len(seen) < 100:
                    entry = seen.setdefault(name, {"room": name, "hosts": []})
                    if isinstance(r.get("node"), str):
                        entry["hosts"].append(r["node"])
            return {"rooms": mine, "known": sorted(seen.values(), key=lambda e: e["room"])}

        return d.addCallback(known)

    def join(service: ChatService, request: PluginRequest) -> Any:
        name = _room(_text(request.body, "room"))
        d = service.join(name)
        # Answer within the API's patience even if no host answers yet: the
        # room goes on trying (its role says where it stands).
        d.addTimeout(JOIN_WAIT, service.reactor)
        return d.addErrback(lambda f: service.room(name).summary())

    def leave(service: ChatService, request: PluginRequest) -> Any:
        return service.leave(_room(_text(request.body, "room")))

    def members(service: ChatService, request: PluginRequest) -> Any:
        room = service.room(_room(request.query.get("room", "")))
        return {"room": room.name, "host": room.hostID, "members": room.memberList()}

    def history(service: ChatService, request: PluginRequest) -> Any:
        target = request.query.get("room", "")
        limit = _int(request.query, "limit", service.config.history, 0, 1000)
        if target.startswith("@"):
            peer = service.resolve(target[1:]) or target[1:]
            return {
                "conversation": "@" + peer,
                "name": service.nodeName(peer),
                "messages": service.history(target, limit),
            }
        room = _room(target)
        return {"conversation": "#" + room, "messages": service.history(room, limit)}

    def presence(service: ChatService, request: PluginRequest) -> Any:
        if request.method == "GET":
            return {"nick": service.nick, "presence": service.presence}
        return {"presence": service.setPresence(_text(request.body, "presence"))}

    def nick(service: ChatService, request: PluginRequest) -> Any:
        if request.method == "GET":
            return {"nick": service.nick}
        return {"nick": service.setNick(_text(request.body, "nick"))}

    def events(service: ChatService, request: PluginRequest) -> Any:
        after = _int(request.query, "after", 0, 0, 2**62)
        timeout = _int(request.query, "timeout", 25, 0, int(MAX_WAIT))
        d = service.events.wait(after, timeout)
        return d.addCallback(lambda evs: {"events": evs, "last": service.events.last})

    return {
        ("POST", "send"): guarded(send),
        ("GET", "rooms"): guarded(rooms),
        ("POST", "join"): guarded(join),
        ("POST", "leave"): guarded(leave),
        ("GET", "members"): guarded(members),
        ("GET", "history"): guarded(history),
        ("GET", "presence"): guarded(presence),
        ("POST", "presence"): guarded(presence),
        ("GET", "nick"): guarded(nick),
        ("POST", "nick"): guarded(nick),
        ("GET", "events"): guarded(events),
    }


def _roomOrNone(target: str) -> str | None:
    try:
        return parseRoom(target)
    except BadText as e:
        raise APIError(400, "bad-room", str(e)) from None
