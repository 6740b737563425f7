"""What one person sets for themselves, the same in every front end: whom to ignore,
whether they are away, and how a mention or a direct message gets their attention.

All of it is client-side: the broker knows nothing of it, so ``/ignore`` hides
a nick's lines from this client only, and ``/away`` answers direct messages
from this client (once per person per absence) while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from zchat.client.events import ClientEvent
from zchat.protocol.events import DirectMessage, Message
from zchat.protocol.names import fold
from zchat.ui.render import clean, mention_spans

#: Most nicks one can ignore: the set stays small whatever is typed.
MAX_IGNORED: Final = 500


class Notify(StrEnum):
    """How a mention or a direct message is signalled (``--notify``)."""

    NONE = "none"
    BELL = "bell"
    #: The bell and a desktop notification (OSC 9: iTerm2, Windows Terminal, kitty, ...).
    OSC9 = "osc9"
    #: The bell and a desktop notification (OSC 777: VTE terminals, urxvt).
    OSC777 = "osc777"


@dataclass(slots=True)
class Personal:
    notify: Notify = Notify.BELL
    #: Folded nicks whose messages and direct messages are not shown.
    ignored: dict[str, str] = field(default_factory=dict)
    #: The away message; None while here.
    away: str | None = None
    #: Folded nicks already told that we are away, this absence.
    told: set[str] = field(default_factory=set)

    def ignore(self, nick: str) -> bool:
        """Ignore ``nick``; False if the list is full."""
        if fold(nick) not in self.ignored and len(self.ignored) >= MAX_IGNORED:
            return False
        self.ignored[fold(nick)] = nick
        return True

    def unignore(self, nick: str) -> bool:
        return self.ignored.pop(fold(nick), None) is not None

    def set_away(self, text: str | None) -> None:
        self.away = text
        self.told.clear()

    def hides(self, event: ClientEvent) -> bool:
        """Whether ``event`` comes from someone ignored."""
        if isinstance(event, Message | DirectMessage):
            return fold(event.nick) in self.ignored
        return False

    def calls_for(self, event: ClientEvent, own_nick: str) -> bool:
        """A live mention of us, or a direct message to us: worth a bell."""
        if self.hides(event) or fold(getattr(event, "nick", "")) == fold(own_nick):
            return False
        if isinstance(event, DirectMessage):
            return True
        if isinstance(event, Message) and not event.history:
            return bool(mention_spans(clean(event.text), clean(own_nick)))
        return False

    def auto_reply(self, event: ClientEvent, own_nick: str) -> str | None:
        """The away message owed to the sender of ``event``, once per absence."""
        if self.away is None or not isinstance(event, DirectMessage):
            return None
        sender = fold(event.nick)
        if sender == fold(own_nick) or sender in self.told or self.hides(event):
            return None
        self.told.add(sender)
        return f"(away) {self.away}"


def alert_sequence(notify: Notify, title: str, body: str) -> str:
    """What to write to the terminal to get attention. ``title`` and ``body`` are
    cleaned here: a notification must not carry escape sequences of its own."""
    if notify is Notify.NONE:
        return ""
    # BEL, ESC and ';' would end or split the sequence.
    title, body = (clean(t).replace(";", ",")[:200] for t in (title, body))
    if notify is Notify.OSC9:
        return f"\x1b]9;{title}: {body}\x07\a"
    if notify is Notify.OSC777:
        return f"\x1b]777;notify;{title};{body}\x07\a"
    return "\a"
