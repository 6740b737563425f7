"""Client-to-broker commands: frozen dataclasses, decoded and validated from a frame,
and encoded by clients. Pure: no zmq, no clock.

:func:`decode_command` either returns one command or raises :class:`ProtocolError`;
nothing else escapes it, whatever the bytes. ``to_wire`` is the envelope a client sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

from zchat.errors import MessageTooLarge, ProtocolError
from zchat.protocol.names import (
    MAX_HISTORY_LIMIT,
    MAX_ID,
    MAX_REASON,
    MAX_ROOMS_PER_HELLO,
    MAX_TEXT,
    MAX_TOKEN,
    VERSION,
    ErrorCode,
    check_nick,
    check_room,
    check_token,
)
from zchat.protocol.wire import check_type, unpack_map


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[str] = "hello"

    nick: str
    rooms: tuple[str, ...]
    resume: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    TYPE: ClassVar[str] = "say"

    room: str
    text: str
    action: bool = False
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"

    id: str | None = None


@dataclass(frozen=True, slots=True)
class Bye:
    TYPE: ClassVar[str] = "bye"

    reason: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Sync:
    TYPE: ClassVar[str] = "sync"

    token: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    TYPE: ClassVar[str] = "join"

    room: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    TYPE: ClassVar[str] = "leave"

    room: str
    reason: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Who:
    TYPE: ClassVar[str] = "who"

    room: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    TYPE: ClassVar[str] = "topic"

    room: str
    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Nick:
    TYPE: ClassVar[str] = "nick"

    nick: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Dm:
    TYPE: ClassVar[str] = "dm"

    to: str
    text: str
    action: bool = False
    id: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    TYPE: ClassVar[str] = "history"

    room: str
    after: int
    before: int | None
    limit: int
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    TYPE: ClassVar[str] = "stats"

    id: str | None = None


@dataclass(frozen=True, slots=True)
class List:
    """The rooms people are in, busiest first (``/list``)."""

    TYPE: ClassVar[str] = "list"

    id: str | None = None


Command = (
    Hello
    | Say
    | Ping
    | Bye
    | Sync
    | Join
    | Leave
    | Who
    | Topic
    | Nick
    | Dm
    | History
    | Stats
    | List
)


def _str(env: dict[str, Any], key: str, limit: int, *, optional: bool = False) -> str | None:
    value = env.get(key)
    if value is None:
        if optional:
            return None
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"missing field {key!r}")
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"field {key!r} must be a string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise MessageTooLarge(key, size, limit)
    return value


def _req_str(env: dict[str, Any], key: str, limit: int) -> str:
    value = _str(env, key, limit)
    assert value is not None
    return value


def _int(env: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    value = env.get(key)
    if value is None:
        return default
    # bool is an int in Python and msgpack keeps them distinct: refuse it.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"field {key!r} must be an integer")
    if not lo <= value <= hi:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"field {key!r} must be in {lo}..{hi}")
    return value


def _bool(env: dict[str, Any], key: str) -> bool:
    value = env.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"field {key!r} must be a boolean")
    return value


def _id(env: dict[str, Any]) -> str | None:
    return _str(env, "id", MAX_ID, optional=True)


def _text(env: dict[str, Any], text_limit: int) -> str:
    text = _req_str(env, "text", text_limit)
    if not text:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "text is empty")
    return text


def _name(env: dict[str, Any], key: str, check: Callable[[object], str], code: ErrorCode) -> str:
    # A name field answers with its own code whatever is wrong with it, and nil is
    # absent, as in every other field.
    value = env.get(key)
    if value is None:
        raise ProtocolError(code, f"missing field {key!r}")
    return check(value)


def _room(env: dict[str, Any]) -> str:
    return _name(env, "room", check_room, ErrorCode.BAD_ROOM)


def _nick(env: dict[str, Any], key: str) -> str:
    return _name(env, key, check_nick, ErrorCode.BAD_NICK)


def _hello(env: dict[str, Any], text_limit: int) -> Hello:
    version = env.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(
            ErrorCode.BAD_VERSION, "hello needs an integer 'v'", supported=[VERSION]
        )
    if version != VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION, f"version {version} is not supported", supported=[VERSION]
        )
    nick = _nick(env, "nick")
    raw_rooms = env.get("rooms", ["lobby"])
    if not isinstance(raw_rooms, list):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "field 'rooms' must be an array")
    if len(raw_rooms) > MAX_ROOMS_PER_HELLO:
        raise ProtocolError(
            ErrorCode.TOO_MANY_ROOMS,
            f"at most {MAX_ROOMS_PER_HELLO} rooms",
            limit=MAX_ROOMS_PER_HELLO,
        )
    rooms = tuple(dict.fromkeys(check_room(r) for r in raw_rooms))
    return Hello(nick, rooms, _str(env, "resume", MAX_TOKEN, optional=True), _id(env))


def _history(env: dict[str, Any], text_limit: int) -> History:
    after = _int(env, "after", 0, 0, 2**62)
    before = _int(env, "before", None, 1, 2**62)
    limit = _int(env, "limit", 100, 1, MAX_HISTORY_LIMIT)
    assert after is not None
    assert limit is not None
    return History(_room(env), after, before, limit, _id(env))


def _sync(env: dict[str, Any], text_limit: int) -> Sync:
    token = _req_str(env, "token", MAX_TOKEN)
    if not check_token(token):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "token must be 1-64 of [A-Za-z0-9_-]")
    return Sync(token, _id(env))


_Decoder = Callable[[dict[str, Any], int], Command]

_DECODERS: Final[dict[str, _Decoder]] = {
    "hello": _hello,
    "say": lambda e, lim: Say(_room(e), _text(e, lim), _bool(e, "action"), _id(e)),
    "ping": lambda e, lim: Ping(_id(e)),
    "bye": lambda e, lim: Bye(_str(e, "reason", MAX_REASON, optional=True), _id(e)),
    "sync": _sync,
    "join": lambda e, lim: Join(_room(e), _id(e)),
    "leave": lambda e, lim: Leave(_room(e), _str(e, "reason", MAX_REASON, optional=True), _id(e)),
    "who": lambda e, lim: Who(_room(e), _id(e)),
    "topic": lambda e, lim: Topic(_room(e), _req_str(e, "text", MAX_REASON), _id(e)),
    "nick": lambda e, lim: Nick(_nick(e, "nick"), _id(e)),
    "dm": lambda e, lim: Dm(_nick(e, "to"), _text(e, lim), _bool(e, "action"), _id(e)),
    "history": _history,
    "stats": lambda e, lim: Stats(_id(e)),
    "list": lambda e, lim: List(_id(e)),
}


def decode_command(frame: bytes, text_limit: int = MAX_TEXT) -> Command:
    """Decode and validate one client-to-broker frame."""
    env = unpack_map(frame)
    try:
        kind = check_type(env)
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"unknown type {kind[:32]!r}")
        command: Command = decoder(env, text_limit)
    except ProtocolError as exc:
        # So the error can name the command it answers, when its id is sound.
        ref = env.get("id")
        if isinstance(ref, str) and len(ref.encode("utf-8", "surrogatepass")) <= MAX_ID:
            exc.ref = ref
        raise
    return command


def to_wire(command: Command) -> dict[str, Any]:
    """The envelope a client sends for ``command`` (unset optional fields left out)."""
    envelope: dict[str, Any] = {"type": command.TYPE}
    if isinstance(command, Hello):
        envelope["v"] = VERSION
    for field in fields(command):
        value = getattr(command, field.name)
        if value is None or value is False:
            continue
        envelope[field.name] = list(value) if isinstance(value, tuple) else value
    return envelope
