"""Broker-to-client envelopes as typed events: built and encoded by the broker,
decoded once by the client, matched on by every renderer. Pure: no zmq, no clock.

Room events (:class:`Message`, :class:`Joined`, :class:`Left`, :class:`TopicSet`,
:class:`NickChanged` with a room) travel on the PUB with the room's ``seq``;
replies travel on the ROUTER and carry ``re``, the ``id`` of the command they
answer. ``to_wire`` gives the envelope map in the order docs/protocol.md shows;
:func:`zchat.protocol.decode.decode_event` reads them back.

``history`` is never on the wire: the client sets it on backlog it fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from zchat.protocol.names import VERSION
from zchat.protocol.wire import msg_envelope

_E = TypeVar("_E", bound="Event")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; ``type`` is the envelope's ``type`` field."""

    type: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The envelope's fields, plus ``history`` for backlog (``--json``, the web page)."""
        out = self.to_wire()
        if getattr(self, "history", False):
            out["history"] = True
        return out


def _opt(envelope: dict[str, Any], **optional: Any) -> dict[str, Any]:
    for key, value in optional.items():
        if value is not None and value is not False:
            envelope[key] = value
    return envelope


# ---------------------------------------------------------------- room events


@dataclass(frozen=True, slots=True)
class Message(Event):
    type: ClassVar[str] = "msg"
    room: str
    nick: str
    text: str
    ts: float
    seq: int
    action: bool = False
    id: str | None = None
    history: bool = False

    def to_wire(self) -> dict[str, Any]:
        return msg_envelope(
            self.room, self.nick, self.text, self.ts, self.seq, self.action, self.id
        )


@dataclass(frozen=True, slots=True)
class Joined(Event):
    type: ClassVar[str] = "join"
    room: str
    nick: str
    ts: float
    seq: int
    history: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "join",
            "room": self.room,
            "nick": self.nick,
            "ts": self.ts,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class Left(Event):
    type: ClassVar[str] = "leave"
    room: str
    nick: str
    reason: str
    ts: float
    seq: int
    message: str | None = None
    history: bool = False

    def to_wire(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "leave", "room": self.room, "nick": self.nick}
        env["reason"] = self.reason
        env["ts"] = self.ts
        return _opt(env, message=self.message or None, seq=self.seq)


@dataclass(frozen=True, slots=True)
class TopicSet(Event):
    type: ClassVar[str] = "topic"
    room: str
    nick: str
    text: str
    ts: float
    seq: int
    history: bool = False

    def to_wire(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "topic", "room": self.room, "nick": self.nick}
        env["text"] = self.text
        env.update(ts=self.ts, seq=self.seq)
        return env


@dataclass(frozen=True, slots=True)
class NickChanged(Event):
    """A nick change: published per room (``room``, ``seq``), or the reply to ``nick``."""

    type: ClassVar[str] = "nick"
    old: str
    new: str
    ts: float
    room: str | None = None
    seq: int | None = None
    re: str | None = None
    history: bool = False

    def to_wire(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "nick"}
        _opt(env, room=self.room)
        env.update(old=self.old, new=self.new, ts=self.ts)
        return _opt(env, seq=self.seq, re=self.re)

    @property
    def nick(self) -> str:
        return self.old


RoomEvent = Message | Joined | Left | TopicSet | NickChanged


# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class DirectMessage(Event):
    """A DM: to its recipient, and (with ``re``) to its sender as confirmation."""

    type: ClassVar[str] = "dm"
    nick: str
    to: str
    text: str
    ts: float
    action: bool = False
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "dm", "nick": self.nick, "to": self.to}
        env.update(text=self.text, ts=self.ts)
        return _opt(env, action=self.action, re=self.re)


@dataclass(frozen=True, slots=True)
class ErrorReply(Event):
    """An ``error``: ``code`` is an :class:`ErrorCode`; ``data`` the code's extra fields."""

    type: ClassVar[str] = "error"
    code: str
    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        env = {"type": "error", "code": self.code, "reason": self.reason, **self.data}
        return _opt(env, re=self.re)

    @property
    def limit(self) -> float | None:
        value = self.data.get("limit")
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class RoomInfo(Event):
    """A room's state: the ``who`` reply (to ``who`` and ``join``) and each ``welcome`` room."""

    type: ClassVar[str] = "who"
    room: str
    seq: int
    topic: str
    users: tuple[str, ...]
    count: int
    re: str | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "topic": self.topic,
            "users": list(self.users),
            "count": self.count,
        }

    def to_wire(self) -> dict[str, Any]:
        return _opt({"type": "who", "room": self.room, **self.fields()}, re=self.re)


