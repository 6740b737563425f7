"""Reading broker envelopes back into typed events (the client's side of
:mod:`zchat.protocol.events`). Pure: every field's type is checked; a wrong one
raises :class:`ProtocolError` (``bad_envelope``), an unknown type gives None."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zchat.errors import ProtocolError
from zchat.protocol.events import (
    Ack,
    BrokerEvent,
    DirectMessage,
    ErrorReply,
    HistoryReply,
    Joined,
    Left,
    Limits,
    Message,
    NickChanged,
    Pong,
    RoomInfo,
    RoomList,
    RoomSummary,
    StatsReply,
    SyncSeen,
    TopicSet,
    Welcome,
)
from zchat.protocol.names import ErrorCode


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


def _room_list(env: Mapping[str, Any]) -> RoomList:
    rooms = env.get("rooms")
    if not isinstance(rooms, list):
        raise _bad("field 'rooms' must be an array")
    summaries = tuple(
        RoomSummary(_s(r, "room"), _i(r, "count"), _s(r, "topic"))
        for r in rooms
        if isinstance(r, Mapping)
    )
    return RoomList(summaries, _i(env, "total"), _os(env, "re"))


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
        "list": _room_list,
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
