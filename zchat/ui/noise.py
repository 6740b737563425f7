"""Which presence lines (joins, leaves, quits) a person sees: in a busy room they
drown the conversation, and a backlog is for the conversation."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from zchat.client.events import ClientEvent
from zchat.protocol.events import Joined, Left
from zchat.protocol.names import fold

#: In ``auto``, rooms with more members than this hide live presence lines.
CROWD: Final = 20


class Joins(StrEnum):
    """The ``--joins`` setting."""

    SHOW = "show"
    HIDE = "hide"
    #: Hidden in the backlog and in rooms of more than :data:`CROWD` members.
    AUTO = "auto"


def hidden(event: ClientEvent, *, joins: Joins, members: int, own_nick: str) -> bool:
    """Whether ``event`` is a presence line this setting leaves out. One's own
    joins and leaves always show: they answer what one did."""
    if not isinstance(event, Joined | Left) or fold(event.nick) == fold(own_nick):
        return False
    if joins is Joins.SHOW:
        return False
    if joins is Joins.HIDE:
        return True
    return event.history or members > CROWD
