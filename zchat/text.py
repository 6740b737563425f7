"""Pure text helpers shared by line mode and the terminal UI.

Everything another user wrote is untrusted: :func:`clean` makes it harmless
for a terminal (no control or escape sequences, no bidi overrides), and the
UI never parses it as markup. :func:`format_event` is line mode's rendering.
"""

from __future__ import annotations

import re
import time
import unicodedata
import zlib
from typing import Final

from zchat.client import Event

# Overrides and isolates reorder what follows them on screen.
_BIDI: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _harmless(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "↵"
    if ch == "\t":
        return " "
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation: ESC shows as ^[
    if code == 0x7F:
        return "^?"
    if 0x80 <= code < 0xA0 or ch in _BIDI:
        return "\ufffd"
    if unicodedata.category(ch) in ("Cs", "Co", "Zl", "Zp"):
        return "\ufffd"
    return ch


def clean(text: str) -> str:
    """``text`` with every control, escape and bidi character made visible and inert."""
    if text.isprintable():
        return text  # the common case, and printable excludes every character above
    return "".join(_harmless(ch) for ch in text)


def clock(ts: float | None) -> str:
    """HH:MM:SS in local time."""
    return time.strftime("%H:%M:%S", time.localtime(ts if ts is not None else time.time()))


def format_event(
    event: Event, *, own_nick: str | None = None, room: str | None = None
) -> str | None:
    """One line for line mode, or None for events it does not show.

    ``room`` is the current room: events from other rooms name theirs.
    """
    data = event.data
    nick = clean(event.nick or "?")
    text = clean(event.text or "")
    where = event.room
    tag = f"[{clean(where)}] " if where is not None and where != room else ""
    prefix = "(history) " if event.history else ""
    kind = event.type
    if kind == "msg":
        if data.get("action"):
            return f"{prefix}{clock(event.ts)} {tag}* {nick} {text}"
        return f"{prefix}{clock(event.ts)} {tag}<{nick}> {text}"
    if kind == "join":
        return f"{prefix}--> {nick} joined {clean(where or '?')}"
    if kind == "leave":
        reason = clean(str(data.get("reason", "")))
        message = data.get("message")
        extra = f": {clean(message)}" if isinstance(message, str) and message else ""
        return f"{prefix}<-- {nick} left {clean(where or '?')} ({reason}{extra})"
    if kind == "topic":
        return f"{prefix}-!- {nick} set the topic of {clean(where or '?')}: {text}"
    if kind == "nick":
        old = clean(str(data.get("old", "?")))
        new = clean(str(data.get("new", "?")))
        return f"{prefix}-!- {old} is now known as {new}"
    if kind == "dm":
        to = clean(str(data.get("to", "?")))
        body = f"* {nick} {text}" if data.get("action") else text
        if own_nick is not None and event.nick == own_nick and to != own_nick:
            return f"{clock(event.ts)} -> *{to}* {body}"
        return f"{clock(event.ts)} *{nick}* {body}"
    if kind == "error":
        code = clean(str(data.get("code", "error")))
        return f"!!! {code}: {clean(str(data.get('reason', '')))}"
    if kind == "status":
        return f"-!- {clean(str(data.get('text', '')))}"
    if kind == "missed":
        return f"-!- {data.get('count', '?')} messages missed in {clean(where or '?')}"
    return None


#: Nick colours that read well on a dark background.
NICK_COLOURS: Final = (
    "#e06c75",
    "#98c379",
    "#e5c07b",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#d19a66",
    "#ff79c6",
    "#8be9fd",
    "#50fa7b",
    "#bd93f9",
    "#f78c6c",
)


def nick_colour(nick: str) -> str:
    """A colour for ``nick`` that is the same in every session and on every machine."""
    # crc32, not hash(): str hashes are salted per process.
    key = unicodedata.normalize("NFKC", nick).casefold()
    return NICK_COLOURS[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(NICK_COLOURS)]


def mention_spans(text: str, nick: str) -> list[tuple[int, int]]:
    """Where ``text`` names ``nick`` as a whole word (any case): (start, end) pairs."""
    if not nick:
        return []
    pattern = re.compile(rf"(?<!\w){re.escape(nick)}(?!\w)", re.IGNORECASE)
    return [match.span() for match in pattern.finditer(text)]
