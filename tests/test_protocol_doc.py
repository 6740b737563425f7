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
    core = BrokerCore(
        BrokerConfig(), store=MemoryStore(500, epoch=_EPOCH), new_token=lambda: next(tokens)
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
