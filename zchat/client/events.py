"""What a ``Client`` hands the application: broker events, plus two local notices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zchat.protocol.events import DirectMessage, ErrorReply, Event, RoomEvent


@dataclass(frozen=True, slots=True)
class Status(Event):
    """The connection's state changed: ``connected``, ``silent``, ``reconnecting``,
    ``registered`` (again) or ``refused``; ``text`` says it for a person."""

    type: ClassVar[str] = "status"
    state: str
    text: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "status", "state": self.state, "text": self.text}


@dataclass(frozen=True, slots=True)
class Missed(Event):
    """``count`` events of ``room`` were lost for good (history no longer has them)."""

    type: ClassVar[str] = "missed"
    room: str
    count: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "missed", "room": self.room, "count": self.count}


ClientEvent = RoomEvent | DirectMessage | ErrorReply | Status | Missed
