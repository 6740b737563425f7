"""The broker's fast path (``ping`` and ``say`` handled without building a command) against
the full validating path, its reference: the same frames must give the same bytes out,
the same errors and the same counters, whatever the frames."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig, Output
from zchat.broker.store import MemoryStore
from zchat.protocol import pack

PEER = b"\x00peer-a"
OTHER = b"\x00peer-b"


def make(fast: bool) -> BrokerCore:
    tokens = (f"token{n}" for n in itertools.count())
    core = BrokerCore(
        BrokerConfig(rate_limit=20.0, rate_burst=5, text_limit=64, dedupe_window=4),
        store=MemoryStore(500, epoch="e"),
        now=1000.0,
        new_token=lambda: next(tokens),
        fast_path=fast,
    )
    hello = {"type": "hello", "v": 1, "nick": "Batman", "rooms": ["lobby", "cave"]}
    core.receive(PEER, pack(hello), 1000.0)
    core.receive(OTHER, pack({**hello, "nick": "Robin", "rooms": ["lobby"]}), 1000.0)
    return core


def shown(outputs: list[Output]) -> list[tuple[str, bytes, bytes]]:
    return [(type(o).__name__, getattr(o, "peer", b""), o.data) for o in outputs]


# Mostly plausible values, so most frames reach the fast path's every check.
rooms = st.one_of(
    st.sampled_from(["lobby", "cave"]),
    st.sampled_from(["Lobby", "nowhere", "", "ｌobby", 5, None, ["lobby"]]),
)
texts = st.one_of(
    st.sampled_from(["hello", "hi"]),
    st.text(max_size=20),
    st.text(min_size=60, max_size=70),
    st.sampled_from(["hello", "", "x" * 64, "é" * 40, "\ud800"]),
    st.integers(-(2**40), 2**40),
    st.none(),
)
ids = st.one_of(
    st.sampled_from(["m1", "m2", "m3"]),
    st.sampled_from(["x" * 64, "x" * 65, "é" * 33, None, 7]),
)
actions = st.one_of(st.booleans(), st.sampled_from([0, 1, "yes", None]))


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["say", "say", "say", "ping", "Say", 7]))
    env: dict[str, Any] = {"type": kind}
    for key, values in (("room", rooms), ("text", texts), ("id", ids), ("action", actions)):
        if draw(st.booleans()) or (kind == "say" and key in ("room", "text")):
            env[key] = draw(values)
    if draw(st.booleans()):
        env["extra"] = draw(st.integers(-(2**40), 2**40))
    if draw(st.booleans()):
        # Another key order: not the type-first packing the fast path recognises.
        env = dict(reversed(list(env.items())))
    try:
        return pack(env)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return pack({"type": kind})


def _str_as(text: str, form: int) -> bytes:
    """``text`` as a msgpack str with header ``form`` (0 fixstr, 1 str8, 2 str16, 3 str32),
    minimal or not: msgpack reads them all alike."""
    raw = text.encode("utf-8", "surrogatepass")
    if form == 0 and len(raw) < 32:
        return bytes((0xA0 | len(raw),)) + raw
    if form <= 1 and len(raw) < 256:
        return b"\xd9" + bytes((len(raw),)) + raw
    if form <= 2:
        return b"\xda" + len(raw).to_bytes(2, "big") + raw
    return b"\xdb" + len(raw).to_bytes(4, "big") + raw


@st.composite
def hand_packed(draw: st.DrawFn) -> bytes:
    """A ``say`` packed by hand, with what a hostile or odd peer may vary at the byte
    level: str header forms (minimal or not), order, repeats, extra fields, bad UTF-8, a
    wrong entry count, missing or trailing bytes."""
    forms = st.integers(0, 3)
    values = {
        "room": st.one_of(
            st.sampled_from(["lobby", "cave", "Lobby", "nowhere", "", "ｌobby"]),
            st.text(max_size=5),
        ),
        "text": st.one_of(
            st.sampled_from(["hi", "x" * 40, "é" * 20, "x" * 64, "x" * 65, ""]),
            st.text(max_size=70),
        ),
        "id": st.sampled_from(["m1", "m2", "x" * 64, "x" * 65, "é" * 32, "é" * 33]),
    }
    # Half the time the shape a client sends (in any order), so the reader reads it.
    plain = draw(st.booleans())
    if plain:
        optional = draw(st.lists(st.sampled_from(["id", "action"]), unique=True))
        names = draw(st.permutations(["room", "text", *optional]))
    else:
        fields = st.sampled_from(["room", "text", "id", "action", "type", "extra"])
        names = draw(st.lists(fields, max_size=6))
    body = b""
    for name in names:
        body += _str_as(name, draw(st.sampled_from([0, 0, 0, 1])))
        if name == "action":
            body += draw(st.sampled_from([b"\xc3", b"\xc2", b"\xc0", b"\x01"]))
        elif name in values:
            value = draw(values[name])
            try:
                body += _str_as(value, draw(forms))
            except UnicodeEncodeError:
                body += b"\xa1x"
        elif name == "type":
            body += b"\xa3say"
        else:
            body += draw(st.sampled_from([b"\x05", b"\xc0", b"\xa2ok", b"\x91\x01"]))
    if draw(st.integers(0, 9)) == 0:
        body = body.replace(b"hi", b"h\xff", 1)  # not UTF-8
    count = len(names) + 1 + (0 if plain else draw(st.sampled_from([0, 0, -1, 1])))
    frame = bytes((0x80 | max(0, min(count, 15)),)) + b"\xa4type\xa3say" + body
    cut = 0 if plain else draw(st.sampled_from([0, 0, 1, 2]))
    if cut:
        frame = frame[:-cut]
    # Bytes after the map: msgpack refuses the frame.
    return frame + draw(st.sampled_from([b"", b"", b"", b"\xc0", b"\x00"]))


frames = st.one_of(envelopes(), hand_packed(), st.binary(max_size=40))


def _say(**fields: Any) -> list[tuple[bytes, float, bytes]]:
    return [(pack({"type": "say", "room": "lobby", "text": "hi", **fields}), 0.1, PEER)]


@settings(max_examples=400, deadline=None)
@example(_say(id="x" * 65))
@example(_say(id="é" * 33))
@example(_say(text="x" * 65))
@example(_say(action=1))
@example(_say(room="Lobby"))
@example(_say(id="m1") * 3)
@example(_say(text="x" * 40))
@example([(pack({"type": "say", "room": "lobby", "text": "hi"}) + b"\xc0", 0.1, PEER)])
@example(_say(text="é" * 20, action=True, id="é"))
@given(st.lists(st.tuples(frames, st.floats(0, 0.5), st.sampled_from([PEER, OTHER])), max_size=30))
def test_fast_and_full_paths_answer_alike(steps: list[tuple[bytes, float, bytes]]) -> None:
    fast, full = make(True), make(False)
    now = 1000.0
    for frame, wait, peer in steps:
        now += wait
        assert shown(fast.receive(peer, frame, now)) == shown(full.receive(peer, frame, now))
    assert fast.snapshot() == full.snapshot()
    fast.check_invariants()


def test_a_plain_ping_and_say_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The differential test above means something only if the fast path is taken."""
    fast, full = make(True), make(False)
    ping = pack({"type": "ping"})
    say = pack({"type": "say", "room": "lobby", "text": "hi", "id": "m1"})
    for frame in (ping, say, say):
        assert shown(fast.receive(PEER, frame, 1001.0)) == shown(full.receive(PEER, frame, 1001.0))
    assert fast.snapshot()["duplicates"] == 1
    decoded: list[bytes] = []

    def refuse(frame: bytes, limit: int) -> None:
        decoded.append(frame)
        raise AssertionError("the full decoder ran")

    monkeypatch.setattr("zchat.broker.core.decode_command", refuse)
    fast.receive(PEER, ping, 1002.0)
    fast.receive(PEER, pack({"type": "say", "room": "lobby", "text": "yo"}), 1002.0)
    assert decoded == []
    assert fast.snapshot()["messages"] == 2
