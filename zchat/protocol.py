"""zchat protocol v1: the envelope codec and its validation.

Pure: imports neither zmq nor the clock. Every inbound frame goes through
:func:`decode_command`, which either returns one frozen command dataclass or
raises :class:`ProtocolError`; nothing else escapes it, whatever the bytes.
docs/protocol.md is the specification; this module is its executable form.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import msgpack

VERSION: Final = 1

#: Largest inbound frame the broker decodes; bigger ones get ``too_large``.
MAX_FRAME: Final = 64 * 1024
#: Socket-level hard cap (ZMQ_MAXMSGSIZE): a peer above it is disconnected by libzmq.
MAX_WIRE_FRAME: Final = 256 * 1024
MAX_TEXT: Final = 4096
MAX_NICK: Final = 32
MAX_ROOM: Final = 64
MAX_REASON: Final = 256
MAX_ID: Final = 64
MAX_TOKEN: Final = 64
MAX_ROOMS_PER_HELLO: Final = 32
MAX_HISTORY_LIMIT: Final = 500
#: Largest broker reply a client decodes: a history of 500 events or a roster of
#: 1000 names (MAX_ROSTER in core) is far above MAX_FRAME.
MAX_REPLY_FRAME: Final = 32 * 1024 * 1024
MAX_REPLY_ARRAY: Final = 1000

# A hostile map of many tiny items costs ~70x its wire size once decoded, so the
# container limits are far below what MAX_FRAME alone would allow.
_MAX_ARRAY: Final = 256
_MAX_MAP: Final = 64

#: Separates the topic from the envelope in a PUB frame. Rooms and tokens
#: cannot contain it (control characters are refused), so prefixes are exact.
TOPIC_END: Final = b"\x00"
ROOM_TOPIC_PREFIX: Final = "#"
SYNC_TOPIC_PREFIX: Final = "!"

_TOKEN_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# Bidi overrides and isolates let a name display as another name.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class ErrorCode(StrEnum):
    """Every ``code`` an ``error`` envelope can carry."""

    BAD_ENVELOPE = "bad_envelope"
    BAD_VERSION = "bad_version"
    BAD_NICK = "bad_nick"
    BAD_ROOM = "bad_room"
    NICK_TAKEN = "nick_taken"
    NOT_REGISTERED = "not_registered"
    ALREADY_REGISTERED = "already_registered"
    TOO_LARGE = "too_large"
    NOT_IN_ROOM = "not_in_room"
    TOO_MANY_ROOMS = "too_many_rooms"
    NO_SUCH_NICK = "no_such_nick"
    RATE_LIMITED = "rate_limited"
    FULL = "full"
    #: Sent to a session's old connection when its owner registers the nick again.
    REPLACED = "replaced"


class LeaveReason(StrEnum):
    """Every ``reason`` the broker itself puts on a ``leave`` event.

    A client's own ``bye``/``leave`` may carry free text instead; the broker
    then publishes ``quit``/``part`` and puts the text in ``message``.
    """

    QUIT = "quit"
    PART = "part"
    TIMEOUT = "timeout"
    REPLACED = "replaced"
    FLOOD = "flood"
    SHUTDOWN = "shutdown"


class ProtocolError(Exception):
    """The one error type of the protocol layer; becomes an ``error`` envelope."""

    def __init__(self, code: ErrorCode, reason: str, **data: Any) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.data = data
        #: The ``id`` of the command that failed, if it could be read.
        self.ref: str | None = None


class MessageTooLarge(ProtocolError):
    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            ErrorCode.TOO_LARGE, f"{what} is {size} bytes, limit {limit}", size=size, limit=limit
        )
        self.size = size
        self.limit = limit


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Hello:
    nick: str
    rooms: tuple[str, ...]
    resume: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    room: str
    text: str
    action: bool = False
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Bye:
    reason: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Sync:
    token: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    reason: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Who:
    room: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    room: str
    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Nick:
    nick: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Dm:
    to: str
    text: str
    action: bool = False
    id: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    room: str
    after: int
    before: int | None
    limit: int
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    id: str | None = None


Command = Hello | Say | Ping | Bye | Sync | Join | Leave | Who | Topic | Nick | Dm | History | Stats


# ---------------------------------------------------------------- names


def _check_name(value: object, field: str, limit: int, code: ErrorCode) -> str:
    if not isinstance(value, str):
        raise ProtocolError(code, f"{field} must be a string")
    if not 1 <= len(value) <= limit:
        raise ProtocolError(code, f"{field} must be 1 to {limit} characters")
    for ch in value:
        if ch.isspace() or ch in _BIDI_CONTROLS or unicodedata.category(ch) in _BAD_CATEGORIES:
            raise ProtocolError(
                code, f"{field} may not contain whitespace, control or format characters"
            )
    return value


def fold(name: str) -> str:
    """The comparison key of a nick or room: NFKC, then casefold."""
    return unicodedata.normalize("NFKC", name).casefold()


def check_nick(value: object) -> str:
    """Return ``value`` if it is an acceptable nick, else raise ``bad_nick``."""
    return _check_name(value, "nick", MAX_NICK, ErrorCode.BAD_NICK)


def check_room(value: object) -> str:
    """Return the canonical (folded) room name, else raise ``bad_room``."""
    if type(value) is str:
        return _checked_room(value)
    return _check_room(value)


def _check_room(value: object) -> str:
    room = fold(_check_name(value, "room", MAX_ROOM, ErrorCode.BAD_ROOM))
    # Folding can lengthen a name (NFKC expands some ligatures) or, rarely,
    # produce a character the raw check would refuse; check the result too.
    return _check_name(room, "room", MAX_ROOM * 4, ErrorCode.BAD_ROOM)


#: Every ``say`` names a room: its check (a character-by-character walk and a
#: normalisation, ~2.5 us) is remembered. Refusals raise, so are never cached.
_checked_room = functools.lru_cache(maxsize=4096)(_check_room)


# ---------------------------------------------------------------- fields


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


def _room(env: dict[str, Any]) -> str:
    if "room" not in env:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "missing field 'room'")
    return check_room(env["room"])


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
    if "nick" not in env:
        raise ProtocolError(ErrorCode.BAD_NICK, "missing field 'nick'")
    nick = check_nick(env["nick"])
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
    if not token or not set(token) <= _TOKEN_CHARS:
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
    "nick": lambda e, lim: Nick(check_nick(e.get("nick")), _id(e)),
    "dm": lambda e, lim: Dm(check_nick(e.get("to")), _text(e, lim), _bool(e, "action"), _id(e)),
    "history": _history,
    "stats": lambda e, lim: Stats(_id(e)),
}


def unpack(frame: bytes, limit: int = MAX_FRAME, *, max_array: int = _MAX_ARRAY) -> dict[str, Any]:
    """Decode one frame into an envelope map, or raise ``ProtocolError``.

    The defaults fit what a peer may send the broker; a client reading the
    broker's replies passes ``MAX_REPLY_FRAME`` and ``MAX_REPLY_ARRAY``.
    """
    if len(frame) > limit:
        raise MessageTooLarge("frame", len(frame), limit)
    if not frame:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "empty frame")
    try:
        env = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_FRAME,
            max_bin_len=MAX_FRAME,
            max_array_len=max_array,
            max_map_len=_MAX_MAP,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types (ValueError, RecursionError, ...)
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(env, dict):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "an envelope must be a map")
    kind = env.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "missing string field 'type'")
    return env


def decode_command(frame: bytes, text_limit: int = MAX_TEXT) -> Command:
    """Decode and validate one client-to-broker frame."""
    env = unpack(frame)
    try:
        decoder = _DECODERS.get(env["type"])
        if decoder is None:
            raise ProtocolError(ErrorCode.BAD_ENVELOPE, f"unknown type {env['type'][:32]!r}")
        command: Command = decoder(env, text_limit)
    except ProtocolError as exc:
        # So the error can name the command it answers, when its id is sound.
        ref = env.get("id")
        if isinstance(ref, str) and len(ref.encode("utf-8", "surrogatepass")) <= MAX_ID:
            exc.ref = ref
        raise
    return command


#: Reused: making a Packer costs as much as packing a small map. Safe from any
#: thread: packing built-in types runs no Python code, so holds the GIL throughout,
#: and a failed pack resets the buffer.
_PACKER: Final = msgpack.Packer(use_bin_type=True)


def pack(envelope: dict[str, Any]) -> bytes:
    data: bytes = _PACKER.pack(envelope)
    return data


def room_topic(room: str) -> bytes:
    """The PUB topic of a (canonical) room, terminator included."""
    return (ROOM_TOPIC_PREFIX + room).encode() + TOPIC_END


def sync_topic(token: str) -> bytes:
    return (SYNC_TOPIC_PREFIX + token).encode() + TOPIC_END


def split_pub_frame(frame: bytes) -> tuple[bytes, bytes]:
    """Split a PUB frame into (topic, envelope bytes); raises ``ProtocolError``."""
    end = frame.find(TOPIC_END)
    if end < 0:
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "PUB frame has no topic terminator")
    return frame[:end], frame[end + 1 :]
