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
