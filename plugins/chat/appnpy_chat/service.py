"""
The chat service of one node: its rooms, its direct-message conversations,
its nickname and presence, and the event log the operator's tools read.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from appnpy.api import (
    INode,
    IResourceDirectory,
    ISessionInfo,
    NoSuchNode,
    ResourceNotFound,
    SessionRefused,
)
from appnpy_chat.events import EventLog
from appnpy_chat.protocol import ChatProtocol
from appnpy_chat.ratelimit import TokenBuckets
from appnpy_chat.room import MAX_BAD_SIGNATURES, Room
from appnpy_chat.state import ChatState
from appnpy_chat.text import BadText, checkText, normaliseNick
from appnpy_chat.wire import (
    SIGNING_CONTEXT,
    VERSION,
    ChatMessage,
    ProtocolError,
    checkNodeID,
    dmConversation,
    signedBytes,
)


@attrs.define
class ChatConfig:
    """
    The C{[plugin.chat]} settings (docs/chat.md lists them).
    """

    history: int = 100
    maxRooms: int = 32
    maxMembers: int = 256
    maxConversations: int = 64
    rate: float = 5.0
    burst: int = 20
    rejoinGrace: float = 30.0
    mergeInterval: float = 15.0
    retryDelay: float = 1.0
    dmIdle: float = 300.0
    rejoinDelay: float = 5.0
    sessionLimit: int = 512


class ChatError(Exception):
    """
    A request of this node's user that cannot be done; C{code} is stable.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Conversation:
    """
    Direct messages with one node: recent history and the session, if open.
    """

    def __init__(self, peer: str, history: int) -> None:
        self.peer = peer
        self.history: deque[ChatMessage] = deque(maxlen=history)
        self.lastSeen = 0
        self.session: ChatProtocol | None = None
        self.opening: Deferred[ChatProtocol] | None = None
        self.idleTimer: Any = None


