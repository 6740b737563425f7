"""The scale benchmark's idle workload on Redis and NATS, for comparison with zchat's.

Load processes hold thousands of raw TCP connections, each subscribed to a
channel of its own room (100 per room, as for zchat), and then sit idle at the
server's default liveness settings: Redis sends nothing to an idle subscriber
(TCP keepalive only), NATS pings each client every 2 minutes and the load
answers. The coordinator reads the server's CPU time and RSS from /proc, as
for zchat. The servers come from apt (``redis-server``, ``nats-server``); a
missing one is skipped by the runner.
"""

from __future__ import annotations

import selectors
import shutil
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.common import BenchError, cpu_seconds, expect, raise_fd_limit, rss_bytes, spawn
from benchmarks.peers import ServerProcess, start_nats, start_redis
from benchmarks.scale import ROOM_SIZE, expect_go, start_loads

#: What each system's idle clients are called in the scale table.
SYSTEMS = {"redis": "Redis, default settings", "nats": "NATS, default settings"}


def missing(system: str) -> str | None:
    server = {"redis": "redis-server", "nats": "nats-server"}[system]
    if shutil.which(server) is None:
        return f"{server} not installed (apt-get install {server})"
    return None


def _subscribe(system: str, room: str) -> bytes:
    if system == "redis":
        return f"*2\r\n$9\r\nSUBSCRIBE\r\n${len(room)}\r\n{room}\r\n".encode()
    # PING after SUB: its PONG proves the subscription was processed.
    return f'CONNECT {{"verbose":false,"pedantic":false}}\r\nSUB {room} 1\r\nPING\r\n'.encode()


def _confirmed(system: str, data: bytes) -> bool:
    return b"subscribe" in data if system == "redis" else b"PONG" in data


def load_worker(conn: Connection, system: str, port: int, count: int, prefix: str) -> None:
    """Hold ``count`` subscribed connections; answer server pings; report on ``stop``."""
    raise_fd_limit(count + 1024)
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    conn.send(("connected",))
    expect_go(conn)
    t0 = time.monotonic()
    pending = set(range(count))
    for i, sock in enumerate(socks):
        sock.sendall(_subscribe(system, f"{prefix}-{i // ROOM_SIZE}"))
        selector.register(sock, selectors.EVENT_READ, i)
    deadline = t0 + 120
    pongs = 0
    closed = 0
    registered = False
    while True:
        if not registered and not pending:
            conn.send(("registered", t0, time.monotonic(), 0))
            registered = True
        if registered and conn.poll(0):
            break
        if not registered and time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} subscriptions unconfirmed")
        for key, _ in selector.select(0.05):
            sock = socks[key.data]
            data = sock.recv(65536)
            if not data:
                selector.unregister(sock)
                closed += 1
                continue
            if key.data in pending and _confirmed(system, data):
                pending.discard(key.data)
            if system == "nats" and b"PING\r\n" in data:
                sock.sendall(b"PONG\r\n")
                pongs += 1
    conn.recv()
    conn.send(("replies", pongs, count - closed))
    for sock in socks:
        sock.close()


def run(system: str, clients: int, window: float) -> dict[str, Any]:
    """Subscribe ``clients`` idle connections, then hold them for ``window`` seconds."""
    raise_fd_limit(clients + 1024)  # the server inherits it
    started: list[Any] = []
    try:
        server: ServerProcess = start_redis(clients + 100) if system == "redis" else start_nats()
        started.append(server)
        rss0 = rss_bytes(server.pid)
        loads, marks = start_loads(
            started,
            clients,
            lambda i, n: spawn(f"{system}-idle-{i}", load_worker, system, server.port, n, f"u{i}x"),
        )
        registered = max(m[2] for m in marks) - min(m[1] for m in marks)
        rss1 = rss_bytes(server.pid)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        time.sleep(window)
        cpu = cpu_seconds(server.pid) - cpu0
        elapsed = time.monotonic() - t0
        open_after = 0
        for load in loads:
            load.send(("stop",))
            open_after += expect(load, "replies", 30)[2]
    finally:
        for thing in reversed(started):
            thing.stop()
    return {
        "clients": clients,
        "load_processes": len(loads),
        "register_seconds": registered,
        "registrations_per_s": clients / registered,
        "refused": 0,
        "rss_before_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
        "rss_per_client_kb": (rss1 - rss0) / clients / 1024,
        "idle_cpu_percent": cpu / elapsed * 100,
        "idle_window_s": elapsed,
        "sessions_after": open_after,
    }
