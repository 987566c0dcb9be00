"""
What a node's chat keeps across restarts, in its private data directory
(C{<data dir>/plugins/chat/state.json}): its nickname and the rooms it is
in, so that a restarted node rejoins them.  Messages are not kept.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.logger import Logger

from appnpy_chat.text import BadText, checkNick, checkRoom

FILENAME = "state.json"
#: Larger files are not read (a few hundred bytes is normal).
MAX_SIZE = 64 * 1024

log = Logger()


class ChatState:
    """
    The state file of one node.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILENAME)

    def load(self, maxRooms: int) -> tuple[str, list[str]]:
        """
        The saved nickname (C{""} for none) and rooms.  A missing, damaged or
        tampered file gives what is valid in it, never an error: chat must
        not stop a node from starting.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = f.read(MAX_SIZE + 1)
            if len(raw) > MAX_SIZE:
                raise ValueError("too large")
            value: Any = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return "", []
        except (OSError, ValueError) as e:
            log.warn("chat: ignoring {path}: {why}", path=self.path, why=str(e))
            return "", []
        nick = ""
        try:
            nick = checkNick(value.get("nick"))
        except BadText:
            pass
        rooms: list[str] = []
        saved = value.get("rooms")
        for name in saved if isinstance(saved, list) else []:
            try:
                room = checkRoom(name)
            except BadText:
                continue
            if room not in rooms and len(rooms) < maxRooms:
                rooms.append(room)
        return nick, rooms

    def save(self, nick: str, rooms: list[str]) -> None:
        """
        Write the state atomically (a reader sees the old or the new file).
        """
        temp = self.path + ".new"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"nick": nick, "rooms": sorted(rooms)}, f)
            os.replace(temp, self.path)
        except OSError as e:
            log.warn("chat: cannot save {path}: {why}", path=self.path, why=str(e))
