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


frames = st.one_of(envelopes(), st.binary(max_size=40))


def _say(**fields: Any) -> list[tuple[bytes, float, bytes]]:
    return [(pack({"type": "say", "room": "lobby", "text": "hi", **fields}), 0.1, PEER)]


@settings(max_examples=400, deadline=None)
@example(_say(id="x" * 65))
@example(_say(id="é" * 33))
@example(_say(text="x" * 65))
@example(_say(action=1))
@example(_say(room="Lobby"))
@example(_say(id="m1") * 3)
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
