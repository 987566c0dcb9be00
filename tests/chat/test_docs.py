"""
The chat documentation names what the code does: every configuration key,
API route and frame type.
"""

from __future__ import annotations

import re
from pathlib import Path

from appnpy_chat import _KEYS, ChatPlugin
from twisted.trial.unittest import SynchronousTestCase

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"


class ChatDocsTests(SynchronousTestCase):
    def test_configurationKeys(self) -> None:
        """
        docs/chat.md's configuration table lists exactly the keys the
        plugin accepts.
        """
        text = (DOCS / "chat.md").read_text()
        table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
        documented = set()
        for cell in re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE):
            documented.update(re.findall(r"`([a-z-]+)`", cell))
        self.assertEqual(documented, set(_KEYS) | {"nick"})

    def test_routes(self) -> None:
        """
        docs/chat.md's API table names every route.
        """
        text = (DOCS / "chat.md").read_text()
        for method, path in ChatPlugin().apiRoutes():
            self.assertRegex(text, rf"`(GET`/`)?{method} {path}`|`GET`/`POST {path}`")

    def test_protocolSection(self) -> None:
        """
        Section 19 of docs/protocol.md describes every frame type the plugin
        sends or accepts.
        """
        text = (DOCS / "protocol.md").read_text()
        section = text.split("## 19. The chat plugin protocol", 1)[1].split("\n## ", 1)[0]
        for frame in ("join", "state", "msg", "welcome", "member", "redirect", "error"):
            self.assertIn(f"| `{frame}` |", section)
        self.assertIn("appnpy-chat-msg-v1", section)
