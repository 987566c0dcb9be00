"""
Checking and sanitizing untrusted text: nicknames, room names, message text
shown on a terminal.
"""

from __future__ import annotations

import unicodedata

from appnpy_chat.text import (
    MAX_TEXT_BYTES,
    BadText,
    checkNick,
    checkRoom,
    checkText,
    forTerminal,
    normaliseNick,
    parseRoom,
)
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase


def _safe(text: str, multiline: bool = False) -> bool:
    for ch in text:
        if ch == "\n" and multiline:
            continue
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return False
        if unicodedata.category(ch) in ("Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
            return False
    return True


class TerminalTests(SynchronousTestCase):
    def test_escapes(self) -> None:
        """
        ANSI escape and control sequences are removed whole; other control
        characters are shown as code points.
        """
        self.assertEqual(forTerminal("a\x1b[31mred\x1b[0m"), "ared")
        self.assertEqual(forTerminal("\x1b]0;title\x07x"), "x")
        self.assertEqual(forTerminal("\x1b]8;;http://evil\x1b\\link"), "link")
        self.assertEqual(forTerminal("bell\x07"), "bell\\u+0007")
        self.assertEqual(forTerminal("\x9b2J"), "")
        self.assertEqual(forTerminal("a\rb"), "a\\u+000Db")

    def test_bidi(self) -> None:
        """
        Bidirectional overrides and invisible characters are made visible,
        so a message cannot reorder or hide its text.
        """
        self.assertEqual(forTerminal("abc\u202edcba"), "abc\\u+202Edcba")
        self.assertEqual(forTerminal("a\u200bb"), "a\\u+200Bb")

    def test_unicodeLineBreaks(self) -> None:
        """
        U+2028 and U+2029 break lines in some terminals and viewers: shown as
        code points, so a message cannot fake a line from someone else, and
        refused in nicknames.
        """
        self.assertEqual(forTerminal("hi\u2028<alice> x"), "hi\\u+2028<alice> x")
        self.assertEqual(forTerminal("a\u2029b", multiline=True), "a\\u+2029b")
        with self.assertRaises(BadText):
            checkNick("bob\u2028alice")
        self.assertEqual(normaliseNick("bob\u2029"), "bob")

    def test_newlines(self) -> None:
        """
        A newline is kept, indented, only where several lines are shown.
        """
        self.assertEqual(forTerminal("a\nb"), "a\\u+000Ab")
        self.assertEqual(forTerminal("a\nb", multiline=True), "a\n    b")

    def test_ordinaryText(self) -> None:
        """
        Ordinary text of any script passes unchanged.
        """
        for text in ("hello, world", "héllo wörld", "日本語", "emoji 🎉", "ltr עברית mixed"):
            self.assertEqual(forTerminal(text), text)

    @given(st.text(max_size=200))
    def test_anyTextSafe(self, text: str) -> None:
        """
        Whatever the text, what reaches the terminal has no control, format
        or escape characters.
        """
        self.assertTrue(_safe(forTerminal(text)))
        self.assertTrue(_safe(forTerminal(text, multiline=True), multiline=True))


class CheckTests(SynchronousTestCase):
    def test_text(self) -> None:
        """
        Message text is non-empty and at most 4 KiB of UTF-8.
        """
        self.assertEqual(checkText("x" * MAX_TEXT_BYTES), "x" * MAX_TEXT_BYTES)
        for bad in ("", "x" * (MAX_TEXT_BYTES + 1), "é" * 2049, 5, None, "\ud800"):
            with self.assertRaises(BadText):
                checkText(bad)

    def test_nick(self) -> None:
        """
        Nicknames: 1-32 characters, nothing invisible, no surrounding space;
        normaliseNick cleans what a user typed.
        """
        self.assertEqual(checkNick("Alice B"), "Alice B")
        for bad in ("", " a", "a ", "x" * 33, "a\x00", "a\u202e", 3):
            with self.assertRaises(BadText):
                checkNick(bad)
        self.assertEqual(normaliseNick("  \x1b[1mAl\x07ice\u200b "), "Alice")
        with self.assertRaises(BadText) as e:
            normaliseNick("\x1b[1m\x07")
        self.assertIn("nothing left", str(e.exception))
        with self.assertRaises(BadText) as e:
            normaliseNick("")
        self.assertIn("non-empty", str(e.exception))

    def test_room(self) -> None:
        """
        Room names are the resource-name safe subset; #room and chat:room
        name rooms, anything else a node.
        """
        self.assertEqual(checkRoom("lobby-2.x_y"), "lobby-2.x_y")
        for bad in ("", "-x", "Lobby", "a b", "x" * 65, "é", None):
            with self.assertRaises(BadText):
                checkRoom(bad)
        self.assertEqual(parseRoom("#Lobby"), "lobby")
        self.assertEqual(parseRoom("chat:lobby"), "lobby")
        self.assertIsNone(parseRoom("LAB.B"))
        with self.assertRaises(BadText):
            parseRoom("#bad room")

    @given(st.text(max_size=80))
    def test_nickNormalised(self, typed: str) -> None:
        """
        Whatever is typed, normaliseNick answers a valid nickname or refuses.
        """
        try:
            nick = normaliseNick(typed)
        except BadText:
            return
        self.assertEqual(checkNick(nick), nick)
