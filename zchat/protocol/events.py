"""Broker-to-client envelopes as typed events: built and encoded by the broker,
decoded once by the client, matched on by every renderer. Pure: no zmq, no clock.

Room events (:class:`Message`, :class:`Joined`, :class:`Left`, :class:`TopicSet`,
:class:`NickChanged` with a room) travel on the PUB with the room's ``seq``;
replies travel on the ROUTER and carry ``re``, the ``id`` of the command they
answer. ``to_wire`` gives the envelope map in the order docs/protocol.md shows;
:func:`decode_event` checks every field's type and raises :class:`ProtocolError`.

``history`` is never on the wire: the client sets it on backlog it fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from zchat.errors import ProtocolError
from zchat.protocol.names import VERSION, ErrorCode

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
        env = {
            "type": "msg",
            "room": self.room,
            "nick": self.nick,
            "text": self.text,
            "ts": self.ts,
        }
        return _opt(env, action=self.action, id=self.id, seq=self.seq)


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


Reply = DirectMessage | ErrorReply | RoomInfo | Welcome | Ack | Pong | HistoryReply | StatsReply
BrokerEvent = RoomEvent | Reply | SyncSeen


def as_history(event: _E) -> _E:
    """The same room event, marked as backlog."""
    return replace(event, history=True)  # type: ignore[call-arg]


# ---------------------------------------------------------------- decoding


def _bad(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_ENVELOPE, what)


def _s(env: Mapping[str, Any], key: str) -> str:
    value = env.get(key)
    if not isinstance(value, str):
        raise _bad(f"{env.get('type')}: field {key!r} must be a string")
    return value


def _os(env: Mapping[str, Any], key: str) -> str | None:
    value = env.get(key)
    return None if value is None else _s(env, key)


def _i(env: Mapping[str, Any], key: str) -> int:
    value = env.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{env.get('type')}: field {key!r} must be an integer")
    return value


def _oi(env: Mapping[str, Any], key: str) -> int | None:
    return None if env.get(key) is None else _i(env, key)


def _f(env: Mapping[str, Any], key: str) -> float:
    value = env.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"{env.get('type')}: field {key!r} must be a number")
    return float(value)


def _b(env: Mapping[str, Any], key: str) -> bool:
    return env.get(key) is True


def _room_info(room: str, env: Mapping[str, Any], re: str | None = None) -> RoomInfo:
    users = env.get("users")
    if not isinstance(users, list):
        raise _bad("field 'users' must be an array")
    names = tuple(u for u in users if isinstance(u, str))
    count = env.get("count")
    total = count if isinstance(count, int) and not isinstance(count, bool) else len(names)
    topic = env.get("topic")
    return RoomInfo(room, _i(env, "seq"), topic if isinstance(topic, str) else "", names, total, re)


def _limits(env: object) -> Limits:
    if not isinstance(env, dict):
        raise _bad("welcome: field 'limits' must be a map")
    ints = {k: _i(env, k) for k in ("text", "frame", "nick", "room", "rooms", "history", "burst")}
    return Limits(rate=_f(env, "rate"), **ints)


def _welcome(env: Mapping[str, Any]) -> Welcome:
    rooms = env.get("rooms")
    if not isinstance(rooms, dict):
        raise _bad("welcome: field 'rooms' must be a map")
    infos = []
    for name, info in rooms.items():
        if not isinstance(info, dict):
            raise _bad("welcome: each room must be a map")
        infos.append(_room_info(name, info))
    return Welcome(
        _s(env, "nick"),
        _f(env, "heartbeat"),
        _s(env, "epoch"),
        _s(env, "session"),
        tuple(infos),
        _limits(env.get("limits")),
        _os(env, "re"),
    )


def _history(env: Mapping[str, Any]) -> HistoryReply:
    raw = env.get("events")
    if not isinstance(raw, list):
        raise _bad("history: field 'events' must be an array")
    events = []
    for item in raw:
        event = decode_event(item) if isinstance(item, dict) else None
        if isinstance(event, Message | Joined | Left | TopicSet | NickChanged):
            events.append(event)
    return HistoryReply(
        _s(env, "room"),
        _i(env, "after"),
        _i(env, "before"),
        _s(env, "epoch"),
        _i(env, "missing"),
        tuple(events),
        _os(env, "re"),
    )


_ERROR_FIELDS = frozenset({"type", "code", "reason", "re"})


def _decoders() -> dict[str, Any]:
    return {
        "msg": lambda e: Message(
            _s(e, "room"),
            _s(e, "nick"),
            _s(e, "text"),
            _f(e, "ts"),
            _i(e, "seq"),
            _b(e, "action"),
            _os(e, "id"),
        ),
        "join": lambda e: Joined(_s(e, "room"), _s(e, "nick"), _f(e, "ts"), _i(e, "seq")),
        "leave": lambda e: Left(
            _s(e, "room"),
            _s(e, "nick"),
            _s(e, "reason"),
            _f(e, "ts"),
            _i(e, "seq"),
            _os(e, "message"),
        ),
        "topic": lambda e: TopicSet(
            _s(e, "room"), _s(e, "nick"), _s(e, "text"), _f(e, "ts"), _i(e, "seq")
        ),
        "nick": lambda e: NickChanged(
            _s(e, "old"), _s(e, "new"), _f(e, "ts"), _os(e, "room"), _oi(e, "seq"), _os(e, "re")
        ),
        "dm": lambda e: DirectMessage(
            _s(e, "nick"),
            _s(e, "to"),
            _s(e, "text"),
            _f(e, "ts"),
            _b(e, "action"),
            _os(e, "re"),
        ),
        "error": lambda e: ErrorReply(
            _s(e, "code"),
            _s(e, "reason"),
            {k: v for k, v in e.items() if k not in _ERROR_FIELDS},
            _os(e, "re"),
        ),
        "who": lambda e: _room_info(_s(e, "room"), e, _os(e, "re")),
        "welcome": _welcome,
        "ack": lambda e: Ack(_s(e, "re"), _s(e, "room"), _i(e, "seq"), _b(e, "dup")),
        "pong": lambda e: Pong(_os(e, "re")),
        "sync": lambda e: SyncSeen(_s(e, "token"), _os(e, "re")),
        "history": _history,
        "stats": lambda e: StatsReply(
            {k: v for k, v in e.items() if k not in ("type", "re")}, _os(e, "re")
        ),
    }


_DECODERS = _decoders()


def decode_event(envelope: Mapping[str, Any]) -> BrokerEvent | None:
    """The typed event of one broker envelope; None for a type this version does not know.

    Raises :class:`ProtocolError` (``bad_envelope``) when a field has the wrong type.
    """
    decoder = _DECODERS.get(envelope.get("type"))  # type: ignore[arg-type]
    if decoder is None:
        return None
    event: BrokerEvent = decoder(envelope)
    return event
