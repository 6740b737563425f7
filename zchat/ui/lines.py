"""How the terminal UI draws lines: styles, and every event as a ``rich.text.Text``.

Pure (no Textual). Other people's text goes through :func:`zchat.ui.render.clean`
and is appended as plain strings with styles chosen here: nothing is ever built
as a markup string, so ``[@click=...]`` in a message stays literal.
"""

from __future__ import annotations

from typing import Final

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from zchat.client.events import ClientEvent, Missed, Status
from zchat.protocol.events import (
    DirectMessage,
    ErrorReply,
    Joined,
    Left,
    Message,
    NickChanged,
    TopicSet,
)
from zchat.ui.render import clean, clock, mention_spans, nick_colour

#: Lines kept per room (and shown in the log): older ones scroll away for good.
SCROLLBACK: Final = 2000
#: Lines remembered by the input's up/down history.
INPUT_HISTORY: Final = 500
#: Width of the nick column.
GUTTER: Final = 12

TIME: Final = Style(color="grey50")
BAR: Final = Style(color="grey35")
MUTED: Final = Style(color="grey58")
HISTORY: Final = Style(dim=True, italic=True)
ACTION: Final = Style(italic=True)
MENTION_LINE: Final = Style(bgcolor="#3a2f0b")
MENTION: Final = Style(bold=True, color="#ffd75f")
DM: Final = Style(bold=True, color="#ff79c6")
ERROR: Final = Style(bold=True, color="#ff5f5f")
INFO: Final = Style(color="#8be9fd")
MISSED: Final = Style(bold=True, color="#ffb86c")
RULE: Final = Style(color="grey42")
UNREAD: Final = Style(bold=True, color="#e5c07b")

#: Connection states from the client's ``status`` events: symbol, style, words.
STATES: Final[dict[str, tuple[str, str, str]]] = {
    "connected": ("●", "bold #50fa7b", "connected"),
    "registered": ("●", "bold #50fa7b", "re-registered"),
    "silent": ("◌", "bold #f1fa8c", "broker silent"),
    "reconnecting": ("↻", "bold #f1fa8c", "reconnecting"),
    "refused": ("✖", "bold #ff5f5f", "refused"),
    "closing": ("○", "grey58", "leaving"),
}


# ---------------------------------------------------------------- pure rendering


def nick_style(nick: str, own_nick: str | None = None) -> Style:
    """Bold in the nick's stable colour; one's own nick reversed so it stands out."""
    return Style(bold=True, color=nick_colour(nick), reverse=nick == own_nick)


def _gutter(line: Text, label: str, style: Style | str) -> None:
    line.append(" " * max(0, GUTTER - cell_len(label)))
    line.append(label, style)
    line.append(" │ ", BAR)


def _start(ts: float | None) -> Text:
    line = Text()
    line.append(clock(ts), TIME)
    line.append(" ")
    return line


def event_line(event: ClientEvent, own_nick: str) -> Text | None:
    """One log line for ``event``, or None for events the log does not show.

    Every untrusted string is cleaned and appended as plain text: the result
    carries no markup, links or actions that came from the wire.
    """
    line = _start(getattr(event, "ts", None))
    match event:
        case Message(nick=nick, text=raw, action=action):
            text = clean(raw)
            style = nick_style(nick, own_nick)
            if action:
                _gutter(line, "*", ACTION)
                line.append(clean(nick), style)
                line.append(" ")
            else:
                _gutter(line, clean(nick), style)
            start = len(line)
            line.append(text, ACTION if action else "")
            spans = [] if nick == own_nick else mention_spans(text, clean(own_nick))
            for begin, end in spans:
                line.stylize(MENTION, start + begin, start + end)
            if spans:
                line.stylize(MENTION_LINE)
        case Joined(nick=nick, room=room):
            _gutter(line, "-->", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(f" joined {clean(room)}", MUTED)
        case Left(nick=nick, room=room, reason=reason, message=message):
            _gutter(line, "<--", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(f" left {clean(room)}", MUTED)
            extra = f": {clean(message)}" if message else ""
            if reason or extra:
                line.append(f" ({clean(reason)}{extra})", MUTED)
        case NickChanged(old=old, new=new):
            _gutter(line, "-!-", MUTED)
            line.append(clean(old), nick_style(old))
            line.append(" is now known as ", MUTED)
            line.append(clean(new), nick_style(new))
        case TopicSet(nick=nick, text=text):
            _gutter(line, "-!-", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(" set the topic: ", MUTED)
            line.append(clean(text))
        case DirectMessage(nick=nick, to=to, text=raw, action=action):
            text = clean(raw)
            outgoing = nick == own_nick and to != own_nick
            _gutter(line, f"→ *{clean(to)}*" if outgoing else f"*{clean(nick)}*", DM)
            if action:
                line.append(f"* {clean(nick)} ", ACTION)
            line.append(text, DM if not outgoing else "")
        case ErrorReply(code=code, reason=reason):
            _gutter(line, "!!!", ERROR)
            line.append(f"{clean(code)}: {clean(reason)}", ERROR)
        case Status(state=state, text=text):
            symbol, colour, _ = STATES.get(state, ("-!-", "", ""))
            _gutter(line, symbol, colour)
            line.append(clean(text), colour)
        case Missed(room=room, count=count):
            _gutter(line, "!!!", MISSED)
            line.append(
                f"{count} messages missed in {clean(room)}: the broker no longer had them", MISSED
            )
        case _:
            return None
    if getattr(event, "history", False):
        line.stylize(HISTORY)
    return line


def info_line(text: str, *, error: bool = False) -> Text:
    """A local line (help, who, a typing error); ``text`` is cleaned all the same."""
    line = _start(None)
    _gutter(line, "!!!" if error else "-!-", ERROR if error else INFO)
    line.append(clean(text), ERROR if error else INFO)
    return line


def rule_line(label: str) -> Text:
    line = Text()
    line.append(f"──────── {label} ────────", RULE)
    return line
