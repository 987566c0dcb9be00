"""
C{appn chat}: scriptable subcommands, and with none (or C{open}) the
interactive client (L{appnpy_chat.tui}).  Everything goes through the
node's management API; nothing here talks to the network itself.

A TARGET is a room as C{#name} or C{chat:name}, or else a node: its node ID,
a unique prefix of it, or its CP name.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from appnpy.api import APPNError, IAPIClient
from appnpy_chat.text import forTerminal

Run = Callable[[argparse.Namespace, IAPIClient, TextIO], int]


class ChatUsageError(APPNError):
    """
    That is not how appn chat is used; see appn chat --help.
    """


def addCommands(add: Callable[[str, str, Run], argparse.ArgumentParser]) -> None:
    parser = add("chat", "chat in rooms and by direct message (no subcommand: interactive)", run)
    sub = parser.add_subparsers(dest="chat_command", metavar="SUBCOMMAND")
    p = sub.add_parser("send", help="send TEXT to a room (#room) or a node (ID or CP name)")
    p.add_argument("target", metavar="TARGET", help="#room or chat:room, or a node ID / CP name")
    p.add_argument("text", metavar="TEXT", help="the message (at most 4 KiB)")
    p = sub.add_parser("rooms", help="the rooms this node is in")
    p.add_argument("--known", action="store_true", help="also the rooms the directory knows")
    p = sub.add_parser("history", help="the recent messages of a room or conversation")
    p.add_argument("target", metavar="ROOM", help="#room, or @NODE for direct messages")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p = sub.add_parser("join", help="join (or create) a room")
    p.add_argument("room", metavar="ROOM", help="the room, with or without #")
    p = sub.add_parser("leave", help="leave a room")
    p.add_argument("room", metavar="ROOM", help="the room, with or without #")
    p = sub.add_parser("members", help="the members of a room")
    p.add_argument("room", metavar="ROOM", help="the room, with or without #")
    p = sub.add_parser("nick", help="set this node's nickname")
    p.add_argument("nick", metavar="NAME", help="1-32 characters")
    p = sub.add_parser("presence", help="set this node's presence")
    p.add_argument("presence", choices=["online", "away"], help="online or away")
    p = sub.add_parser("open", help="the interactive client on a room or a node")
    p.add_argument(
        "target", metavar="ROOM|NODE", nargs="?", help="#room, or a node for direct messages"
    )
    for each in sub.choices.values():
        # `appn chat history ROOM --json`: accepted after the subcommand too.
        each.add_argument("--json", action="store_true", dest="chat_json", help="print JSON")


def _room(name: str) -> str:
    return name if name.startswith(("#", "chat:")) else "#" + name


def _line(message: dict[str, Any], names: dict[str, str] | None = None) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(float(message.get("time", 0))))
    nick = forTerminal(str(message.get("nick", "?")))
    return f"{stamp} <{nick}> {forTerminal(str(message.get('text', '')), multiline=True)}"


def run(args: argparse.Namespace, api: IAPIClient, out: TextIO) -> int:
    command = getattr(args, "chat_command", None)
    if command is None or command == "open":
        from appnpy_chat.tui import runInteractive

        return runInteractive(api, getattr(args, "target", None))
    wantJSON = api.json or getattr(args, "chat_json", False)
    result: Any
    if command == "send":
        result = api.post("plugins/chat/send", {"target": args.target, "text": args.text})
        text = f"sent (seq {result.get('seq')})"
        if result.get("queued"):
            # The room has no host right now: the message waits for the new one.
            text = (
                f"queued (seq {result.get('seq')}): #{result.get('room')} is electing a new"
                " host; the message goes out once it has one"
            )
    elif command == "rooms":
        result = api.get("plugins/chat/rooms", {"known": "1"} if args.known else None)
        lines = [
            f"#{r['room']:24} {r['role']:9} {r['members']:4} members  host "
            f"{forTerminal(r.get('host_name') or '') or (r.get('host') or '-')[:16]}"
            for r in result["rooms"]
        ] or ["(in no room)"]
        inRooms = {r["room"] for r in result["rooms"]}
        for k in result.get("known", []):
            if k["room"] in inRooms:
                continue  # listed above already, with more to say
            lines.append(f"#{k['room']:24} known     hosted by {len(k['hosts'])} node(s)")
        text = "\n".join(lines)
    elif command == "history":
        if args.limit < 0:
            raise ChatUsageError("--limit must be >= 0")
        target = args.target if args.target.startswith("@") else _room(args.target)
        result = api.get("plugins/chat/history", {"room": target, "limit": str(args.limit)})
        text = "\n".join(_line(m) for m in result["messages"]) or "(no messages)"
    elif command == "join":
        result = api.post("plugins/chat/join", {"room": _room(args.room)})
        text = f"#{result['room']}: {result['role']} (host {result.get('host_name') or result.get('host')})"
    elif command == "leave":
        result = api.post("plugins/chat/leave", {"room": _room(args.room)})
        text = f"left #{result['room']}"
    elif command == "members":
        result = api.get("plugins/chat/members", {"room": _room(args.room)})
        text = "\n".join(
            f"{forTerminal(m['nick']):32} {m['presence']:7} {m['node'][:16]} "
            f"{forTerminal(m.get('name', ''))}{'  (host)' if m.get('host') else ''}"
            for m in result["members"]
        )
    elif command == "nick":
        result = api.post("plugins/chat/nick", {"nick": args.nick})
        text = f"nickname {forTerminal(result['nick'])}"
    elif command == "presence":
        result = api.post("plugins/chat/presence", {"presence": args.presence})
        text = f"presence {result['presence']}"
    else:
        raise ChatUsageError(repr(command))
    out.write((json.dumps(result, indent=2) if wantJSON else text) + "\n")
    return 0
