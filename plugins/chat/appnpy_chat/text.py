"""
Checking and sanitizing the text peers send: nicknames, room names, message
text.

Message text is stored and relayed exactly as its sender signed it (a
signature covers the bytes); it is made safe only where it is shown, by
L{forTerminal}.  Nicknames and room names are checked strictly when they
arrive, because they are also used as keys and labels.
"""

from __future__ import annotations

import re
import unicodedata

#: Message text, in bytes of UTF-8.
MAX_TEXT_BYTES = 4096
#: Nickname, in characters.
MAX_NICK = 32
#: Room name, in characters.
MAX_ROOM = 64

_ROOM = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")

# An ANSI/VT escape or control sequence: CSI (ESC [ ... final), OSC (ESC ] ... BEL or
# ST), or a two-character escape.  Removed whole, so no part of it reaches the terminal.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, terminated or not
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC
    r"|\x1b[ -~]?"  # any other escape
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)

#: Characters that reorder or hide text (bidirectional overrides, isolates, marks)
#: or take no space: shown as their code point so a message cannot disguise itself.
_INVISIBLE = frozenset(
    [0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF, 0x061C, 0x180E]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)


class BadText(ValueError):
    """
    A nickname, room name or message text that is not acceptable; the message
    says why.
    """


def _unsafe(ch: str) -> bool:
    o = ord(ch)
    if o < 0x20 or 0x7F <= o <= 0x9F or o in _INVISIBLE:
        return True
    category = unicodedata.category(ch)
    # Cf: other format characters (e.g. the tag characters), Co/Cs/Cn: private
    # use, surrogates, unassigned: none has a business in a chat line.  Zl/Zp
    # (U+2028, U+2029): line breaks to some terminals and viewers, so a line
    # could fake a second one under someone else's name.
    return category in ("Cf", "Co", "Cs", "Cn", "Zl", "Zp")


def forTerminal(text: str, multiline: bool = False) -> str:
    """
    C{text} made safe to write to a terminal: escape sequences removed, every
    other control, format or invisible character shown as C{\\u+XXXX} (tab as
    a space; newline kept, indented, only when C{multiline}).
    """
    text = _ESCAPE.sub("", text)
    out = []
    for ch in text:
        if ch == "\n" and multiline:
            out.append("\n    ")
        elif ch == "\t":
            out.append(" ")
        elif _unsafe(ch):
            out.append(f"\\u+{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def checkText(text: object) -> str:
    """
    A message text: a non-empty string of at most L{MAX_TEXT_BYTES} bytes.
    Its characters are not restricted here: it is sanitized when shown.
    """
    if not isinstance(text, str) or not text:
        raise BadText("message text must be a non-empty string")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadText("message text is not valid Unicode") from None
    if size > MAX_TEXT_BYTES:
        raise BadText(f"message text is {size} bytes, over the {MAX_TEXT_BYTES}-byte limit")
    return text


def checkNick(nick: object) -> str:
    """
    A nickname: 1-32 characters, no control, format or invisible characters,
    no leading or trailing space.
    """
    if not isinstance(nick, str) or not nick:
        raise BadText("nickname must be a non-empty string")
    if len(nick) > MAX_NICK:
        raise BadText(f"nickname is over {MAX_NICK} characters")
    if nick != nick.strip() or any(_unsafe(ch) for ch in nick):
        raise BadText("nickname has control, invisible or surrounding space characters")
    return nick


def normaliseNick(nick: str) -> str:
    """
    What a user typed as their nickname, cleaned: surrounding space removed,
    unsafe characters dropped; then checked (L{checkNick}).
    """
    cleaned = "".join(ch for ch in _ESCAPE.sub("", nick) if not _unsafe(ch)).strip()
    if not cleaned and nick:
        # Say why: "must be a non-empty string" would puzzle whoever typed one.
        raise BadText(
            "nickname has nothing left once surrounding space, control and invisible"
            " characters are removed"
        )
    return checkNick(cleaned)


def checkRoom(name: object) -> str:
    """
    A room name: 1-64 of lowercase letters, digits, C{.}, C{_} and C{-},
    starting with a letter or digit (it becomes the resource C{chat:<name>}).
    """
    if not isinstance(name, str) or not _ROOM.match(name):
        raise BadText("room name must be 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return name


def parseRoom(target: str) -> str | None:
    """
    The room a user's C{TARGET} names (C{#room} or C{chat:room}, case folded),
    or C{None} when it names a node.
    """
    for prefix in ("#", "chat:"):
        if target.startswith(prefix):
            return checkRoom(target[len(prefix) :].lower())
    return None
