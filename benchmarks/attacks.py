"""The attacks of issue 12 against a real broker process, with their figures.

    python -m benchmarks.attacks                 # CI-like sizes (~1 min)
    python -m benchmarks.attacks --long          # the sizes the issue reports
    python -m benchmarks.attacks frames history --json out.json

For each attack: what was sent, what the broker did, its RSS before and after,
and the round trips of a well-behaved registered client pinging the same broker
every 50 ms during the attack. tests/test_attacks.py runs the same attacks as
pass/fail checks; docs/security.md has the figures.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from benchmarks.common import run_scenarios
from benchmarks.faults import BrokerProc, rss_mib, spread
from zchat.protocol import pack, unpack

UNSEEDED_BASE = 0x6B8B4567


def dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, rid: bytes | None = None
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if rid is not None:
        sock.setsockopt(zmq.ROUTING_ID, rid)
    sock.connect(endpoint)
    return sock


def ask(
    sock: zmq.Socket[bytes], envelope: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any] | None:
    """Send ``envelope`` with an id; its reply, or None on the deadline."""
    ref = f"q{time.monotonic_ns()}"
    sock.send(pack({**envelope, "id": ref}))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            reply = unpack(sock.recv())
            if reply.get("re") == ref:
                return reply
    return None


class Pinger:
    """A registered client pinging every 50 ms in a thread; round trips and errors."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, nick: str) -> None:
        self.sock = dealer(ctx, endpoint)
        welcome = ask(self.sock, {"type": "hello", "v": 1, "nick": nick})
        assert welcome is not None, "no welcome"
        assert welcome["type"] == "welcome", welcome
        self.round_trips: list[float] = []
        self.errors: list[str] = []
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            reply = ask(self.sock, {"type": "ping"}, timeout=30)
            if reply is None:
                self.unanswered += 1
            elif reply["type"] == "pong":
                self.round_trips.append(time.monotonic() - started)
            else:
                self.errors.append(str(reply.get("code")))
            self._stop.wait(max(0.0, 0.05 - (time.monotonic() - started)))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(35)
        return {
            "round_trips": spread(self.round_trips),
            "errors": self.errors,
            "unanswered": self.unanswered,
        }


def attack(
    name: str,
    run: Callable[[BrokerProc, zmq.Context[zmq.Socket[bytes]]], dict[str, Any]],
    *extra: str,
) -> dict[str, Any]:
    broker = BrokerProc(*extra, heartbeat=1.0)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        pinger = Pinger(ctx, broker.router, "honest")
        before = rss_mib(broker.pid)
        figures = run(broker, ctx)
        alive = broker.popen.poll() is None
        after = rss_mib(broker.pid) if alive else None
        figures.update(
            honest=pinger.stop(), alive=alive, rss_before_mib=before, rss_after_mib=after
        )
        if alive:
            stats = ask(dealer(ctx, broker.router), {"type": "stats"})
            if stats is not None:
                figures["leaves"] = stats.get("leaves")
                figures["drops"] = stats.get("drops")
        else:
            figures["exit"] = broker.popen.returncode
        return figures
    finally:
        ctx.destroy(linger=0)
        broker.end()


