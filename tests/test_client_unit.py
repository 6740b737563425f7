"""The client's room tracker as a conversation: fed what the broker sends (room infos,
live room events, history replies), checked on the effects it returns. No sockets,
no event loop, no clock: ``zchat.client.rooms.RoomTracker`` is pure."""

from __future__ import annotations

from dataclasses import replace

from zchat import Joined, Left, Message, Missed, NickChanged, TopicSet
from zchat.client.rooms import Confirmed, Effect, Fetch, RoomTracker, SelfLeft
from zchat.protocol import MAX_HISTORY_LIMIT
from zchat.protocol.events import HistoryReply, RoomEvent, RoomInfo

ME = "Robin"
ROOM = "lobby"
EPOCH = "epoch-1"
TS = 1000.0


def msg(
    seq: int, text: str = "hi", nick: str = "Batman", id: str | None = None, room: str = ROOM
) -> Message:
    return Message(room, nick, text, TS + seq, seq, id=id)


def joined(seq: int, nick: str, room: str = ROOM) -> Joined:
    return Joined(room, nick, TS + seq, seq)


def left(seq: int, nick: str, reason: str = "part", room: str = ROOM) -> Left:
    return Left(room, nick, reason, TS + seq, seq)


def info(seq: int, *users: str, topic: str = "", room: str = ROOM) -> RoomInfo:
    """The room as a ``welcome`` or ``who`` shows it: ``seq`` is its latest event."""
    return RoomInfo(room, seq, topic, users, len(users))


def history(fetch: Fetch, *events: RoomEvent, missing: int = 0) -> HistoryReply:
    """The broker's answer to ``fetch``."""
    return HistoryReply(fetch.room, fetch.after, fetch.before, EPOCH, missing, events)


def enter(tracker: RoomTracker, at: int, *users: str, room: str = ROOM) -> list[Effect]:
    """Join ``room`` without backlog as the client does: hold its live events, see our
    join (published at ``at``) on the PUB before the reply, adopt the reply, settle."""
    tracker.hold(room)
    assert tracker.live(joined(at, tracker.nick, room)) == []  # held
    assert tracker.adopt(info(at, *users, room=room), first=True, backlog=0) is None
    return tracker.settle(room, at - 1)


def in_lobby(at: int = 1, *users: str) -> RoomTracker:
    """A tracker whose lobby is live, its last event our own join at seq ``at``."""
    tracker = RoomTracker(ME)
    assert enter(tracker, at, *(users or (ME,))) == [joined(at, ME)]
    return tracker


def feed(tracker: RoomTracker, *events: RoomEvent) -> list[Effect]:
    """Live events from the PUB, in order; every effect they had."""
    out: list[Effect] = []
    for event in events:
        out += tracker.live(event)
    return out


# ---------------------------------------------------------------- joining


def test_joining_fetches_backlog_as_history_then_releases_what_was_held() -> None:
    tracker = RoomTracker(ME)
    tracker.hold(ROOM)
    # Published while we were registering: our join, and a message after it.
    assert feed(tracker, joined(5, ME), msg(6, "after you came")) == []
    fetch = tracker.adopt(info(5, "Batman", ME, topic="Gotham"), first=True, backlog=50)
    assert fetch == Fetch(ROOM, 0, 5, 50, history=True)
    backlog: list[RoomEvent] = [
        joined(1, "Batman"),
        joined(2, "Joker"),
        msg(3, "old"),
        left(4, "Joker"),
    ]
    shown = tracker.fetched(fetch, history(fetch, *backlog))
    assert shown == [
        replace(joined(1, "Batman"), history=True),
        replace(joined(2, "Joker"), history=True),
        replace(msg(3, "old"), history=True),
        replace(left(4, "Joker"), history=True),
    ]
    # The info's roster and topic are current: old events do not change them.
    state = tracker.rooms[ROOM]
    assert state.users == ["Batman", ME]
    assert state.topic == "Gotham"
    assert state.held == [joined(5, ME), msg(6, "after you came")]
    assert tracker.settle(ROOM, 4) == [joined(5, ME), msg(6, "after you came")]
    assert state.seq == 6
    assert state.held is None


