"""
A chat room as one node sees it: the replica every member keeps (members and
recent history), and the role the node plays in it: host (offers
C{chat:<name>}, orders and fans out messages) or member (connected to the
host).  docs/chat.md explains the design; docs/protocol.md section 19 the
frames.

The roles and their changes:

    joining --welcome--> member --host session lost--> electing
    electing --lowest live ID is me--> host
    electing --welcome from the elected node--> member
    host --another host with a lower ID found--> member (merge)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from appnpy.api import ISessionInfo
from appnpy_chat.protocol import ChatProtocol
from appnpy_chat.ratelimit import TokenBuckets
from appnpy_chat.text import BadText, checkNick
from appnpy_chat.wire import (
    VERSION,
    ChatMessage,
    MemberInfo,
    ProtocolError,
    checkNodeID,
    checkPresence,
    encodeFrame,
    field,
)

if TYPE_CHECKING:
    from appnpy_chat.service import ChatService

#: How many redirects a member follows before it elects instead.
MAX_REDIRECTS = 4
#: Attempts of an election before the node hosts the room itself.
MAX_ELECTION_ATTEMPTS = 4
#: Sender sequence numbers remembered per room (for duplicate detection).
MAX_SENDERS = 1024
#: Messages with bad signatures a session may send before it is cut off.
MAX_BAD_SIGNATURES = 10
#: Messages queued while a member has no host (sent once it has one).
MAX_PENDING = 16


class Room:
    """
    One room this node is in.
    """

    log = Logger()

    def __init__(self, service: ChatService, name: str) -> None:
        self.service = service
        self.name = name
        self.me = service.nodeID
        #: "joining", "member", "electing", "host" or "left".
        self.role = "joining"
        self.hostID: str | None = None
        self.members: dict[str, MemberInfo] = {}
        self.history: deque[ChatMessage] = deque(maxlen=service.config.history)
        self.lastSeen: OrderedDict[str, int] = OrderedDict()
        # Host side: the members' sessions; member side: the session to the host.
        self.sessions: dict[str, ChatProtocol] = {}
        self.upstream: ChatProtocol | None = None
        self.pending: deque[ChatMessage] = deque(maxlen=MAX_PENDING)
        self.hostBuckets = TokenBuckets(service.seconds, service.config.rate, service.config.burst)
        # A receiver allows twice the host's burst: an honest host's relaying
        # can bunch messages up, a hostile host's flood is still bounded.
        self.receiveBuckets = TokenBuckets(
            service.seconds, service.config.rate, 2 * service.config.burst
        )
        self._timers: list[Any] = []
        #: Why the last message offered to accept() was dropped.
        self.lastDrop = ""
        self._redirected: str | None = None
        self._excluded: set[str] = set()
        #: Lost hosts tried again once, in this election.
        self._retriedLost: set[str] = set()
        self._attempts = 0
        self._graceTimer: Any = None
        self._mergeTimer: Any = None
        #: While joining: the owners the directory named, to try in turn.
        self.candidates: list[str] = []

    # -- what every role shares -----------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "room": self.name,
            "role": self.role,
            "host": self.hostID,
            "host_name": self.service.nodeName(self.hostID) if self.hostID else "",
            "members": len(self.members),
        }

    def memberList(self) -> list[dict[str, Any]]:
        return [
            {**m.toWire(), "name": self.service.nodeName(m.node), "host": m.node == self.hostID}
            for m in sorted(self.members.values(), key=lambda m: m.node)
        ]

    def accept(self, msg: ChatMessage, fromHistory: bool = False, viaHost: bool = True) -> bool:
        """
        Take a message into the replica if it is new: signed by its sender for
        this room, within the sender's rate, and later than the sender's last
        one seen here.  Answers whether it was delivered.
        """
        self.lastDrop = ""
        if msg.room != self.name:
            return self._drop("wrong-room")
        # Duplicates first: dropping one costs no signature check.
        if msg.seq <= self.lastSeen.get(msg.sender, 0):
            return self._drop("duplicate")
        if not msg.verify():
            return self._drop("bad-signature")
        if not fromHistory and viaHost and msg.sender != self.me:
            if not self.receiveBuckets.allow(msg.sender):
                return self._drop("rate-limited")
        self.lastSeen.pop(msg.sender, None)
        self.lastSeen[msg.sender] = msg.seq
        while len(self.lastSeen) > MAX_SENDERS:
            self.lastSeen.popitem(last=False)
        self.history.append(msg)
        self.service.delivered(self, msg, fromHistory)
        return True

    def _drop(self, why: str) -> bool:
        self.lastDrop = why
        self.service.dropped(why)
        return False

    def _checkSignatures(self, proto: ChatProtocol) -> None:
        """
        An honest peer never sends a message whose signature fails (hosts
        check before relaying): a session that sends a few is cut off, so a
        flood of them costs a bounded number of checks.
        """
        if self.lastDrop == "bad-signature":
            proto.badSignatures += 1
            if proto.badSignatures >= MAX_BAD_SIGNATURES:
                raise ProtocolError(f"{proto.badSignatures} messages with bad signatures")

    def setMember(self, info: MemberInfo) -> None:
        old = self.members.get(info.node)
        if info.presence == "gone":
            if self.members.pop(info.node, None) is None:
                return
        else:
            if old == info:
                return
            if old is None and len(self.members) >= self.service.config.maxMembers:
                return
            self.members[info.node] = info
        self.service.events.add(
            "member",
            room=self.name,
            node=info.node,
            name=self.service.nodeName(info.node),
            nick=info.nick,
            presence=info.presence,
        )

    def selfInfo(self) -> MemberInfo:
        return MemberInfo(self.me, self.service.nick, self.service.presence)

    def _setRole(self, role: str) -> None:
        if self.role == role:
            return
        self.role = role
        self.service.roleChanged(self)
        self.service.events.add("room", room=self.name, state=role, host=self.hostID)
        self.log.info(
            "chat: room {room} is now {role} (host {host})",
            room=self.name,
            role=role,
            host=self.hostID,
        )

    def _later(self, delay: float, f: Callable[[], None]) -> Any:
        self._timers = [t for t in self._timers if t.active()]
        if self.service.stopped:
            return None
        timer = self.service.reactor.callLater(delay, f)
        self._timers.append(timer)
        return timer

    # -- sending ------------------------------------------------------------------

    def say(self, msg: ChatMessage) -> None:
        """
        Send a message this node signed: into the replica at once, then to
        every member (host) or to the host (member; queued while electing).
        """
        self.accept(msg, viaHost=False)
        if self.role == "host":
            self.fanOut(msg, exceptNode=self.me)
        elif self.upstream is not None and self.role == "member":
            self.upstream.send("msg", m=msg.toWire())
        else:
            self.pending.append(msg)

    def stateChanged(self) -> None:
        """
        This node's nick or presence changed: tell the room.
        """
        if self.role == "host":
            self.setMember(self.selfInfo())
            self.broadcast("member", **self.selfInfo().toWire())
        else:
            # The host will echo it to everyone else; our replica changes now.
            if self.me in self.members:
                self.setMember(self.selfInfo())
            if self.upstream is not None:
                self.upstream.send("state", nick=self.service.nick, presence=self.service.presence)

    # -- host side -------------------------------------------------------------------

    def becomeHost(self) -> None:
        """
        Host the room: offer C{chat:<name>}, keep the replica's members as
        they were (each has C{rejoin-grace} seconds to reconnect before it
        is dropped).
        """
        self.hostID = self.me
        self.upstream = None
        self.sessions = {}
        self._excluded.clear()
        self._attempts = 0
        self.members[self.me] = self.selfInfo()
        self._setRole("host")
        self.service.offer(self.name, True)
        expecting = set(self.members) - {self.me}
        if expecting:
            self._graceTimer = self._later(
                self.service.config.rejoinGrace, lambda: self._dropAbsent(expecting)
            )
        for msg in list(self.pending):
            self.fanOut(msg, exceptNode=self.me)
        self.pending.clear()
        self._scheduleMergeCheck(self.service.config.mergeInterval / 3)

    def _dropAbsent(self, expecting: set[str]) -> None:
        if self.role != "host":
            return
        for node in expecting:
            if node in self.members and node not in self.sessions:
                gone = MemberInfo(node, self.members[node].nick, "gone")
                self.setMember(gone)
                self.broadcast("member", **gone.toWire())

    def fanOut(self, msg: ChatMessage, exceptNode: str) -> None:
        body = encodeFrame("msg", m=msg.toWire())  # once for every member
        for node, proto in list(self.sessions.items()):
            if node != exceptNode:
                proto.sendBody(body)

    def broadcast(self, kind: str, **fields: Any) -> None:
        body = encodeFrame(kind, **fields)
        for proto in list(self.sessions.values()):
            proto.sendBody(body)

    def hostFrame(self, proto: ChatProtocol, frame: dict[str, Any]) -> None:
        """
        A frame from a member's session, at the host.
        """
        kind = frame["t"]
        peer = proto.peer
        if kind == "join" or kind == "state":
            try:
                nick = checkNick(frame.get("nick"))
            except BadText as e:
                raise ProtocolError(str(e)) from None
            presence = checkPresence(frame.get("presence"))
            if presence == "gone":
                raise ProtocolError("a member cannot announce itself gone; it leaves")
            if kind == "join":
                if self.sessions.get(peer) is proto:
                    raise ProtocolError("a second join on one session")
                if peer in self.sessions and self.sessions[peer] is not proto:
                    # The member reconnected: the new session wins.
                    old = self.sessions.pop(peer)
                    old.handler = _Ignore()
                    old.close("normal")
                if peer not in self.members and len(self.members) >= self.service.config.maxMembers:
                    proto.send("error", code="room-full", message="the room has no room left")
                    proto.close("refused-by-plugin", "room full")
                    return
                self.sessions[peer] = proto
                info = MemberInfo(peer, nick, presence)
                self.setMember(info)
                proto.send(
                    "welcome",
                    room=self.name,
                    host=self.me,
                    members=[m.toWire() for m in self.members.values()],
                )
                for msg in self.history:
                    proto.send("msg", m=msg.toWire(), h=True)
                self.broadcast("member", **info.toWire())
            elif self.sessions.get(peer) is proto:
                # Each change is sent to every member: limited like messages.
                if not self.hostBuckets.allow("state " + peer):
                    self.service.dropped("rate-limited")
                    return
                info = MemberInfo(peer, nick, presence)
                self.setMember(info)
                self.broadcast("member", **info.toWire())
        elif kind == "msg":
            if self.sessions.get(peer) is not proto:
                raise ProtocolError("msg before join")
            msg = ChatMessage.fromWire(frame.get("m"))
            if msg.sender != peer:
                # A member relays only its own messages: a message claiming
                # another sender is a forgery (or a replay) and never relayed.
                self.service.dropped("forged-sender")
                return
            if not self.hostBuckets.allow(peer):
                self.service.dropped("rate-limited")
                proto.send("error", code="rate-limited", message="slow down")
                return
            if self.accept(msg, viaHost=False):
                self.fanOut(msg, exceptNode=peer)
            else:
                self._checkSignatures(proto)
        else:
            raise ProtocolError(f"unexpected frame {kind[:32]!r} at the host")

    def hostLost(self, proto: ChatProtocol) -> None:
        if self.sessions.get(proto.peer) is not proto:
            return
        del self.sessions[proto.peer]
        member = self.members.get(proto.peer)
        if member is not None and self.role == "host":
            gone = MemberInfo(proto.peer, member.nick, "gone")
            self.setMember(gone)
            self.broadcast("member", **gone.toWire())

    def _scheduleMergeCheck(self, delay: float) -> None:
        if self._mergeTimer is not None and self._mergeTimer.active():
            self._mergeTimer.cancel()
        self._mergeTimer = self._later(delay, self._mergeCheck)

    def _mergeCheck(self) -> None:
        """
        Two members may both have made themselves host (a split, or a race of
        two first joiners): each host looks for the room's other owners, and
        one with a higher node ID joins the lowest as a member, telling its
        own members to follow.
        """
        if self.role != "host":
            return
        self._scheduleMergeCheck(self.service.config.mergeInterval)
        d = self.service.hosts(self.name)

        def found(owners: list[str]) -> None:
            lower = sorted(o for o in owners if o < self.me)
            if lower and self.role == "host":
                self.log.info(
                    "chat: room {room} has a host with a lower ID, {other}: merging",
                    room=self.name,
                    other=lower[0],
                )
                self._connect(lower[0], merging=True)

        d.addCallbacks(found, lambda f: None)

    def _stopHosting(self, newHost: str) -> None:
        for proto in list(self.sessions.values()):
            proto.send("redirect", host=newHost)
            proto.handler = _Ignore()
            proto.close("normal")
        self.sessions = {}
        self.service.offer(self.name, False)

    # -- member side ------------------------------------------------------------------

    def connectTo(self, host: str) -> None:
        self._connect(host, merging=False)

    def _connect(self, host: str, merging: bool) -> None:
        """
        Open a session to C{host} for this room.  The peer answers with a
        welcome (it hosts the room) or a redirect (it does not).
        """
        attempt = _Attempt(self, host, merging)
        d: Deferred[Any] = self.service.openRoomSession(host, self.name, attempt.build)
        d.addErrback(attempt.failed)

    def memberFrame(self, proto: ChatProtocol, frame: dict[str, Any], attempt: _Attempt) -> None:
        """
        A frame from the host (or a node we asked to be host), at a member.
        """
        kind = frame["t"]
        if kind == "welcome":
            if attempt.welcomed:
                raise ProtocolError("second welcome")
            host = checkNodeID(frame.get("host"))
            if host != proto.peer or field(frame, "room", str) != self.name:
                raise ProtocolError("welcome for another host or room")
            members = field(frame, "members", list)
            if len(members) > self.service.config.maxMembers:
                raise ProtocolError("more members than this node keeps")
            infos = [MemberInfo.fromWire(m) for m in members]
            attempt.welcomed = True
            attempt.historyLeft = self.service.config.history
            self._welcomed(proto, attempt, infos)
        elif not attempt.welcomed:
            if kind == "redirect":
                target = frame.get("host")
                attempt.redirect = None if target is None else checkNodeID(target)
                proto.close("normal")
            elif kind == "error":
                attempt.error = str(frame.get("code", ""))[:64]
                proto.close("normal")
            else:
                raise ProtocolError(f"{kind[:32]!r} before welcome")
        elif kind == "msg":
            msg = ChatMessage.fromWire(frame.get("m"))
            # At most `history` backlog messages after a welcome escape the
            # rate limit; a host marking more as history is limited as usual.
            fromHistory = frame.get("h") is True and attempt.historyLeft > 0
            if fromHistory:
                attempt.historyLeft -= 1
            if not self.accept(msg, fromHistory=fromHistory):
                self._checkSignatures(proto)
        elif kind == "member":
            info = MemberInfo.fromWire(frame)
            if info.node != self.me:
                self.setMember(info)
        elif kind == "redirect":
            target = frame.get("host")
            self._redirected = None if target is None else checkNodeID(target)
            proto.close("normal")
        elif kind == "error":
            self.service.events.add(
                "error",
                room=self.name,
                code=str(frame.get("code", ""))[:64],
                message=str(frame.get("message", ""))[:200],
            )
        else:
            raise ProtocolError(f"unexpected frame {kind[:32]!r} at a member")

    def _welcomed(self, proto: ChatProtocol, attempt: _Attempt, infos: list[MemberInfo]) -> None:
        if self.role == "left":
            proto.close("normal")
            return
        if attempt.merging != (self.role == "host"):
            # A merge welcomed after we stopped hosting, or an election's
            # late answer after we became host (the merge check settles two
            # hosts): not wanted.
            proto.close("normal")
            return
        if attempt.merging:
            self._stopHosting(proto.peer)
        if self.upstream is not None and self.upstream is not proto:
            old = self.upstream
            self.upstream = None
            old.close("normal")
        self.upstream = proto
        self.hostID = proto.peer
        self._excluded.clear()
        self._attempts = 0
        self._redirected = None
        self.members = {}
        for info in infos:
            self.setMember(info)
        self._setRole("member")
        for msg in list(self.pending):
            proto.send("msg", m=msg.toWire())
        self.pending.clear()

    def attemptEnded(self, proto: ChatProtocol, attempt: _Attempt, reason: str) -> None:
        """
        A session to a (would-be) host ended.
        """
        if self.role == "left":
            return
        if attempt.merging and not attempt.welcomed:
            return  # still host; the next merge check tries again
        if attempt.welcomed and proto is not self.upstream:
            return  # a replaced session
        if attempt.welcomed:
            self.upstream = None
            lost = proto.peer
            target, self._redirected = self._redirected, None
            if target is not None:
                self.log.info(
                    "chat: room {room}: host {host} sent us to {target}",
                    room=self.name,
                    host=lost,
                    target=target,
                )
                self._setRole("electing")
                self.connectTo(target)
                return
            self.log.info(
                "chat: room {room} lost its host {host} ({reason}): electing",
                room=self.name,
                host=lost,
                reason=reason,
            )
            gone = self.members.get(lost)
            if gone is not None:
                self.setMember(MemberInfo(lost, gone.nick, "gone"))
            self._excluded = {lost}
            # A host this node cut off for breaking the protocol is not
            # tried again in this election, whatever the others say.
            self._retriedLost = {lost} if proto.closeReason == "protocol-error" else set()
            self._attempts = 0
            self._setRole("electing")
            self.elect()
            return
        # Never welcomed: a redirect, an error, or a session that failed.
        self.attemptFailed(attempt, attempt.redirect)

    def attemptFailed(self, attempt: _Attempt, redirect: str | None) -> None:
        if self.role in ("left", "host", "member"):
            return
        if attempt.error == "room-full":
            self.service.events.add("error", room=self.name, code="room-full", message="")
            self.service.leave(self.name)
            return
        if (
            redirect is not None
            and redirect != self.me
            and redirect not in self._excluded
            and attempt.hops < MAX_REDIRECTS
        ):
            nxt = _Attempt(self, redirect, False, attempt.hops + 1)
            self.service.openRoomSession(redirect, self.name, nxt.build).addErrback(nxt.failed)
            return
        if self.role == "joining":
            # The owner the directory named is no host (a stale record, or
            # it left): try the next one, else create the room.
            self.service.joinNext(self)
            return
        if (
            redirect is not None
            and redirect in self._excluded
            and redirect not in self._retriedLost
            and not attempt.merging
        ):
            # The candidate still reaches the host we lost: maybe only our
            # route to it broke.  Try the host itself once more.
            self._retriedLost.add(redirect)
            again = _Attempt(self, redirect, False, attempt.hops + 1)
            self.service.openRoomSession(redirect, self.name, again.build).addErrback(again.failed)
            return
        # The candidate still follows the lost host (it has not noticed yet),
        # or could not be reached (routes are still changing): try again a
        # little later, a few times, then pass over it.  A candidate that
        # answered it is not in the room at all is passed over at once.
        self._attempts += 1
        notInRoom = attempt.accepted and redirect is None
        if notInRoom or self._attempts >= MAX_ELECTION_ATTEMPTS:
            self._excluded.add(attempt.host)
            self._attempts = 0
        self._later(self.service.config.retryDelay, self.elect)

    def elect(self) -> None:
        """
        The old host is gone: the live member with the lowest node ID hosts
        now.  Every member computes the same answer from the same replica.
        """
        if self.role != "electing":
            return
        candidates = sorted(
            node
            for node, info in self.members.items()
            if info.presence != "gone" and node not in self._excluded
        )
        if self.me not in candidates:
            candidates.append(self.me)
            candidates.sort()
        if candidates[0] == self.me:
            self.becomeHost()
        else:
            self.connectTo(candidates[0])

    # -- leaving -------------------------------------------------------------------

    def leave(self) -> None:
        """
        Leave the room: a member closes its session (the host says it is gone);
        a host closes every member's session, and they elect a new host.
        """
        wasHost = self.role == "host"
        self.role = "left"
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if wasHost:
            for proto in list(self.sessions.values()):
                proto.close("shutting-down", "the host left the room")
            self.sessions = {}
            self.service.offer(self.name, False)
        if self.upstream is not None:
            self.upstream.close("normal")
            self.upstream = None


class _Ignore:
    """
    The handler of a session its room no longer wants.
    """

    def connected(self, proto: ChatProtocol) -> None:
        pass

    def frameReceived(self, proto: ChatProtocol, frame: dict[str, Any]) -> None:
        pass

    def disconnected(self, proto: ChatProtocol, reason: str) -> None:
        pass


class _Attempt:
    """
    One session a member opens to a node it takes to be the host.
    """

    def __init__(self, room: Room, host: str, merging: bool, hops: int = 0) -> None:
        self.room = room
        self.host = host
        self.merging = merging
        self.hops = hops
        self.welcomed = False
        self.redirect: str | None = None
        self.error = ""
        self.done = False
        self.accepted = False
        self.historyLeft = 0

    def build(self, info: ISessionInfo) -> ChatProtocol:
        return ChatProtocol(info, self)

    def connected(self, proto: ChatProtocol) -> None:
        self.accepted = True
        service = self.room.service
        proto.send("join", nick=service.nick, presence=service.presence, v=VERSION)

    def frameReceived(self, proto: ChatProtocol, frame: dict[str, Any]) -> None:
        self.room.memberFrame(proto, frame, self)

    def disconnected(self, proto: ChatProtocol, reason: str) -> None:
        if not self.done:
            self.done = True
            self.room.attemptEnded(proto, self, reason)

    def failed(self, failure: Any) -> None:
        if self.done:
            return
        self.done = True
        self.room.log.info(
            "chat: room {room}: cannot reach {host}: {why}",
            room=self.room.name,
            host=self.host,
            why=failure.getErrorMessage(),
        )
        if self.merging:
            return
        self.room.attemptFailed(self, None)
