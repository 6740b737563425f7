"""Client logic that needs no broker: fed envelopes directly."""

from __future__ import annotations

from typing import Any

from zchat import Client
from zchat.client.rooms import RoomState


def msg(seq: int, text: str, msg_id: str, nick: str = "Batman") -> dict[str, Any]:
    return {
        "type": "msg",
        "room": "lobby",
        "nick": nick,
        "text": text,
        "ts": 1.0,
        "seq": seq,
        "id": msg_id,
    }


async def test_a_message_published_twice_is_shown_once() -> None:
    client = Client("Robin")
    state = client.rooms["lobby"] = RoomState("lobby", seq=0)
    client._on_room_event(state, msg(1, "hello", "a-1"))
    client._on_room_event(state, msg(2, "hello", "a-1"))  # resent across a restart
    client._on_room_event(state, msg(3, "hello", "a-1", nick="Joker"))  # another sender's id
    client._on_room_event(state, msg(4, "again", "a-2"))
    shown = []
    while client._events:
        shown.append(client._events.popleft())
    assert [(e.nick, e.text, e.seq) for e in shown] == [
        ("Batman", "hello", 1),
        ("Joker", "hello", 3),
        ("Batman", "again", 4),
    ]
    assert client.duplicates == 1
    assert state.seq == 4
