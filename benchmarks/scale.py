"""Scale: thousands of idle clients held with heartbeats.

Load processes hold many raw DEALER sockets each and speak the protocol
themselves (the asyncio client library is too heavy for 10,000 in one
process): ``hello`` on a signal, then a ``ping`` per socket per heartbeat,
spread evenly over the interval, as the library does. The coordinator reads
the broker's RSS and CPU time from /proc.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import zmq

from benchmarks.common import (
    BenchError,
    Worker,
    cpu_seconds,
    expect,
    raise_fd_limit,
    rss_bytes,
    spawn,
    start_broker,
    workers,
)
from zchat.protocol import pack

#: Sockets per load process: each needs two descriptors, and the hard limit may be 20,000.
PER_PROCESS = 2500
#: Clients per room, so ``welcome`` rosters stay the size of a real room's.
ROOM_SIZE = 100


def load_worker(
    conn: Connection, router: str, count: int, prefix: str, heartbeat: float, register: bool
) -> None:
    """Hold ``count`` DEALERs: register them on ``go``, then ping each every heartbeat.

    With ``register`` false (the plain echo server) the sockets only ping.
    """
    raise_fd_limit(count * 3 + 1024)
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 64)
    socks: list[zmq.Socket[bytes]] = []
    for _ in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(router)
        socks.append(sock)
    conn.send(("connected",))
    expect_go(conn)
    index = {sock: i for i, sock in enumerate(socks)}
    welcomed = [not register] * count
    poller = zmq.Poller()
    t0 = time.monotonic()
    if register:
        for i, sock in enumerate(socks):
            room = f"{prefix}-{i // ROOM_SIZE}"
            sock.send(pack({"type": "hello", "v": 1, "nick": f"{prefix}{i}", "rooms": [room]}))
            poller.register(sock, zmq.POLLIN)
    ping = pack({"type": "ping"}) if register else b"!idle\x00ping"
    pending = count if register else 0
    refused = 0
    replies = 0
    slices = 20
    step = heartbeat / slices
    next_slice = time.monotonic() + step
    turn = 0
    deadline = t0 + 120
    # Heartbeats start with each welcome, as in the library: registering
    # thousands takes longer than a session may stay silent.
    while pending:
        if time.monotonic() > deadline:
            raise BenchError(f"{pending} hellos unanswered")
        for sock, _ in poller.poll(max(1, int((next_slice - time.monotonic()) * 1000))):
            reply = msgpack.unpackb(sock.recv())
            poller.unregister(sock)
            welcomed[index[sock]] = True
            pending -= 1
            if reply.get("type") != "welcome":
                refused += 1
        if time.monotonic() >= next_slice:
            replies += _beat(socks[turn::slices], welcomed[turn::slices], ping)
            turn = (turn + 1) % slices
            next_slice += step
    conn.send(("registered", t0, time.monotonic(), refused))
    while not conn.poll(max(0.0, next_slice - time.monotonic())):
        replies += _beat(socks[turn::slices], welcomed[turn::slices], ping)
        turn = (turn + 1) % slices
        next_slice += step
    conn.recv()
    conn.send(("replies", replies))
    for sock in socks:
        sock.close(0)
    ctx.term()


def _beat(socks: list[zmq.Socket[bytes]], welcomed: list[bool], ping: bytes) -> int:
    """Read what the sockets were sent, then ping each registered one; return replies read."""
    replies = 0
    for sock, ready in zip(socks, welcomed, strict=True):
        if not ready:
            continue
        with contextlib.suppress(zmq.Again):
            while True:
                sock.recv(zmq.NOBLOCK)
                replies += 1
        with contextlib.suppress(zmq.Again):
            sock.send(ping, zmq.NOBLOCK)
    return replies


def expect_go(conn: Connection) -> None:
    message = conn.recv()
    if message != ("go",):
        raise BenchError(f"expected go, got {message!r}")


def broker_sessions(router: str) -> int:
    """Ask the broker for its session count (``stats`` needs no registration)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with ctx.socket(zmq.DEALER) as dealer:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(router)
        # Unregistered requests share a small allowance: ask again if one is dropped.
        for _ in range(20):
            dealer.send(pack({"type": "stats"}))
            if dealer.poll(500):
                sessions: int = msgpack.unpackb(dealer.recv())["sessions"]
                return sessions
        raise BenchError("no stats reply")


def start_loads(
    started: list[Any], clients: int, make: Callable[[int, int], Worker]
) -> tuple[list[Worker], list[Any]]:
    """Spread ``clients`` over load processes (``make(index, count)``), connect them all,
    then register them at once; the loads and their ``registered`` marks."""
    procs = math.ceil(clients / PER_PROCESS)
    loads = []
    for i in range(procs):
        load = make(i, clients // procs + (1 if i < clients % procs else 0))
        started.append(load)
        loads.append(load)
    for load in loads:
        expect(load, "connected", 120)
    for load in loads:
        load.send(("go",))
    return loads, [expect(load, "registered", 180) for load in loads]


def run(clients: int, window: float, heartbeat: float = 1.0) -> dict[str, Any]:
    """Register ``clients``, then hold them idle for ``window`` seconds."""
    with workers() as started:
        broker, router, _ = start_broker(
            started, heartbeat=heartbeat, max_clients=clients + 64, pub_hwm=10_000
        )
        rss0 = rss_bytes(broker.pid)
        loads, marks = start_loads(
            started,
            clients,
            lambda i, n: spawn(f"load-{i}", load_worker, router, n, f"u{i}x", heartbeat, True),
        )
        registered = max(m[2] for m in marks) - min(m[1] for m in marks)
        refused = sum(m[3] for m in marks)
        # One heartbeat for the pings to settle into their rhythm before measuring.
        time.sleep(heartbeat)
        rss1 = rss_bytes(broker.pid)
        cpu0 = cpu_seconds(broker.pid)
        t0 = time.monotonic()
        time.sleep(window)
        cpu = cpu_seconds(broker.pid) - cpu0
        elapsed = time.monotonic() - t0
        sessions = broker_sessions(router)
        replies = 0
        for load in loads:
            load.send(("stop",))
            replies += expect(load, "replies", 30)[1]
    return {
        "clients": clients,
        "load_processes": len(loads),
        "register_seconds": registered,
        "registrations_per_s": clients / registered,
        "refused": refused,
        "rss_before_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
        "rss_per_client_kb": (rss1 - rss0) / clients / 1024,
        "idle_cpu_percent": cpu / elapsed * 100,
        "heartbeat": heartbeat,
        # Broker CPU per ping and pong: what any other heartbeat or crowd would cost.
        "us_per_heartbeat": cpu / (elapsed * clients / heartbeat) * 1e6,
        "idle_window_s": elapsed,
        "sessions_after": sessions,
        "pongs": replies,
    }


def idle_load(started: list[Any], router: str, clients: int, register: bool) -> None:
    """Start ``clients`` idle clients (one process) and wait until they are registered."""
    load = spawn("idle", load_worker, router, clients, "idle", 1.0, register)
    started.append(load)
    expect(load, "connected", 60)
    load.send(("go",))
    expect(load, "registered", 60)