class ChatService:
    """
    Everything chat on one node.
    """

    log = Logger()

    def __init__(
        self,
        node: INode,
        plugin: Any,
        config: ChatConfig,
        nick: str = "",
        stateDirectory: str | None = None,
    ) -> None:
        self.node = node
        self.plugin = plugin
        self.config = config
        self.reactor: Any = node.reactor
        self.nodeID: str = node.nodeID
        self.nick = nick or _defaultNick(node.name)
        self.presence = "online"
        self.rooms: dict[str, Room] = {}
        self.hosted: set[str] = set()
        self.conversations: OrderedDict[str, Conversation] = OrderedDict()
        self.dmBuckets = TokenBuckets(self.seconds, config.rate, 2 * config.burst)
        #: This node's own messages, per room: the host's rate, so a message
        #: the host would drop is refused here, where the user hears of it.
        self.sendBuckets = TokenBuckets(self.seconds, config.rate, config.burst)
        self.events = EventLog(self.reactor)
        self.counts: dict[str, int] = {"sent": 0, "delivered": 0}
        self.drops: dict[str, int] = {}
        self._seq = 0
        self.stopped = False
        self._opening: dict[str, list[Deferred[ChatProtocol]]] = {}
        self._settling: dict[str, list[Deferred[dict[str, Any]]]] = {}
        self.state = ChatState(stateDirectory) if stateDirectory else None
        self._rejoin: Any = None
        if self.state is not None:
            savedNick, rooms = self.state.load(config.maxRooms)
            self.nick = savedNick or self.nick
            if rooms:
                # After the node has started and found its neighbours.
                self._rejoin = self.reactor.callLater(config.rejoinDelay, self._rejoinAll, rooms)

    def _rejoinAll(self, rooms: list[str]) -> None:
        self._rejoin = None
        for name in rooms:
            self.log.info("chat: rejoining room {room}", room=name)
            self.join(name).addErrback(lambda f: None)

    def save(self) -> None:
        if self.state is not None:
            self.state.save(self.nick, list(self.rooms))

    def seconds(self) -> float:
        return float(self.reactor.seconds())

    def nodeName(self, nodeID: str) -> str:
        try:
            return str(self.node.nodeName(nodeID))
        except Exception:
            return ""

    # -- signing -------------------------------------------------------------------

    def nextSeq(self) -> int:
        """
        Sequence numbers follow the clock (in milliseconds) and never repeat:
        a restarted node keeps sending numbers its receivers have not seen,
        without keeping any state.
        """
        self._seq = max(self._seq + 1, int(self.seconds() * 1000))
        return self._seq

    def sign(self, room: str, text: str) -> ChatMessage:
        seq, now = self.nextSeq(), self.seconds()
        data = signedBytes(room, self.nodeID, seq, now, self.nick, text)
        sig = self.node.sign(SIGNING_CONTEXT, data)
        return ChatMessage(room, self.nodeID, seq, now, self.nick, text, self.node.publicKey, sig)

    # -- directory -------------------------------------------------------------------

    def resources(self) -> list[str]:
        return sorted(f"chat:{name}" for name in self.hosted)

    def offer(self, name: str, on: bool) -> None:
        before = set(self.hosted)
        if on:
            self.hosted.add(name)
        else:
            self.hosted.discard(name)
        if self.hosted != before and IResourceDirectory.providedBy(self.node):
            IResourceDirectory(self.node).resourcesChanged(self.plugin)

    def locate(self, name: str) -> Deferred[list[str]]:
        """
        The nodes offering C{chat:<name>}, none when the directory has none.
        """
        d = cast("Deferred[list[str]]", self.node.locate(f"chat:{name}"))

        def notFound(f: Any) -> list[str]:
            f.trap(ResourceNotFound)
            return []

        return d.addCallback(lambda owners: [checkNodeID(o) for o in owners]).addErrback(notFound)

    def hosts(self, name: str) -> Deferred[list[str]]:
        """
        Every node that says it hosts room C{name}, by a network-wide
        keyword search (a locate may stop at this node's own offer).  A node
        named here is only a claim: opening a session to it authenticates it.
        """
        d = cast("Deferred[list[dict[str, Any]]]", self.node.search("chat", [name], maxResults=100))

        def nodes(results: list[dict[str, Any]]) -> list[str]:
            found = set()
            for r in results:
                node = r.get("node")
                if r.get("room") == name and isinstance(node, str):
                    try:
                        found.add(checkNodeID(node))
                    except ProtocolError:
                        pass
            return sorted(found)

        return d.addCallback(nodes)

    def openRoomSession(
        self, host: str, name: str, factory: Callable[[ISessionInfo], ChatProtocol]
    ) -> Deferred[Any]:
        return cast(
            "Deferred[Any]",
            self.node.openSession(host, "chat", factory, {"v": VERSION, "room": name}),
        )

    # -- rooms ---------------------------------------------------------------------

    def join(self, name: str) -> Deferred[dict[str, Any]]:
        """
        Join room C{name}: connect to its host if the directory knows one,
        else create it (this node hosts it).  Fires once the node is a member
        or the host.
        """
        room = self.rooms.get(name)
        if room is not None and room.role in ("member", "host"):
            return succeed(room.summary())
        waiting: Deferred[dict[str, Any]] = Deferred()
        if room is not None:
            self._settling.setdefault(name, []).append(waiting)
        else:
            if len(self.rooms) >= self.config.maxRooms:
                raise ChatError("too-many-rooms", f"this node is in {self.config.maxRooms} rooms")
            room = Room(self, name)
            self.rooms[name] = room
            # Waiting before locating: the answer may come at once.
            self._settling.setdefault(name, []).append(waiting)
            self.events.add("room", room=name, state="joining", host=None)
            self.save()
            d = self.locate(name)

            def located(owners: list[str]) -> None:
                room.candidates = sorted(o for o in owners if o != self.nodeID)
                self.joinNext(room)

            def failed(f: Any) -> list[str]:
                # The directory cannot answer (this node is stopping, or has
                # none): as if nobody had the room.
                self.log.info(
                    "chat: locating {room} failed: {why}", room=name, why=f.getErrorMessage()
                )
                return []

            d.addErrback(failed).addCallback(located)
        return waiting

    def joinNext(self, room: Room) -> None:
        if room.role != "joining":
            return
        if room.candidates:
            room.connectTo(room.candidates.pop(0))
        else:
            room.becomeHost()

    def roleChanged(self, room: Room) -> None:
        if room.role in ("member", "host", "left"):
            for d in self._settling.pop(room.name, []):
                if not d.called:
                    d.callback(room.summary())

    def leave(self, name: str) -> dict[str, Any]:
        room = self.rooms.pop(name, None)
        if room is None:
            raise ChatError("not-in-room", f"this node is not in room {name}")
        room.leave()
        self.save()
        self.roleChanged(room)
        self.events.add("room", room=name, state="left", host=None)
        return {"room": name, "left": True}

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise ChatError("not-in-room", f"this node is not in room {name}")
        return room

    # -- sending -------------------------------------------------------------------

    def sayInRoom(self, name: str, text: str) -> dict[str, Any]:
        room = self.room(name)
        checkText(text)
        if not self.sendBuckets.allow(name):
            raise ChatError(
                "rate-limited",
                f"over {self.config.rate:g} messages a second (bursts of {self.config.burst})"
                f" in #{name}: the host would drop it; send it again in a moment",
            )
        msg = self.sign(name, text)
        room.say(msg)
        self.counts["sent"] += 1
        return {"room": name, "seq": msg.seq, "queued": room.role not in ("member", "host")}

    async def sayDirect(self, target: str, text: str) -> dict[str, Any]:
        """
        Send a direct message to the node C{target} names (node ID, prefix or
        CP name), over a chat session of its own (routed, TLS end to end:
        the peer's node ID is authenticated).
        """
        checkText(text)
        peer = self.resolve(target)
        if peer == self.nodeID:
            raise ChatError("self", "that is this node")
        proto = await self._dmSession(peer or target)
        conversation = self.conversation(proto.peer)
        msg = self.sign(dmConversation(proto.peer), text)
        conversation.history.append(msg)
        self._idle(conversation)
        proto.send("msg", m=msg.toWire())
        self.counts["sent"] += 1
        self.events.add(
            "message", conversation="@" + proto.peer, message=msg.toJSON(), history=False
        )
        return {"to": proto.peer, "name": self.nodeName(proto.peer), "seq": msg.seq}

    def resolve(self, target: str) -> str | None:
        try:
            return str(self.node.resolveNode(target))
        except NoSuchNode:
            return None

    async def _dmSession(self, destination: str) -> ChatProtocol:
        """
        The open session to C{destination}, or a new one; messages sent while
        it opens wait for the same session, so they arrive in order.
        """
        existing = self.conversations.get(destination)
        if existing is not None and existing.session is not None:
            return existing.session
        waiting: Deferred[ChatProtocol] = Deferred()
        waiters = self._opening.get(destination)
        if waiters is not None:
            waiters.append(waiting)
        else:
            self._opening[destination] = [waiting]
            self._startOpening(destination)
        return await waiting

    def _startOpening(self, destination: str) -> None:
        """
        Open a direct session; everyone waiting for it (the first caller
        first) gets it in the order they asked, so their messages are sent
        in that order.
        """
        handler = _DMSide(self)
        d = cast(
            "Deferred[ChatProtocol]",
            self.node.openSession(
                destination,
                "chat",
                lambda info: ChatProtocol(info, handler),
                {"v": VERSION, "dm": True},
            ),
        )

        def opened(proto: ChatProtocol) -> None:
            for w in self._opening.pop(destination, []):
                w.callback(proto)

        def failed(f: Any) -> None:
            error = f.value
            if isinstance(error, SessionRefused):
                error = ChatError(error.reason, str(error))
            elif isinstance(error, (NoSuchNode, ResourceNotFound)):
                # The core's text ("No link to that node exists. Connect to it
                # first") is wrong advice here: a direct message needs no link.
                error = ChatError(
                    "no-such-node",
                    f"no reachable node is called {destination!r}: give a node ID, a"
                    " unique prefix of one, or a CP name that `appn topology` lists",
                )
            for w in self._opening.pop(destination, []):
                w.errback(error)

        d.addCallbacks(opened, failed)

    def conversation(self, peer: str) -> Conversation:
        conversation = self.conversations.pop(peer, None)
        if conversation is None:
            conversation = Conversation(peer, self.config.history)
            while len(self.conversations) >= self.config.maxConversations:
                _, oldest = self.conversations.popitem(last=False)
                if oldest.session is not None:
                    oldest.session.close("normal")
        self.conversations[peer] = conversation
        return conversation

    def _idle(self, conversation: Conversation) -> None:
        """
        Close an idle conversation's session after C{dm-idle} seconds (the
        next message opens a new one).
        """
        if conversation.idleTimer is not None and conversation.idleTimer.active():
            conversation.idleTimer.reset(self.config.dmIdle)
            return

        def close() -> None:
            if conversation.session is not None:
                conversation.session.close("normal")

        conversation.idleTimer = self.reactor.callLater(self.config.dmIdle, close)

    def dmReceived(self, proto: ChatProtocol, msg: ChatMessage) -> None:
        """
        A direct message: its signature, its sender (the session's
        authenticated peer) and its recipient (this node) must all agree.
        """
        if msg.sender != proto.peer:
            self.dropped("forged-sender")
            return
        if msg.room != dmConversation(self.nodeID):
            self.dropped("wrong-room")
            return
        conversation = self.conversation(proto.peer)
        if msg.seq <= conversation.lastSeen:
            self.dropped("duplicate")
            return
        # The peer is authenticated: its rate is checked before the
        # signature, so a flood costs no signature checks.
        if not self.dmBuckets.allow(proto.peer):
            self.dropped("rate-limited")
            return
        if not msg.verify():
            self.dropped("bad-signature")
            proto.badSignatures += 1
            if proto.badSignatures >= MAX_BAD_SIGNATURES:
                raise ProtocolError(f"{proto.badSignatures} messages with bad signatures")
            return
        conversation.lastSeen = msg.seq
        conversation.history.append(msg)
        self._idle(conversation)
        self.counts["delivered"] += 1
        self.events.add(
            "message", conversation="@" + proto.peer, message=msg.toJSON(), history=False
        )

    # -- nick and presence -----------------------------------------------------------

    def setNick(self, nick: str) -> str:
        try:
            self.nick = normaliseNick(nick)
        except BadText as e:
            raise ChatError("bad-nick", str(e)) from None
        self.save()
        self._stateChanged()
        return self.nick

    def setPresence(self, presence: str) -> str:
        if presence not in ("online", "away"):
            raise ChatError("bad-presence", "presence must be online or away")
        self.presence = presence
        self._stateChanged()
        return presence

    def _stateChanged(self) -> None:
        for room in self.rooms.values():
            room.stateChanged()
        self.events.add("presence", nick=self.nick, presence=self.presence)

    # -- what rooms report -------------------------------------------------------------

    def delivered(self, room: Room, msg: ChatMessage, fromHistory: bool) -> None:
        if msg.sender != self.nodeID:
            self.counts["delivered"] += 1
        self.events.add(
            "message", conversation="#" + room.name, message=msg.toJSON(), history=fromHistory
        )

    def dropped(self, why: str) -> None:
        self.drops[why] = self.drops.get(why, 0) + 1

    def history(self, target: str, limit: int) -> list[dict[str, Any]]:
        if target.startswith("@"):
            peer = self.resolve(target[1:]) or target[1:]
            found = self.conversations.get(peer)
            messages = list(found.history) if found else []
        else:
            messages = list(self.room(target).history)
        return [m.toJSON() for m in messages[-limit:]] if limit > 0 else []

    # -- sessions peers open -----------------------------------------------------------

    def buildProtocol(self, info: ISessionInfo) -> ChatProtocol:
        params = info.parameters
        if params.get("v") != VERSION:
            raise SessionRefused("incompatible-version", f"chat protocol {VERSION} only")
        if params.get("dm") is True:
            return ChatProtocol(info, _DMSide(self))
        name = params.get("room")
        if not isinstance(name, str) or len(name) > 64:
            raise SessionRefused("protocol-error", "a chat session names a room or dm")
        return ChatProtocol(info, _HostSide(self, name))

    def stop(self) -> None:
        """
        The node has stopped: no more timers, elections or events.
        """
        self.stopped = True
        if self._rejoin is not None and self._rejoin.active():
            self._rejoin.cancel()
        for room in list(self.rooms.values()):
            room.role = "left"
            for timer in room._timers:
                if timer.active():
                    timer.cancel()
        for conversation in self.conversations.values():
            if conversation.idleTimer is not None and conversation.idleTimer.active():
                conversation.idleTimer.cancel()
        self.events.close()


