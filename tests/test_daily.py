"""Issue 16, daily use in line mode: real ``zchat client`` processes against a broker."""

from __future__ import annotations

from collections.abc import Callable

from conftest import BrokerThread, ZchatProcess
from helpers import start_client


def test_line_mode_prints_a_nick_change_once(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    rooms = ("--room", "lobby", "--room", "dev", "--room", "ops")
    watcher = start_client(zchat_proc, broker, "Watcher", *rooms)
    watcher.expect(r"connected as Watcher")
    robin = start_client(zchat_proc, broker, "Robin", *rooms)
    robin.expect(r"connected as Robin")
    watcher.expect(r"--> Robin joined ops")
    robin.send("/nick Bird")
    watcher.expect(r"-!- Robin is now known as Bird$")
    robin.expect(r"-!- Robin is now known as Bird$")
    # Something after it, in order, proves the other copies were not merely late.
    robin.send("after")
    watcher.expect(r"<Bird> after")
    robin.expect(r"<Bird> after")
    for proc in (watcher, robin):
        assert sum("now known as" in line for line in proc.seen) == 1, proc.seen


def test_line_mode_labels_dms_and_query_talks_directly(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    batman = start_client(zchat_proc, broker, "Batman")
    batman.expect(r"connected as Batman")
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    batman.send("/msg Robin psst")
    batman.expect(r"\d \[DM to Robin\] psst$")
    robin.expect(r"\d \[DM from Batman\] psst$")
    robin.send("/query Batman")
    robin.expect(r"-!- talking to Batman directly")
    robin.send("a secret")
    batman.expect(r"\[DM from Robin\] a secret$")
    robin.expect(r"\[DM to Batman\] a secret$")
    robin.send("/query")
    robin.expect(r"-!- talking in lobby")
    robin.send("in public")
    batman.expect(r"<Robin> in public$")
    assert not any("a secret" in line and "DM" not in line for line in batman.seen)


def test_line_mode_list_shows_rooms_and_who_of_an_unknown_room_says_so(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    batman = start_client(zchat_proc, broker, "Batman", "--room", "lobby", "--room", "cave")
    batman.expect(r"connected as Batman")
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    batman.send("/topic Bat business")  # the current room is the first: lobby
    batman.expect(r"set the topic of lobby")
    robin.send("/list")
    robin.expect(r"^-!- 2 rooms:$")
    robin.expect(r"^-!-   lobby \(2\): Bat business$")
    robin.expect(r"^-!-   cave \(1\)$")
    robin.send("/who nosuchroom")
    robin.expect(r"^-!- no room nosuchroom: nobody is in it")
    assert not any("nosuchroom (0)" in line for line in robin.seen)
