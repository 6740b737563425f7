"""The broker's state machine as a conversation: in memory, no sockets, no clock."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zchat.broker.core import BrokerCore
from zchat.broker.state import MAX_LIST, BrokerConfig, Output, Publish, Reply
from zchat.protocol import pack, split_pub_frame, unpack


class Conversation:
    """Drives a BrokerCore and keeps everything it said, decoded."""

    def __init__(self, **config: Any) -> None:
        tokens = (f"token{n}" for n in itertools.count())
        self.now = 1000.0
        self.core = BrokerCore(BrokerConfig(**config), now=self.now, new_token=lambda: next(tokens))
        self.published: list[tuple[bytes, dict[str, Any]]] = []
        self.replies: list[tuple[bytes, dict[str, Any]]] = []

    def _record(self, outputs: list[Output]) -> list[Output]:
        for out in outputs:
            if isinstance(out, Publish):
                topic, body = split_pub_frame(out.data)
                self.published.append((topic, unpack(body)))
            else:
                assert isinstance(out, Reply)
                self.replies.append((out.peer, unpack(out.data)))
        return outputs

    def raw(
        self, peer: bytes, data: bytes, frames: int = 1, key: str | None = None
    ) -> list[Output]:
        return self._record(self.core.receive(peer, data, self.now, frames=frames, key=key))

    def send(self, peer: bytes, key: str | None = None, **envelope: Any) -> list[dict[str, Any]]:
        """Send one envelope; return the replies to ``peer`` it caused."""
        start = len(self.replies)
        self.raw(peer, pack(envelope), key=key)
        return [env for p, env in self.replies[start:] if p == peer]

    def hello(self, peer: bytes, nick: str, **fields: Any) -> dict[str, Any]:
        replies = self.send(peer, type="hello", v=1, nick=nick, **fields)
        assert len(replies) == 1, replies
        return replies[0]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._record(self.core.tick(self.now))

    def events(self, kind: str | None = None, room: str | None = None) -> list[dict[str, Any]]:
        return [
            env
            for _, env in self.published
            if (kind is None or env["type"] == kind) and (room is None or env.get("room") == room)
        ]


A, B, C = b"\x00peer-a", b"\x00peer-b", b"\x00peer-c"


@pytest.fixture
def conv() -> Conversation:
    return Conversation(heartbeat=1.0)


def test_registration_welcomes_and_publishes_join(conv: Conversation) -> None:
    welcome = conv.hello(A, "Batman", id="h1")
    assert welcome["type"] == "welcome"
    assert welcome["nick"] == "Batman"
    assert welcome["heartbeat"] == 1.0
    assert welcome["re"] == "h1"
    assert welcome["session"] == "token0"
    assert welcome["rooms"] == {"lobby": {"seq": 1, "topic": "", "users": ["Batman"], "count": 1}}
    assert welcome["limits"]["text"] == 4096
    assert conv.published == [
        (b"#lobby", {"type": "join", "room": "lobby", "nick": "Batman", "ts": 1000.0, "seq": 1})
    ]


def test_second_client_sees_roster_and_seq_continues(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    welcome = conv.hello(B, "Robin")
    assert welcome["rooms"]["lobby"]["users"] == ["Batman", "Robin"]
    assert welcome["rooms"]["lobby"]["seq"] == 2


@pytest.mark.parametrize("taken", ["Batman", "BATMAN", "Ｂａｔｍａｎ"])
def test_duplicate_nick_is_refused_case_insensitively(conv: Conversation, taken: str) -> None:
    conv.hello(A, "Batman")
    reply = conv.hello(B, taken)
    assert reply["type"] == "error"
    assert reply["code"] == "nick_taken"
    assert conv.core.sessions == 1


def test_nick_on_events_comes_from_the_session_table(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin")
    conv.send(B, type="say", room="lobby", text="I am Batman", nick="Batman")
    (msg,) = conv.events("msg")
    assert msg["nick"] == "Robin"
    assert msg["text"] == "I am Batman"
    assert msg["seq"] == 3


def test_commands_before_hello_are_not_registered(conv: Conversation) -> None:
    (reply,) = conv.send(A, type="say", room="lobby", text="hi", id="s1")
    assert reply == {
        "type": "error",
        "code": "not_registered",
        "reason": "send hello first",
        "re": "s1",
    }
    (reply,) = conv.send(A, type="ping")
    assert reply["code"] == "not_registered"


def test_hello_again_on_the_same_connection_is_welcomed_without_events(
    conv: Conversation,
) -> None:
    conv.hello(A, "Batman", rooms=["lobby", "dev"])
    conv.send(A, type="say", room="dev", text="hi")
    events = len(conv.published)
    again = conv.hello(A, "batman", rooms=["other"])
    assert again["type"] == "welcome"
    assert set(again["rooms"]) == {"lobby", "dev"}
    assert again["rooms"]["dev"]["seq"] == 2
    assert len(conv.published) == events
    assert conv.hello(A, "Robin")["code"] == "already_registered"


def test_ping_gets_pong_with_ref(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    assert conv.send(A, type="ping", id="p") == [{"type": "pong", "re": "p"}]


def test_say_in_a_room_not_joined(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    (reply,) = conv.send(A, type="say", room="dev", text="hi")
    assert reply["code"] == "not_in_room"
    assert reply["room"] == "dev"


def test_bye_leaves_every_room_once(conv: Conversation) -> None:
    conv.hello(A, "Batman", rooms=["lobby", "dev"])
    conv.send(A, type="bye", reason="off to bed")
    leaves = conv.events("leave")
    assert [(e["room"], e["reason"], e["message"]) for e in leaves] == [
        ("lobby", "quit", "off to bed"),
        ("dev", "quit", "off to bed"),
    ]
    assert conv.core.sessions == 0
    (reply,) = conv.send(A, type="ping")
    assert reply["code"] == "not_registered"


def test_silent_client_gets_exactly_one_timeout_leave(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin")
    for _ in range(5):
        conv.advance(0.9)
        conv.send(A, type="ping")
        conv.send(B, type="ping")
    for _ in range(3):
        conv.advance(0.9)
        conv.send(B, type="ping")
    assert conv.events("leave") == []
    conv.advance(0.9)  # A silent for 3.6 s, past 3 heartbeats
    leaves = conv.events("leave")
    assert [(e["nick"], e["reason"]) for e in leaves] == [("Batman", "timeout")]
    conv.advance(10)
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [
        ("Batman", "timeout"),
        ("Robin", "timeout"),
    ]


def test_closed_connection_leaves_after_the_grace_not_after_heartbeats(
    conv: Conversation,
) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin")
    conv.core.check_invariants()
    conv._record(conv.core.disconnected(A, conv.now))
    conv._record(conv.core.disconnected(b"\x00stranger", conv.now))  # no session: nothing
    conv.core.check_invariants()
    conv.advance(0.1)
    assert conv.events("leave") == []  # within the grace
    conv.advance(0.2)
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Batman", "timeout")]
    conv.core.check_invariants()
    conv.advance(0.5)
    assert len(conv.events("leave")) == 1  # once only; Robin, alive, stays
    assert conv.core.sessions == 1


def test_a_session_that_ends_within_its_grace_leaves_once(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv._record(conv.core.disconnected(A, conv.now))
    conv.send(A, type="bye")
    conv.core.check_invariants()
    conv.advance(1.0)
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Batman", "quit")]


def test_zero_grace_leaves_at_once() -> None:
    conv = Conversation(heartbeat=1.0, disconnect_grace=0)
    conv.hello(A, "Batman")
    conv._record(conv.core.disconnected(A, conv.now))
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Batman", "timeout")]


def test_any_envelope_counts_as_life_even_garbage(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    for _ in range(10):
        conv.advance(1.0)
        conv.raw(A, b"\xc1garbage")
    assert conv.events("leave") == []


def test_timeout_edge_is_three_heartbeats(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.advance(2.99)
    assert conv.events("leave") == []
    conv.advance(0.02)
    assert len(conv.events("leave")) == 1


def test_clock_stepping_back_changes_nothing(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.advance(-500)
    conv.send(A, type="say", room="lobby", text="hi")
    (msg,) = conv.events("msg")
    assert msg["ts"] == 1000.0
    assert conv.events("leave") == []


def test_seq_is_per_room_and_topics_are_exact(conv: Conversation) -> None:
    conv.hello(A, "Batman", rooms=["lobby", "lobby2"])
    conv.send(A, type="say", room="lobby2", text="two")
    conv.send(A, type="say", room="lobby", text="one")
    assert [(t, e["seq"]) for t, e in conv.published if e["type"] == "msg"] == [
        (b"#lobby2", 2),
        (b"#lobby", 2),
    ]


def test_extra_frames_are_bad_envelope(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.raw(A, pack({"type": "ping"}), frames=2)
    assert conv.replies[-1][1]["code"] == "bad_envelope"


def test_garbage_from_unregistered_peers_is_answered_at_a_bounded_rate() -> None:
    conv = Conversation(unregistered_rate=50)
    for n in range(1000):
        conv.raw(n.to_bytes(4, "big"), b"\xc1")
    assert len(conv.replies) == 50
    assert conv.core.counters.drops["error_rate"] == 950
    assert conv.core.counters.errors["bad_envelope"] == 1000
    conv.advance(1.0)
    conv.raw(b"late", b"\xc1")
    assert len(conv.replies) == 51


def test_rate_limit_then_flood_drop() -> None:
    conv = Conversation(rate_limit=10, rate_burst=5, flood_threshold=20)
    conv.hello(A, "Flooder")
    conv.hello(B, "Robin")
    for n in range(5):
        conv.send(A, type="say", room="lobby", text=f"ok {n}")
    (reply,) = conv.send(A, type="say", room="lobby", text="too many")
    assert reply["code"] == "rate_limited"
    assert len(conv.events("msg")) == 5
    conv.advance(0.5)  # refills 5 tokens
    for _ in range(5):
        conv.send(A, type="say", room="lobby", text="refilled")
    assert len(conv.events("msg")) == 10
    for _ in range(30):
        conv.send(A, type="say", room="lobby", text="flood")
    leaves = conv.events("leave")
    assert [(e["nick"], e["reason"]) for e in leaves] == [("Flooder", "flood")]
    conv.send(B, type="say", room="lobby", text="still here")
    assert conv.events("msg")[-1]["nick"] == "Robin"


def test_pings_are_never_rate_limited() -> None:
    conv = Conversation(rate_limit=1, rate_burst=1)
    conv.hello(A, "Batman")
    replies = [r for _ in range(50) for r in conv.send(A, type="ping")]
    assert {r["type"] for r in replies} == {"pong"}


def test_rate_limit_zero_turns_it_off() -> None:
    conv = Conversation(rate_limit=0)
    conv.hello(A, "Bot")
    for n in range(1000):
        conv.send(A, type="say", room="lobby", text=str(n))
    assert len(conv.events("msg")) == 1000


def test_max_clients() -> None:
    conv = Conversation(max_clients=2)
    conv.hello(A, "a")
    conv.hello(B, "b")
    assert conv.hello(C, "c")["code"] == "full"


def test_resume_token_takes_over_with_replaced(conv: Conversation) -> None:
    welcome = conv.hello(A, "Batman")
    assert conv.hello(B, "Batman", resume="wrong")["code"] == "nick_taken"
    again = conv.hello(B, "Batman", resume=welcome["session"])
    assert again["type"] == "welcome"
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Batman", "replaced")]
    assert conv.core.nick_of(B) == "Batman"
    assert conv.core.nick_of(A) is None


def test_key_owns_nick_and_takes_over(conv: Conversation) -> None:
    conv.send(A, key="key-1", type="hello", v=1, nick="Batman")
    assert conv.send(B, key="key-2", type="hello", v=1, nick="batman")[0]["code"] == "nick_taken"
    conv.send(A, type="bye")
    # Gone, but still owned by key-1.
    assert conv.send(B, key="key-2", type="hello", v=1, nick="Batman")[0]["code"] == "nick_taken"
    assert conv.send(C, key="key-1", type="hello", v=1, nick="Batman")[0]["type"] == "welcome"
    assert conv.send(B, key="key-1", type="hello", v=1, nick="Batman")[0]["type"] == "welcome"
    assert conv.events("leave")[-1]["reason"] == "replaced"


def test_duplicate_message_id_is_published_once_and_acked(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.send(A, type="say", room="lobby", text="once", id="m1")
    (ack,) = conv.send(A, type="say", room="lobby", text="once", id="m1")
    assert ack == {"type": "ack", "re": "m1", "room": "lobby", "seq": 2, "dup": True}
    assert len(conv.events("msg")) == 1
    assert conv.core.counters.duplicates == 1


def test_message_ids_survive_a_timeout_and_re_registration(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.send(A, type="say", room="lobby", text="before", id="m1")
    conv.advance(5)  # timed out
    conv.hello(B, "Batman")
    (ack,) = conv.send(B, type="say", room="lobby", text="before", id="m1")
    assert ack["type"] == "ack"
    assert len(conv.events("msg")) == 1


def test_message_ids_are_forgotten_after_the_ttl() -> None:
    conv = Conversation(heartbeat=1.0, dedupe_ttl=10)
    conv.hello(A, "Batman")
    conv.send(A, type="say", room="lobby", text="x", id="m1")
    conv.advance(5)  # timed out: the ids are kept for the ttl from now
    conv.advance(9)
    assert conv.core.registry.orphan_ids
    conv.advance(2)
    assert not conv.core.registry.orphan_ids
    conv.hello(B, "Batman")
    assert conv.send(B, type="say", room="lobby", text="x", id="m1") == []
    assert len(conv.events("msg")) == 2


def test_join_leave_who(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin", rooms=[])
    (who,) = conv.send(B, type="join", room="Dev", id="j")
    assert who == {
        "type": "who",
        "room": "dev",
        "seq": 1,
        "topic": "",
        "users": ["Robin"],
        "count": 1,
        "re": "j",
    }
    (who,) = conv.send(A, type="who", room="dev")
    assert who["users"] == ["Robin"]
    conv.send(B, type="leave", room="dev", reason="bye all")
    leave = conv.events("leave", "dev")[-1]
    assert (leave["reason"], leave["message"]) == ("part", "bye all")
    (err,) = conv.send(B, type="leave", room="dev")
    assert err["code"] == "not_in_room"


def test_join_cap(conv: Conversation) -> None:
    conv = Conversation(max_rooms_per_session=2)
    conv.hello(A, "Batman", rooms=["a", "b"])
    (err,) = conv.send(A, type="join", room="c")
    assert err["code"] == "too_many_rooms"
    assert conv.hello(B, "Robin", rooms=["a", "b", "c"])["code"] == "too_many_rooms"


def test_topic_is_published_and_in_welcome(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.send(A, type="topic", room="lobby", text="Gotham news")
    (topic,) = conv.events("topic")
    assert (topic["nick"], topic["text"], topic["seq"]) == ("Batman", "Gotham news", 2)
    assert conv.hello(B, "Robin")["rooms"]["lobby"]["topic"] == "Gotham news"


def test_nick_change(conv: Conversation) -> None:
    conv.hello(A, "Batman", rooms=["lobby", "dev"])
    conv.hello(B, "Robin")
    (err,) = conv.send(A, type="nick", nick="robin")
    assert err["code"] == "nick_taken"
    (reply,) = conv.send(A, type="nick", nick="Bruce", id="n")
    assert (reply["old"], reply["new"], reply["re"]) == ("Batman", "Bruce", "n")
    assert [(e["room"], e["old"], e["new"]) for e in conv.events("nick")] == [
        ("lobby", "Batman", "Bruce"),
        ("dev", "Batman", "Bruce"),
    ]
    assert conv.hello(C, "Batman")["type"] == "welcome"
    conv.send(A, type="say", room="lobby", text="hi")
    assert conv.events("msg")[-1]["nick"] == "Bruce"


def test_case_change_of_own_nick_is_allowed(conv: Conversation) -> None:
    conv.hello(A, "batman")
    (reply,) = conv.send(A, type="nick", nick="Batman")
    assert reply["new"] == "Batman"


def test_dm_goes_to_recipient_and_sender_only(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin")
    conv.hello(C, "Joker")
    before = len(conv.published)
    replies_to_a = conv.send(A, type="dm", to="robin", text="psst", id="d1")
    assert replies_to_a == [
        {"type": "dm", "nick": "Batman", "to": "Robin", "text": "psst", "ts": 1000.0, "re": "d1"}
    ]
    assert [(p, e["text"]) for p, e in conv.replies if e["type"] == "dm" and p == B] == [
        (B, "psst")
    ]
    assert not any(p == C and e["type"] == "dm" for p, e in conv.replies)
    assert len(conv.published) == before
    (err,) = conv.send(A, type="dm", to="nobody", text="x")
    assert (err["code"], err["to"]) == ("no_such_nick", "nobody")


def test_history_backlog_and_missing(conv: Conversation) -> None:
    conv = Conversation(history=5)
    conv.hello(A, "Batman")
    for n in range(10):
        conv.send(A, type="say", room="lobby", text=str(n))
    # seq: 1 join, 2..11 msgs; history keeps 7..11
    (hist,) = conv.send(A, type="history", room="lobby", after=0, before=12, limit=3, id="h")
    assert [e["seq"] for e in hist["events"]] == [9, 10, 11]
    assert hist["missing"] == 8
    assert hist["re"] == "h"
    assert hist["epoch"] == conv.core.epoch
    (hist,) = conv.send(A, type="history", room="lobby", after=3, before=9)
    assert [e["seq"] for e in hist["events"]] == [7, 8]
    assert hist["missing"] == 3
    (err,) = conv.send(A, type="history", room="dev")
    assert err["code"] == "not_in_room"


def test_idle_rooms_are_evicted_beyond_the_cap() -> None:
    conv = Conversation(max_idle_rooms=3)
    conv.hello(A, "Batman", rooms=[])
    for n in range(10):
        conv.send(A, type="join", room=f"r{n}")
        conv.send(A, type="leave", room=f"r{n}")
    conv.core.check_invariants()
    assert len(conv.core.rooms.rooms) == 3
    assert len(conv.core.rooms.idle) == 3


def test_stats_answer_unregistered_peers(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    (stats,) = conv.send(B, type="stats", id="s")
    assert stats["sessions"] == 1
    assert stats["registrations"] == 1
    assert stats["re"] == "s"


def test_sync_is_published_on_the_token_topic(conv: Conversation) -> None:
    conv.send(A, type="sync", token="abc", id="1")
    assert conv.published == [(b"!abc", {"type": "sync", "token": "abc", "re": "1"})]


def test_shutdown_leaves_everyone(conv: Conversation) -> None:
    conv.hello(A, "Batman")
    conv.hello(B, "Robin")
    conv._record(conv.core.shutdown(conv.now))
    assert sorted(e["nick"] for e in conv.events("leave")) == ["Batman", "Robin"]
    assert {e["reason"] for e in conv.events("leave")} == {"shutdown"}


# ---------------------------------------------------------------- properties

valid_envelopes = st.one_of(
    st.builds(
        lambda n, rooms: {"type": "hello", "v": 1, "nick": n, "rooms": rooms},
        st.sampled_from(["a", "B", "b", "c"]),
        st.lists(st.sampled_from(["lobby", "dev", "Dev"]), max_size=3),
    ),
    st.builds(
        lambda r, t, i: {"type": "say", "room": r, "text": t, "id": i},
        st.sampled_from(["lobby", "dev"]),
        st.text(min_size=1, max_size=5),
        st.sampled_from(["1", "2", "3"]),
    ),
    st.just({"type": "ping"}),
    st.just({"type": "bye"}),
    st.builds(lambda r: {"type": "join", "room": r}, st.sampled_from(["lobby", "dev", "x"])),
    st.builds(lambda r: {"type": "leave", "room": r}, st.sampled_from(["lobby", "dev", "x"])),
    st.builds(lambda n: {"type": "nick", "nick": n}, st.sampled_from(["a", "b", "z"])),
    st.builds(lambda n: {"type": "dm", "to": n, "text": "x"}, st.sampled_from(["a", "b", "q"])),
    st.builds(lambda r: {"type": "topic", "room": r, "text": "t"}, st.sampled_from(["lobby"])),
    st.builds(
        lambda r, a: {"type": "history", "room": r, "after": a},
        st.sampled_from(["lobby", "dev"]),
        st.integers(0, 5),
    ),
    st.just({"type": "stats"}),
    st.just({"type": "who", "room": "lobby"}),
).map(pack)

frames = st.one_of(valid_envelopes, st.binary(max_size=64))
steps = st.lists(
    st.tuples(st.integers(0, 3), frames, st.floats(0, 2.5), st.integers(0, 2)), max_size=60
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_no_byte_string_raises_or_corrupts_state(
    script: list[tuple[int, bytes, float, int]],
) -> None:
    conv = Conversation(
        heartbeat=1.0,
        rate_limit=5,
        rate_burst=5,
        flood_threshold=8,
        max_rooms_per_session=2,
        max_idle_rooms=1,
        history=3,
    )
    peers = [b"p0", b"p1", b"p2", b"p3"]
    for index, data, dt, extra in script:
        conv.raw(peers[index], data, frames=1 + (extra == 2))
        conv.core.check_invariants()
        conv.advance(dt)
        conv.core.check_invariants()
    conv._record(conv.core.shutdown(conv.now))
    conv.core.check_invariants()
    assert conv.core.sessions == 0
    # Presence: per (room, nick), joins and leaves alternate, ending with a leave.
    state: Counter[tuple[str, str]] = Counter()
    for env in conv.events():
        kind = env["type"]
        if kind == "nick":
            moved = state.pop((env["room"], env["old"]), 0)
            state[(env["room"], env["new"])] += moved
        elif kind in ("join", "leave"):
            key = (str(env["room"]), str(env["nick"]))
            state[key] += 1 if kind == "join" else -1
            assert state[key] in (0, 1), f"{kind} out of turn for {key}"
    assert all(v == 0 for v in state.values())
    # seq: +1 per event per room, no holes, no repeats.
    seqs: dict[str, list[int]] = {}
    for topic, env in conv.published:
        if topic.startswith(b"#"):
            seqs.setdefault(env["room"], []).append(env["seq"])
    for room, numbers in seqs.items():
        # An evicted idle room starts over at 1 (memory store), so check runs.
        for prev, cur in itertools.pairwise(numbers):
            assert cur == prev + 1 or cur == 1, (room, numbers)


def test_errors_name_the_command_they_answer_when_its_id_is_readable(conv: Conversation) -> None:
    (reply,) = conv.send(A, type="hello", v=9, nick="x", id="h")
    assert (reply["code"], reply["re"]) == ("bad_version", "h")
    conv.hello(A, "Batman")
    (reply,) = conv.send(A, type="say", room="lobby", text="", id="s")
    assert (reply["code"], reply["re"]) == ("bad_envelope", "s")
    (reply,) = conv.send(A, type="say", room="lobby", text="x", id=["not", "a", "string"])
    assert reply["code"] == "bad_envelope"
    assert "re" not in reply


def test_rate_limited_errors_carry_the_refused_id() -> None:
    conv = Conversation(rate_limit=1, rate_burst=1)
    conv.hello(A, "Batman")
    conv.send(A, type="say", room="lobby", text="one", id="1")
    (reply,) = conv.send(A, type="say", room="lobby", text="two", id="2")
    assert (reply["code"], reply["re"]) == ("rate_limited", "2")


def test_list_names_occupied_rooms_busiest_first_with_topics(conv: Conversation) -> None:
    conv.hello(A, "Ann", rooms=["lobby", "dev"])
    conv.hello(B, "Bea", rooms=["lobby"])
    conv.send(A, type="topic", room="dev", text="code talk")
    conv.send(B, type="join", room="empty")
    conv.send(B, type="leave", room="empty")
    (reply,) = conv.send(A, type="list", id="l")
    assert reply == {
        "type": "list",
        "rooms": [
            {"room": "lobby", "count": 2, "topic": ""},
            {"room": "dev", "count": 1, "topic": "code talk"},
        ],
        "total": 2,
        "re": "l",
    }
    (refused,) = conv.send(C, type="list")
    assert refused["code"] == "not_registered"


def test_list_is_bounded_and_says_how_many_there_are() -> None:
    conv = Conversation(rate_limit=0, max_rooms_per_session=MAX_LIST + 6)
    rooms = [f"r{n:03}" for n in range(MAX_LIST + 5)]
    conv.hello(A, "Ann")
    for room in rooms:
        conv.send(A, type="join", room=room)
    conv.hello(B, "Bea", rooms=["r050"])
    (reply,) = conv.send(A, type="list")
    assert reply["total"] == MAX_LIST + 6  # and lobby
    assert len(reply["rooms"]) == MAX_LIST
    assert reply["rooms"][0] == {"room": "r050", "count": 2, "topic": ""}


def test_list_costs_a_rate_limit_token() -> None:
    conv = Conversation(rate_limit=1, rate_burst=1)
    conv.hello(A, "Ann")
    assert conv.send(A, type="list")[0]["type"] == "list"
    assert conv.send(A, type="list")[0]["code"] == "rate_limited"
