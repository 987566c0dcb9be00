"""
Rooms and direct messages on in-memory networks of real nodes (real TLS,
routed sessions through relays, one clock): delivery, ordering, presence,
the room surviving its host, history for new members.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from appnpy.testing import resultOf
from tests.chat.helpers import ChatNet


class DirectMessageTests(SynchronousTestCase):
    def test_acrossRelays(self) -> None:
        """
        A direct message to a node three hops away, by CP name, arrives
        through the two relays, attributed to the sender's node ID; the
        answer by node ID goes back.
        """
        net = ChatNet(4)
        a, d = net.service(0), net.service(3)
        sent = net.dm(0, "LAB.N3", "hello far away")
        self.assertEqual(sent["to"], net.nodes[3].nodeID)
        conversation = d.conversations[net.nodes[0].nodeID]
        self.assertEqual([m.text for m in conversation.history], ["hello far away"])
        self.assertEqual(conversation.history[0].sender, net.nodes[0].nodeID)
        net.dm(3, net.nodes[0].nodeID, "hello back")
        back = a.conversations[net.nodes[3].nodeID]
        self.assertEqual([m.text for m in back.history], ["hello far away", "hello back"])
        self.assertEqual(a.drops, {})
        self.assertEqual(d.drops, {})

    def test_orderNoDuplicates(self) -> None:
        """
        Many direct messages in a row arrive in the order sent, once each.
        """
        net = ChatNet(3, burst=100)
        from twisted.internet.defer import Deferred

        for i in range(30):
            Deferred.fromCoroutine(net.service(0).sayDirect("LAB.N2", f"m{i}"))
        net.settle(2)
        got = [m.text for m in net.service(2).conversations[net.nodes[0].nodeID].history]
        self.assertEqual(got, [f"m{i}" for i in range(30)])

    def test_unknownNode(self) -> None:
        """
        A direct message to a name no node has fails with a clear code.
        """
        from appnpy_chat.service import ChatError
        from twisted.internet.defer import Deferred

        net = ChatNet(2)
        d = Deferred.fromCoroutine(net.service(0).sayDirect("LAB.NOBODY", "hi"))
        net.settle(20)
        with self.assertRaises(ChatError):
            resultOf(d)


class RoomTests(SynchronousTestCase):
    def test_createJoinTalk(self) -> None:
        """
        The first node to join a room hosts it; a node three hops away finds
        it through the directory and joins; messages of each reach the other.
        """
        net = ChatNet(4)
        self.assertEqual(net.join(0, "lobby")["role"], "host")
        self.assertEqual(net.join(3, "lobby")["role"], "member")
        net.service(3).sayInRoom("lobby", "from the far end")
        net.settle(1)
        net.service(0).sayInRoom("lobby", "from the host")
        net.settle(1)
        for i in (0, 3):
            self.assertEqual(net.texts(i, "lobby"), ["from the far end", "from the host"])
        members = net.service(3).rooms["lobby"].members
        self.assertEqual(set(members), {net.nodes[0].nodeID, net.nodes[3].nodeID})

    def test_orderPerSender(self) -> None:
        """
        Two members' messages interleave, but each sender's arrive in order,
        once, at every member.
        """
        net = ChatNet(4, burst=100)
        for i in range(4):
            net.join(i, "r")
        for k in range(20):
            net.service(1).sayInRoom("r", f"b{k}")
            net.service(3).sayInRoom("r", f"d{k}")
        net.settle(2)
        for i in range(4):
            texts = net.texts(i, "r")
            self.assertEqual([t for t in texts if t[0] == "b"], [f"b{k}" for k in range(20)])
            self.assertEqual([t for t in texts if t[0] == "d"], [f"d{k}" for k in range(20)])
        # Members other than the two senders see the host's order.
        self.assertEqual(net.texts(0, "r"), net.texts(2, "r"))

    def test_historyForNewMember(self) -> None:
        """
        A new member gets the last N messages (N = history), each verified.
        """
        net = ChatNet(3, history=5, burst=100)
        net.join(0, "r")
        for k in range(8):
            net.service(0).sayInRoom("r", f"m{k}")
        net.join(2, "r")
        self.assertEqual(net.texts(2, "r"), [f"m{k}" for k in range(3, 8)])
        events = [e for e in net.service(2).events.events if e["type"] == "message"]
        self.assertTrue(all(e["history"] for e in events))

    def test_presenceAndNick(self) -> None:
        """
        A member's presence and nickname changes reach the other members; a
        member that leaves is gone from every member list.
        """
        net = ChatNet(3)
        for i in range(3):
            net.join(i, "r")
        net.service(2).setPresence("away")
        net.service(2).setNick("Zed")
        net.settle(1)
        for i in range(3):
            info = net.service(i).rooms["r"].members[net.nodes[2].nodeID]
            self.assertEqual((info.nick, info.presence), ("Zed", "away"))
        net.service(2).leave("r")
        net.settle(1)
        for i in range(2):
            self.assertNotIn(net.nodes[2].nodeID, net.service(i).rooms["r"].members)
        gone = [
            e
            for e in net.service(1).events.events
            if e["type"] == "member" and e["presence"] == "gone"
        ]
        self.assertEqual([e["node"] for e in gone], [net.nodes[2].nodeID])

    def test_nickSanitisedAndValidated(self) -> None:
        """
        A nickname is cleaned of control characters and limited in length.
        """
        from appnpy_chat.service import ChatError

        net = ChatNet(1)
        self.assertEqual(net.service(0).setNick("  Bob\x1b[31m\u202e "), "Bob")
        with self.assertRaises(ChatError):
            net.service(0).setNick("x" * 33)
        with self.assertRaises(ChatError):
            net.service(0).setNick("\x07\x07")

    def test_oversizeRefused(self) -> None:
        """
        Text over 4 KiB is refused before it is signed or sent.
        """
        from appnpy_chat.text import BadText

        net = ChatNet(2)
        net.join(0, "r")
        with self.assertRaises(BadText):
            net.service(0).sayInRoom("r", "x" * 4097)
        net.service(0).sayInRoom("r", "é" * 2048)  # 4096 bytes: the limit itself
        self.assertEqual(len(net.texts(0, "r")), 1)


class SurvivalTests(SynchronousTestCase):
    def _room(self, net: ChatNet, count: int) -> None:
        for i in range(count):
            net.join(i, "r")
        net.service(1).sayInRoom("r", "before")
        net.settle(1)

    def _newHost(self, net: ChatNet, survivors: list[int]) -> None:
        expected = min(net.nodes[i].nodeID for i in survivors)
        for i in survivors:
            room = net.service(i).rooms["r"]
            self.assertEqual(room.hostID, expected, f"node {i}: {room.summary()}")
            self.assertIn(room.role, ("host", "member"))
            self.assertEqual(set(room.members), {net.nodes[j].nodeID for j in survivors})

    def test_hostLeaves(self) -> None:
        """
        The host leaves the room: the remaining members elect the lowest
        node ID among them, which hosts the room from then on under the same
        name; history is kept and talk goes on.
        """
        net = ChatNet(4, line=False)
        for i in range(1, 4):
            net.net.link(net.nodes[0], net.nodes[i])
        net.net.link(net.nodes[1], net.nodes[2])
        net.net.link(net.nodes[2], net.nodes[3])
        net.settle()
        self._room(net, 4)
        net.service(0).leave("r")
        net.settle(5)
        self._newHost(net, [1, 2, 3])
        net.service(3).sayInRoom("r", "after")
        net.settle(1)
        for i in (1, 2, 3):
            self.assertEqual(net.texts(i, "r"), ["before", "after"])
        # A newcomer finds the new host through the directory.
        net.service(0).join("r")
        net.settle(3)
        self.assertEqual(net.texts(0, "r"), ["before", "after"])
        self.assertIn(net.service(0).rooms["r"].role, ("member", "host"))

    def test_hostNodeStops(self) -> None:
        """
        The creator's node stops (it is at the end of a line, the others
        reach each other without it): the others go on in the same room.
        """
        net = ChatNet(4)
        self._room(net, 4)
        net.stopNode(0)
        net.settle(10)
        self._newHost(net, [1, 2, 3])
        net.service(2).sayInRoom("r", "still here")
        net.settle(1)
        for i in (1, 2, 3):
            self.assertEqual(net.texts(i, "r"), ["before", "still here"])

    def test_newHostLeavesToo(self) -> None:
        """
        Hosts can leave one after another: the room goes on while a member
        remains.
        """
        net = ChatNet(4)
        self._room(net, 4)
        remaining = list(range(4))
        for _ in range(3):
            hosts = [i for i in remaining if net.service(i).rooms["r"].role == "host"]
            self.assertEqual(len(hosts), 1)
            net.service(hosts[0]).leave("r")
            remaining.remove(hosts[0])
            net.settle(5)
            self._newHost(net, remaining)
        [last] = remaining
        self.assertEqual(net.service(last).rooms["r"].role, "host")
        self.assertEqual(net.texts(last, "r"), ["before"])

    def test_splitHostsMerge(self) -> None:
        """
        Two nodes that create the same room before either is in the
        directory both host it; the one with the higher node ID finds the
        other and joins it, taking its members along.
        """
        net = ChatNet(4)
        d0 = net.service(0).join("r")
        d3 = net.service(3).join("r")
        net.settle(2)
        resultOf(d0)
        resultOf(d3)
        net.settle(30)
        hosts = {net.service(i).rooms["r"].hostID for i in (0, 3)}
        self.assertEqual(len(hosts), 1)
        expected = min(net.nodes[0].nodeID, net.nodes[3].nodeID)
        self.assertEqual(hosts, {expected})
        net.service(3).sayInRoom("r", "merged")
        net.settle(1)
        self.assertEqual(net.texts(0, "r"), ["merged"])


class StaleDirectoryTests(SynchronousTestCase):
    def _locateAnswers(self, net: ChatNet, i: int, owners: list[str]) -> None:
        from twisted.internet.defer import succeed

        net.service(i).locate = lambda name: succeed(list(owners))  # type: ignore[method-assign]

    def test_staleOwnerThenHost(self) -> None:
        """
        The directory names a node that no longer hosts the room (it
        answers with a redirect to the real host), and one that cannot be
        reached at all: the joiner ends up with the real host.
        """
        net = ChatNet(4)
        for i in range(3):
            net.join(i, "r")
        net.service(0).leave("r")
        net.settle(5)
        host = net.service(1).rooms["r"].hostID
        assert host is not None
        stale = net.nodes[0].nodeID  # no longer in the room: redirect to nobody
        # Still a member: redirects to the host.
        member = next(n.nodeID for n in net.nodes[1:3] if n.nodeID != host)
        unreachable = "a" * 52
        self._locateAnswers(net, 3, sorted([stale, unreachable, member]))
        net.join(3, "r")
        net.settle(30)
        room = net.service(3).rooms["r"]
        self.assertEqual((room.role, room.hostID), ("member", host))

    def test_allStale(self) -> None:
        """
        Every owner the directory names is stale: the joiner creates the
        room itself.
        """
        net = ChatNet(3)
        self._locateAnswers(net, 2, [net.nodes[0].nodeID, net.nodes[1].nodeID])
        net.join(2, "r")
        net.settle(20)
        self.assertEqual(net.service(2).rooms["r"].role, "host")


class LostSessionTests(SynchronousTestCase):
    def test_memberLosesOnlyItsSession(self) -> None:
        """
        A member's session to the host breaks while the host is alive and
        the others still reach it: the member ends up in the same room as
        everyone else (back with the host, or, if it made itself host, by
        the merge of the two hosts).
        """
        net = ChatNet(4)
        for i in range(4):
            net.join(i, "r")
        room3 = net.service(3).rooms["r"]
        assert room3.upstream is not None and room3.upstream.transport is not None
        room3.upstream.transport.abortConnection()  # type: ignore[attr-defined]
        net.settle(60)
        hosts = {net.service(i).rooms["r"].hostID for i in range(4)}
        self.assertEqual(len(hosts), 1, [net.service(i).rooms["r"].summary() for i in range(4)])
        net.service(3).sayInRoom("r", "back")
        net.settle(1)
        for i in range(4):
            self.assertEqual(net.texts(i, "r"), ["back"])
