"""Attacks on the command and broadcast ports (issue 12), each as an attacker would
make it with raw pyzmq sockets, against a real broker.

Sizes fit a 2-core CI machine; ``--long`` runs the full sizes the issue reports.
Figures for each attack (RSS, a well-behaved client's round trips) come from
``python -m benchmarks.attacks`` and are in docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from conftest import BrokerThread, ZchatProcess, recv_until
from helpers import start_broker, start_client
from measure import rss_mib
from test_core import A, B, C, Conversation

from zchat.broker.core import BrokerCore
from zchat.broker.sqlite import SqliteStore
from zchat.broker.store import NICKS_PER_KEY, MemoryStore, Store
from zchat.curve import CurveKeys, CurveServer, apply_client
from zchat.protocol import pack, unpack
from zchat.protocol.events import SyncSeen
from zchat.protocol.wire import sync_topic

#: Where libzmq's routing-id counter starts when nothing seeds libc's rand.
UNSEEDED_BASE = 0x6B8B4567


def envelope_type(frame: bytes) -> str:
    return str(unpack(frame).get("type"))


def ping_round_trip(sock: zmq.Socket[bytes], timeout: float = 5.0) -> None:
    """One ping answered: by ``pong`` or, before ``hello``, by ``not_registered``."""
    sock.send(pack({"type": "ping", "id": "rt"}))
    recv_until(sock, lambda f: unpack(f).get("re") == "rt", timeout)


def dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, rid: bytes | None = None
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if rid is not None:
        sock.setsockopt(zmq.ROUTING_ID, rid)
    sock.connect(endpoint)
    return sock


def wait_stats(
    sock: zmq.Socket[bytes], until: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Ask for ``stats`` until ``until`` holds for them; fail on the deadline."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        sock.send(pack({"type": "stats", "id": "st"}))
        reply = unpack(recv_until(sock, lambda f: unpack(f).get("re") == "st", timeout))
        stats = reply
        if until(stats):
            return stats
    pytest.fail(f"stats never matched; last {stats}")


# ------------------------------------------------------------ 1. routing-id squatting


def test_squatting_the_next_routing_ids_does_not_abort_the_broker(
    zchat_proc: Callable[..., ZchatProcess], zctx: zmq.Context[zmq.Socket[bytes]], long_run: bool
) -> None:
    broker = start_broker(zchat_proc)
    squatters = 64 if long_run else 8
    for n in range(squatters):
        sock = dealer(zctx, broker.router, b"\x00" + (UNSEEDED_BASE + n).to_bytes(4, "big"))
        # Answered: the squatter holds its id before anyone else connects.
        sock.send(pack({"type": "stats", "id": f"s{n}"}))
        recv_until(sock, lambda f: unpack(f).get("re", "").startswith("s"))
    # A chosen id that libzmq cannot generate gets no service: it could be another's.
    chooser = dealer(zctx, broker.router, b"chosen-id")
    chooser.send(pack({"type": "stats", "id": "chooser"}))
    honest = dealer(zctx, broker.router)
    ping_round_trip(honest)
    assert broker.proc.proc.poll() is None, broker.proc.stderr_lines[-5:]
    drops = wait_stats(honest, lambda s: s["drops"].get("chosen_routing_id", 0) >= 1)
    assert drops["drops"]["chosen_routing_id"] == 1
    assert not chooser.poll(0), "a peer-chosen routing id was served"
    # Every later client too (the counter walks through the squatted range).
    for _ in range(squatters):
        ping_round_trip(dealer(zctx, broker.router))
    assert broker.proc.proc.poll() is None


# ------------------------------------------------------------ 2. session hijack


def test_another_key_on_a_sessions_routing_id_never_acts_as_it() -> None:
    conv = Conversation()
    conv.hello(A, "alice", key="alice-key", rooms=["#r"])
    conv.hello(B, "bob", key="bob-key", rooms=["#r"])
    # Alice's connection drops; an attacker's connection presents her routing id.
    replies = conv.send(A, key="mallory-key", type="say", room="#r", text="I am alice")
    assert [r["code"] for r in replies] == ["not_registered"]
    assert not conv.events("message"), "the attacker spoke as alice"
    assert conv.core.nick_of(A) is None
    conv.send(B, key="bob-key", type="dm", to="alice", text="secret")
    assert all(p != A or e.get("text") != "secret" for p, e in conv.replies)
    # A hello on that id is a registration of its own: alice's nick stays hers.
    assert conv.hello(A, "alice", key="mallory-key")["code"] == "nick_taken"
    conv.core.check_invariants()


async def test_hijack_over_curve_with_a_departed_clients_routing_id(
    make_broker: Callable[..., BrokerThread], zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    server_public, server_secret = zmq.curve_keypair()
    broker = make_broker(curve=CurveServer(server_public, server_secret))
    stolen = b"\x00" + secrets.token_bytes(4)

    def curve_dealer(rid: bytes | None = None) -> zmq.Socket[bytes]:
        public, secret = zmq.curve_keypair()
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if rid is not None:
            sock.setsockopt(zmq.ROUTING_ID, rid)
        apply_client(sock, CurveKeys(server_public, public, secret))
        sock.connect(broker.router)
        return sock

    victim = curve_dealer(stolen)
    victim.send(pack({"type": "hello", "v": 1, "nick": "alice", "rooms": ["#r"], "id": "h"}))
    assert envelope_type(recv_until(victim, lambda f: unpack(f).get("re") == "h")) == "welcome"
    victim.close(0)
    observer = curve_dealer()
    observer.send(pack({"type": "hello", "v": 1, "nick": "bob", "rooms": ["#r"], "id": "h"}))
    recv_until(observer, lambda f: unpack(f).get("re") == "h")
    attacker = curve_dealer(stolen)
    # libzmq ignores a connection that presents an id still in use, for good:
    # reconnect until the victim's connection is gone and the attacker is served.
    deadline = time.monotonic() + 10
    while True:
        attacker.send(pack({"type": "say", "room": "#r", "text": "I am alice", "id": "x"}))
        if attacker.poll(500):
            break
        assert time.monotonic() < deadline, "the attacker's connection was never served"
        attacker.close(0)
        attacker = curve_dealer(stolen)
    reply = unpack(attacker.recv())
    assert reply["code"] == "not_registered"
    observer.send(pack({"type": "dm", "to": "alice", "text": "secret", "id": "d"}))
    answer = unpack(recv_until(observer, lambda f: unpack(f).get("re") == "d"))
    assert answer.get("code") == "no_such_nick"
    assert not attacker.poll(0)


# ------------------------------------------------------------ 3. one message, millions of frames


class Pinger:
    """A well-behaved registered client on a raw DEALER, in a thread: a ping every
    ``every`` seconds; keeps each reply's type and round trip."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, nick: str) -> None:
        self.sock = dealer(ctx, endpoint)
        self.sock.send(pack({"type": "hello", "v": 1, "nick": nick, "id": "h"}))
        welcome = unpack(recv_until(self.sock, lambda f: unpack(f).get("re") == "h"))
        assert welcome["type"] == "welcome", welcome
        self.replies: list[str] = []
        self.round_trips: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self, every: float = 0.1) -> None:
        sent: dict[str, float] = {}
        n = 0
        while not self._stop.is_set():
            n += 1
            sent[f"p{n}"] = time.monotonic()
            self.sock.send(pack({"type": "ping", "id": f"p{n}"}))
            deadline = time.monotonic() + every
            while (left := deadline - time.monotonic()) > 0:
                if not self.sock.poll(int(left * 1000) + 1):
                    continue
                reply = unpack(self.sock.recv())
                self.replies.append(str(reply.get("type")) + ":" + str(reply.get("code", "")))
                if reply.get("re") in sent:
                    self.round_trips.append(time.monotonic() - sent.pop(reply["re"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_message_of_many_frames_drops_no_one(
    make_broker: Callable[..., BrokerThread], zctx: zmq.Context[zmq.Socket[bytes]], long_run: bool
) -> None:
    broker = make_broker(heartbeat=0.5)
    honest = Pinger(zctx, broker.router, "alice")
    frames = 6_000_000 if long_run else 1_000_000
    attacker = dealer(zctx, broker.router)
    attacker.setsockopt(zmq.SNDHWM, 0)
    for _ in range(frames - 1):
        attacker.send(b"", zmq.SNDMORE)
    attacker.send(b"")
    error = unpack(recv_until(attacker, lambda f: True, timeout=60))
    assert error["code"] == "bad_envelope"
    answered = len(honest.round_trips)
    deadline = time.monotonic() + 10
    while len(honest.round_trips) < answered + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    honest.stop()
    # The honest client kept being answered after the attack, not merely not dropped.
    assert len(honest.round_trips) >= answered + 3, "the honest client stalled"
    assert "error:not_registered" not in honest.replies
    assert broker.core.counters.leaves.get("timeout", 0) == 0
    assert broker.core.sessions == 1


# ------------------------------------------------------------ 4. memory: the PUB port


def raw_subscribe(endpoint: str, topic: bytes) -> socket.socket:
    """A SUB in ZMTP 3.0 by hand, sending one subscription of ``topic``.

    By hand: libzmq's own SUB keeps its subscriptions in a trie it frees by
    recursion, one level per byte, and a megabyte-long topic crashes the
    attacking process at exit (stack overflow).
    """
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
    prop = b"\x0bSocket-Type" + (3).to_bytes(4, "big") + b"SUB"
    ready = b"\x05READY" + prop
    body = b"\x01" + topic
    sock.sendall(greeting + b"\x04" + bytes([len(ready)]) + ready)
    with contextlib.suppress(OSError):  # the broker hung up: the point of the limit
        sock.sendall(b"\x02" + len(body).to_bytes(8, "big") + body)
    return sock


def test_a_huge_subscription_is_refused_and_costs_no_memory(
    zchat_proc: Callable[..., ZchatProcess], zctx: zmq.Context[zmq.Socket[bytes]], long_run: bool
) -> None:
    broker = start_broker(zchat_proc)
    pid = broker.proc.pid
    honest = dealer(zctx, broker.router)
    ping_round_trip(honest)
    before = rss_mib(pid)
    size = (16 if long_run else 4) * 1024 * 1024
    attackers = [raw_subscribe(broker.pub, b"#" * size) for _ in range(4)]
    # Over when the broker has hung up on every one (with the fix), or has read
    # every subscription (without it: then each costs about 45 times its size).
    for sock in attackers:
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
    ping_round_trip(honest)
    after = rss_mib(pid)
    for sock in attackers:
        sock.close()
    assert after - before < size / 1024 / 1024, (before, after)
    assert broker.proc.proc.poll() is None


# ------------------------------------------------------------ 6. nick ownership eviction


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
def test_one_key_claiming_many_nicks_cannot_take_anothers(
    durable: bool, long_run: bool, tmp_path: Path
) -> None:
    claims = 100_050 if long_run else 1_050
    store: Store = (
        SqliteStore(tmp_path / "chat.db", 10)
        if durable
        else MemoryStore(10, max_owners=100_000 if long_run else 1_000)
    )
    conv = Conversation(rate_limit=0)
    conv.core.store = store
    conv.hello(A, "alice", key="alice-key")
    conv.send(A, key="alice-key", type="bye")
    conv.hello(B, "mallory", key="mallory-key")
    for n in range(claims):
        conv.send(B, key="mallory-key", type="nick", nick=f"m{n}")
        if n % 100 == 0:
            store.flush()  # as the broker does after each batch
    store.flush()
    assert conv.hello(C, "alice", key="mallory-key")["code"] == "nick_taken"
    assert store.owner("alice") == "alice-key"
    owned = [n for n in range(claims) if store.owner(f"m{n}") == "mallory-key"]
    assert len(owned) == NICKS_PER_KEY


# ------------------------------------------------------------ 5. history amplification


def test_history_costs_tokens_in_proportion_to_its_bytes() -> None:
    conv = Conversation(rate_limit=20, rate_burst=40)
    conv.hello(A, "alice", rooms=["#r"])
    conv.hello(B, "mallory", rooms=["#r"])
    text = "x" * 4000
    for _ in range(500):
        conv.send(A, type="say", room="#r", text=text)
        conv.now += 0.05  # within alice's rate
    asked = 0
    replies = 0
    # One second of asking as fast as possible: without the byte cost, 40 + 20
    # replies of 2 MB each; with it, what 60 tokens buy at 64 KiB a token.
    for _ in range(100):
        asked += 1
        conv.now += 0.01
        request = pack({"type": "history", "room": "#r", "limit": 500})
        outputs = conv.core.receive(B, request, conv.now)
        replies += sum(1 for out in outputs if len(out.data) > 1_000_000)
    assert asked == 100
    assert 1 <= replies <= 3, replies


# ------------------------------------------------------------ 9. hostile strings in the client

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil"


def hostile_broker(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> tuple[str, str, Callable[[], None]]:
    """A fake broker whose every answer is an error with escape sequences in its
    code and reason; (router, pub, close)."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:0")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:0")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            peer, frame = router.recv_multipart()
            request = unpack(frame)
            ref = request.get("id")
            if request.get("type") == "sync":
                # Let a client's readiness proof through, to reach its hello.
                seen = SyncSeen(request["token"], ref)
                pub.send(sync_topic(request["token"]) + pack(seen.to_wire()))
                continue
            answer = {"type": "error", "code": HOSTILE, "reason": HOSTILE, "re": ref}
            router.send_multipart([peer, pack(answer)])
        router.close(0)
        pub.close(0)

    thread = threading.Thread(target=serve, daemon=True)
    endpoints = (
        router.getsockopt_string(zmq.LAST_ENDPOINT),
        pub.getsockopt_string(zmq.LAST_ENDPOINT),
    )
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)

    return (*endpoints, close)


def assert_inert(text: str) -> None:
    for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert bad not in text, repr(text)


def test_a_hostile_error_code_reaches_no_terminal(
    zchat_proc: Callable[..., ZchatProcess], zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    router, pub, close = hostile_broker(zctx)
    try:
        ping = zchat_proc("ping", "--router", router)
        ping.wait(15)
        ping.expect("broker at")
        refused = zchat_proc("client", "--nick", "alice", "--router", router, "--pub", pub)
        refused.wait(15)
        # The reader threads have seen everything once the process has exited.
        ping.events()
        refused.events()
        for proc in (ping, refused):
            assert_inert("\n".join(proc.seen + proc.stderr_lines))
        assert any("evil" in line for line in refused.stderr_lines + refused.seen)
    finally:
        close()


async def test_json_mode_escapes_c1_and_bidi_from_other_users(
    zchat_proc: Callable[..., ZchatProcess], make_broker: Callable[..., BrokerThread]
) -> None:
    broker = make_broker()
    watcher = start_client(zchat_proc, broker, "watcher", "--json")
    watcher.expect_json(type="join", nick="watcher")
    mallory = start_client(zchat_proc, broker, "mallory")
    watcher.expect_json(type="join", nick="mallory")
    mallory.send("hi " + HOSTILE)
    line = watcher.expect(lambda text: '"msg"' in text and "mallory" in text)
    assert_inert(line)
    assert json.loads(line)["text"] == "hi " + HOSTILE


# ------------------------------------------------------------ 7. disk faults


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def durable_conversation(path: Path, clock: FakeClock) -> tuple[Conversation, SqliteStore]:
    store = SqliteStore(path, 50, clock=clock)
    conv = Conversation(rate_limit=0)
    conv.core = BrokerCore(conv.core.config, store=store, now=conv.now)
    return conv, store


def say_and_flush(conv: Conversation, store: SqliteStore, text: str) -> None:
    conv.send(A, type="say", room="#r", text=text)
    store.flush()  # as the broker does after each batch


@pytest.mark.parametrize("fault", ["full", "locked"])
def test_a_store_that_cannot_write_keeps_the_broker_serving(fault: str, tmp_path: Path) -> None:
    clock = FakeClock()
    conv, store = durable_conversation(tmp_path / "chat.db", clock)
    conv.hello(A, "alice", rooms=["#r"])
    say_and_flush(conv, store, "saved")
    other = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    if fault == "full":
        # A full disk as SQLite sees it: no page may be added (SQLITE_FULL).
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
    else:
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    for n in range(200):
        say_and_flush(conv, store, f"kept {n} " + "x" * 1000)
    assert store.failing is not None
    (stats,) = conv.send(A, type="stats")
    assert stats["unsaved"] == 50  # the last `history` events, bounded
    # Served from memory meanwhile: history has what the disk refused.
    (history,) = conv.send(A, type="history", room="#r", limit=3)
    assert history["events"][-1]["text"].startswith("kept 199")
    if fault == "full":
        store._db.execute("PRAGMA max_page_count=1073741823")
    else:
        other.execute("ROLLBACK")
    clock.now += SqliteStore.RETRY
    store.flush()
    assert store.failing is None
    assert conv.send(A, type="stats")[0]["unsaved"] == 0
    rows = other.execute("SELECT count(*), max(seq) FROM events WHERE room='#r'").fetchone()
    assert rows == (50, 202)  # a join, "saved", then 200 more
    other.close()
    store.close()


def test_a_second_broker_on_the_same_database_is_refused(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    first = start_broker(zchat_proc, "--db", str(db))
    second = zchat_proc(
        "broker", "--router", "tcp://127.0.0.1:0", "--pub", "tcp://127.0.0.1:0", "--db", str(db)
    )
    assert second.wait(15) != 0
    assert any("in use by another broker" in line for line in second.stderr_lines), (
        second.stderr_lines
    )
    assert first.proc.proc.poll() is None


# ------------------------------------------------------------ 8. the memory budget


def test_idle_rooms_cost_what_the_budget_says_and_no_more() -> None:
    """docs/reliability.md: an empty room costs up to ``history`` envelopes, and at most
    ``max_idle_rooms`` are kept; here at a scaled-down size, measured by tracemalloc."""
    import tracemalloc

    history, kept, text = 50, 20, "x" * 4000
    conv = Conversation(rate_limit=0, history=history, max_idle_rooms=kept)
    conv.hello(A, "alice")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(3 * kept):
            room = f"#r{n}"
            conv.send(A, type="join", room=room)
            for _ in range(history):
                conv.core.receive(A, pack({"type": "say", "room": room, "text": text}), conv.now)
            conv.core.receive(A, pack({"type": "leave", "room": room}), conv.now)
        conv.published.clear()
        conv.replies.clear()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    envelope = len(
        pack({"type": "msg", "room": "#r00", "nick": "alice", "text": text, "ts": 1.0, "seq": 50})
    )
    budget = kept * history * envelope
    # Within 25% of the arithmetic: per-envelope bookkeeping is small beside 4 KB.
    assert used < budget * 1.25, (used, budget)
    assert len(conv.core.rooms.rooms) <= kept + 1  # and the room alice is still in


def test_the_database_is_bounded_in_rooms_too(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = SqliteStore(db, 5, max_rooms=10)
    conv = Conversation(rate_limit=0, history=5)
    conv.core = BrokerCore(conv.core.config, store=store, now=conv.now)
    conv.hello(A, "alice")
    for n in range(30):
        room = f"#r{n}"
        conv.send(A, type="join", room=room)
        for _ in range(8):
            conv.send(A, type="say", room=room, text="x" * 1000)
        conv.send(A, type="leave", room=room)
        store.flush()
    reader = sqlite3.connect(db)
    rooms = [r[0] for r in reader.execute("SELECT room FROM rooms ORDER BY used")]
    events = reader.execute("SELECT count(*), count(DISTINCT room) FROM events").fetchone()
    reader.close()
    store.close()
    assert len(rooms) == 10
    assert "#r29" in rooms
    assert "#r0" not in rooms
    assert events[1] <= 10
    assert events[0] <= 10 * 5


def test_non_reading_peers_asking_for_history_cost_little_memory(
    zchat_proc: Callable[..., ZchatProcess], zctx: zmq.Context[zmq.Socket[bytes]], long_run: bool
) -> None:
    broker = start_broker(zchat_proc)
    text = "x" * 4000
    writers = []
    for n in range(13):  # a burst of 40 each: 520 messages without waiting
        sock = dealer(zctx, broker.router)
        sock.send(pack({"type": "hello", "v": 1, "nick": f"w{n}", "rooms": ["#big"], "id": "h"}))
        recv_until(sock, lambda f: unpack(f).get("re") == "h")
        writers.append(sock)
    for n in range(520):
        writers[n % 13].send(pack({"type": "say", "room": "#big", "text": text}))
    observer = dealer(zctx, broker.router)  # unregistered: its stats cost no one's tokens
    wait_stats(observer, lambda s: s["messages"] >= 500)
    peers = 8 if long_run else 4
    readers = []
    for n in range(peers):
        sock = dealer(zctx, broker.router)
        sock.setsockopt(zmq.RCVHWM, 1)  # reads nothing: replies pile up in the broker
        sock.send(pack({"type": "hello", "v": 1, "nick": f"r{n}", "rooms": ["#big"], "id": "h"}))
        recv_until(sock, lambda f: unpack(f).get("re") == "h")
        readers.append(sock)
    before = rss_mib(broker.proc.pid)
    # Each asks 50 times a second (the rate allows 20 envelopes/s, burst 40).
    asked = 0
    for _ in range((7 if long_run else 3) * 50):
        for sock in readers:
            sock.send(pack({"type": "history", "room": "#big", "limit": 500}))
            asked += 1
        time.sleep(0.02)  # pacing the attack, not waiting for a result
    stats = wait_stats(observer, lambda s: s["envelopes_in"] >= asked)
    after = rss_mib(broker.proc.pid)
    # Before the fix: about 2 MB per reply, 40 + 20/s replies per peer (42 MB to 1.7 GB).
    assert after - before < 100, (before, after, stats["drops"])
    assert broker.proc.proc.poll() is None
