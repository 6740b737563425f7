"""Text for a terminal, shared by line mode and the terminal UI.

Everything another user wrote is untrusted: :func:`clean` makes it harmless
for a terminal (no control or escape sequences, no bidi overrides), and the
UI never parses it as markup. :func:`format_event` is line mode's rendering.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import zlib
from collections.abc import Mapping
from typing import Any, Final

from zchat.client.events import ClientEvent, Missed, Status
from zchat.errors import (
    BrokerError,
    ClosedError,
    ConnectTimeout,
    NoAnswer,
    NotConnected,
    ProtocolError,
    UsageError,
    ZchatError,
)
from zchat.protocol.events import (
    DirectMessage,
    ErrorReply,
    Joined,
    Left,
    Message,
    NickChanged,
    TopicSet,
)
from zchat.protocol.names import fold

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
    event: ClientEvent, *, own_nick: str | None = None, room: str | None = None
) -> str | None:
    """One line for line mode, or None for events it does not show.

    ``room`` is the current room: events from other rooms name theirs.
    """
    prefix = "(history) " if getattr(event, "history", False) else ""
    where = getattr(event, "room", None)
    tag = f"[{clean(where)}] " if where is not None and where != room else ""
    match event:
        case Message(nick=nick, text=text, ts=ts, action=action):
            said = f"* {clean(nick)} {clean(text)}" if action else f"<{clean(nick)}> {clean(text)}"
            return f"{prefix}{clock(ts)} {tag}{said}"
        case Joined(room=name, nick=nick):
            return f"{prefix}--> {clean(nick)} joined {clean(name)}"
        case Left(room=name, nick=nick, reason=reason, message=message):
            extra = f": {clean(message)}" if message else ""
            return f"{prefix}<-- {clean(nick)} left {clean(name)} ({clean(reason)}{extra})"
        case TopicSet(room=name, nick=nick, text=text):
            return f"{prefix}-!- {clean(nick)} set the topic of {clean(name)}: {clean(text)}"
        case NickChanged(old=old, new=new):
            return f"{prefix}-!- {clean(old)} is now known as {clean(new)}"
        case DirectMessage(nick=nick, to=to, text=text, ts=ts, action=action):
            body = f"* {clean(nick)} {clean(text)}" if action else clean(text)
            # Labelled so that a DM never reads as room chat.
            if own_nick is not None and nick == own_nick and to != own_nick:
                return f"{clock(ts)} [DM to {clean(to)}] {body}"
            return f"{clock(ts)} [DM from {clean(nick)}] {body}"
        case ErrorReply(code=code, reason=reason):
            return f"!!! {clean(code)}: {clean(reason)}"
        case Status(text=text):
            return f"-!- {clean(text)}"
        case Missed(room=name, count=count):
            return f"-!- {count} messages missed in {clean(name)}"
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
    key = fold(nick)
    return NICK_COLOURS[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(NICK_COLOURS)]


def mention_spans(text: str, nick: str) -> list[tuple[int, int]]:
    """Where ``text`` names ``nick`` as a whole word (any case): (start, end) pairs."""
    if not nick:
        return []
    pattern = re.compile(rf"(?<!\w){re.escape(nick)}(?!\w)", re.IGNORECASE)
    return [match.span() for match in pattern.finditer(text)]


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The machine fields of an error: ``code`` (the broker's, or a local one) and its extras.

    Local codes (docs/cli-json.md): ``bad_input``, ``no_broker``, ``not_connected``,
    ``timeout``, ``closed``, ``failed``.
    """
    if isinstance(exc, BrokerError | ProtocolError):
        return {"code": exc.code, **exc.data}
    for kind, code in (
        (UsageError, "bad_input"),
        (ConnectTimeout | NoAnswer, "no_broker"),
        (NotConnected, "not_connected"),
        (TimeoutError, "timeout"),
        (ClosedError, "closed"),
    ):
        if isinstance(exc, kind):
            return {"code": code}
    return {"code": "failed"}


def json_line(obj: Mapping[str, Any]) -> str:
    """One line of ``zchat client --json``: every line that mode prints comes from here.

    ensure_ascii: C1 controls (U+009B is a CSI) and bidi overrides in other users'
    text reach the terminal as \\u escapes, inert.
    """
    return json.dumps(obj, ensure_ascii=True)


def error_json(exc: ZchatError) -> str:
    """The JSON object (one line) of an error that ends ``zchat client --json``."""
    reason = exc.reason if isinstance(exc, BrokerError | ProtocolError) else str(exc)
    return json_line({"type": "error", **error_fields(exc), "fatal": True, "reason": reason})


def error_line(exc: ZchatError) -> str:
    """The one line a person sees when a command fails (``zchat: ...``), made harmless."""
    if isinstance(exc, BrokerError | ProtocolError):
        return f"zchat: {clean(exc.code)}: {clean(exc.reason)}"
    return f"zchat: {clean(str(exc))}"