def squat(long: bool) -> dict[str, Any]:
    count = 64 if long else 8

    def run(broker: BrokerProc, ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
        for n in range(count):
            sock = dealer(ctx, broker.router, b"\x00" + (UNSEEDED_BASE + n).to_bytes(4, "big"))
            ask(sock, {"type": "stats"})
        answered = sum(
            ask(dealer(ctx, broker.router), {"type": "ping"}, 5) is not None for _ in range(count)
        )
        return {
            "sent": f"{count} DEALERs with routing ids 0x00+0x6b8b4567+n, then {count} plain",
            "plain_answered": answered,
        }

    return attack("squat", run)


def frames(long: bool) -> dict[str, Any]:
    count = 6_000_000 if long else 1_000_000

    def run(broker: BrokerProc, ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
        sock = dealer(ctx, broker.router)
        sock.setsockopt(zmq.SNDHWM, 0)
        started = time.monotonic()
        for _ in range(count - 1):
            sock.send(b"", zmq.SNDMORE)
        sock.send(b"")
        sent = time.monotonic()
        reply = unpack(sock.recv()) if sock.poll(120_000) else {}
        return {
            "sent": f"one message of {count:,} empty frames",
            "send_s": round(sent - started, 1),
            "answer_s": round(time.monotonic() - sent, 1),
            "answer": reply.get("code"),
        }

    return attack("frames", run)


def endless(long: bool) -> dict[str, Any]:
    """The libzmq gap: a message whose last frame never comes is buffered whole,
    at about 64 bytes of libzmq's per-frame record for 2 bytes on the wire."""
    frames = 10_000_000 if long else 2_000_000

    def run(broker: BrokerProc, ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
        # By hand: libzmq's own DEALER sends nothing of a message until its last frame.
        sock = raw_zmtp(broker.router, b"DEALER")
        sock.sendall(b"\x01\x00" * frames)  # empty frames, each with MORE set
        # Let the broker's I/O thread take it all in: wait for its RSS to settle.
        last, steady = 0.0, 0
        deadline = time.monotonic() + 120
        while steady < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
            now = rss_mib(broker.pid)
            steady = steady + 1 if abs(now - last) < 1 else 0
            last = now
        return {"sent": f"{frames:,} empty frames ({frames * 2 / 1e6:g} MB), never a last one"}

    return attack("endless", run)


def raw_zmtp(endpoint: str, kind: bytes) -> socket.socket:
    """A TCP connection that has done a ZMTP 3.0 NULL handshake as a ``kind`` socket."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
    ready = b"\x05READY" + b"\x0bSocket-Type" + len(kind).to_bytes(4, "big") + kind
    sock.sendall(greeting + b"\x04" + bytes([len(ready)]) + ready)
    return sock


def raw_subscribe(endpoint: str, topic: bytes) -> socket.socket:
    sock = raw_zmtp(endpoint, b"SUB")
    body = b"\x01" + topic
    with contextlib.suppress(OSError):
        sock.sendall(b"\x02" + len(body).to_bytes(8, "big") + body)
    return sock


def subscription(long: bool) -> dict[str, Any]:
    size = 16 * 1024 * 1024
    count = 4 if long else 1

    def run(broker: BrokerProc, ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
        socks = [raw_subscribe(broker.pub, b"#" * size) for _ in range(count)]
        hung_up = 0
        for sock in socks:
            try:
                while sock.recv(65536):
                    pass
                hung_up += 1
            except OSError:
                pass
            sock.close()
        # A publish makes the PUB read what is queued for it (a sync goes out on it).
        ask(dealer(ctx, broker.router), {"type": "sync", "token": "abcdefgh"}, 2)
        return {"sent": f"{count} subscription(s) of 16 MB on the PUB", "hung_up": hung_up}

    return attack("subscription", run)


def history(long: bool) -> dict[str, Any]:
    peers = 8 if long else 4
    seconds = 7.0 if long else 3.0

    def run(broker: BrokerProc, ctx: zmq.Context[zmq.Socket[bytes]]) -> dict[str, Any]:
        text = "x" * 4000
        writers = []
        for n in range(13):
            sock = dealer(ctx, broker.router)
            ask(sock, {"type": "hello", "v": 1, "nick": f"w{n}", "rooms": ["#big"]})
            writers.append(sock)
        for n in range(520):
            writers[n % 13].send(pack({"type": "say", "room": "#big", "text": text}))
        ask(writers[0], {"type": "ping"})
        readers = []
        for n in range(peers):
            sock = dealer(ctx, broker.router)
            sock.setsockopt(zmq.RCVHWM, 1)  # reads nothing: replies pile up in the broker
            ask(sock, {"type": "hello", "v": 1, "nick": f"r{n}", "rooms": ["#big"]})
            readers.append(sock)
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for sock in readers:
                sock.send(pack({"type": "history", "room": "#big", "limit": 500}))
                sent += 1
            time.sleep(0.01)
        return {
            "sent": f"{peers} non-reading peers asking for 500 x 4 KB of history for {seconds:g} s",
            "asked": sent,
        }

    return attack("history", run)


SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "squat": squat,
    "frames": frames,
    "endless": endless,
    "subscription": subscription,
    "history": history,
}


def main() -> None:
    run_scenarios("python -m benchmarks.attacks", SCENARIOS, "the sizes the issue reports")


if __name__ == "__main__":
    main()