def _defaultNick(cpName: str) -> str:
    name = cpName.rsplit(".", 1)[-1] if cpName else "anonymous"
    try:
        return normaliseNick(name[:32].lower())
    except BadText:
        return "anonymous"


class _HostSide:
    """
    A session a member opened to this node for a room: served by the room if
    this node hosts it, else answered with a redirect to the host it knows.
    """

    def __init__(self, service: ChatService, name: str) -> None:
        self.service = service
        self.name = name

    def _room(self) -> Room | None:
        return self.service.rooms.get(self.name)

    def connected(self, proto: ChatProtocol) -> None:
        room = self._room()
        if room is None or room.role != "host":
            proto.send("redirect", host=room.hostID if room is not None else None)
            proto.close("normal")

    def frameReceived(self, proto: ChatProtocol, frame: dict[str, Any]) -> None:
        room = self._room()
        if room is None or room.role != "host":
            proto.close("normal")
            return
        room.hostFrame(proto, frame)

    def disconnected(self, proto: ChatProtocol, reason: str) -> None:
        room = self._room()
        if room is not None:
            room.hostLost(proto)


class _DMSide:
    """
    Either end of a direct-message session.
    """

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def connected(self, proto: ChatProtocol) -> None:
        conversation = self.service.conversation(proto.peer)
        if conversation.session is not None and conversation.session is not proto:
            conversation.session.close("normal")
        conversation.session = proto

    def frameReceived(self, proto: ChatProtocol, frame: dict[str, Any]) -> None:
        if frame["t"] == "msg":
            self.service.dmReceived(proto, ChatMessage.fromWire(frame.get("m")))
        elif frame["t"] == "error":
            pass
        else:
            raise ProtocolError(f"unexpected frame {frame['t'][:32]!r} in a direct conversation")

    def disconnected(self, proto: ChatProtocol, reason: str) -> None:
        conversation = self.service.conversations.get(proto.peer)
        if conversation is not None and conversation.session is proto:
            conversation.session = None
