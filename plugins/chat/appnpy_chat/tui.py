"""
The interactive client, C{appn chat} / C{appn chat open ROOM|NODE}, built on
prompt_toolkit: the conversation scrolls above an input line (with a toolbar
showing the conversation, nickname and presence), new events arrive from the
node's long-poll route in a background thread.  Everything shown from peers
goes through L{forTerminal}.

Lines starting with C{/} are commands (C{/help} lists them).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from appnpy.api import APPNError, IAPIClient
from appnpy_chat.text import forTerminal

HELP = """commands:
  /join ROOM        join (or create) a room and talk there
  /leave [ROOM]     leave a room (default: this one)
  /open TARGET      talk in #room or to a node (ID or CP name)
  /msg NODE TEXT    one direct message
  /nick NAME        change your nickname
  /away, /online    change your presence
  /members, /rooms  who is here, where you are
  /quit             leave the client (the node stays in its rooms)"""


#: The commands that take an argument, and what it is (for the hint when it is missing).
COMMANDS = {
    "join": "a ROOM",
    "open": "a #room or a NODE",
    "msg": "a NODE and a TEXT",
    "nick": "a NAME",
    "members": "a room to be open (/join ROOM)",
    "leave": "a ROOM, or a room to be open",
}


def _conversationOf(target: str) -> str:
    if target.startswith(("#", "@")):
        return target
    if target.startswith("chat:"):
        return "#" + target[5:]
    return "@" + target


class ChatClient:
    """
    The client's state: the conversation typed into, and what the node said.
    """

    def __init__(self, api: IAPIClient) -> None:
        self.api = api
        self.conversation = ""
        self.nick = ""
        self.presence = ""
        self.stopping = threading.Event()
        self.last = 0
        #: How conversations are shown: "@LAB.C" rather than "@<node ID>".
        self.labels: dict[str, str] = {}

    def label(self, conversation: str) -> str:
        return forTerminal(self.labels.get(conversation, conversation))

    def show(self, text: str) -> None:
        # With patch_stdout active, print() lands above the input line.
        print(text, flush=True)

    def refreshState(self) -> None:
        state = self.api.get("plugins/chat/presence")
        assert isinstance(state, dict)
        self.nick, self.presence = str(state["nick"]), str(state["presence"])

    def toolbar(self) -> str:
        where = self.label(self.conversation) if self.conversation else "(no conversation)"
        return f" {where}   {forTerminal(self.nick)} ({self.presence})   /help"

    def open(self, target: str) -> None:
        conversation = _conversationOf(target)
        if conversation.startswith("#"):
            joined = self.api.post("plugins/chat/join", {"room": conversation})
            assert isinstance(joined, dict)
            conversation = "#" + str(joined["room"])
            self.show(f"-- #{joined['room']}: {joined['role']}, {joined['members']} members")
        history = self.api.get("plugins/chat/history", {"room": conversation, "limit": "20"})
        assert isinstance(history, dict)
        # A node named by CP name comes back as its node ID, as events name it.
        self.conversation = str(history["conversation"])
        self.labels[self.conversation] = (
            "@" + str(history["name"]) if history.get("name") else self.conversation
        )
        for message in history["messages"]:
            self.show(self.formatMessage(self.conversation, message))

    def formatMessage(self, conversation: str, message: dict[str, Any]) -> str:
        stamp = time.strftime("%H:%M", time.localtime(float(message.get("time", 0))))
        where = "" if conversation == self.conversation else f"[{self.label(conversation)}] "
        nick = forTerminal(str(message.get("nick", "?")))
        text = forTerminal(str(message.get("text", "")), multiline=True)
        return f"{stamp} {where}<{nick}> {text}"

    def formatEvent(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "message" and not event.get("history"):
            return self.formatMessage(str(event.get("conversation")), event["message"])
        if kind == "member" and "#" + str(event.get("room")) == self.conversation:
            nick = forTerminal(str(event.get("nick", "")))
            return f"-- {nick} is {event.get('presence')}"
        if kind == "room" and event.get("state") in ("host", "member", "electing", "left"):
            return f"-- #{event.get('room')}: {event.get('state')}"
        if kind == "error":
            return f"-- #{event.get('room')}: {forTerminal(str(event.get('code')))}"
        return None

    def poll(self) -> None:
        """
        The background thread: long-poll the node's events until stopped.
        """
        while not self.stopping.is_set():
            try:
                answer = self.api.get(
                    "plugins/chat/events", {"after": str(self.last), "timeout": "20"}
                )
            except APPNError as e:
                if self.stopping.is_set():
                    return
                self.show(f"-- {e}")
                self.stopping.wait(2.0)
                continue
            assert isinstance(answer, dict)
            for event in answer["events"]:
                self.last = max(self.last, int(event["id"]))
                line = self.formatEvent(event)
                if line is not None and not self.stopping.is_set():
                    self.show(line)
            if not answer["events"]:
                # Also right after a node restart, when its numbering began again.
                self.last = int(answer["last"])

    def command(self, line: str) -> bool:
        """
        Run one /command; answers False to quit.
        """
        word, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if word in ("quit", "exit", "q"):
            return False
        if word == "help":
            self.show(HELP)
        elif word in ("join", "open") and rest:
            self.open(rest if word == "open" or rest.startswith("#") else "#" + rest)
        elif word == "leave" and (rest or self.conversation.startswith("#")):
            room = rest or self.conversation
            if not room.startswith("#"):
                room = "#" + room
            self.api.post("plugins/chat/leave", {"room": room})
            if room == self.conversation:
                self.conversation = ""
        elif word == "msg" and " " in rest:
            node, _, text = rest.partition(" ")
            self.api.post("plugins/chat/send", {"target": node, "text": text})
        elif word == "nick" and rest:
            self.api.post("plugins/chat/nick", {"nick": rest})
            self.refreshState()
        elif word in ("away", "online", "back"):
            self.api.post(
                "plugins/chat/presence", {"presence": "away" if word == "away" else "online"}
            )
            self.refreshState()
            self.show(f"-- you are {self.presence}")
        elif word == "members" and self.conversation.startswith("#"):
            members = self.api.get("plugins/chat/members", {"room": self.conversation})
            assert isinstance(members, dict)
            for m in members["members"]:
                host = " (host)" if m.get("host") else ""
                self.show(f"   {forTerminal(m['nick'])} {m['presence']}{host}")
        elif word == "rooms":
            rooms = self.api.get("plugins/chat/rooms")
            assert isinstance(rooms, dict)
            for r in rooms["rooms"]:
                self.show(f"   #{r['room']} {r['role']} {r['members']} members")
        elif word in COMMANDS:
            self.show(f"-- /{word} needs {COMMANDS[word]}; /help lists the commands")
        else:
            self.show(f"-- unknown command /{forTerminal(word)}; /help lists the commands")
        return True

    def say(self, text: str) -> None:
        if not self.conversation:
            self.show("-- not in a conversation: /join ROOM or /open NODE")
            return
        target = self.conversation if self.conversation.startswith("#") else self.conversation[1:]
        self.api.post("plugins/chat/send", {"target": target, "text": text})


def runInteractive(api: IAPIClient, target: str | None) -> int:
    client = ChatClient(api)
    client.refreshState()
    first = api.get("plugins/chat/events", {"after": str(2**62), "timeout": "0"})
    assert isinstance(first, dict)
    client.last = int(first["last"])
    session: PromptSession[str] = PromptSession()
    with patch_stdout(raw=False):
        if target:
            client.open(target)
        else:
            rooms = api.get("plugins/chat/rooms")
            assert isinstance(rooms, dict)
            if rooms["rooms"]:
                client.open("#" + rooms["rooms"][0]["room"])
            else:
                client.show("-- in no room: /join ROOM or /open NODE (/help)")
        poller = threading.Thread(target=client.poll, name="chat-events", daemon=True)
        poller.start()
        while True:
            try:
                line = session.prompt(
                    lambda: (
                        f"{client.label(client.conversation) if client.conversation else 'chat'}> "
                    ),
                    bottom_toolbar=client.toolbar,
                )
            except (EOFError, KeyboardInterrupt):
                break
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/") and not line.startswith("//"):
                    if not client.command(line):
                        break
                else:
                    client.say(line[1:] if line.startswith("//") else line)
            except APPNError as e:
                client.show(f"-- {e}")
        client.stopping.set()
    return 0
