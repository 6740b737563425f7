"""Fuzzing the envelope decoder and the broker state machine (hypothesis at scale).

CI runs a few hundred examples per target. A nightly-sized run::

    ZCHAT_FUZZ_EXAMPLES=200000 ZCHAT_FUZZ_REPORT=fuzz.json \\
        python -m pytest tests/test_fuzz.py -q --timeout=0

counts every decode and every ``receive``/``tick`` as one execution and writes
the totals to ``ZCHAT_FUZZ_REPORT`` (figures in docs/reliability.md). After
every step the core's tables must agree (``check_invariants``), every output
must be well-formed, and the events published must add up to the rosters.
Inputs that once broke something live in tests/fuzz_corpus/ and are replayed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig, Output, Publish, Reply
from zchat.protocol import (
    ProtocolError,
    decode_command,
    pack,
    split_pub_frame,
    unpack,
)

EXAMPLES = int(os.environ.get("ZCHAT_FUZZ_EXAMPLES", "300"))
CORPUS = Path(__file__).parent / "fuzz_corpus"

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

executions: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """Print (and with ZCHAT_FUZZ_REPORT, write) how many executions ran."""
    started = time.monotonic()
    yield
    figures = {
        "examples_per_target": EXAMPLES,
        "executions": dict(executions),
        "total_executions": sum(executions.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"\nfuzz figures: {json.dumps(figures)}")
    path = os.environ.get("ZCHAT_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


# ---------------------------------------------------------------- strategies

TYPES = ["hello", "say", "ping", "bye", "sync", "join", "leave", "who", "topic", "nick", "dm"]
TYPES += ["history", "stats"]
FIELDS = ["type", "v", "nick", "rooms", "resume", "room", "text", "action", "id", "reason"]
FIELDS += ["token", "to", "after", "before", "limit"]
NICKS = ["ann", "ANN", "bob", "ｂｏｂ", "c\u200dd", "x" * 32, "e\u202e"]
ROOMS = ["lobby", "LOBBY", "dev", "ﬁ", "r" * 64, "a b", ""]

ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 2**62, 2**62 + 1, 2**63, 2**64 - 1]),
)
text = st.one_of(st.text(max_size=40), st.sampled_from(NICKS + ROOMS), st.just("x" * 5000))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=True),
    text,
    st.binary(max_size=20),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.one_of(text, ints), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def wrong_maps(draw: st.DrawFn) -> bytes:
    """A msgpack map that looks like an envelope, with wrong, missing or odd fields."""
    keys = draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique=True))
    env: dict[Any, Any] = {k: draw(values) for k in keys}
    env["type"] = draw(st.one_of(st.sampled_from(TYPES), values))
    if draw(st.booleans()):
        env[draw(st.one_of(ints, st.binary(max_size=4)))] = draw(values)
    data: bytes = msgpack.packb(env, use_bin_type=draw(st.booleans()), strict_types=False)
    return data


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    """Mostly-valid commands over few nicks, rooms and ids, so states collide."""
    kind = draw(st.sampled_from(TYPES))
    env: dict[str, Any] = {"type": kind}
    room = st.sampled_from(["lobby", "dev", "ops", "LOBBY"])
    if kind == "hello":
        env.update(v=1, nick=draw(st.sampled_from(NICKS[:4])))
        env["rooms"] = draw(st.lists(room, max_size=3))
        if draw(st.booleans()):
            env["resume"] = draw(st.sampled_from(["token0", "token1", "token2", "nope"]))
    elif kind in ("say", "topic"):
        env.update(room=draw(room), text=draw(st.sampled_from(["hi", "x" * 300])))
    elif kind in ("join", "who", "leave"):
        env["room"] = draw(room)
    elif kind == "nick":
        env["nick"] = draw(st.sampled_from(NICKS[:4]))
    elif kind == "dm":
        env.update(to=draw(st.sampled_from(NICKS[:4])), text="psst")
    elif kind == "history":
        env.update(room=draw(room), after=draw(st.integers(0, 30)), limit=draw(st.integers(1, 9)))
        if draw(st.booleans()):
            env["before"] = draw(st.integers(1, 40))
    elif kind == "sync":
        env["token"] = "tok"
    if draw(st.integers(0, 3)) > 0:
        env["id"] = draw(st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"]))
    return pack(env)


frames = st.one_of(commands(), commands(), commands(), wrong_maps(), st.binary(max_size=64))

# A step: ("recv", peer, frame, frame count, key, seconds) or ("tick", seconds).
recv_steps = st.tuples(
    st.just("recv"),
    st.integers(0, 5),
    frames,
    st.sampled_from([1, 1, 1, 1, 0, 2]),
    st.sampled_from([None, None, "key-a", "key-b"]),
    st.sampled_from([0.0, 0.0, 0.01, 0.3, 1.0]),
)
tick_steps = st.tuples(st.just("tick"), st.sampled_from([0.05, 0.5, 1.1, 3.5, 400.0]))
# At least a few steps: most bugs need a registration before the interesting part.
steps = st.lists(st.one_of(recv_steps, recv_steps, recv_steps, tick_steps), min_size=4, max_size=60)


# ---------------------------------------------------------------- checks


class Model:
    """What subscribers would reconstruct from the published events alone."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.members: dict[str, Counter[str]] = {}

    def check(self, core: BrokerCore, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Reply):
                assert isinstance(out.peer, bytes)
                env = unpack(out.data)
                assert isinstance(env["type"], str)
                continue
            assert isinstance(out, Publish)
            topic, body = split_pub_frame(out.data)
            env = unpack(body)
            if topic.startswith(b"!"):
                assert env["type"] == "sync"
                continue
            room = env["room"]
            assert topic == b"#" + room.encode()
            last = self.seq.get(room, 0)
            # +1 per event; a room evicted while idle starts over at 1.
            assert env["seq"] == last + 1 or (env["seq"] == 1 and not self.members.get(room)), (
                room,
                last,
                env,
            )
            self.seq[room] = env["seq"]
            members = self.members.setdefault(room, Counter())
            if env["type"] == "join":
                assert members[env["nick"]] == 0, f"second join of {env['nick']} in {room}"
                members[env["nick"]] += 1
            elif env["type"] == "leave":
                assert members[env["nick"]] == 1, f"leave without join: {env}"
                del members[env["nick"]]
            elif env["type"] == "nick":
                assert members[env["old"]] == 1
                del members[env["old"]]
                members[env["new"]] += 1
        core.check_invariants()
        for room, members in self.members.items():
            assert sorted(members.elements()) == sorted(roster(core, room)), room