def test_no_backlog_fetch_when_none_is_wanted_or_none_exists() -> None:
    tracker = RoomTracker(ME)
    assert tracker.adopt(info(9, ME), first=True, backlog=0) is None
    assert tracker.adopt(info(1, ME, room="new"), first=True, backlog=50) is None
    assert tracker.adopt(info(2, ME, room="den"), first=True, backlog=20) == Fetch(
        "den", 0, 2, 20, history=True
    )


def test_backlog_is_never_counted_as_missed() -> None:
    tracker = RoomTracker(ME)
    tracker.hold(ROOM)
    fetch = tracker.adopt(info(9, ME), first=True, backlog=3)
    assert fetch == Fetch(ROOM, 0, 9, 3, history=True)
    # History kept only the last events: older ones are simply not shown.
    shown = tracker.fetched(fetch, history(fetch, msg(7), msg(8), missing=5))
    assert shown == [replace(msg(7), history=True), replace(msg(8), history=True)]
    assert tracker.unavailable(fetch) == []


def test_backlog_does_not_confirm_or_dedupe_anything() -> None:
    tracker = RoomTracker(ME)
    tracker.hold(ROOM)
    fetch = tracker.adopt(info(4, ME), first=True, backlog=50)
    assert fetch is not None
    old = [msg(2, "mine", nick=ME, id="r-1"), msg(3, "again", nick=ME, id="r-1")]
    assert tracker.fetched(fetch, history(fetch, *old)) == [
        replace(event, history=True) for event in old
    ]
    assert tracker.duplicates == 0


# ---------------------------------------------------------------- live events


def test_events_already_seen_are_dropped() -> None:
    tracker = in_lobby(3)
    assert feed(tracker, msg(4, "new")) == [msg(4, "new")]
    assert feed(tracker, msg(4, "new"), msg(2, "older"), joined(3, ME)) == []
    assert tracker.rooms[ROOM].seq == 4


def test_a_message_published_twice_is_shown_once() -> None:
    """Duplicates are dropped by (room, nick, id), once each: a broker restarted
    without --db can publish a resent message again, under a new seq."""
    tracker = in_lobby(1)
    tracker.hold("den")
    tracker.adopt(info(1, ME, room="den"), first=True, backlog=0)
    tracker.settle("den", 1)
    effects = feed(
        tracker,
        msg(2, "hello", id="a-1"),
        msg(3, "hello", id="a-1"),  # resent across a restart
        msg(4, "hello", id="a-1", nick="Joker"),  # another sender's id
        msg(2, "hello", id="a-1", room="den"),  # the same id in another room
        msg(5, "no id"),
        msg(6, "no id"),  # without an id, nothing is a copy
        msg(7, "again", id="a-2"),
        msg(8, "hello", id="a-1"),  # still remembered
    )
    assert effects == [
        msg(2, "hello", id="a-1"),
        msg(4, "hello", id="a-1", nick="Joker"),
        msg(2, "hello", id="a-1", room="den"),
        msg(5, "no id"),
        msg(6, "no id"),
        msg(7, "again", id="a-2"),
    ]
    assert tracker.duplicates == 2
    # A dropped copy still moves the room on: its seq was used.
    assert tracker.rooms[ROOM].seq == 8


def test_events_of_rooms_we_are_not_in_are_ignored() -> None:
    tracker = in_lobby(1)
    assert feed(tracker, msg(1, room="elsewhere"), joined(2, "Joker", room="elsewhere")) == []
    # A nick change is published with the room and its seq; without them it is a reply.
    assert feed(tracker, NickChanged("Batman", "Bruce", TS)) == []
    tracker.forget(ROOM)
    assert feed(tracker, msg(2)) == []
    assert ROOM not in tracker.rooms


# ---------------------------------------------------------------- gaps


