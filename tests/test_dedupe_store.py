"""A ``say`` resent after a restart of a durable broker is acknowledged, not published again."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import ZchatProcess
from helpers import start_broker

from zchat.broker.core import BrokerCore
from zchat.broker.sqlite import SAID_TRIM_EVERY, SqliteStore
from zchat.broker.state import BrokerConfig, Publish, Reply
from zchat.protocol import pack

HELLO = {"type": "hello", "v": 1, "nick": "Ann", "rooms": ["lobby"], "id": "h"}
SAY = {"type": "say", "room": "lobby", "text": "once", "id": "s1"}


def _send(core: BrokerCore, now: float, env: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(replies, published events) of one command from peer ``a``."""
    replies, events = [], []
    for out in core.receive(b"a", pack(env), now):
        if isinstance(out, Reply):
            replies.append(msgpack.unpackb(out.data))
        elif isinstance(out, Publish):
            events.append(msgpack.unpackb(out.data.split(b"\0", 1)[1]))
    core.store.flush()
    return replies, events


def _first_life(db: Path, config: BrokerConfig, *, clean: bool) -> int:
    store = SqliteStore(db, 500)
    core = BrokerCore(config, store=store, now=100.0)
    _send(core, 101.0, HELLO)
    _, events = _send(core, 102.0, SAY)
    (msg,) = events
    if clean:
        core.shutdown(103.0)
    store.close()
    seq: int = msg["seq"]
    return seq


@pytest.mark.parametrize("clean", [True, False], ids=["shutdown", "crash"])
def test_a_resend_after_a_restart_is_a_duplicate(tmp_path: Path, clean: bool) -> None:
    db = tmp_path / "chat.db"
    config = BrokerConfig(rate_limit=0)
    seq = _first_life(db, config, clean=clean)
    core = BrokerCore(config, store=SqliteStore(db, 500), now=110.0)
    _send(core, 111.0, HELLO)
    replies, events = _send(core, 112.0, SAY)
    assert events == []
    assert replies == [{"type": "ack", "re": "s1", "room": "lobby", "seq": seq, "dup": True}]
    core.check_invariants()


def test_stored_ids_expire_and_bye_forgets_them(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    config = BrokerConfig(rate_limit=0)
    _first_life(db, config, clean=True)
    core = BrokerCore(config, store=SqliteStore(db, 500), now=110.0)
    core.tick(110.0 + config.dedupe_ttl + 1)
    _send(core, 500.0, HELLO)
    _, events = _send(core, 501.0, SAY)
    assert [e["type"] for e in events] == ["msg"]  # expired: published again
    _send(core, 502.0, {"type": "bye"})
    _send(core, 503.0, HELLO)
    _, events = _send(core, 504.0, SAY)
    assert [e["type"] for e in events] == ["msg"]  # bye forgot it


def test_stored_ids_are_bounded_by_the_window_and_follow_a_nick_change(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    config = BrokerConfig(rate_limit=0, dedupe_window=3)
    store = SqliteStore(db, 500)
    core = BrokerCore(config, store=store, now=1.0)
    _send(core, 1.0, HELLO)
    for n in range(40):
        _send(core, 2.0 + n, {**SAY, "id": f"s{n}"})
    _send(core, 50.0, {"type": "nick", "nick": "Anna"})
    store.close()
    rows = sqlite3.connect(db).execute("SELECT nick, id FROM said ORDER BY n").fetchall()
    assert len(rows) <= config.dedupe_window + SAID_TRIM_EVERY
    assert {nick for nick, _ in rows} == {"anna"}
    assert [id for _, id in rows[-3:]] == ["s37", "s38", "s39"]
    # Read back, the window holds exactly the last ids.
    core = BrokerCore(config, store=SqliteStore(db, 500), now=60.0)
    _send(core, 61.0, {**HELLO, "nick": "Anna"})
    (session,) = core.registry
    assert list(session.recent) == ["s37", "s38", "s39"]


def test_a_durable_broker_process_acknowledges_a_resend_after_a_restart(
    zchat_proc: Callable[..., ZchatProcess],
    zctx: zmq.Context[zmq.Socket[bytes]],
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "chat.db")
    broker = start_broker(zchat_proc, "--rate-limit", "0", "--db", db)
    dealer = zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(broker.router)

    def ask(env: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send ``env`` until a reply with ``re`` = its id comes (the broker may be starting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dealer.send(msgpack.packb(env))
            while dealer.poll(200):
                reply: dict[str, Any] = msgpack.unpackb(dealer.recv())
                if reply.get("re") == env["id"]:
                    return reply
        pytest.fail(f"no reply to {env}")

    assert ask(HELLO)["type"] == "welcome"
    dealer.send(msgpack.packb(SAY))
    seq = ask({"type": "who", "room": "lobby", "id": "w"})["seq"]  # after the say, in order
    broker.proc.signal(signal.SIGTERM)
    assert broker.proc.wait() == 0
    start_broker(zchat_proc, "--rate-limit", "0", "--db", db, endpoints=broker.endpoints)
    assert ask(HELLO, timeout=15.0)["type"] == "welcome"
    assert ask(SAY) == {"type": "ack", "re": "s1", "room": "lobby", "seq": seq, "dup": True}
