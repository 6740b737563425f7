"""Names any language can compute (PRECIS), and look-alike nicks refused (UTS #39)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import precis_i18n
import pytest
from conftest import BrokerThread, ZchatProcess
from helpers import client_for, start_broker, start_client, wait_event
from hypothesis import given
from hypothesis import strategies as st

import zchat.client.client
from zchat import RegistrationError
from zchat.broker.core import BrokerCore
from zchat.broker.sqlite import SqliteStore
from zchat.broker.state import BrokerConfig, Reply
from zchat.errors import ProtocolError
from zchat.protocol import names as name_rules
from zchat.protocol import pack
from zchat.protocol.names import check_nick, check_room, fold, skeleton

LOOK_ALIKES = {
    "cyrillic a": "B\u0430tman",
    "combining grapheme joiner": "Batman\u034f",
    "variation selector": "Batman\ufe0f",
    "hangul filler": "Batman\u3164",
    "hangul filler alone": "\u3164",
    "braille blank": "\u2800",
    "zero width space": "Bat\u200bman",
}

# Any code point but surrogates, and a mix rich in what makes case mapping and
# normalisation disagree (combining marks, final sigma, dotted i, ligatures).
_TRICKY = "Hh\u0331\u0308\u0301\u0345\u00df\u1e9e\u0130\u0131\u01c5\u1e96\ufb03\u03a3\u03c2\u0390"
names = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40) | st.text(
    alphabet=st.sampled_from(_TRICKY), min_size=1, max_size=12
)


def canonical_or_none(check: Callable[[object], str], value: str) -> str | None:
    try:
        return check(value)
    except ProtocolError:
        return None


@given(names)
def test_a_canonical_room_is_its_own_canonical_name(value: str) -> None:
    room = canonical_or_none(check_room, value)
    if room is not None:
        assert check_room(room) == room


@given(names)
def test_a_nick_key_is_its_own_key(value: str) -> None:
    if canonical_or_none(check_nick, value) is not None:
        key = fold(value)
        assert fold(key) == key


def test_the_room_of_the_bug_report_is_stable() -> None:
    room = check_room("H\u0331\u0308")
    assert check_room(room) == room == "\u1e96\u0308"


def test_nicks_compare_by_precis_nickname_case_mapped() -> None:
    assert fold("ALICE") == fold("Alice") == fold("\uff21\uff4c\uff49\uff43\uff45") == "alice"
    # RFC 8266 lower-cases; it does not fold ß to ss as Python's casefold does.
    assert fold("Stra\u00dfe") != fold("STRASSE")


@pytest.mark.parametrize("nick", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_invisible_blank_and_mixed_script_nicks_are_bad_nicks(nick: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_nick(nick)
    assert info.value.code == "bad_nick"


@pytest.mark.parametrize("nick", ["漢字かな", "한글漢字", "Ελένη", "Ivan_99", "☃"])
def test_single_script_and_allowed_mixes_are_nicks(nick: str) -> None:
    assert check_nick(nick) == nick


def test_skeletons_collide_for_look_alikes() -> None:
    assert skeleton("AIice") == skeleton("Alice")  # capital i
    assert skeleton("\u0440\u043e\u0440") == skeleton("pop")  # all Cyrillic
    assert skeleton("Alice") != skeleton("Alicia")


# ---------------------------------------------------------------- the broker core


def _replies(core: BrokerCore, peer: bytes, now: float, **env: Any) -> list[dict[str, Any]]:
    outs = core.receive(peer, pack(env), now)
    return [msgpack.unpackb(o.data) for o in outs if isinstance(o, Reply) and o.peer == peer]


def _hello(core: BrokerCore, peer: bytes, nick: str, now: float) -> dict[str, Any]:
    replies = _replies(core, peer, now, type="hello", v=1, nick=nick, rooms=["lobby"], id="h")
    return next(r for r in replies if r.get("re") == "h")


def test_the_core_refuses_a_look_alike_of_a_registered_nick() -> None:
    core = BrokerCore(BrokerConfig(rate_limit=0))
    assert _hello(core, b"a", "Alice", 1.0)["type"] == "welcome"
    refused = _hello(core, b"b", "AIice", 2.0)
    assert (refused["type"], refused["code"], refused["similar_to"]) == (
        "error",
        "nick_taken",
        "Alice",
    )
    assert _hello(core, b"c", "Bob", 3.0)["type"] == "welcome"
    changed = _replies(core, b"c", 4.0, type="nick", nick="AIice", id="n")
    assert (changed[0]["code"], changed[0]["similar_to"], changed[0]["re"]) == (
        "nick_taken",
        "Alice",
        "n",
    )
    core.check_invariants()
    # Alice renames: her old skeleton is free, her new one taken.
    assert _replies(core, b"a", 5.0, type="nick", nick="Alicia", id="r")[0]["type"] == "nick"
    core.check_invariants()
    assert _replies(core, b"c", 6.0, type="nick", nick="AIice", id="n2")[0]["type"] == "nick"
    assert _hello(core, b"d", "AIicia", 7.0)["similar_to"] == "Alicia"
    _replies(core, b"a", 8.0, type="bye")
    core.check_invariants()
    assert _hello(core, b"d", "AIicia", 9.0)["type"] == "welcome"
    core.check_invariants()
    assert len(core.registry.by_skeleton) == core.sessions == 2


def test_the_same_nick_in_another_case_may_take_its_session_over() -> None:
    core = BrokerCore(BrokerConfig(rate_limit=0))
    welcome = _hello(core, b"a", "Alice", 1.0)
    replies = _replies(
        core, b"b", 2.0, type="hello", v=1, nick="ALICE", resume=welcome["session"], id="h"
    )
    assert next(r for r in replies if r.get("re") == "h")["type"] == "welcome"
    core.check_invariants()


# ---------------------------------------------------------------- real sockets


async def test_a_library_client_cannot_take_a_look_alike(broker: BrokerThread) -> None:
    async with client_for(broker, "Alice"):
        with pytest.raises(RegistrationError) as info:
            await client_for(broker, "AIice").connect()
        assert info.value.code == "nick_taken"
        assert info.value.data["similar_to"] == "Alice"
    with pytest.raises(ProtocolError):
        client_for(broker, "Batman\u034f")


async def test_a_client_takes_the_brokers_room_names(
    broker: BrokerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client whose own canonicalisation is wrong (here: none at all) still ends up in
    # the room the broker publishes on, because it takes the name from the replies.
    monkeypatch.setattr(zchat.client.client, "check_room", lambda room: room)
    async with client_for(broker, "Ann", rooms=["LOBBY"]) as ann:
        assert list(ann.rooms) == ["lobby"]
        await ann.join("H\u0331\u0308")
        room = check_room("H\u0331\u0308")
        assert room in ann.rooms
        await ann.say("hi", room)
        await wait_event(ann, type="msg", text="hi", room=room)
        await ann.say("again")
        await wait_event(ann, type="msg", text="again", room="lobby")


def test_line_mode_refuses_look_alikes(zchat_proc: Callable[..., ZchatProcess]) -> None:
    broker = start_broker(zchat_proc)
    alice = start_client(zchat_proc, broker, "Alice", "--json")
    alice.expect_json(type="join", nick="Alice")
    fake = start_client(zchat_proc, broker, "AIice")
    assert fake.wait() == 1
    assert fake.stderr_lines == ["zchat: nick_taken: AIice looks like Alice"]
    invisible = start_client(zchat_proc, broker, "Alice\u034f")
    assert invisible.wait() == 1
    assert len(invisible.stderr_lines) == 1
    assert "U+034F" in invisible.stderr_lines[0]
    alice.close_stdin()
    assert alice.wait() == 0


def _hello_as(core: BrokerCore, peer: bytes, nick: str, key: str, now: float) -> dict[str, Any]:
    env = {"type": "hello", "v": 1, "nick": nick, "rooms": [], "id": "h"}
    outs = core.receive(peer, pack(env), now, key=key)
    replies = [msgpack.unpackb(o.data) for o in outs if isinstance(o, Reply) and o.peer == peer]
    return next(r for r in replies if r.get("re") == "h")


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
def test_a_look_alike_of_a_nick_another_key_owns_is_refused(durable: bool, tmp_path: Path) -> None:
    def new_core() -> BrokerCore:
        store = SqliteStore(tmp_path / "chat.db", 10) if durable else None
        return BrokerCore(BrokerConfig(rate_limit=0), store=store)

    core = new_core()
    assert _hello_as(core, b"a", "Alice", "key-1", 1.0)["type"] == "welcome"
    core.receive(b"a", pack({"type": "bye"}), 2.0, key="key-1")
    if durable:
        assert isinstance(core.store, SqliteStore)
        core.store.close()  # one broker at a time holds a --db file
        core = new_core()
    refused = _hello_as(core, b"b", "AIice", "key-2", 3.0)
    assert (refused["code"], refused["similar_to"]) == ("nick_taken", "Alice")
    assert _hello_as(core, b"c", "AIice", "key-1", 4.0)["type"] == "welcome"
    core.check_invariants()


def _refused_by_precis_only() -> Counter[str]:
    """Code points the character rules before PRECIS accepted and PRECIS refuses, by rule."""
    profile = precis_i18n.get_profile("NicknameCaseMapped")
    refused: Counter[str] = Counter()
    for cp in range(0x110000):
        ch = chr(cp)
        try:
            name_rules._check_name(ch, "nick", 1, name_rules.ErrorCode.BAD_NICK)
        except ProtocolError:
            continue
        try:
            profile.enforce(ch)
        except UnicodeError as exc:
            refused[str(getattr(exc, "reason", ""))] += 1
    return refused


@pytest.mark.skipif(
    (precis_i18n.__version__, unicodedata.unidata_version) != ("1.1.2", "14.0.0"),
    reason="docs/protocol.md section 3.1 counts for precis-i18n 1.1.2 and Unicode 14.0",
)
def test_the_documented_counts_of_newly_refused_code_points() -> None:
    refused = _refused_by_precis_only()
    assert refused["DISALLOWED/old_hangul_jamo"] == 527
    assert refused["DISALLOWED/precis_ignorable_properties"] == 263
    assert refused["DISALLOWED/exceptions"] == 19
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert "527 old Hangul jamo" in doc
    assert "263 default-ignorable" in doc
    assert "19 PRECIS exceptions" in doc
