"""The Redis engine against a real redis-server, and against a real 3-master Redis
Cluster: seq allocation, history, say ids, roster, nicks, leases and the clean-up
after a dead node. Skipped only where redis-server is not installed."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgpack
import pytest
from redis_servers import Server, flush, needs_redis

from zchat.broker.cluster import keys
from zchat.broker.cluster.engine import (
    Append,
    DirectDelivery,
    Engine,
    Renewal,
    RoomDelivery,
    Sent,
    Unavailable,
    member_value,
)
from zchat.protocol.events import Left, Message

pytestmark = needs_redis


def say(room: str, nick: str, text: str, say_id: str | None = None) -> Append:
    head = keys.envelope_head(Message(room, nick, text, 1.0, 0, id=say_id).to_wire())
    return Append(room, head, "say", member=nick.casefold(), say_id=say_id)


def join(room: str, nick: str, node: str) -> Append:
    head = keys.envelope_head({"type": "join", "room": room, "nick": nick, "ts": 1.0})
    return Append(room, head, "join", member=nick.casefold(), value=member_value(node, nick))


def leave_head(room: str, nick: str) -> bytes:
    return keys.envelope_head(Left(room, nick, "timeout", 2.0, 0).to_wire())


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling Redis state that has no event of its own


def deliveries(engine: Engine, count: int) -> list[RoomDelivery | DirectDelivery]:
    got: list[RoomDelivery | DirectDelivery] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        got += engine.deliveries(timeout=0.2)
    return got


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("room", ["lobby", "a}b", "x%7Dy", "{c}", "été"])
def test_room_keys_share_one_tag_and_the_channel_names_its_room(room: str) -> None:
    from redis.crc import key_slot

    names = [*keys.room_keys(room), keys.said_key(room, "n}", "id"), keys.room_channel(room)]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert keys.channel_room(keys.room_channel(room)) == room


def test_head_and_seq_make_the_envelope() -> None:
    wire = Message("lobby", "ann", "hi", 1.5, 300, id="m1").to_wire()
    envelope = keys.finish(keys.envelope_head(wire), 300)
    assert msgpack.unpackb(envelope) == wire


# ---------------------------------------------------------------- rooms


def test_seq_is_contiguous_across_nodes_and_history_is_shared(
    make_engine: Callable[..., Engine],
) -> None:
    a, b = make_engine("a"), make_engine("b")
    assert a.epoch == b.epoch
    results = a.append([say("lobby", "ann", f"a{i}") for i in range(3)])
    results += b.append([say("lobby", "bob", "b0"), say("other", "bob", "o0")])
    results += a.append([say("lobby", "ann", "a3")])
    assert [(r.status, r.seq) for r in results] == [
        ("ok", 1), ("ok", 2), ("ok", 3), ("ok", 4), ("ok", 1), ("ok", 5),
    ]  # fmt: skip
    assert {r.epoch for r in results} == {a.epoch}
    page = b.fetch("lobby", 0, None, 100)
    texts = [msgpack.unpackb(e)["text"] for e in page.envelopes]
    assert texts == ["a0", "a1", "a2", "b0", "a3"]
    assert [msgpack.unpackb(e)["seq"] for e in page.envelopes] == [1, 2, 3, 4, 5]
    assert page.top == 5
    assert page.epoch == a.epoch
    window = a.fetch("lobby", 1, 5, 2)
    assert [msgpack.unpackb(e)["seq"] for e in window.envelopes] == [3, 4]
    assert a.fetch("lobby", 3, 4, 10).envelopes == []


def test_history_is_bounded(make_engine: Callable[..., Engine]) -> None:
    a = make_engine("a", history=10)
    for _ in range(20):
        a.append([say("lobby", "ann", "x") for _ in range(10)])
    stored = a.client.xlen(keys.room_keys("lobby")[1])
    # MAXLEN ~ trims whole macro nodes: at least 10 kept, far fewer than 200.
    assert 10 <= int(stored) < 200


def test_subscribed_nodes_receive_in_seq_order_and_others_do_not(
    make_engine: Callable[..., Engine],
) -> None:
    a, b, c = make_engine("a"), make_engine("b"), make_engine("c")
    b.subscribe(["lobby"])
    a.subscribe(["lobby"])
    c.subscribe(["elsewhere"])
    a.append([say("lobby", "ann", str(i)) for i in range(50)])
    for engine in (a, b):
        got = deliveries(engine, 50)
        assert [d.seq for d in got if isinstance(d, RoomDelivery)] == list(range(1, 51))
        stored = a.fetch("lobby", 0, None, 100).envelopes
        assert [d.envelope for d in got if isinstance(d, RoomDelivery)] == stored
    c.append([say("elsewhere", "cat", "ping")])
    assert [d.room for d in deliveries(c, 1) if isinstance(d, RoomDelivery)] == ["elsewhere"]
    b.unsubscribe(["lobby"])
    a.append([say("lobby", "ann", "after")])
    assert len(deliveries(a, 1)) == 1
    assert b.deliveries(timeout=0.2) == []


def test_a_say_id_is_published_once_cluster_wide(make_engine: Callable[..., Engine]) -> None:
    a, b = make_engine("a"), make_engine("b")
    (first,) = a.append([say("lobby", "ann", "hello", "m1")])
    # The client failed over to b and resends: b answers dup with the first seq.
    again, other = b.append([say("lobby", "ann", "hello", "m1"), say("lobby", "bob", "yo", "m1")])
    assert (first.status, first.seq) == ("ok", 1)
    assert (again.status, again.seq) == ("dup", 1)
    assert (other.status, other.seq) == ("ok", 2)
    assert a.fetch("lobby", 0, None, 10).top == 2


def test_roster_topic_and_moves(make_engine: Callable[..., Engine]) -> None:
    a, b = make_engine("a"), make_engine("b")
    assert [r.status for r in a.append([join("lobby", "Ann", "a")])] == ["ok"]
    assert [r.status for r in b.append([join("lobby", "Bob", "b")])] == ["ok"]
    topic = Append("lobby", keys.envelope_head({"type": "topic"}), "topic", value="tea")
    a.append([topic])
    state = b.room("lobby")
    assert sorted(state.nicks) == ["Ann", "Bob"]
    assert (state.seq, state.topic, state.epoch) == (3, "tea", a.epoch)
    # Ann's client fails over to b: the roster moves without a second join.
    (moved,) = b.append([join("lobby", "Ann", "b")])
    assert moved.status == "moved"
    # A leave for Ann on a's behalf (a's clean-up) now does nothing.
    stale = Append("lobby", leave_head("lobby", "Ann"), "leave", member="ann", only_node="a")
    assert [r.status for r in a.append([stale])] == ["skip"]
    assert b.room("lobby").seq == 3
    rename = Append(
        "lobby", keys.envelope_head({"type": "nick"}), "nick", member="bob",
        value=member_value("b", "Rob"), new_member="rob",
    )  # fmt: skip
    a.append([rename])
    assert sorted(a.room("lobby").nicks) == ["Ann", "Rob"]


# ---------------------------------------------------------------- nicks and DMs


def test_nicks_are_unique_across_nodes(make_engine: Callable[..., Engine]) -> None:
    a, b = make_engine("a"), make_engine("b")
    assert a.claim_nick("ann", "Ann", "t1").ok
    taken = b.claim_nick("ann", "ANN", "t2")
    assert (taken.ok, taken.node) == (False, "a")
    # The same client, with its resume token, on another node.
    resumed = b.claim_nick("ann", "Ann", "t3", given="t1")
    assert (resumed.ok, resumed.node) == (True, "a")
    assert b.holder("ann") == "b"
    assert not a.release_nick("ann", "t1"), "a's old session must not free b's"
    assert b.release_nick("ann", "t3")
    assert a.holder("ann") is None
    assert a.set_owner("ann", "KEY1") == "KEY1"
    assert b.set_owner("ann", "KEY2") == "KEY1"
    assert b.owner("ann") == "KEY1"
    assert b.claim_nick("cat", "Cat", "t4", key="K").ok
    assert a.claim_nick("cat", "Cat", "t5", key="K").ok, "the same CURVE key takes its nick"


def test_direct_messages_reach_the_node_holding_the_nick(
    make_engine: Callable[..., Engine],
) -> None:
    a, b = make_engine("a"), make_engine("b")
    b.deliveries()  # subscribed to its own channel before anything is sent
    assert b.claim_nick("bob", "Bob", "t").ok
    assert a.direct("bob", b"envelope") == Sent("b", delivered=True)
    assert a.direct("nobody", b"envelope") is None
    got = deliveries(b, 1)
    assert got == [DirectDelivery("bob", b"envelope")]
    # b's subscription is gone (a killed node's connections close): not delivered.
    b.close()
    assert a.direct("bob", b"envelope") == Sent("b", delivered=False)
    a.client.delete(keys.node_lease("b"))
    assert a.direct("bob", b"envelope") == Sent("b", delivered=False)


# ---------------------------------------------------------------- leases


def test_exactly_one_survivor_cleans_up_a_dead_node(make_engine: Callable[..., Engine]) -> None:
    dead = make_engine("dead", lease=0.3)
    b, c = make_engine("b", lease=30), make_engine("c", lease=30)
    for nick, rooms in (("Ann", ["lobby", "dev"]), ("Bob", ["lobby"])):
        assert dead.claim_nick(nick.casefold(), nick, f"tok-{nick}").ok
        dead.append([join(room, nick, "dead") for room in rooms])
        dead.record_session(nick.casefold(), nick, f"tok-{nick}", rooms)
    # Bob comes back on b before the clean-up: he must not get a leave.
    assert b.claim_nick("bob", "Bob", "new", given="tok-Bob").ok
    assert b.append([join("lobby", "Bob", "b")])[0].status == "moved"
    dead.client.close()  # no more renewals: killed
    until(lambda: b.dead_nodes() == ["dead"], "the lease of the dead node to run out")

    def make_leave(room: str, nick: str) -> bytes:
        return leave_head(room, nick)

    done = b.reap("dead", make_leave) + c.reap("dead", make_leave)
    assert sorted((r.status, r.seq) for r in done) == [("ok", 2), ("ok", 3)]
    assert sorted(b.room("lobby").nicks) == ["Bob"]
    assert b.room("dev").nicks == ()
    assert c.holder("ann") is None
    assert c.holder("bob") == "b"
    assert b.dead_nodes() == []
    assert c.reap("dead", make_leave) == []


# ---------------------------------------------------------------- Redis failures


def test_redis_down_is_unavailable_and_a_restart_is_survived(
    server: Server, make_engine: Callable[..., Engine]
) -> None:
    a = make_engine("a")
    a.subscribe(["lobby"])
    assert a.append([say("lobby", "ann", "before", "m1")])[0].seq == 1
    server.kill()
    with pytest.raises(Unavailable):
        a.append([say("lobby", "ann", "lost")])
    server.restart()

    def works() -> bool:
        try:
            renewal = a.renew()
        except Unavailable:
            return False
        # Persisted: the same epoch, and the lease (5 s) outlived the restart.
        assert renewal == Renewal(epoch_changed=False, lapsed=False)
        return True

    until(works, "the engine to reach Redis again", timeout=20)
    # Appended with fsync on every write: the seq, the history and the say ids survive.
    again, fresh = a.append([say("lobby", "ann", "before", "m1"), say("lobby", "ann", "after")])
    assert (again.status, again.seq, fresh.seq) == ("dup", 1, 2)
    assert [msgpack.unpackb(e)["text"] for e in a.fetch("lobby", 0, None, 10).envelopes] == [
        "before", "after",
    ]  # fmt: skip


def test_a_lapsed_lease_and_a_lost_dataset_are_reported(
    server: Server, make_engine: Callable[..., Engine]
) -> None:
    a = make_engine("a", lease=0.2)
    epoch = a.epoch
    until(lambda: a.client.exists(keys.node_lease("a")) == 0, "the lease to run out")
    assert a.renew() == Renewal(epoch_changed=False, lapsed=True, reaped=False)
    assert a.renew() == Renewal(epoch_changed=False, lapsed=False, reaped=False)
    b = make_engine("b")
    until(lambda: a.client.exists(keys.node_lease("a")) == 0, "the lease to run out")
    assert b.dead_nodes() == ["a"]
    assert b.reap("a", leave_head) == []
    assert a.renew() == Renewal(epoch_changed=False, lapsed=True, reaped=True)
    # Found dead, but renewed before the claim: a live node is not cleaned up.
    a.record_session("ann", "Ann", "t", ["lobby"])
    until(lambda: a.client.exists(keys.node_lease("a")) == 0, "the lease to run out")
    assert b.dead_nodes() == ["a"]
    a.renew()
    assert b.reap("a", leave_head) == []
    assert a.client.hexists(keys.node_sessions("a"), "ann")
    assert a.renew().reaped is False
    flush(server)
    assert a.renew() == Renewal(epoch_changed=True, lapsed=True, reaped=True)
    assert a.epoch != epoch
    (first,) = a.append([say("lobby", "ann", "new epoch")])
    assert (first.seq, first.epoch) == (1, a.epoch)
