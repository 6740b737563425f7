"""Redis key names and the envelope head the publish script completes. Pure.

Everything one room needs (meta hash, history stream, roster, say ids, channel)
carries the same hash tag ``{r:ROOM}``, so one Lua script may touch it all on a
Redis Cluster too. Nicks, owners and nodes each have a tag of their own.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

PREFIX: Final = "zc:"
#: The cluster's epoch: a lost Redis dataset loses it, and the next node writes a new one.
EPOCH: Final = "zc:epoch"
#: Every node that ever held a lease and has not been reaped: id -> first seen.
NODES: Final = "zc:nodes"


def _esc(name: str) -> str:
    # A "}" would end the hash tag early; "%" escapes so that the mapping stays one-to-one.
    return name.replace("%", "%25").replace("}", "%7D")


def _unesc(name: str) -> str:
    return name.replace("%7D", "}").replace("%25", "%")


def room_tag(room: str) -> str:
    return f"{PREFIX}{{r:{_esc(room)}}}"


def room_keys(room: str) -> tuple[str, str, str]:
    """The room's meta hash (epoch, top seq, topic), history stream and roster hash."""
    tag = room_tag(room)
    return f"{tag}:meta", f"{tag}:hist", f"{tag}:members"


def said_key(room: str, nick_key: str, say_id: str) -> str:
    """Marks a ``say`` id as published (value: its seq), in the room's slot."""
    return f"{room_tag(room)}:said:{_esc(nick_key)}:{say_id}"


def room_channel(room: str) -> str:
    return f"{room_tag(room)}:ch"


def channel_room(channel: str) -> str | None:
    """The room a room channel belongs to, else None."""
    start = len(PREFIX) + 3
    if not (channel.startswith(PREFIX + "{r:") and channel.endswith("}:ch")):
        return None
    return _unesc(channel[start:-4])


def nick_key(nick_fold: str) -> str:
    """A registration: hash of node, nick, resume token, CURVE key."""
    return f"{PREFIX}{{n:{_esc(nick_fold)}}}"


def owner_key(nick_fold: str) -> str:
    """The CURVE key that owns a nick, for ever (as ``Store.owner``)."""
    return f"{PREFIX}{{o:{_esc(nick_fold)}}}"


def node_tag(node: str) -> str:
    return f"{PREFIX}{{node:{_esc(node)}}}"


def node_lease(node: str) -> str:
    return f"{node_tag(node)}:lease"


def node_sessions(node: str) -> str:
    """The node's sessions: nick fold -> packed (nick, resume, rooms)."""
    return f"{node_tag(node)}:sessions"


def node_reap(node: str) -> str:
    """Claimed by the one node that cleans up after this (dead) node."""
    return f"{node_tag(node)}:reap"


def node_channel(node: str) -> str:
    """Direct messages for sessions on this node."""
    return f"{node_tag(node)}:dm"


def envelope_head(wire: dict[str, Any]) -> bytes:
    """``wire`` packed with ``seq`` last and its value left off, for the script to add.

    Redis allocates the seq, so the envelope is finished there: head + msgpack(seq).
    """
    fields = {k: v for k, v in wire.items() if k != "seq"}
    fields["seq"] = 0
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    # A 0 packs as the one byte 0x00 (positive fixint).
    assert data.endswith(b"\x00")
    return data[:-1]


def finish(head: bytes, seq: int) -> bytes:
    """The envelope the script stored for ``head`` at ``seq``."""
    tail: bytes = msgpack.packb(seq)
    return head + tail
