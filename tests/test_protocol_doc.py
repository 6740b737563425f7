"""Keep docs/protocol.md honest: it must name everything the code can send or accept,
its example frames must be exact, and its recipe must work against a real broker.

Marker convention in the document:

* A fenced block tagged ``hex c2b``, ``hex b2c`` or ``hex pub`` holds the bytes of one ZeroMQ
  frame (client to broker, broker to client, PUB). The fenced ``json`` block right before it is
  the decoded envelope, keys in wire order; msgpack int, float and bool must match JSON's.
* Command, reply and event sections are headings of the form ``#### ... `say` command``,
  ``#### ... `welcome` reply``, ``#### ... `msg` event``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import BrokerThread, recv_until

from zchat.broker.core import BrokerCore
from zchat.broker.state import MAX_ROSTER, BrokerConfig, Output, Reply
from zchat.broker.store import MemoryStore
from zchat.errors import ProtocolError
from zchat.protocol import (
    MAX_FRAME,
    MAX_HISTORY_LIMIT,
    MAX_ID,
    MAX_NICK,
    MAX_REASON,
    MAX_ROOM,
    MAX_ROOMS_PER_HELLO,
    MAX_TEXT,
    MAX_TOKEN,
    MAX_WIRE_FRAME,
    Command,
    ErrorCode,
    LeaveReason,
    commands,
    decode_command,
    pack,
    split_pub_frame,
    wire,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^(#+) (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, content) of every fenced block, in order."""
    return [(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]


def section(text: str, pattern: str) -> str:
    """The text under the first heading matching ``pattern``, up to the next heading of the
    same or a higher level."""
    headings = list(_HEADING.finditer(text))
    for i, m in enumerate(headings):
        if re.search(pattern, m.group(2)):
            level = len(m.group(1))
            end = len(text)
            for later in headings[i + 1 :]:
                if len(later.group(1)) <= level:
                    end = later.start()
                    break
            return text[m.end() : end]
    pytest.fail(f"docs/protocol.md has no heading matching {pattern!r}")


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def assert_same(shown: Any, decoded: Any, where: str) -> None:
    """Equal values of the same types (bool is not int, int is not float), maps in key order."""
    assert type(shown) is type(decoded), f"{where}: {shown!r} vs {decoded!r}"
    if isinstance(shown, dict):
        assert list(shown) == list(decoded), f"{where}: keys {list(shown)} vs {list(decoded)}"
        for key in shown:
            assert_same(shown[key], decoded[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert len(shown) == len(decoded), f"{where}: {len(shown)} vs {len(decoded)} items"
        for i, (a, b) in enumerate(zip(shown, decoded, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert shown == decoded, f"{where}: {shown!r} vs {decoded!r}"


# ---------------------------------------------------------------- names and tables


def test_every_error_code_has_a_row(doc: str) -> None:
    rows = table_rows(section(doc, r"Error codes"))
    for code in ErrorCode:
        assert any(row.startswith(f"| `{code.value}` |") for row in rows), code.value


def test_every_leave_reason_has_a_row(doc: str) -> None:
    rows = table_rows(section(doc, r"Leave reasons"))
    for reason in LeaveReason:
        assert any(row.startswith(f"| `{reason.value}` |") for row in rows), reason.value


_ErrorCase = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _error_replies(config: BrokerConfig, steps: list[tuple[bytes, dict[str, Any]]]) -> list[Any]:
    """Feed ``steps`` to a fresh core; every error reply, decoded, with its receiver."""
    core = BrokerCore(config)
    found = []
    for n, (peer, env) in enumerate(steps):
        for out in core.receive(peer, pack(env), float(n + 1)):
            if isinstance(out, Reply):
                reply = msgpack.unpackb(out.data)
                if reply["type"] == "error":
                    found.append((out.peer, reply))
    return found


def _error_case(code: str, ref: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Make the core send ``code``: (who receives it, the error), the last command carrying ``ref``
    (``{"id": ...}`` or ``{}``)."""
    a, b = b"peer-a", b"peer-b"
    hello = {"type": "hello", "v": 1, "nick": "Ann", "rooms": ["lobby"]}
    config = BrokerConfig(rate_limit=0)
    steps: list[tuple[bytes, dict[str, Any]]]
    if code == "bad_envelope":
        steps = [(a, {"type": "nope", **ref})]
    elif code == "bad_version":
        steps = [(a, {**hello, "v": 2, **ref})]
    elif code == "bad_nick":
        steps = [(a, {**hello, "nick": "", **ref})]
    elif code == "bad_room":
        steps = [(a, {"type": "join", "room": "", **ref})]
    elif code == "nick_taken":
        steps = [(a, hello), (b, {**hello, **ref})]
    elif code == "not_registered":
        steps = [(a, {"type": "ping", **ref})]
    elif code == "already_registered":
        steps = [(a, hello), (a, {**hello, "nick": "Bea", **ref})]
    elif code == "too_large":
        steps = [(a, {"type": "topic", "room": "lobby", "text": "x" * (MAX_REASON + 1), **ref})]
    elif code == "not_in_room":
        steps = [(a, hello), (a, {"type": "say", "room": "den", "text": "x", **ref})]
    elif code == "too_many_rooms":
        rooms = [f"r{i}" for i in range(MAX_ROOMS_PER_HELLO + 1)]
        steps = [(a, {**hello, "rooms": rooms, **ref})]
    elif code == "no_such_nick":
        steps = [(a, hello), (a, {"type": "dm", "to": "nobody", "text": "x", **ref})]
    elif code == "rate_limited":
        config = BrokerConfig(rate_limit=0.01, rate_burst=1)
        steps = [(a, {**hello, "rooms": []}), (a, {"type": "stats"}), (a, {"type": "stats", **ref})]
    elif code == "full":
        config = BrokerConfig(rate_limit=0, max_clients=1)
        steps = [(a, hello), (b, {**hello, "nick": "Bea", **ref})]
    elif code == "unavailable":
        # A cluster node whose Redis is down: what it shares with the others refuses.
        core = BrokerCore(BrokerConfig(rate_limit=0), shared=_RedisDown())
        outs = core.receive(a, pack({**hello, **ref}), 1.0)
        errors = [(o.peer, msgpack.unpackb(o.data)) for o in outs if isinstance(o, Reply)]
        return next((p, e) for p, e in errors if e["type"] == "error")
    elif code == "replaced":
        core = BrokerCore(BrokerConfig(rate_limit=0))
        welcome = msgpack.unpackb(core.receive(a, pack(hello), 1.0)[-1].data)
        outs = core.receive(b, pack({**hello, "resume": welcome["session"], **ref}), 2.0)
        errors = [(o.peer, msgpack.unpackb(o.data)) for o in outs if isinstance(o, Reply)]
        return next((p, e) for p, e in errors if e["type"] == "error")
    else:
        pytest.fail(f"no error case for {code}: add one")
    errors = _error_replies(config, steps)
    assert errors, f"{code}: no error sent"
    peer, error = errors[-1]
    assert error["code"] == code, (code, error)
    return peer, error


class _RedisDown:
    """The cluster seam of a node that cannot reach Redis (tests/test_cluster.py has the
    real thing): registering needs it, so ``hello`` is refused ``unavailable``."""

    def claim(self, *args: Any) -> None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")

    def say(self, *args: Any) -> None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")

    def publish(self, *args: Any) -> tuple[int, bool]:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")

    def info(self, *args: Any) -> Any:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")

    def history(self, *args: Any) -> bytes:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")

    def release(self, *args: Any) -> None:
        pass

    def direct(self, *args: Any) -> bool:
        return False


def _re_column(doc: str) -> dict[str, str]:
    column = {}
    for row in table_rows(section(doc, r"Error codes")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0].startswith("`"):
            column[cells[0].strip("`")] = cells[-1]
    return column


def test_the_re_column_is_what_the_broker_does(doc: str) -> None:
    column = _re_column(doc)
    assert set(column) == {code.value for code in ErrorCode}
    for code, says in column.items():
        assert says in ("yes", "no"), f"{code}: re column must be yes or no, not {says!r}"
        _, without = _error_case(code, {})
        assert "re" not in without, (code, without)
        _, with_id = _error_case(code, {"id": "e1"})
        assert ("re" in with_id) == (says == "yes"), (code, with_id)
        if says == "yes":
            assert with_id["re"] == "e1"


@pytest.mark.parametrize(
    "env",
    [{"id": "m1"}, {"type": 5, "id": "m2"}, {"type": None, "id": "m3"}, {"type": b"x", "id": "m4"}],
)
def test_an_envelope_without_a_string_type_is_answered_with_its_id(env: dict[str, Any]) -> None:
    errors = _error_replies(BrokerConfig(), [(b"peer", env)])
    assert [(e["code"], e.get("re")) for _, e in errors] == [("bad_envelope", env["id"])]


def test_rate_limited_cases_are_told_apart_by_field() -> None:
    hello = {"type": "hello", "v": 1, "nick": "Ann", "rooms": []}
    config = BrokerConfig(rate_limit=0.01, rate_burst=1, flood_threshold=3)
    steps = [(b"a", hello)] + [(b"a", {"type": "stats", "id": f"s{i}"}) for i in range(10)]
    errors = [e for _, e in _error_replies(config, steps)]
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert [e.get("dropped", False) for e in errors] == [False] * (len(errors) - 1) + [True]
    assert {e["scope"] for e in errors} == {"envelope"}
    # bye and hello again at once: the session's bucket is empty.
    steps = [(b"a", hello), (b"a", {"type": "stats"}), (b"a", {"type": "bye"}), (b"a", hello)]
    (_, refused), *_ = _error_replies(BrokerConfig(rate_limit=0.01, rate_burst=1), steps)
    assert (refused["code"], refused["scope"], "dropped" in refused) == (
        "rate_limited",
        "registration",
        False,
    )


_VALID: dict[str, dict[str, Any]] = {
    "hello": {"v": 1, "nick": "Ann", "rooms": ["lobby"]},
    "say": {"room": "lobby", "text": "x"},
    "sync": {"token": "t"},
    "join": {"room": "r"},
    "leave": {"room": "r"},
    "who": {"room": "r"},
    "topic": {"room": "r", "text": "t"},
    "nick": {"nick": "N"},
    "dm": {"to": "x", "text": "y"},
    "history": {"room": "r"},
}
_NAME_CODES = {"room": "bad_room", "nick": "bad_nick", "to": "bad_nick", "v": "bad_version"}


def _decode_error(env: dict[str, Any]) -> tuple[str, str] | None:
    try:
        decode_command(pack(env))
    except ProtocolError as exc:
        return exc.code, exc.reason
    return None


def test_nil_is_a_missing_field_and_names_keep_their_code() -> None:
    """Section 2.3 rule 7."""
    for kind, fields_ in _VALID.items():
        assert _decode_error({"type": kind, **fields_}) is None
        for key in fields_:
            if (kind, key) == ("hello", "rooms"):
                continue  # the documented exception
            missing = _decode_error(
                {"type": kind, **{k: v for k, v in fields_.items() if k != key}}
            )
            nil = _decode_error({"type": kind, **fields_, key: None})
            assert nil == missing, (kind, key, nil, missing)
            assert missing is not None
            assert missing[0] == _NAME_CODES.get(key, "bad_envelope"), (kind, key, missing)


def test_the_nesting_limit_is_the_documented_one(doc: str) -> None:
    """Section 2.3 rule 9: the envelope map and 1023 nested arrays pass; one more does not."""
    assert "at most 1024 nested containers" in doc

    def nested(arrays: int) -> bytes:
        return b"\x82\xa4type\xa4ping\xa1x" + b"\x91" * (arrays - 1) + b"\x90"

    assert isinstance(decode_command(nested(1023)), commands.Ping)
    with pytest.raises(ProtocolError) as info:
        decode_command(nested(1024))
    assert info.value.code == "bad_envelope"


def test_a_history_limit_above_the_kept_events_is_capped() -> None:
    core = BrokerCore(BrokerConfig(rate_limit=0, history=5))
    hello = {"type": "hello", "v": 1, "nick": "Ann", "rooms": ["lobby"], "id": "h"}
    welcome = msgpack.unpackb(core.receive(b"a", pack(hello), 1.0)[-1].data)
    assert welcome["limits"]["history"] == 5
    for n in range(20):
        core.receive(b"a", pack({"type": "say", "room": "lobby", "text": f"{n}"}), 2.0 + n)
    env = {"type": "history", "room": "lobby", "limit": MAX_HISTORY_LIMIT, "id": "q"}
    (out,) = core.receive(b"a", pack(env), 30.0)
    assert isinstance(out, Reply)
    reply = msgpack.unpackb(out.data)
    assert (len(reply["events"]), reply["missing"]) == (5, 21 - 5)


def _command_classes() -> dict[str, type[Any]]:
    classes = {cls.__name__.lower(): cls for cls in typing.get_args(Command)}
    assert set(classes) == set(commands._DECODERS), "a command class and its type differ"
    return classes


def test_every_command_has_a_section_with_its_fields(doc: str) -> None:
    for kind, cls in _command_classes().items():
        text = section(doc, rf"`{kind}` command")
        for f in dataclasses.fields(cls):
            if f.name != "id":  # common to all commands, section 4.1
                assert f"`{f.name}`" in text, f"{kind} command: field {f.name} undocumented"


def _conversation() -> Iterator[tuple[str, dict[str, Any]]]:
    """Drive the real broker core through every reply and event; yield (kind, envelope)."""
    core = BrokerCore(BrokerConfig(rate_limit=0))
    a, b = b"peer-a", b"peer-b"
    clock = iter(range(1, 1000))

    def send(peer: bytes, **env: Any) -> list[Output]:
        return core.receive(peer, pack(env), float(next(clock)))

    outputs: list[Output] = []
    outputs += send(a, type="hello", v=1, nick="Ann", rooms=["lobby"], id="1")
    outputs += send(b, type="sync", token="tok", id="2")
    outputs += send(b, type="stats", id="3")
    outputs += send(b, type="hello", v=1, nick="Bea", rooms=["lobby"], id="4")
    outputs += send(a, type="say", room="lobby", text="hi", action=True, id="5")
    outputs += send(a, type="say", room="lobby", text="hi", id="5")
    outputs += send(a, type="topic", room="lobby", text="t", id="6")
    outputs += send(a, type="ping", id="7")
    outputs += send(a, type="join", room="den", id="8")
    outputs += send(a, type="who", room="den", id="9")
    outputs += send(a, type="nick", nick="Anna", id="10")
    outputs += send(a, type="dm", to="bea", text="psst", action=True, id="11")
    outputs += send(a, type="history", room="lobby", after=0, limit=5, id="12")
    outputs += send(a, type="list", id="12b")
    outputs += send(a, type="say", room="nowhere", text="x", id="13")
    outputs += send(a, type="leave", room="den", reason="bye den", id="14")
    outputs += send(a, type="bye", reason="gone")
    outputs += core.tick(1e6)  # Bea times out
    for out in outputs:
        if isinstance(out, Reply):
            yield "reply", msgpack.unpackb(out.data)
        else:
            topic, body = split_pub_frame(out.data)
            yield ("sync" if topic.startswith(b"!") else "event"), msgpack.unpackb(body)


def test_every_reply_and_event_field_is_documented(doc: str) -> None:
    seen: set[tuple[str, str]] = set()
    for kind, env in _conversation():
        name = env["type"]
        label = "event" if kind in ("event", "sync") else "reply"
        text = section(doc, rf"`{name}` {label}")
        seen.add((label, name))
        for key in env:
            if key != "type":
                assert f"`{key}`" in text, f"{name} {label}: field {key} undocumented"
        if name == "list":
            for key in env["rooms"][0]:
                assert f"`{key}`" in text, f"list reply rooms: {key} undocumented"
        if name == "welcome":
            for room_info in env["rooms"].values():
                for key in room_info:
                    assert f"`{key}`" in text, f"welcome room info: {key} undocumented"
            for key in env["limits"]:
                assert f"| `{key}` |" in text, f"welcome limits: {key} undocumented"
    expected = {
        ("reply", t)
        for t in (
            *("welcome", "who", "history", "nick", "dm", "ack", "pong", "stats", "error"),
            "list",
        )
    } | {("event", t) for t in ("msg", "join", "leave", "topic", "nick", "sync")}
    assert seen == expected, "the conversation no longer covers every envelope type"


def test_limits_table_matches_the_code(doc: str) -> None:
    rows = table_rows(section(doc, r"^9\. Limits"))
    config = BrokerConfig()
    expected = {
        "Inbound frame, decoded": MAX_FRAME,
        "Inbound frame, socket cap": MAX_WIRE_FRAME,
        "Map entries": wire._MAX_MAP,
        "Array items": wire._MAX_ARRAY,
        "`text` of `say`": MAX_TEXT,
        "`text` of `topic`": MAX_REASON,
        "`reason` of `bye`": MAX_REASON,
        "`id`": MAX_ID,
        "`token` of `sync`": MAX_TOKEN,
        "`resume`": MAX_TOKEN,
        "nick": MAX_NICK,
        "room": MAX_ROOM,
        "rooms in a `hello`": MAX_ROOMS_PER_HELLO,
        "rooms per session": config.max_rooms_per_session,
        "`history.limit`": MAX_HISTORY_LIMIT,
        "Events kept per room": config.history,
        "Nicks listed in a roster": MAX_ROSTER,
        "Sessions": config.max_clients,
        "Rate per session": int(config.rate_limit),
        "Flood threshold": config.flood_threshold,
        "Replies to unregistered peers": int(config.unregistered_rate),
        "Remembered `say` ids": config.dedupe_window,
        "Empty rooms remembered": config.max_idle_rooms,
        "Heartbeat": config.heartbeat,
        "Liveness": config.liveness,
    }
    for label, value in expected.items():
        row = next((r for r in rows if r.startswith(f"| {label}")), None)
        assert row is not None, f"limits table: no row {label!r}"
        assert re.search(rf"(?<![\d.]){re.escape(str(value))}(?![\d])", row), (label, value, row)
    burst_row = next(r for r in rows if r.startswith("| Rate per session"))
    assert f"burst {config.rate_burst}" in burst_row
    dedupe_row = next(r for r in rows if r.startswith("| Remembered `say` ids"))
    assert f"{config.dedupe_ttl:g} s" in dedupe_row


# ---------------------------------------------------------------- example frames


def _hex_examples(doc: str) -> list[tuple[str, bytes, Any]]:
    examples = []
    blocks = fenced_blocks(doc)
    for i, (info, content) in enumerate(blocks):
        words = info.split()
        if not words or words[0] != "hex":
            continue
        assert len(words) == 2, f"bad hex tag {info!r}"
        assert words[1] in ("c2b", "b2c", "pub"), f"bad hex tag {info!r}"
        assert i > 0, "a hex block needs a json block before it"
        assert blocks[i - 1][0] == "json", f"hex block {i} has no json block before it"
        examples.append((words[1], bytes.fromhex(content), json.loads(blocks[i - 1][1])))
    return examples


def test_hex_examples_decode_to_the_maps_shown(doc: str) -> None:
    examples = _hex_examples(doc)
    assert {tag for tag, _, _ in examples} == {"c2b", "b2c", "pub"}
    assert len(examples) >= 10
    for n, (tag, frame, shown) in enumerate(examples):
        where = f"hex example {n + 1} ({tag}, {shown.get('type')})"
        body = frame
        if tag == "pub":
            topic, body = split_pub_frame(frame)
            if shown["type"] == "sync":
                assert topic == b"!" + shown["token"].encode(), where
            else:
                assert topic == b"#" + shown["room"].encode(), where
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=True)
        assert_same(shown, decoded, where)
        if tag == "c2b":
            # The real codec accepts every command the example sends.
            assert type(decode_command(frame)).__name__.lower() == shown["type"], where


#: The example of section 11: Alice's prelude (not shown), then the broker time of each of Bob's
#: commands, which the document shows in order. Regenerate the section with
#: ``python tests/test_protocol_doc.py`` after a deliberate change of the broker's output.
_EPOCH = "5f0c2a9e3b7d4e61"
_T0 = 1767268800.0
_PRELUDE: list[tuple[float, dict[str, Any]]] = [
    (0.0, {"type": "hello", "v": 1, "nick": "Alice", "rooms": ["lobby"]}),
    (10.0, {"type": "topic", "room": "lobby", "text": "Say hi"}),
    (20.5, {"type": "say", "room": "lobby", "text": "hello, room", "id": "9ac01e-7"}),
]
_BOB_TIMES = [60.0, 60.125, 60.25, 61.5, 62.0, 62.25, 63.0, 64.75]
_BOB_COMMANDS: list[dict[str, Any]] = [
    {"type": "sync", "token": "4f1c9a07d2e8b356", "id": "4f1c9a-1"},
    {"type": "hello", "v": 1, "nick": "Bob", "rooms": ["Lobby"], "id": "4f1c9a-2"},
    {"type": "history", "room": "lobby", "after": 0, "before": 4, "limit": 50, "id": "4f1c9a-3"},
    {"type": "say", "room": "lobby", "text": "hi Alice", "id": "4f1c9a-4"},
    {"type": "say", "room": "lobby", "text": "hi Alice", "id": "4f1c9a-4"},
    {"type": "ping"},
    {"type": "dm", "to": "alice", "text": "psst", "id": "4f1c9a-5"},
    {"type": "bye", "reason": "gone fishing"},
]


def example_frames(bob_frames: list[bytes] | None = None) -> list[tuple[str, bytes]]:
    """(tag, frame) of the example, produced by the real broker core and codec."""
    tokens = iter(["T7hQpX2vLm9sKd4w", "Rk3tS9vX0bq2LmZa"])
    # The example shows a broker run with --heartbeat 1 (a ping every second).
    core = BrokerCore(
        BrokerConfig(heartbeat=1.0),
        store=MemoryStore(500, epoch=_EPOCH),
        new_token=lambda: next(tokens),
    )
    alice, bob = b"\x00\x6b\x8b\x45\x67", b"\x00\x6b\x8b\x45\x68"
    for t, env in _PRELUDE:
        core.receive(alice, pack(env), _T0 + t)
    if bob_frames is None:
        bob_frames = [pack(env) for env in _BOB_COMMANDS]
    shown: list[tuple[str, bytes]] = []
    for t, frame in zip(_BOB_TIMES, bob_frames, strict=True):
        shown.append(("c2b", frame))
        for out in core.receive(bob, frame, _T0 + t):
            shown.append(("b2c", out.data) if isinstance(out, Reply) else ("pub", out.data))
    return shown


def test_the_example_is_what_the_broker_does(doc: str) -> None:
    examples = _hex_examples(doc)
    sent = [frame for tag, frame, _ in examples if tag == "c2b"]
    assert len(sent) == len(_BOB_TIMES), "section 11 and _BOB_TIMES disagree"
    expected = example_frames(sent)
    got = [(tag, frame) for tag, frame, _ in examples]
    for n, (want, have) in enumerate(zip(expected, got, strict=False)):
        assert want == have, (
            f"example frame {n + 1} is not what the broker sends now; "
            "regenerate section 11 with: python tests/test_protocol_doc.py"
        )
    assert len(expected) == len(got), "the broker now sends a different number of frames"


def _print_example() -> None:
    for tag, frame in example_frames():
        body = split_pub_frame(frame)[1] if tag == "pub" else frame
        text = json.dumps(msgpack.unpackb(body), ensure_ascii=False)
        if len(text) > 100:
            text = json.dumps(msgpack.unpackb(body), ensure_ascii=False, indent=2)
        octets = frame.hex(" ").split(" ")
        rows = "\n".join(" ".join(octets[i : i + 16]) for i in range(0, len(octets), 16))
        print(f"```json\n{text}\n```\n\n```hex {tag}\n{rows}\n```\n")


# ---------------------------------------------------------------- the recipe, for real


class RawClient:
    """A client written from the document alone: pyzmq and msgpack, no zchat client code."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerThread) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.IMMEDIATE, 1)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(broker.router)
        self.sub.connect(broker.pub)

    def send(self, **env: Any) -> None:
        self.dealer.send(msgpack.packb(env))

    def reply(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        frame = recv_until(self.dealer, lambda f: predicate(msgpack.unpackb(f)))
        env: dict[str, Any] = msgpack.unpackb(frame)
        return env

    def event(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def match(frame: bytes) -> bool:
            return frame.startswith(b"#") and predicate(msgpack.unpackb(frame.split(b"\0", 1)[1]))

        env: dict[str, Any] = msgpack.unpackb(recv_until(self.sub, match).split(b"\0", 1)[1])
        return env

    def sync(self, deadline: float = 5.0) -> None:
        token = secrets.token_hex(8)
        topic = b"!" + token.encode() + b"\0"
        self.sub.setsockopt(zmq.SUBSCRIBE, topic)  # after the rooms it is meant to prove
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            self.send(type="sync", token=token)
            if self.sub.poll(100) and self.sub.recv().startswith(topic):
                return
        pytest.fail("no sync event: no broker?")


def test_a_client_written_from_the_spec_works(
    make_broker: Callable[..., BrokerThread], zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    broker = make_broker(heartbeat=5.0)  # the test must not depend on its own pace
    ada = RawClient(zctx, broker)

    # Section 2.2: one frame per envelope; a REQ-style delimiter makes two.
    ada.dealer.send_multipart([b"", msgpack.packb({"type": "stats", "id": "s"})])
    err = ada.reply(lambda e: e["type"] == "error")
    assert err["code"] == "bad_envelope"
    assert "re" not in err
    ada.dealer.send(b"\x80" * (MAX_FRAME + 10))
    err = ada.reply(lambda e: e["type"] == "error")
    assert (err["code"], err["size"], err["limit"]) == ("too_large", MAX_FRAME + 10, MAX_FRAME)
    ada.send(type="ping", id="p0")
    assert ada.reply(lambda e: e.get("re") == "p0")["code"] == "not_registered"

    # Section 5.3: rooms first, then the sync proof, then hello.
    ada.sub.setsockopt(zmq.SUBSCRIBE, b"#lobby\0")
    ada.sync()
    ada.send(type="hello", v=1, nick="Ada", rooms=["LOBBY"], id="h")
    welcome = ada.reply(lambda e: e.get("re") == "h")
    assert welcome["type"] == "welcome", welcome
    joined = welcome["rooms"]["lobby"]["seq"]
    join = ada.event(lambda e: e["type"] == "join")
    assert (join["room"], join["nick"], join["seq"]) == ("lobby", "Ada", joined)

    # Section 4.2.7: the msg event confirms a say; a resend is acknowledged, not republished.
    ada.send(type="say", room="lobby", text="hello", id="s1")
    msg = ada.event(lambda e: e["type"] == "msg")
    assert (msg["id"], msg["seq"], msg["text"]) == ("s1", joined + 1, "hello")
    ada.send(type="say", room="lobby", text="hello", id="s1")
    ack = ada.reply(lambda e: e["type"] == "ack")
    assert ack == {"type": "ack", "re": "s1", "room": "lobby", "seq": joined + 1, "dup": True}

    ada.send(type="ping", id="p1")
    assert ada.reply(lambda e: e.get("re") == "p1") == {"type": "pong", "re": "p1"}

    ada.send(type="history", room="lobby", before=joined + 2, id="hist")
    history = ada.reply(lambda e: e.get("re") == "hist")
    assert [e["seq"] for e in history["events"]] == list(range(1, joined + 2))
    assert history["missing"] == 0

    ada.send(type="dm", to="ADA", text="note to self", id="d")
    dm = ada.reply(lambda e: e.get("re") == "d")
    assert (dm["type"], dm["nick"], dm["to"]) == ("dm", "Ada", "Ada")

    ada.send(type="bye", reason="done")
    leave = ada.event(lambda e: e["type"] == "leave")
    assert (leave["reason"], leave["message"], leave["seq"]) == ("quit", "done", joined + 2)


if __name__ == "__main__":
    _print_example()
