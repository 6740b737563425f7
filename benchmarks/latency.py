"""Latency: a client's ``say`` to its own ``msg`` on its SUB, at fixed open-loop rates.

One client process sends on a schedule (never waiting for answers) from one
thread and receives on another; 100 idle clients stay connected and heartbeat
meanwhile. The reference is a plain pyzmq echo on the same two sockets
(ROUTER in, PUB out, the same drain loop, no decoding) with the same client.
Each round trip is timed from just before the send to the receipt.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import zmq

from benchmarks.common import (
    LOOPBACK,
    BenchError,
    expect,
    percentile,
    spawn,
    start_broker,
    wait_stop,
    workers,
)
from benchmarks.fanout import ROOM, ROOM_TOPIC, TEXT
from benchmarks.scale import idle_load
from zchat.protocol import pack, sync_topic

PROBE = "lat"
PROBE_TOPIC = sync_topic(PROBE)


def echo_server(conn: Connection) -> None:
    """ROUTER in, PUB out, bytes untouched: the floor under any broker on these sockets."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    pub = ctx.socket(zmq.PUB)
    for sock in (router, pub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(LOOPBACK)
    conn.send(
        (
            "ready",
            router.getsockopt_string(zmq.LAST_ENDPOINT),
            pub.getsockopt_string(zmq.LAST_ENDPOINT),
        )
    )
    stop = threading.Event()

    def watch() -> None:
        wait_stop(conn, 24 * 3600)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    recv = router.recv
    send = pub.send
    while not stop.is_set():
        if poller.poll(100):
            for _ in range(1000):
                try:
                    recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                send(recv(), zmq.NOBLOCK)
    router.close(0)
    pub.close(0)
    ctx.term()


def latency_client(
    conn: Connection, router: str, pub: str, broker: bool, rate: float, duration: float
) -> None:
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    sub = ctx.socket(zmq.SUB)
    for sock in (dealer, sub):
        sock.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, ROOM_TOPIC)
    sub.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC)
    dealer.connect(router)
    sub.connect(pub)
    if broker:
        nick = f"lat{os.getpid()}"
        dealer.send(pack({"type": "hello", "v": 1, "nick": nick, "rooms": [ROOM]}))
        if not dealer.poll(30_000):
            raise BenchError("no welcome")
        dealer.recv()
        probe = pack({"type": "sync", "token": PROBE})
    else:
        probe = PROBE_TOPIC + b"probe"
    deadline = time.monotonic() + 30
    while not sub.poll(10):
        if time.monotonic() > deadline:
            raise BenchError("the SUB never saw a probe")
        dealer.send(probe)
    with contextlib.suppress(zmq.Again):
        while True:
            sub.recv(zmq.NOBLOCK)
    n = max(1, int(rate * duration))
    if broker:
        frames = [pack({"type": "say", "room": ROOM, "text": TEXT, "id": str(i)}) for i in range(n)]
    else:
        # What the broker would publish for that say, so both carry the same bytes.
        frames = [
            ROOM_TOPIC
            + pack(
                {
                    "type": "msg",
                    "room": ROOM,
                    "nick": "lat",
                    "text": TEXT,
                    "ts": time.time(),
                    "id": str(i),
                    "seq": i,
                }
            )
            for i in range(n)
        ]
    sent = [0.0] * n
    rtt = [float("nan")] * n
    conn.send(("ready",))
    conn.recv()

    def receive() -> None:
        got = 0
        while got < n and sub.poll(2000):
            frame = sub.recv()
            if frame[0] != ROOM_TOPIC[0]:
                continue
            now = time.monotonic()
            envelope = msgpack.unpackb(frame[frame.index(0) + 1 :])
            i = int(envelope["id"])
            rtt[i] = now - sent[i]
            got += 1

    receiver = threading.Thread(target=receive)
    receiver.start()
    send = dealer.send
    start = time.monotonic() + 0.01
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[i] = time.monotonic()
        send(frames[i])
    achieved = n / (time.monotonic() - start) if n > 1 else rate
    receiver.join()
    got = sorted(x * 1e6 for x in rtt if x == x)
    conn.send(
        (
            "done",
            {
                "rate": rate,
                "achieved_rate": achieved,
                "samples": len(got),
                "lost": n - len(got),
                "p50_us": percentile(got, 50),
                "p99_us": percentile(got, 99),
                "p99.9_us": percentile(got, 99.9),
                "max_us": got[-1] if got else float("nan"),
            },
        )
    )
    wait_stop(conn)
    dealer.close(0)
    sub.close(0)
    ctx.term()


def run(system: str, rate: float, duration: float, idle: int) -> dict[str, Any]:
    """One run against ``zchat`` (the broker) or ``echo`` (plain pyzmq)."""
    broker = system == "zchat"
    with workers() as started:
        if broker:
            _, router, pub = start_broker(started, max_clients=idle + 64)
        else:
            server = spawn("echo", echo_server)
            started.append(server)
            _, router, pub = expect(server, "ready", 30)
        if idle:
            idle_load(started, router, idle, broker)
        client = spawn("latency-client", latency_client, router, pub, broker, rate, duration)
        started.append(client)
        expect(client, "ready", 60)
        client.send(("go",))
        _, result = expect(client, "done", duration + 60)
    assert isinstance(result, dict)
    return result