def test_a_gap_yields_one_fetch_and_holds_later_events_until_repaired() -> None:
    tracker = in_lobby(3)
    effects = feed(tracker, msg(6, "six"), msg(7, "seven"), msg(9, "nine"))
    assert effects == [Fetch(ROOM, 3, 6, 2, repair=True)]
    (fetch,) = effects
    assert isinstance(fetch, Fetch)
    # The repair brings the gap, in order, as live events (not history).
    assert tracker.fetched(fetch, history(fetch, msg(4, "four"), msg(5, "five"))) == [
        msg(4, "four"),
        msg(5, "five"),
    ]
    # Released in order up to the next gap, which opens its own repair and holds again.
    assert tracker.repaired(fetch) == [
        msg(6, "six"),
        msg(7, "seven"),
        Fetch(ROOM, 7, 9, 1, repair=True),
    ]
    assert feed(tracker, msg(10, "ten")) == []  # held behind the second gap
    second = Fetch(ROOM, 7, 9, 1, repair=True)
    assert tracker.fetched(second, history(second, msg(8, "eight"))) == [msg(8, "eight")]
    assert tracker.repaired(second) == [msg(9, "nine"), msg(10, "ten")]
    assert tracker.rooms[ROOM].seq == 10
    assert tracker.rooms[ROOM].held is None
    assert feed(tracker, msg(11)) == [msg(11)]


def test_a_gap_the_history_no_longer_has_is_reported_missed_first() -> None:
    tracker = in_lobby(1)
    (fetch,) = feed(tracker, msg(10, "ten"))
    assert fetch == Fetch(ROOM, 1, 10, 8, repair=True)
    assert isinstance(fetch, Fetch)
    # History keeps the last two: six events are gone for good, and said so first.
    reply = history(fetch, msg(8, "eight"), msg(9, "nine"), missing=6)
    assert tracker.fetched(fetch, reply) == [Missed(ROOM, 6), msg(8, "eight"), msg(9, "nine")]
    assert tracker.repaired(fetch) == [msg(10, "ten")]


def test_a_repair_that_fails_reports_the_whole_gap_and_releases() -> None:
    tracker = in_lobby(2)
    (fetch,) = feed(tracker, msg(6, "six"))
    assert isinstance(fetch, Fetch)
    assert feed(tracker, msg(7, "seven")) == []
    assert tracker.unavailable(fetch) == [Missed(ROOM, 3)]
    assert tracker.repaired(fetch) == [msg(6, "six"), msg(7, "seven")]
    assert tracker.rooms[ROOM].seq == 7


def test_a_huge_gap_is_fetched_up_to_the_history_limit() -> None:
    tracker = in_lobby(1)
    assert feed(tracker, msg(5000)) == [Fetch(ROOM, 1, 5000, MAX_HISTORY_LIMIT, repair=True)]


# ---------------------------------------------------------------- own events


def test_our_own_message_coming_back_confirms_it() -> None:
    tracker = in_lobby(1)
    assert feed(tracker, msg(2, "mine", nick=ME, id="r-1")) == [
        Confirmed("r-1"),
        msg(2, "mine", nick=ME, id="r-1"),
    ]
    # A copy published again confirms it again, but is not shown again.
    assert feed(tracker, msg(3, "mine", nick=ME, id="r-1")) == [Confirmed("r-1")]
    assert tracker.duplicates == 1
    # Another's message with an id, or ours without one, confirms nothing.
    assert feed(tracker, msg(4, "theirs", id="r-2"), msg(5, "bare", nick=ME)) == [
        msg(4, "theirs", id="r-2"),
        msg(5, "bare", nick=ME),
    ]


def test_our_own_leave_is_noticed() -> None:
    tracker = in_lobby(2, "Batman", ME)
    assert feed(tracker, left(3, "Batman")) == [left(3, "Batman")]
    assert feed(tracker, left(4, ME)) == [SelfLeft(ROOM), left(4, ME)]
    assert tracker.rooms[ROOM].users == []


def test_a_repair_confirms_and_notices_like_live_events() -> None:
    tracker = in_lobby(1)
    (fetch,) = feed(tracker, msg(4))
    assert isinstance(fetch, Fetch)
    reply = history(fetch, msg(2, "lost", nick=ME, id="r-9"), left(3, ME))
    assert tracker.fetched(fetch, reply) == [
        Confirmed("r-9"),
        msg(2, "lost", nick=ME, id="r-9"),
        SelfLeft(ROOM),
        left(3, ME),
    ]


# ---------------------------------------------------------------- roster and topic