def roster(core: BrokerCore, room: str) -> list[str]:
    """Who the core has in ``room`` (nobody if the room is not in memory)."""
    found = core.rooms.rooms.get(room)
    return [s.nick for s in found.members.values()] if found else []


def run_steps(core: BrokerCore, plan: list[tuple[Any, ...]]) -> None:
    model = Model()
    now = 1000.0
    for step in plan:
        if step[0] == "tick":
            now += step[1]
            executions["tick"] += 1
            model.check(core, core.tick(now))
            continue
        _, peer, frame, count, key, advance = step
        now += advance
        executions["receive"] += 1
        model.check(core, core.receive(b"peer%d" % peer, frame, now, frames=count, key=key))
    executions["shutdown"] += 1
    model.check(core, core.shutdown(now + 1))
    assert core.sessions == 0


def small_core() -> BrokerCore:
    tokens = iter(f"token{n}" for n in range(10**6))
    config = BrokerConfig(
        heartbeat=1.0,
        history=5,
        max_clients=4,
        rate_limit=5.0,
        rate_burst=4,
        flood_threshold=8,
        unregistered_rate=20.0,
        dedupe_window=3,
        dedupe_ttl=2.0,
        max_idle_rooms=2,
        max_rooms_per_session=2,
    )
    return BrokerCore(config, now=1000.0, new_token=lambda: next(tokens))


def decode_only_protocol_errors(data: bytes) -> None:
    executions["decode"] += 1
    with contextlib.suppress(ProtocolError):
        decode_command(data)


# ---------------------------------------------------------------- targets


@FUZZ
@given(st.binary(max_size=256))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    decode_only_protocol_errors(data)


@FUZZ
@given(wrong_maps())
def test_decode_structured_but_wrong_maps(data: bytes) -> None:
    decode_only_protocol_errors(data)


