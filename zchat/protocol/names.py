"""Names, limits and codes of protocol v1: pure, no zmq, no clock.

What a nick or room may be (:func:`check_nick`, :func:`check_room`), the
comparison key of both (:func:`fold`), the limits every peer must keep, and
every ``code`` and leave ``reason`` the broker sends.
"""

from __future__ import annotations

import functools
import unicodedata
from enum import StrEnum
from typing import Final

from zchat.errors import ProtocolError

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
    #: A cluster node cannot reach the store it shares with the others (Redis): the
    #: command was not carried out; try again (or on another broker).
    UNAVAILABLE = "unavailable"


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


def check_token(value: str) -> bool:
    """True if ``value`` is a sync token or resume token in the allowed alphabet."""
    return bool(value) and set(value) <= _TOKEN_CHARS