def test_roster_topic_and_nicks_follow_the_events() -> None:
    tracker = RoomTracker(ME)
    assert enter(tracker, 7, "Batman", ME) == [joined(7, ME)]
    state = tracker.rooms[ROOM]
    assert state.users == ["Batman", ME]
    feed(tracker, joined(8, "Joker"), joined(9, "Joker"))  # a second join adds nobody
    assert state.users == ["Batman", ME, "Joker"]
    topic = TopicSet(ROOM, "Batman", "Gotham at night", TS, 10)
    assert feed(tracker, topic) == [topic]
    assert state.topic == "Gotham at night"
    rename = NickChanged("Batman", "Bruce", TS, ROOM, 11)
    assert feed(tracker, rename) == [rename]
    assert state.users == ["Bruce", ME, "Joker"]
    feed(tracker, left(12, "Joker", "timeout"), left(13, "Nobody"))
    assert state.users == ["Bruce", ME]
    assert state.seq == 13


# ---------------------------------------------------------------- registering again


def test_registering_again_in_the_same_epoch_fetches_exactly_what_was_missed() -> None:
    tracker = in_lobby(10, "Batman", ME)
    # The broker lost us; while we register again, our new join is published.
    tracker.hold(ROOM)
    assert feed(tracker, joined(15, ME)) == []
    fetch = tracker.adopt(info(15, "Batman", ME, "Joker"), first=False, backlog=50)
    assert fetch == Fetch(ROOM, 10, 15, 4)
    missed: list[RoomEvent] = [
        left(11, ME, "timeout"),
        joined(12, "Joker"),
        msg(13, "where is Robin?"),
    ]
    # Live, not history; the broker no longer had seq 14.
    assert tracker.fetched(fetch, history(fetch, *missed, missing=1)) == [
        Missed(ROOM, 1),
        SelfLeft(ROOM),
        left(11, ME, "timeout"),
        joined(12, "Joker"),
        msg(13, "where is Robin?"),
    ]
    assert tracker.settle(ROOM, 14) == [joined(15, ME)]
    state = tracker.rooms[ROOM]
    assert state.users == ["Batman", "Joker", ME]
    assert state.seq == 15


def test_a_missed_range_beyond_the_history_limit_is_capped() -> None:
    tracker = in_lobby(10)
    tracker.hold(ROOM)
    fetch = tracker.adopt(info(2000, ME), first=False, backlog=50)
    assert fetch == Fetch(ROOM, 10, 2000, MAX_HISTORY_LIMIT)


def test_nothing_to_fetch_when_nothing_was_missed() -> None:
    tracker = in_lobby(10)
    tracker.hold(ROOM)
    assert tracker.adopt(info(11, ME), first=False, backlog=50) is None
    assert tracker.settle(ROOM, 10) == []


def test_a_new_epoch_starts_every_room_over() -> None:
    tracker = in_lobby(40)
    tracker.hold("den")
    tracker.adopt(info(30, ME, room="den"), first=True, backlog=0)
    tracker.settle("den", 30)
    tracker.restart()
    assert [state.seq for state in tracker.rooms.values()] == [None, None]
    # Registered with the new broker: seq counts from 1 again, with backlog as for a new room.
    tracker.hold(ROOM)
    assert feed(tracker, joined(3, ME)) == []
    fetch = tracker.adopt(info(3, ME), first=True, backlog=50)
    assert fetch == Fetch(ROOM, 0, 3, 50, history=True)
    tracker.fetched(fetch, history(fetch, msg(1, "first"), msg(2, "second")))
    assert tracker.settle(ROOM, 2) == [joined(3, ME)]
    assert feed(tracker, msg(4, "low seq, yet new")) == [msg(4, "low seq, yet new")]


def test_a_room_that_started_over_within_an_epoch_is_new_again() -> None:
    """Forgotten by the broker while empty and joined again: its seq goes back."""
    tracker = in_lobby(40)
    tracker.hold(ROOM)
    assert feed(tracker, joined(2, ME)) == []
    fetch = tracker.adopt(info(2, ME), first=False, backlog=50)
    assert fetch == Fetch(ROOM, 0, 2, 50, history=True)
    assert tracker.fetched(fetch, history(fetch, msg(1, "before"))) == [
        replace(msg(1, "before"), history=True)
    ]
    assert tracker.settle(ROOM, 1) == [joined(2, ME)]
    assert tracker.rooms[ROOM].seq == 2
