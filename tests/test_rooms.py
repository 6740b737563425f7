"""Rooms, direct messages, presence and history (issue 3), with real sockets and processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from conftest import BrokerThread, ZchatProcess
from helpers import (
    client_for,
    everything_until,
    numbered,
    start_broker,
    start_client,
    until,
    wait_event,
    wait_for,
)

from zchat import (
    Client,
    ClientEvent,
    DirectMessage,
    Joined,
    Left,
    Message,
    Missed,
    NickChanged,
    Status,
    TopicSet,
)
from zchat.protocol import split_pub_frame, unpack
from zchat.protocol.events import RoomEvent

# ---------------------------------------------------------------- library


def missed_or_said(text: str) -> Callable[[ClientEvent], bool]:
    def match(event: ClientEvent) -> bool:
        return isinstance(event, Missed) or (isinstance(event, Message) and event.text == text)

    return match


Seen = set[tuple[str, str]]


async def test_three_clients_two_rooms_see_exactly_their_rooms(broker: BrokerThread) -> None:
    async with (
        client_for(broker, "Batman", rooms=["gotham"]) as batman,
        client_for(broker, "Superman", rooms=["metropolis"]) as superman,
        client_for(broker, "Robin", rooms=["gotham", "metropolis"]) as robin,
    ):
        await batman.say("gotham only")
        await superman.say("metropolis only")
        await robin.say("to gotham", "gotham")
        await robin.say("to metropolis", "metropolis")
        expected = {
            ("gotham", "gotham only"),
            ("metropolis", "metropolis only"),
            ("gotham", "to gotham"),
            ("metropolis", "to metropolis"),
        }

        async def read_until(client: Client, done: Callable[[Seen], bool]) -> Seen:
            seen: Seen = set()
            while not done(seen):
                event = await wait_for(client, Message)
                seen.add((event.room, event.text))
            return seen

        # Senders are ordered among themselves only: wait for everything, then
        # mark the end in both rooms. Whatever a client reads before the mark in
        # its own room was published before it, so a leak would show up.
        robin_saw = await read_until(robin, lambda seen: expected <= seen)
        await robin.say("fin", "gotham")
        await robin.say("fin", "metropolis")
        batman_saw = await read_until(batman, lambda seen: ("gotham", "fin") in seen)
        superman_saw = await read_until(superman, lambda seen: ("metropolis", "fin") in seen)
        robin_saw |= await read_until(robin, lambda seen: len(seen) == 2)
    assert robin_saw == expected | {("gotham", "fin"), ("metropolis", "fin")}
    assert batman_saw == {m for m in robin_saw if m[0] == "gotham"}
    assert superman_saw == {m for m in robin_saw if m[0] == "metropolis"}


async def test_join_leave_who_topic_nick_and_action(broker: BrokerThread) -> None:
    async with client_for(broker, "Batman") as batman, client_for(broker, "Robin") as robin:
        state = await robin.join("Cave")
        assert state.name == "cave"
        assert state.users == ["Robin"]
        await batman.join("cave")
        await wait_for(robin, Joined, room="cave", nick="Batman")
        who = await robin.who("cave")
        assert who.users == ("Robin", "Batman")
        assert (who.room, who.count) == ("cave", 2)
        await batman.set_topic("Bat business", "cave")
        await wait_for(robin, TopicSet, room="cave", text="Bat business")
        assert robin.rooms["cave"].topic == "Bat business"
        await batman.change_nick("Bruce")
        for room in ("lobby", "cave"):
            nick = await wait_for(robin, NickChanged, room=room)
            assert (nick.old, nick.new) == ("Batman", "Bruce")
        assert batman.nick == "Bruce"
        assert robin.rooms["cave"].users == ["Robin", "Bruce"]
        await batman.say("waves", "cave", action=True)
        action = await wait_for(robin, Message, room="cave")
        assert action.action is True
        await robin.leave("cave", "homework")
        left = await wait_for(batman, Left, room="cave")
        assert (left.nick, left.reason, left.message) == (
            "Robin",
            "part",
            "homework",
        )
        await until(lambda: "cave" not in robin.rooms, what="robin forgets cave")


async def test_dm_reaches_only_its_recipient(
    broker: BrokerThread, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    spy = zctx.socket(zmq.SUB)
    spy.setsockopt(zmq.LINGER, 0)
    spy.setsockopt(zmq.SUBSCRIBE, b"")
    spy.connect(broker.pub)
    async with (
        client_for(broker, "Batman") as batman,
        client_for(broker, "Robin") as robin,
        client_for(broker, "Joker") as joker,
    ):
        confirmation = await batman.dm("robin", "meet at the cave")
        assert (confirmation.nick, confirmation.to) == ("Batman", "Robin")
        dm = await wait_for(robin, DirectMessage)
        assert (dm.nick, dm.to, dm.text) == ("Batman", "Robin", "meet at the cave")
        # Everything the bystander received, none of it thrown away unchecked, up
        # to a marker of his own said after the DM was confirmed (and a round trip).
        await joker.say("anything?")
        joker_saw = await everything_until(
            joker, lambda e: isinstance(e, Message) and e.text == "anything?"
        )
    frames = []
    while spy.poll(100):
        frames.append(spy.recv())
    assert frames, "the spy should have seen the room traffic"
    assert all(b"meet at the cave" not in frame for frame in frames)
    assert joker_saw, "joker should have seen his own marker"
    assert not [e for e in joker_saw if isinstance(e, DirectMessage)], joker_saw


async def test_late_joiner_gets_backlog_then_live_without_duplicate_or_hole(
    make_broker: Callable[..., BrokerThread],
) -> None:
    broker = make_broker(rate_limit=0)
    async with client_for(broker, "Batman") as batman:
        for n in range(30):
            await batman.say(f"old {n}")
        await wait_event(batman, type="msg", text="old 29")
        async with client_for(broker, "Robin", backlog=20) as robin:
            await batman.say("new 0")
            events: list[RoomEvent] = []
            while True:
                event = await wait_event(robin, numbered)
                assert isinstance(event, RoomEvent)
                events.append(event)
                if isinstance(event, Message) and event.text == "new 0":
                    break
    history = [e for e in events if e.history]
    live = [e for e in events if not e.history]
    assert len(history) == 20
    assert all(isinstance(e, Message) for e in history)
    last_old = history[-1]
    assert isinstance(last_old, Message)
    assert last_old.text == "old 29"
    assert isinstance(live[0], Joined)
    assert live[0].nick == "Robin"
    seqs = [e.seq or 0 for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


class LossyLink:
    """A forwarder between the broker's PUB and a client's SUB that loses chosen events."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        upstream: str,
        lose: Callable[[dict[str, object]], bool],
    ) -> None:
        self.inbound = ctx.socket(zmq.SUB)
        self.inbound.setsockopt(zmq.LINGER, 0)
        self.inbound.setsockopt(zmq.SUBSCRIBE, b"")
        self.inbound.connect(upstream)
        self.outbound = ctx.socket(zmq.PUB)
        self.outbound.setsockopt(zmq.LINGER, 0)
        self.outbound.bind("tcp://127.0.0.1:*")
        self.endpoint = self.outbound.getsockopt_string(zmq.LAST_ENDPOINT)
        self.lose = lose
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inbound, zmq.POLLIN)
        poller.register(self.outbound, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                if sock is self.outbound:
                    continue
                frame = self.inbound.recv()
                topic, body = split_pub_frame(frame)
                if topic.startswith(b"#") and self.lose(unpack(body)):
                    self.lost += 1
                    continue
                self.outbound.send(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.inbound.close(0)
        self.outbound.close(0)


@pytest.fixture
def lossy(zctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Callable[..., LossyLink]]:
    links: list[LossyLink] = []

    def make(upstream: str, lose: Callable[[dict[str, object]], bool]) -> LossyLink:
        link = LossyLink(zctx, upstream, lose)
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()


async def test_a_dropped_range_is_repaired_in_order(
    broker: BrokerThread, lossy: Callable[..., LossyLink]
) -> None:
    link = lossy(broker.pub, lambda env: env.get("text") in {"m2", "m3", "m4"})
    async with (
        client_for(broker, "Talker") as talker,
        client_for((broker.router, link.endpoint), "Listener", backlog=0) as listener,
    ):
        for n in range(8):
            await talker.say(f"m{n}")
        texts: list[str] = []
        while len(texts) < 8:
            event = await wait_event(listener, lambda e: isinstance(e, Message | Missed))
            assert isinstance(event, Message), event
            texts.append(event.text)
    assert texts == [f"m{n}" for n in range(8)]
    assert link.lost == 3


async def test_a_range_the_broker_no_longer_has_is_reported_missed(
    make_broker: Callable[..., BrokerThread], lossy: Callable[..., LossyLink]
) -> None:
    broker = make_broker(history=3, rate_limit=0)
    lost = {f"m{n}" for n in range(1, 9)}
    link = lossy(broker.pub, lambda env: env.get("text") in lost)
    async with (
        client_for(broker, "Talker") as talker,
        client_for((broker.router, link.endpoint), "Listener", backlog=0) as listener,
    ):
        for n in range(10):
            await talker.say(f"m{n}")
        await wait_for(listener, Message, text="m0")
        missed = await wait_for(listener, Missed)
        assert missed.count == 6  # m1..m6 evicted; m7, m8 still in history
        assert missed.room == "lobby"
        for text in ("m7", "m8", "m9"):
            await wait_for(listener, Message, text=text)


async def test_restart_without_db_starts_a_new_epoch_without_false_gaps(
    make_broker: Callable[..., BrokerThread],
) -> None:
    first = make_broker()
    async with client_for(first, "Batman") as batman, client_for(first, "Robin") as robin:
        for n in range(20):
            await batman.say(f"before {n}")
        await wait_for(robin, Message, text="before 19")
        old_epoch = robin.epoch
        first.stop()
        make_broker(router=first.router, pub=first.pub)  # where the clients look for it
        await wait_for(robin, Status, state="registered", timeout=10)
        await wait_for(batman, Status, state="registered", timeout=10)
        assert robin.epoch != old_epoch
        await batman.say("after")
        event = await wait_event(robin, missed_or_said("after"))
        assert isinstance(event, Message), event
        assert event.seq < 10


# ---------------------------------------------------------------- processes


def test_cli_slash_commands_in_line_mode(zchat_proc: Callable[..., ZchatProcess]) -> None:
    broker = start_broker(zchat_proc)
    robin = start_client(zchat_proc, broker, "Robin", "--json")
    robin.expect_json(type="join", nick="Robin")
    batman = start_client(zchat_proc, broker, "Batman")
    batman.expect(r"connected as Batman")
    batman.send("/join cave")
    batman.expect(r"now talking in cave")
    batman.send("/topic Bat business")
    batman.expect(r"-!- Batman set the topic of cave: Bat business")
    batman.send("/me waves")
    batman.expect(r"\* Batman waves$")
    batman.send("/who")
    batman.expect(r"-!- cave \(1\): Batman")
    batman.send("/msg Robin psst")
    batman.expect(r"\[DM to Robin\] psst$")
    assert robin.expect_json(type="dm")["text"] == "psst"
    batman.send("/bogus")
    batman.expect(r"!!! unknown command /bogus")
    batman.send("/help msg")
    batman.expect(r"^-!- /msg NICK text: send a direct message$")
    batman.send("/help")
    batman.expect(r"^-!- /join ROOM +join a room")
    batman.send("//not a command")
    batman.expect(r"<Batman> /not a command$")
    batman.send("/nick Bruce")
    robin.expect_json(type="nick", old="Batman", new="Bruce")
    batman.send("/leave cave")
    batman.expect(r"<-- Bruce left cave \(part\)")
    batman.send("/quit gone fishing")
    assert batman.wait() == 0
    leave = robin.expect_json(type="leave", nick="Bruce")
    assert leave["message"] == "gone fishing"


def test_cli_db_keeps_history_topics_and_seq_across_restart(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: object
) -> None:
    db = f"{tmp_path}/chat.db"
    broker = start_broker(zchat_proc, "--db", db)
    batman = start_client(zchat_proc, broker, "Batman", "--json")
    batman.expect_json(type="join", nick="Batman")
    batman.send("/topic Gotham")
    batman.expect_json(type="topic", text="Gotham")
    batman.send("remember me")
    last = batman.expect_json(type="msg", text="remember me")
    batman.close_stdin()
    batman.expect_json(type="leave", nick="Batman")
    assert batman.wait() == 0
    broker.proc.signal(2)
    assert broker.proc.wait() == 0
    broker = start_broker(zchat_proc, "--db", db)
    robin = start_client(zchat_proc, broker, "Robin", "--json")
    old = robin.expect_json(type="msg", text="remember me")
    assert old["history"] is True
    assert old["seq"] == last["seq"]
    join = robin.expect_json(type="join", nick="Robin")
    assert join["seq"] > last["seq"]
    robin.send("/topic")
    robin.send("new")
    new = robin.expect_json(type="msg", text="new")
    assert new["seq"] == join["seq"] + 1
    # Read behind the running broker's back: a second SqliteStore would be refused.
    reader = sqlite3.connect(db)
    try:
        row = reader.execute("SELECT seq, topic FROM rooms WHERE room='lobby'").fetchone()
        assert tuple(row) == (new["seq"], "Gotham")
    finally:
        reader.close()