@FUZZ
@given(steps)
def test_core_interleavings_keep_invariants(plan: list[tuple[Any, ...]]) -> None:
    run_steps(small_core(), plan)


@FUZZ
@given(steps)
def test_core_interleavings_default_limits(plan: list[tuple[Any, ...]]) -> None:
    tokens = iter(f"token{n}" for n in range(10**6))
    run_steps(BrokerCore(now=1000.0, new_token=lambda: next(tokens)), plan)


# ---------------------------------------------------------------- regression corpus


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".bin", ".json"))


def load_plan(path: Path) -> list[tuple[Any, ...]]:
    """A .bin file is one frame sent by an unregistered and a registered peer;
    a .json file is a step list with frames in hex."""
    if path.suffix == ".bin":
        frame = path.read_bytes()
        hello = pack({"type": "hello", "v": 1, "nick": "ann", "rooms": ["lobby"]})
        return [
            ("recv", 0, frame, 1, None, 0.0),
            ("recv", 1, hello, 1, None, 0.0),
            ("recv", 1, frame, 1, None, 0.0),
        ]
    plan: list[tuple[Any, ...]] = []
    for step in json.loads(path.read_text()):
        if step[0] == "tick":
            plan.append(("tick", float(step[1])))
        else:
            _, peer, frame_hex, count, key, advance = step
            plan.append(("recv", peer, bytes.fromhex(frame_hex), count, key, advance))
    return plan


def test_corpus_is_not_empty() -> None:
    assert len(corpus_files()) >= 5


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_replays_cleanly(path: Path) -> None:
    plan = load_plan(path)
    for step in plan:
        if step[0] == "recv":
            decode_only_protocol_errors(step[2])
    run_steps(small_core(), plan)


# ---------------------------------------------------------------- atheris (optional)

_TEMPLATES: list[dict[str, Any]] = [
    {"type": "hello", "v": 1, "nick": "ann", "rooms": ["lobby", "dev"]},
    {"type": "hello", "v": 1, "nick": "bob", "rooms": ["lobby"], "resume": "token0"},
    {"type": "say", "room": "lobby", "text": "hi", "id": "m1"},
    {"type": "say", "room": "dev", "text": "hi", "id": "m2"},
    {"type": "join", "room": "ops"},
    {"type": "leave", "room": "lobby"},
    {"type": "nick", "nick": "ann"},
    {"type": "nick", "nick": "carol"},
    {"type": "topic", "room": "lobby", "text": "t"},
    {"type": "dm", "to": "bob", "text": "psst"},
    {"type": "history", "room": "lobby", "after": 1, "limit": 3},
    {"type": "bye"},
    {"type": "ping"},
    {"type": "stats"},
]


def atheris_one_input(data: bytes) -> None:
    """libFuzzer entry: the whole input decoded, then read as a plan of steps."""
    import atheris

    decode_only_protocol_errors(data)
    fdp = atheris.FuzzedDataProvider(data)
    plan: list[tuple[Any, ...]] = []
    while fdp.remaining_bytes() and len(plan) < 40:
        op = fdp.ConsumeIntInRange(0, 7)
        if op == 0:
            plan.append(("tick", fdp.ConsumeIntInRange(0, 5000) / 1000))
            continue
        if op <= 4:
            frame = pack(_TEMPLATES[fdp.ConsumeIntInRange(0, len(_TEMPLATES) - 1)])
        else:
            frame = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 96))
        peer = fdp.ConsumeIntInRange(0, 3)
        count = 1 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 2)
        plan.append(("recv", peer, frame, count, None, fdp.ConsumeIntInRange(0, 3) / 4))
    run_steps(small_core(), plan)


def atheris_main() -> None:
    """``python tests/test_fuzz.py -atheris_runs=1000000 [corpus dir]``: coverage-guided."""
    import logging
    import sys

    import atheris

    # The broker logs the first errors of each kind; a million runs would drown the output.
    logging.disable(logging.CRITICAL)
    atheris.instrument_all()
    atheris.Setup(sys.argv, atheris_one_input)
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz figures: {json.dumps(dict(executions))}", file=sys.stderr)


if __name__ == "__main__":
    atheris_main()