@dataclass(frozen=True, slots=True)
class Limits:
    text: int
    frame: int
    nick: int
    room: int
    rooms: int
    history: int
    rate: float
    burst: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "frame": self.frame,
            "nick": self.nick,
            "room": self.room,
            "rooms": self.rooms,
            "history": self.history,
            "rate": self.rate,
            "burst": self.burst,
        }


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    type: ClassVar[str] = "welcome"
    nick: str
    heartbeat: float
    epoch: str
    session: str
    rooms: tuple[RoomInfo, ...]
    limits: Limits
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "welcome", "v": VERSION, "nick": self.nick}
        env.update(heartbeat=self.heartbeat, epoch=self.epoch, session=self.session)
        env["rooms"] = {info.room: info.fields() for info in self.rooms}
        env["limits"] = self.limits.to_wire()
        return _opt(env, re=self.re)


@dataclass(frozen=True, slots=True)
class Ack(Event):
    """A ``say`` with an ``id`` the broker had already published: ``dup`` is true."""

    type: ClassVar[str] = "ack"
    re: str
    room: str
    seq: int
    dup: bool = False

    def to_wire(self) -> dict[str, Any]:
        env = {"type": "ack", "re": self.re, "room": self.room, "seq": self.seq}
        return _opt(env, dup=self.dup)


@dataclass(frozen=True, slots=True)
class Pong(Event):
    type: ClassVar[str] = "pong"
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _opt({"type": "pong"}, re=self.re)


@dataclass(frozen=True, slots=True)
class SyncSeen(Event):
    """The echo of a ``sync`` on the PUB, under the token's own topic."""

    type: ClassVar[str] = "sync"
    token: str
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _opt({"type": "sync", "token": self.token}, re=self.re)


@dataclass(frozen=True, slots=True)
class HistoryReply(Event):
    """The ``history`` reply; the broker packs ``events`` from stored bytes (see wire)."""

    type: ClassVar[str] = "history"
    room: str
    after: int
    before: int
    epoch: str
    missing: int
    events: tuple[RoomEvent, ...] = ()
    re: str | None = None

    def header(self) -> dict[str, Any]:
        env: dict[str, Any] = {"type": "history", "room": self.room, "after": self.after}
        env.update(before=self.before, epoch=self.epoch, missing=self.missing)
        return _opt(env, re=self.re)

    def to_wire(self) -> dict[str, Any]:
        return {**self.header(), "events": [e.to_wire() for e in self.events]}


@dataclass(frozen=True, slots=True)
class StatsReply(Event):
    """The broker's counters and gauges (the same snapshot ``/metrics`` reads)."""

    type: ClassVar[str] = "stats"
    stats: Mapping[str, Any]
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _opt({"type": "stats", **self.stats}, re=self.re)


#: What comes over the ROUTER: a ``nick`` reply is a :class:`NickChanged` without a room.
@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One line of a ``list`` reply."""

    room: str
    count: int
    topic: str

    def to_wire(self) -> dict[str, Any]:
        return {"room": self.room, "count": self.count, "topic": self.topic}


@dataclass(frozen=True, slots=True)
class RoomList(Event):
    """The ``list`` reply: occupied rooms, busiest first, at most a bounded number of
    them; ``total`` says how many there are in all."""

    type: ClassVar[str] = "list"
    rooms: tuple[RoomSummary, ...]
    total: int
    re: str | None = None

    def to_wire(self) -> dict[str, Any]:
        rooms = [r.to_wire() for r in self.rooms]
        return _opt({"type": "list", "rooms": rooms, "total": self.total}, re=self.re)


Reply = (
    DirectMessage
    | ErrorReply
    | RoomInfo
    | Welcome
    | Ack
    | Pong
    | HistoryReply
    | StatsReply
    | NickChanged
    | RoomList
)
BrokerEvent = RoomEvent | Reply | SyncSeen


def as_history(event: _E) -> _E:
    """The same room event, marked as backlog."""
    return replace(event, history=True)  # type: ignore[call-arg]
