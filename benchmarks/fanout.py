"""Fan-out throughput: one sender, one room, N subscribers, every delivery counted.

Each run has three kinds of process: a *source* (the sender, or for the ceiling
the raw PUB itself), the *server* it talks to (the broker, Redis, ...) and one
or two *receiver* processes holding the subscribers' sockets. The source
repeats a probe until every subscriber has seen one (no slow joiner, no sleep),
then sends ``n`` messages as fast as it can. Deliveries per second is what the
subscribers counted, over the time from the first send to the last receipt.
Queues are unbounded (HWM 0) on every system, so nothing should be dropped;
anything that is, is reported and not counted.
"""

from __future__ import annotations

import contextlib
import os
import time
import unittest.mock
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import zmq

from benchmarks.common import (
    LOOPBACK,
    BenchError,
    Worker,
    cpu_seconds,
    expect,
    spawn,
    start_broker,
    wait_stop,
    workers,
)
from zchat import native
from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig, Publish
from zchat.protocol import pack, room_topic, sync_topic

ROOM = "bench"
ROOM_TOPIC = room_topic(ROOM)
PROBE = "probe"
PROBE_TOPIC = sync_topic(PROBE)
#: About 100 bytes of chat, as the issue asks.
TEXT = ("The quick brown fox jumps over the lazy dog; " * 3)[:100]
#: Quiet time after which a subscriber stops waiting for what was dropped.
QUIET = 2.0
#: The threaded peer's lines end with this, so probes and messages are told apart.
LINE_MARK = b"M\n"


def sample() -> tuple[bytes, bytes]:
    """(the ``say`` a sender sends, the PUB frame the broker makes of it)."""
    core = BrokerCore(BrokerConfig(rate_limit=0), now=1.0)
    core.receive(b"peer", pack({"type": "hello", "v": 1, "nick": "sender", "rooms": [ROOM]}), 1.0)
    say = pack({"type": "say", "room": ROOM, "text": TEXT})
    frames = [o.data for o in core.receive(b"peer", say, time.time()) if isinstance(o, Publish)]
    return say, frames[0]


# ---------------------------------------------------------------- sources


def raw_publisher(conn: Connection, frame: bytes, n: int) -> None:
    """The ceiling: a bare PUB sending the broker's own output bytes, no broker."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(LOOPBACK)
    conn.send(("ready", pub.getsockopt_string(zmq.LAST_ENDPOINT)))
    probe = PROBE_TOPIC + b"probe"
    while not conn.poll(0.005):
        pub.send(probe)
    conn.recv()
    send = pub.send
    t0 = time.monotonic()
    for _ in range(n):
        send(frame)
    conn.send(("sent", t0, time.monotonic()))
    wait_stop(conn)
    pub.close(0)
    ctx.term()


def zchat_sender(conn: Connection, router: str, say: bytes, n: int) -> None:
    """A registered client on a raw DEALER: the cheapest way to feed the broker."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(router)
    dealer.send(pack({"type": "hello", "v": 1, "nick": "sender", "rooms": [ROOM]}))
    if not dealer.poll(30_000):
        raise BenchError("no welcome from the broker")
    dealer.recv()
    conn.send(("ready",))
    probe = pack({"type": "sync", "token": PROBE})
    while not conn.poll(0.005):
        dealer.send(probe)
    conn.recv()
    send = dealer.send
    t0 = time.monotonic()
    # A blocking send at the DEALER's high-water mark is the flow control.
    for _ in range(n):
        send(say)
    conn.send(("sent", t0, time.monotonic()))
    wait_stop(conn)
    dealer.close(0)
    ctx.term()


# ---------------------------------------------------------------- receivers


