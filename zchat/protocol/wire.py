"""Bytes on the wire: msgpack envelopes and PUB topics. Pure: no zmq, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgpack

from zchat.errors import MessageTooLarge, ProtocolError
from zchat.protocol.names import MAX_FRAME, ErrorCode

# A hostile map of many tiny items costs ~70x its wire size once decoded, so the
# container limits are far below what MAX_FRAME alone would allow.
_MAX_ARRAY: Final = 256
_MAX_MAP: Final = 64

#: Separates the topic from the envelope in a PUB frame. Rooms and tokens
#: cannot contain it (control characters are refused), so prefixes are exact.
TOPIC_END: Final = b"\x00"
ROOM_TOPIC_PREFIX: Final = "#"
SYNC_TOPIC_PREFIX: Final = "!"


def unpack(frame: bytes, limit: int = MAX_FRAME, *, max_array: int = _MAX_ARRAY) -> dict[str, Any]:
    """Decode one frame into an envelope map with a str ``type``, or raise ``ProtocolError``.

    The defaults fit what a peer may send the broker; a client reading the
    broker's replies passes ``MAX_REPLY_FRAME`` and ``MAX_REPLY_ARRAY``.
    """
    env = unpack_map(frame, limit, max_array=max_array)
    check_type(env)
    return env


def check_type(env: dict[str, Any]) -> str:
    kind = env.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_ENVELOPE, "missing string field 'type'")
    return kind


def unpack_map(
    frame: bytes, limit: int = MAX_FRAME, *, max_array: int = _MAX_ARRAY
) -> dict[str, Any]:
    """Decode one frame into a map, its ``type`` unchecked (so its ``id`` can be read first)."""
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
    return env


#: Reused: making a Packer costs as much as packing a small map. Safe from any
#: thread: packing built-in types runs no Python code, so holds the GIL throughout,
#: and a failed pack resets the buffer.
_PACKER: Final = msgpack.Packer(use_bin_type=True)


def pack(envelope: dict[str, Any]) -> bytes:
    data: bytes = _PACKER.pack(envelope)
    return data


def msg_envelope(
    room: str, nick: str, text: str, ts: float, seq: int, action: bool, id: str | None
) -> dict[str, Any]:
    """The envelope of a ``msg`` (``Message.to_wire``), built without the event: a busy
    broker's most frequent envelope, where building the frozen event would cost more
    than the map (and here, in a compiled module, it is built natively)."""
    env: dict[str, Any] = {"type": "msg", "room": room, "nick": nick, "text": text, "ts": ts}
    if action:
        env["action"] = True
    if id is not None:
        env["id"] = id
    env["seq"] = seq
    return env


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


def pack_with_raw_array(header: dict[str, Any], key: str, items: Iterable[bytes]) -> bytes:
    """Pack ``header`` plus ``key``: an array of already-packed envelopes, without re-decoding."""
    packer = msgpack.Packer(use_bin_type=True)
    items = list(items)
    parts = [packer.pack_map_header(len(header) + 1)]
    for name, value in header.items():
        parts.append(packer.pack(name))
        parts.append(packer.pack(value))
    parts.append(packer.pack(key))
    parts.append(packer.pack_array_header(len(items)))
    parts.extend(items)
    return b"".join(parts)
