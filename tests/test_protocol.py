"""The envelope codec and validation, with no sockets."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat.protocol import (
    MAX_FRAME,
    ErrorCode,
    Hello,
    History,
    MessageTooLarge,
    ProtocolError,
    Say,
    check_nick,
    check_room,
    decode_command,
    fold,
    pack,
    room_topic,
    split_pub_frame,
    unpack,
)


def frame(**fields: object) -> bytes:
    return pack(dict(fields))


def code_of(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_command(data)
    return info.value.code


def test_hello_defaults_to_lobby() -> None:
    assert decode_command(frame(type="hello", v=1, nick="Batman")) == Hello("Batman", ("lobby",))


def test_hello_rooms_are_canonical_and_deduplicated() -> None:
    hello = decode_command(frame(type="hello", v=1, nick="x", rooms=["Lobby", "lobby", "Ｄev"]))
    assert isinstance(hello, Hello)
    assert hello.rooms == ("lobby", "dev")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"type": "hello", "v": 2, "nick": "x"}, ErrorCode.BAD_VERSION),
        ({"type": "hello", "v": True, "nick": "x"}, ErrorCode.BAD_VERSION),
        ({"type": "hello", "nick": "x"}, ErrorCode.BAD_VERSION),
        ({"type": "hello", "v": 1}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": ""}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "a" * 33}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "bat man"}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "bat\x1bman"}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "bat\u202eman"}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "bat\u200bman"}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": 7}, ErrorCode.BAD_NICK),
        ({"type": "hello", "v": 1, "nick": "x", "rooms": "lobby"}, ErrorCode.BAD_ENVELOPE),
        ({"type": "hello", "v": 1, "nick": "x", "rooms": ["a b"]}, ErrorCode.BAD_ROOM),
        ({"type": "hello", "v": 1, "nick": "x", "rooms": ["r"] * 33}, ErrorCode.TOO_MANY_ROOMS),
        ({"type": "say", "room": "lobby"}, ErrorCode.BAD_ENVELOPE),
        ({"type": "say", "room": "lobby", "text": ""}, ErrorCode.BAD_ENVELOPE),
        ({"type": "say", "room": "lobby", "text": b"bytes"}, ErrorCode.BAD_ENVELOPE),
        ({"type": "say", "room": "lobby", "text": "x" * 4097}, ErrorCode.TOO_LARGE),
        ({"type": "say", "room": "lobby", "text": "hi", "action": 1}, ErrorCode.BAD_ENVELOPE),
        ({"type": "say", "text": "hi"}, ErrorCode.BAD_ROOM),
        ({"type": "history", "room": "lobby", "limit": 501}, ErrorCode.BAD_ENVELOPE),
        ({"type": "history", "room": "lobby", "after": -1}, ErrorCode.BAD_ENVELOPE),
        ({"type": "sync", "token": "no spaces"}, ErrorCode.BAD_ENVELOPE),
        ({"type": "nope"}, ErrorCode.BAD_ENVELOPE),
        ({"type": 3}, ErrorCode.BAD_ENVELOPE),
        ({"kind": "say"}, ErrorCode.BAD_ENVELOPE),
    ],
)
def test_bad_fields_get_typed_errors(fields: dict[str, object], code: ErrorCode) -> None:
    assert code_of(pack(fields)) == code


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x93\x01\x02\x03",  # an array, not a map
        msgpack.packb({1: "int key"}),
        b"\x83\xa4type\xa3say\xa4room\xa5lobby\xa4text\xa1\xff",  # invalid UTF-8
        b"\x91" * 3000,  # deep nesting
        b"\xdf\xff\xff\xff\xff",  # a map that claims 4 billion entries
        msgpack.packb({"type": "say", "room": "lobby", "text": msgpack.ExtType(1, b"")}),
        msgpack.packb({"type": "say", "room": "lobby", "text": "x", "t": msgpack.ExtType(1, b"x")}),
    ],
)
def test_garbage_is_bad_envelope(data: bytes) -> None:
    assert code_of(data) == ErrorCode.BAD_ENVELOPE


def test_oversized_frame_is_too_large_with_data() -> None:
    with pytest.raises(MessageTooLarge) as info:
        unpack(b"\x00" * (MAX_FRAME + 1))
    assert info.value.size == MAX_FRAME + 1
    assert info.value.limit == MAX_FRAME
    assert info.value.code == ErrorCode.TOO_LARGE


def test_text_limit_is_in_utf8_bytes() -> None:
    text = "é" * 2049  # 4098 bytes
    with pytest.raises(MessageTooLarge) as info:
        decode_command(frame(type="say", room="lobby", text=text))
    assert info.value.size == 4098
    assert decode_command(frame(type="say", room="lobby", text="é" * 2048)) == Say(
        "lobby", "é" * 2048
    )


def test_unknown_fields_are_ignored() -> None:
    assert decode_command(frame(type="say", room="lobby", text="hi", future="x")) == Say(
        "lobby", "hi"
    )


def test_history_defaults() -> None:
    assert decode_command(frame(type="history", room="lobby")) == History("lobby", 0, None, 100)


def test_names_fold_case_and_compatibility_forms() -> None:
    assert fold("BATMAN") == fold("batman") == fold("Ｂａｔｍａｎ")
    assert check_room("LOBBY") == "lobby"
    assert check_nick("Batman") == "Batman"


def test_zero_width_joiner_in_nick_is_refused_but_emoji_allowed() -> None:
    assert check_nick("🦇") == "🦇"
    with pytest.raises(ProtocolError):
        check_nick("a\u200db")


def test_room_topics_are_exact_prefixes() -> None:
    assert not room_topic("lobby2").startswith(room_topic("lobby"))
    topic, body = split_pub_frame(room_topic("lobby") + pack({"type": "msg"}))
    assert topic == b"#lobby"
    assert unpack(body) == {"type": "msg"}


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_command(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(
        [
            "hello",
            "say",
            "ping",
            "bye",
            "sync",
            "join",
            "leave",
            "who",
            "topic",
            "nick",
            "dm",
            "history",
            "stats",
            "zzz",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "nick",
                "rooms",
                "room",
                "text",
                "id",
                "reason",
                "token",
                "to",
                "after",
                "before",
                "limit",
                "action",
                "resume",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_structured_but_wrong_maps_raise_only_protocol_error(
    kind: str, fields: dict[str, object]
) -> None:
    with contextlib.suppress(ProtocolError):
        decode_command(pack({"type": kind, **fields}))
