"""
The operator's side of the chat plugin: API routes (including the long-poll
events route), the appn chat commands, the page section, the metrics, the
configuration.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from appnpy_chat import ChatPlugin
from appnpy_chat.commands import addCommands
from appnpy_chat.events import EventLog
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from appnpy.api import APIError, ConfigurationError, IAPIClient, PluginRequest, implementer
from appnpy.testing import resultOf
from tests.chat.helpers import ChatNet


class Routes:
    """
    Calls one node's chat routes as the management API does.
    """

    def __init__(self, net: ChatNet, i: int) -> None:
        self.net = net
        self.routes = net.plugins[i].apiRoutes()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        settle: float = 1,
    ) -> Any:
        handler = self.routes[(method, path)]
        d = ensureDeferred(handler(PluginRequest(method, path, query or {}, body or {})))  # type: ignore[arg-type]
        self.net.settle(settle)
        return resultOf(d)


@implementer(IAPIClient)
class FakeAPI:
    """
    An IAPIClient answering from a node's routes in memory.
    """

    def __init__(self, routes: Routes, wantJSON: bool = False) -> None:
        self.routes = routes
        self.json = wantJSON

    def get(self, path: str, query: dict[str, str] | None = None) -> object:
        return self.routes.call("GET", path.split("/", 2)[2], query=query)

    def post(self, path: str, body: dict[str, object] | None = None) -> object:
        return self.routes.call("POST", path.split("/", 2)[2], body=body)


def appnChat(api: FakeAPI, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    runs = {}

    def add(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        runs[name] = run
        return p

    addCommands(add)
    args = parser.parse_args(["chat", *argv])
    out = io.StringIO()
    return runs["chat"](args, api, out), out.getvalue()


class RouteTests(SynchronousTestCase):
    def test_roomAndDirect(self) -> None:
        """
        Through the routes: join, send to a room and to a node three hops
        away, read history and members.
        """
        net = ChatNet(4)
        a, d = Routes(net, 0), Routes(net, 3)
        self.assertEqual(a.call("POST", "join", {"room": "#lobby"})["role"], "host")
        self.assertEqual(d.call("POST", "join", {"room": "lobby"}, settle=3)["role"], "member")
        d.call("POST", "send", {"target": "#lobby", "text": "hi all"})
        a.call("POST", "send", {"target": "LAB.N3", "text": "hi you"})
        history = a.call("GET", "history", query={"room": "#lobby"})
        self.assertEqual([m["text"] for m in history["messages"]], ["hi all"])
        dm = d.call("GET", "history", query={"room": "@LAB.N0"})
        self.assertEqual([m["text"] for m in dm["messages"]], ["hi you"])
        members = d.call("GET", "members", query={"room": "#lobby"})
        self.assertEqual(len(members["members"]), 2)
        self.assertEqual(members["host"], net.nodes[0].nodeID)
        rooms = d.call("GET", "rooms", query={"known": "1"}, settle=10)
        self.assertEqual(rooms["rooms"][0]["room"], "lobby")
        self.assertEqual(rooms["known"], [{"room": "lobby", "hosts": [net.nodes[0].nodeID]}])

    def test_errors(self) -> None:
        """
        Bad input answers one clear error with a stable code.
        """
        net = ChatNet(1)
        a = Routes(net, 0)
        for method, path, body, query, code in (
            ("POST", "send", {"target": "#nowhere", "text": "x"}, None, "not-in-room"),
            ("POST", "send", {"target": "#a b", "text": "x"}, None, "bad-room"),
            ("POST", "send", {"target": "#a"}, None, "bad-field"),
            ("POST", "join", {"room": "Bad Room!"}, None, "bad-room"),
            ("POST", "leave", {"room": "x"}, None, "not-in-room"),
            ("POST", "nick", {"nick": "\x1b"}, None, "bad-nick"),
            ("POST", "presence", {"presence": "gone"}, None, "bad-presence"),
            ("GET", "history", None, {"room": "#x", "limit": "many"}, "bad-query"),
        ):
            with self.assertRaises(APIError) as e:
                a.call(method, path, body, query)
            self.assertEqual(e.exception.code, code, (path, body))
        with self.assertRaises(APIError) as e:
            a.call("POST", "send", {"target": "LAB.NOPE", "text": "x"})
        self.assertEqual(e.exception.code, "no-such-node")
        self.assertIn("no reachable node is called 'LAB.NOPE'", e.exception.message)
        self.assertNotIn("Connect to it first", e.exception.message)
        a.call("POST", "join", {"room": "x"}, settle=15)
        with self.assertRaises(APIError) as e:
            a.call("POST", "send", {"target": "#x", "text": "y" * 5000})
        self.assertEqual(e.exception.code, "bad-text")

    def test_longPoll(self) -> None:
        """
        The events route answers at once when events are waiting, else
        when the next one comes, else empty after its timeout; a client that
        goes away stops waiting.
        """
        net = ChatNet(2)
        a = Routes(net, 0)
        last = a.call("GET", "events", query={"after": str(2**40)})["last"]
        handler = a.routes[("GET", "events")]
        waiting = ensureDeferred(handler(PluginRequest("GET", "events", {"after": str(last)}, {})))  # type: ignore[arg-type]
        net.net.flush()
        self.assertFalse(waiting.called)
        a.call("POST", "join", {"room": "r"})
        answer = resultOf(waiting)
        self.assertEqual(answer["events"][0]["type"], "room")
        quiet = ensureDeferred(
            handler(
                PluginRequest(
                    "GET", "events", {"after": str(answer["last"] + 50), "timeout": "5"}, {}
                )
            )  # type: ignore[arg-type]
        )
        self.assertEqual(resultOf(quiet)["events"], [])
        timed = ensureDeferred(
            handler(
                PluginRequest(
                    "GET", "events", {"after": str(net.service(0).events.last), "timeout": "5"}, {}
                )
            )  # type: ignore[arg-type]
        )
        net.clock.advance(4)
        self.assertFalse(timed.called)
        net.clock.advance(1.5)
        self.assertEqual(resultOf(timed)["events"], [])


class EventLogTests(SynchronousTestCase):
    def test_bounded(self) -> None:
        """
        The log keeps its last events only, and a bounded number of waiters.
        """
        from appnpy_chat.events import MAX_WAITERS
        from twisted.internet.task import Clock

        clock = Clock()
        log = EventLog(clock, maxEvents=10)
        for k in range(25):
            log.add("x", k=k)
        self.assertEqual([e["k"] for e in log.since(0)], list(range(15, 25)))
        waits = [log.wait(25, 10) for _ in range(MAX_WAITERS + 5)]
        self.assertEqual(sum(1 for w in waits if w.called), 5)
        waits[0].addErrback(lambda f: None)
        waits[0].cancel()
        self.assertEqual(len(log._waiters), MAX_WAITERS - 1)
        log.add("y")
        self.assertTrue(all(w.called for w in waits))
        self.assertEqual(clock.getDelayedCalls(), [])


class CommandTests(SynchronousTestCase):
    def test_scripted(self) -> None:
        """
        appn chat join / send / history / members / rooms / nick / presence,
        in text and JSON; peers' text is sanitized in text output.
        """
        net = ChatNet(3)
        a, c = FakeAPI(Routes(net, 0)), FakeAPI(Routes(net, 2))
        self.assertEqual(appnChat(a, "join", "lobby")[0], 0)
        code, out = appnChat(c, "join", "#lobby")
        self.assertIn("member", out)
        appnChat(c, "nick", "Carol")
        appnChat(c, "send", "#lobby", "evil \x1b]0;pwned\x07\x1b[2J text\u202e")
        code, out = appnChat(a, "history", "lobby")
        self.assertEqual(code, 0)
        self.assertIn("<Carol> evil  text\\u+202E", out)
        self.assertNotIn("\x1b", out)
        code, out = appnChat(a, "history", "lobby", "--json")
        [message] = json.loads(out)["messages"]
        self.assertEqual(message["text"], "evil \x1b]0;pwned\x07\x1b[2J text\u202e")
        self.assertEqual(message["sender"], net.nodes[2].nodeID)
        code, out = appnChat(a, "members", "lobby")
        self.assertIn("Carol", out)
        self.assertIn("(host)", out)
        code, out = appnChat(c, "presence", "away")
        self.assertEqual(out, "presence away\n")
        code, out = appnChat(a, "rooms")
        self.assertIn("#lobby", out)
        code, out = appnChat(c, "send", "LAB.N0", "direct")
        self.assertEqual(code, 0)
        code, out = appnChat(a, "history", "@LAB.N2")
        self.assertIn("<Carol> direct", out)
        code, out = appnChat(c, "leave", "lobby")
        self.assertEqual(out, "left #lobby\n")


@implementer(IAPIClient)
class CannedAPI:
    """
    An IAPIClient answering every request with one canned answer.
    """

    json = False

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def get(self, path: str, query: dict[str, str] | None = None) -> object:
        return self.answer

    def post(self, path: str, body: dict[str, object] | None = None) -> object:
        return self.answer


class CannedAnswerTests(SynchronousTestCase):
    def test_queuedIsNotSent(self) -> None:
        """
        A message sent while the room elects a new host is reported as
        queued, not as sent.
        """
        api = CannedAPI({"room": "lobby", "seq": 7, "queued": True})
        code, out = appnChat(api, "send", "#lobby", "x")  # type: ignore[arg-type]
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("queued (seq 7): #lobby is electing a new host"), out)
        api = CannedAPI({"room": "lobby", "seq": 8, "queued": False})
        self.assertEqual(appnChat(api, "send", "#lobby", "x")[1], "sent (seq 8)\n")  # type: ignore[arg-type]


    def test_knownRoomsNotListedTwice(self) -> None:
        """
        appn chat rooms --known lists a room this node is in once, with its
        role, and the others the network hosts after it.
        """
        api = CannedAPI(
            {
                "rooms": [{"room": "lobby", "role": "host", "members": 2, "host_name": "LAB.A"}],
                "known": [{"room": "lobby", "hosts": ["x"]}, {"room": "other", "hosts": ["y"]}],
            }
        )
        code, out = appnChat(api, "rooms", "--known")  # type: ignore[arg-type]
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertTrue(lines[0].startswith("#lobby") and "host LAB.A" in lines[0], out)
        self.assertTrue(lines[1].startswith("#other") and "known" in lines[1], out)


class PluginTests(SynchronousTestCase):
    def test_configure(self) -> None:
        """
        Every key is checked; unknown keys and bad values are refused.
        """
        plugin = ChatPlugin()
        plugin.configure({"history": 50, "rate": 2, "nick": "bob", "session-limit": 10})
        self.assertEqual((plugin.config.history, plugin.config.rate), (50, 2.0))
        self.assertEqual(plugin.sessionLimit, 10)
        for bad in (
            {"histroy": 1},
            {"history": 0},
            {"history": 5000},
            {"rate": "x"},
            {"burst": 1.5},
            {"nick": 3},
            {"history": True},
        ):
            with self.assertRaises(ConfigurationError):
                ChatPlugin().configure(bad)

    def test_pageAndMetrics(self) -> None:
        """
        The page section lists rooms and members; the metrics count
        messages sent, delivered and dropped, and rooms by role.
        """
        net = ChatNet(2)
        net.join(0, "r")
        net.join(1, "r")
        net.service(1).sayInRoom("r", "x")
        net.settle(1)
        section = net.plugins[0].pageSection()
        assert section is not None
        self.assertEqual(section.rows[0][:2], ["#r", "host"])
        registry = CollectorRegistry()
        net.plugins[0].registerMetrics(registry)
        self.assertEqual(registry.get_sample_value("appn_chat_messages_delivered_total"), 1)
        self.assertEqual(registry.get_sample_value("appn_chat_rooms", {"role": "host"}), 1)
        self.assertEqual(registry.get_sample_value("appn_chat_members"), 2)

    def test_search(self) -> None:
        """
        The directory's keyword search finds the rooms a node hosts.
        """
        net = ChatNet(2)
        net.join(0, "python-help")
        net.join(1, "other")
        d: Deferred[list[dict[str, Any]]] = net.nodes[1].search("chat", ["python"])
        net.settle(10)
        found = resultOf(d)
        self.assertEqual(
            [(r["room"], r["node"]) for r in found], [("python-help", net.nodes[0].nodeID)]
        )


class InteractiveClientTests(SynchronousTestCase):
    def client(self) -> tuple[ChatNet, Any, list[str]]:
        from appnpy_chat.tui import ChatClient

        net = ChatNet(3)
        client = ChatClient(FakeAPI(Routes(net, 0)))
        shown: list[str] = []
        client.show = shown.append  # type: ignore[method-assign]
        client.refreshState()
        return net, client, shown

    def test_commands(self) -> None:
        """
        The client's /commands join, change nick and presence, list members
        and leave; typed text goes to the conversation; unknown commands
        are answered with a hint.
        """
        net, client, shown = self.client()
        client.command("/join lobby")
        self.assertEqual(client.conversation, "#lobby")
        client.say("hello")
        self.assertEqual(net.texts(0, "lobby"), ["hello"])
        client.command("/nick  Ann\x1b[5m ")
        self.assertEqual(client.nick, "Ann")
        client.command("/away")
        self.assertEqual(shown[-1], "-- you are away")
        client.command("/members")
        self.assertIn("Ann away (host)", shown[-1])
        client.command("/frobnicate")
        self.assertEqual(shown[-1], "-- unknown command /frobnicate; /help lists the commands")
        client.command("/nick")
        self.assertEqual(shown[-1], "-- /nick needs a NAME; /help lists the commands")
        client.command("/msg LAB.N1")
        self.assertEqual(shown[-1], "-- /msg needs a NODE and a TEXT; /help lists the commands")
        client.command("/\x1b[2Jx")
        self.assertEqual(shown[-1], "-- unknown command /x; /help lists the commands")
        client.command("/leave")
        self.assertEqual(client.conversation, "")
        client.command("/leave")
        self.assertEqual(shown[-1], "-- /leave needs a ROOM, or a room to be open; /help lists the commands")
        self.assertFalse(client.command("/quit"))

    def test_directConversation(self) -> None:
        """
        Opening a node by CP name talks to it by node ID, labelled by name;
        events from other conversations are shown with their label, and
        peers' text is sanitized.
        """
        net, client, shown = self.client()
        client.open("LAB.N2")
        peer = net.nodes[2].nodeID
        self.assertEqual(client.conversation, "@" + peer)
        self.assertEqual(client.toolbar().split()[0], "@LAB.N2")
        client.say("psst")
        got = net.service(2).conversations[net.nodes[0].nodeID]
        self.assertEqual([m.text for m in got.history], ["psst"])
        line = client.formatEvent(
            {
                "type": "message",
                "conversation": "#elsewhere",
                "history": False,
                "message": {"time": 0, "nick": "m\u202eallory", "text": "\x1b[2Jboo\x07"},
            }
        )
        assert line is not None
        self.assertTrue(line.endswith("[#elsewhere] <m\\u+202Eallory> boo\\u+0007"), line)
