"""
Chat between real C{twist appnnode} processes on a line of three nodes
A - B - C (each its own process, loopback TCP, TLS): C{appn chat} commands as
subprocesses, and the interactive client driven through a pseudo-terminal.
Every wait is on output (log events, the events long poll, the terminal's
output), never on time.

The chat plugin must be installed (its entry point registered) for the node
processes to load it; without it these tests are skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import sys
import termios
from importlib.metadata import entry_points
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.interop.harness import NodeHarness, NodeProcess
from tests.interop.test_network import appn, topology

TIMEOUT = 30.0


def _chatInstalled() -> bool:
    return any(ep.name == "chat" for ep in entry_points(group="appnpy.session_plugins"))


async def chatEvent(node: NodeProcess, predicate: Any, after: int = 0) -> dict[str, Any]:
    """
    Wait, through the node's long-poll events route, for the first chat
    event after C{after} that C{predicate} accepts.
    """
    with open(os.path.join(node.dataDir, "api.json"), encoding="utf-8") as f:
        url = json.load(f)["url"].rstrip("/")
    with open(os.path.join(node.dataDir, "api-token"), encoding="ascii") as f:
        token = f.read().strip()
    agent = Agent(reactor)
    for _ in range(20):
        response = await agent.request(
            b"GET",
            f"{url}/api/v1/plugins/chat/events?after={after}&timeout=10".encode(),
            Headers({b"authorization": [f"Bearer {token}".encode()]}),
        )
        answer = json.loads(await readBody(response))
        for event in answer["events"]:
            after = event["id"]
            if predicate(event):
                return dict(event)
    raise AssertionError(f"{node.label}: no such chat event")


def isMessage(text: str) -> Any:
    return lambda e: e["type"] == "message" and e["message"]["text"] == text


async def lastEvent(node: NodeProcess) -> int:
    code, answer, err = await appn(node, "chat", "rooms")
    assert code == 0, err
    # The events route answers "last" at once for an `after` ahead of it.
    with open(os.path.join(node.dataDir, "api.json"), encoding="utf-8") as f:
        url = json.load(f)["url"].rstrip("/")
    with open(os.path.join(node.dataDir, "api-token"), encoding="ascii") as f:
        token = f.read().strip()
    response = await Agent(reactor).request(
        b"GET",
        f"{url}/api/v1/plugins/chat/events?after={2**40}".encode(),
        Headers({b"authorization": [f"Bearer {token}".encode()]}),
    )
    return int(json.loads(await readBody(response))["last"])


class Terminal(ProcessProtocol):
    """
    A process on a pseudo-terminal: collects what it prints, waits for text.
    """

    def __init__(self) -> None:
        self.output = ""
        self.waiting: list[tuple[str, Deferred[None]]] = []
        self.ended: Deferred[int] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        for entry in list(self.waiting):
            if entry[0] in self.output:
                self.waiting.remove(entry)
                entry[1].callback(None)

    def waitFor(self, text: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if text in self.output:
            d.callback(None)
        else:
            self.waiting.append((text, d))

        def timedOut(f: Failure) -> Failure:
            raise AssertionError(
                f"terminal never showed {text!r}; it showed {self.output[-2000:]!r}"
            )

        d.addTimeout(TIMEOUT, reactor)
        return d.addErrback(timedOut)

    def type(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode("utf-8") + b"\r")

    def processEnded(self, reason: Failure) -> None:
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            self.ended.callback(reason.value.exitCode or 0)


def spawnTerminal(testCase: TestCase, node: NodeProcess, *args: str) -> Terminal:
    """
    C{appn --data-dir <node's> ARGS} on a new 100x30 pseudo-terminal.
    """
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    terminal = Terminal()
    reactor.spawnProcess(  # type: ignore[attr-defined]
        terminal,
        sys.executable,
        [sys.executable, "-m", "appnpy.cli", "--data-dir", node.dataDir, *args],
        env=env,
        usePTY=(master, slave, os.ttyname(slave)),
    )

    def kill() -> Deferred[int] | None:
        if terminal.ended.called:
            return None
        assert terminal.transport is not None
        terminal.transport.signalProcess("KILL")
        return terminal.ended

    testCase.addCleanup(kill)
    return terminal


class ChatProcessTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if not _chatInstalled():
            raise SkipTest("the chat plugin is not installed (pip install -e plugins/chat)")

    async def line(self) -> tuple[NodeHarness, NodeProcess, NodeProcess, NodeProcess]:
        harness = NodeHarness(self, reactor)
        a = await harness.startReady("a", maxPeers=1, extra=["--name", "LAB.A"])
        b = await harness.startReady(
            "b", peers=[a.hostPort()], maxPeers=1, extra=["--name", "LAB.B"]
        )
        c = harness.start("c", peers=[b.hostPort()], maxPeers=1, extra=["--name", "LAB.C"])
        converged = [topology(a, 3, links=2), topology(c, 3, links=2)]
        await c.whenReady()
        for d in converged:
            await d
        return harness, a, b, c

    def test_roomAndDirect(self) -> None:
        return Deferred.fromCoroutine(self._roomAndDirect())

    async def _roomAndDirect(self) -> None:
        """
        A and C, two hops apart, chat in a room and by direct message with
        appn chat; then A's node dies and B and C go on in the same room,
        with its history.
        """
        harness, a, b, c = await self.line()
        code, joined, err = await appn(a, "chat", "join", "#lobby")
        self.assertEqual((code, joined["role"]), (0, "host"), err)
        for node in (c, b):
            code, joined, err = await appn(node, "chat", "join", "#lobby")
            self.assertEqual((code, joined["role"], joined["host"]), (0, "member", a.nodeID), err)
        since = await lastEvent(a)
        code, sent, err = await appn(c, "chat", "send", "#lobby", "hello from C")
        self.assertEqual(code, 0, err)
        await chatEvent(a, isMessage("hello from C"), since)
        code, history, err = await appn(a, "chat", "history", "#lobby")
        self.assertEqual(code, 0, err)
        [message] = history["messages"]
        self.assertEqual((message["text"], message["sender"]), ("hello from C", c.nodeID))

        code, sent, err = await appn(c, "chat", "send", "LAB.A", "psst, A")
        self.assertEqual((code, sent["to"]), (0, a.nodeID), err)
        await chatEvent(a, isMessage("psst, A"), since)
        code, history, err = await appn(a, "chat", "history", "@LAB.C", "--json")
        self.assertEqual([m["text"] for m in history["messages"]], ["psst, A"])

        # The host's node dies: B and C elect a new host and talk on.
        sinceB, sinceC = await lastEvent(b), await lastEvent(c)
        a.signal(signal.SIGKILL)
        await a.whenExited()
        await chatEvent(
            b, lambda e: e["type"] == "room" and e["state"] in ("host", "member"), sinceB
        )
        # C's own room event after the death: before it, C may still take A
        # for the host, and what it sent then would be lost (docs/chat.md).
        await chatEvent(
            c, lambda e: e["type"] == "room" and e["state"] in ("host", "member"), sinceC
        )
        code, sent, err = await appn(c, "chat", "send", "#lobby", "after A left")
        self.assertEqual(code, 0, err)
        await chatEvent(b, isMessage("after A left"), sinceB)
        code, history, err = await appn(b, "chat", "history", "lobby")
        self.assertEqual([m["text"] for m in history["messages"]], ["hello from C", "after A left"])
        code, members, err = await appn(b, "chat", "members", "lobby")
        self.assertEqual(
            sorted(m["node"] for m in members["members"]), sorted([b.nodeID, c.nodeID])
        )

    def test_interactive(self) -> None:
        return Deferred.fromCoroutine(self._interactive())

    async def _interactive(self) -> None:
        """
        The interactive client on C, through a pseudo-terminal: it shows the
        room's history and A's new messages (sanitized), sends what is typed,
        changes presence, and quits on /quit.
        """
        harness, a, b, c = await self.line()
        await appn(a, "chat", "join", "#lobby")
        await appn(a, "chat", "send", "#lobby", "welcome, \x1b[31mred\x1b[0m")
        terminal = spawnTerminal(self, c, "chat", "open", "#lobby")
        await terminal.waitFor("#lobby>")
        await terminal.waitFor("welcome, red")
        since = await lastEvent(a)
        terminal.type("hello from the terminal")
        await chatEvent(a, isMessage("hello from the terminal"), since)
        await appn(a, "chat", "send", "#lobby", "answer from A")
        await terminal.waitFor("<a> answer from A")
        terminal.type("/away")
        await terminal.waitFor("you are away")
        await chatEvent(a, lambda e: e["type"] == "member" and e["presence"] == "away", since)
        terminal.type("/quit")
        self.assertEqual(await terminal.ended, 0)
        self.assertNotIn("\x1b[31m", terminal.output)
