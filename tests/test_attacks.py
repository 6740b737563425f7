"""Attacks on the command and broadcast ports (issue 12), each as an attacker would
make it with raw pyzmq sockets, against a real broker.

Sizes fit a 2-core CI machine; ``--long`` runs the full sizes the issue reports.
Figures for each attack (RSS, a well-behaved client's round trips) come from
``python -m benchmarks.attacks`` and are in docs/security.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from conftest import ZchatProcess, recv_until
from helpers import start_broker

from zchat.protocol import pack, unpack

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