def zmq_receiver(
    conn: Connection, sockets: int, expected: int, quiet: float, endpoint: str
) -> None:
    """Hold ``sockets`` SUBs; count room frames (probes excluded) until all arrived."""
    ctx = zmq.Context()
    poller = zmq.Poller()
    subs: list[zmq.Socket[bytes]] = []
    for _ in range(sockets):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, ROOM_TOPIC)
        sub.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC)
        sub.connect(endpoint)
        poller.register(sub, zmq.POLLIN)
        subs.append(sub)
    waiting = set(subs)
    deadline = time.monotonic() + 60
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(waiting)} subscribers never saw a probe")
        for sock, _ in poller.poll(100):
            with contextlib.suppress(zmq.Again):
                while True:
                    sock.recv(zmq.NOBLOCK)
            waiting.discard(sock)
    conn.send(("ready",))
    index = {sub: i for i, sub in enumerate(subs)}
    counts = [0] * sockets
    got = 0
    last = 0.0
    room_mark = ROOM_TOPIC[0]
    total = expected * sockets
    deadline = time.monotonic() + 120
    quiet_ms = int(quiet * 1000)
    while got < total:
        events = poller.poll(quiet_ms)
        if not events:
            if got or time.monotonic() > deadline:
                break
            continue
        for sock, _ in events:
            recv = sock.recv
            batch = 0
            try:
                while True:
                    if recv(zmq.NOBLOCK)[0] == room_mark:
                        batch += 1
            except zmq.Again:
                pass
            counts[index[sock]] += batch
            got += batch
        last = time.monotonic()
    conn.send(("done", counts, last))
    wait_stop(conn)
    for sub in subs:
        sub.close(0)
    ctx.term()


# ---------------------------------------------------------------- runs


@dataclass
class Setup:
    """What a system provides for one run."""

    source: Worker
    #: The process whose CPU is charged to the deliveries (broker, server, raw PUB).
    server_pid: int
    receiver: Callable[..., None]
    receiver_args: tuple[Any, ...]


SetupFn = Callable[[list[Any], int], Setup]


def setup_pyzmq(started: list[Any], n: int) -> Setup:
    _, frame = sample()
    source = spawn("raw-pub", raw_publisher, frame, n)
    started.append(source)
    _, endpoint = expect(source, "ready", 30)
    return Setup(source, source.pid, zmq_receiver, (endpoint,))


def setup_zchat(started: list[Any], n: int, *, pure: bool = False) -> Setup:
    say, _ = sample()
    # A long heartbeat: a sender idle while the subscribers catch up must not time out.
    # The pure broker is spawned with ZCHAT_PURE=1; either must run the path asked for.
    pure_env = {native.PURE_ENV: "1"} if pure else {}
    with unittest.mock.patch.dict(os.environ, pure_env):
        broker, router, pub = start_broker(
            started, heartbeat=60.0, pub_hwm=0, compiled=not pure and bool(native.compiled())
        )
    source = spawn("sender", zchat_sender, router, say, n)
    started.append(source)
    expect(source, "ready", 30)
    return Setup(source, broker.pid, zmq_receiver, (pub,))


def setup_zchat_pure(started: list[Any], n: int) -> Setup:
    """The same broker on the pure Python path, for comparison in the same run."""
    return setup_zchat(started, n, pure=True)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(setup: SetupFn, subscribers: int, n: int, quiet: float = QUIET) -> dict[str, Any]:
    """One measured run; returns deliveries/s, drops and server CPU per delivery."""
    with workers() as started:
        s = setup(started, n)
        receivers = []
        # Two receiver processes at most: the machine has two cores to share.
        for i, count in enumerate(split(subscribers, min(subscribers, 2))):
            worker = spawn(f"receiver-{i}", s.receiver, count, n, quiet, *s.receiver_args)
            started.append(worker)
            receivers.append(worker)
        for worker in receivers:
            expect(worker, "ready", 90)
        # Every process's CPU, by role: on two cores the total is what limits a run.
        roles = {"server": [s.server_pid], "source": [s.source.pid]}
        roles["receivers"] = [w.pid for w in receivers]
        if s.source.pid == s.server_pid:
            del roles["source"]
        before = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
        s.source.send(("go",))
        timeout = 120 + n * subscribers / 20_000
        done = [expect(worker, "done", timeout) for worker in receivers]
        _, t0, t1 = expect(s.source, "sent", 60)
        used = {role: sum(map(cpu_seconds, pids)) - before[role] for role, pids in roles.items()}
        cpu = used["server"]
    counts = [c for _, per_socket, _ in done for c in per_socket]
    delivered = sum(counts)
    last = max(d[2] for d in done)
    elapsed = last - t0 if delivered else float("nan")
    return {
        "subscribers": subscribers,
        "messages": n,
        "delivered": delivered,
        "dropped": n * subscribers - delivered,
        "seconds": elapsed,
        "send_seconds": t1 - t0,
        "deliveries_per_s": delivered / elapsed if delivered else 0.0,
        "server_cpu_s": cpu,
        "server_us_per_delivery": cpu / delivered * 1e6 if delivered else None,
        "cpu_us_per_message": {role: seconds / n * 1e6 for role, seconds in used.items()},
    }
