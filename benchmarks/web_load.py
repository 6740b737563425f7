"""Load on the web gateway: 1,000 WebSockets, memory per connection, added latency.

    python -m benchmarks.web_load [--connections 1000] [--samples 300] [--out FILE]

A broker (a spawned process, rate limit off) and a real ``zchat web`` process;
this process opens the WebSockets (the ``websockets`` library, not browsers),
registers every one as its own nick in rooms of ``ROOM_SIZE`` (the size of a
busy real room: each join is fanned out to that room's tabs), and reads
everything they are sent. It reads the gateway's RSS from /proc before and
after, then measures the round trip of a message to its own sender's screen:
through the gateway (WebSocket line -> gateway -> broker -> gateway -> page)
and from a direct ``Client``, samples interleaved so load falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Origin

from benchmarks.common import (
    BenchError,
    cpu_seconds,
    machine,
    percentile,
    raise_fd_limit,
    rss_bytes,
    start_broker,
    workers,
)
from zchat import Client, Message

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "web_load.json"
#: Tabs per room while idle: joins fan out to a room's members, as in real rooms.
ROOM_SIZE = 100
#: Handshakes in flight at once while opening the connections.
OPENING = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"zchat web exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"zchat web did not listen on port {port} within {timeout:g}s")


class Tab:
    """One WebSocket as a page would hold it; a task reads (and counts) all it is sent."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in self.ws:
                self.received += 1

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.ws.close()


async def receive(ws: ClientConnection, match: dict[str, Any], timeout: float = 30.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if all(message.get(k) == v for k, v in match.items()):
                return message


async def open_tab(url: str, origin: str, nick: str, room: str) -> ClientConnection:
    ws = await websockets.connect(url, origin=Origin(origin), compression=None)
    await ws.send(json.dumps({"type": "hello", "nick": nick, "rooms": [room]}))
    welcome = await receive(ws, {"type": "welcome"})
    if welcome.get("nick") != nick:
        raise BenchError(f"{nick}: unexpected welcome {welcome}")
    return ws


async def gateway_round_trip(ws: ClientConnection, nick: str, room: str, n: int) -> float:
    text = f"probe {n}"
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "line", "text": text, "room": room}))
    async with asyncio.timeout(30):
        while True:
            event = json.loads(await ws.recv()).get("event", {})
            if event.get("type") == "msg" and (event.get("nick"), event.get("text")) == (
                nick,
                text,
            ):
                return time.perf_counter() - start


async def direct_round_trip(client: Client, room: str, n: int) -> float:
    start = time.perf_counter()
    msg_id = await client.say(f"direct {n}", room)
    while True:
        event = await client.next_event(timeout=30)
        if event is None:
            raise BenchError("the direct client closed")
        if isinstance(event, Message) and event.id == msg_id:
            return time.perf_counter() - start


def stats_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(s * 1000 for s in samples)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "n": len(ordered)}


async def measure_latency(
    url: str, origin: str, router: str, pub: str, room: str, samples: int, tag: str
) -> dict[str, Any]:
    probe_nick, direct_nick = f"Probe{tag}", f"Direct{tag}"
    probe = await open_tab(url, origin, probe_nick, room)
    direct = Client(direct_nick, router=router, pub=pub, rooms=[room], backlog=0)
    await direct.connect()
    via_gateway: list[float] = []
    via_client: list[float] = []
    try:
        for n in range(samples + 10):
            g = await gateway_round_trip(probe, probe_nick, room, n)
            d = await direct_round_trip(direct, room, n)
            if n >= 10:  # the first few warm caches and the JIT-less paths
                via_gateway.append(g)
                via_client.append(d)
    finally:
        await probe.close()
        await direct.close()
    gateway, client = stats_ms(via_gateway), stats_ms(via_client)
    return {
        "room": room,
        "gateway_ms": gateway,
        "direct_ms": client,
        "added_ms": {q: gateway[q] - client[q] for q in ("p50", "p99")},
    }


async def run(connections: int, samples: int) -> dict[str, Any]:
    raise_fd_limit(connections * 2 + 1024)
    info = machine()
    with workers() as started:
        _, router, pub = start_broker(started, max_clients=connections + 100)
        port = free_port()
        url, origin = f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
        gateway = subprocess.Popen(
            [sys.executable, "-m", "zchat", "web", "--listen", f"127.0.0.1:{port}",
             "--router", router, "--pub", pub, "--max-connections", str(connections + 16),
             "--log-level", "warning"],
            cwd=ROOT,
        )  # fmt: skip
        try:
            wait_listening(port, gateway)
            rss_idle = rss_bytes(gateway.pid)
            cpu_start = cpu_seconds(gateway.pid)
            gate = asyncio.Semaphore(OPENING)

            async def one(i: int) -> Tab:
                async with gate:
                    return Tab(await open_tab(url, origin, f"user{i}", f"room{i // ROOM_SIZE}"))

            t0 = time.perf_counter()
            tabs = await asyncio.gather(*(one(i) for i in range(connections)))
            opening = time.perf_counter() - t0
            quiet = await measure_latency(url, origin, router, pub, "quiet", samples, "Q")
            busy = await measure_latency(url, origin, router, pub, "room0", samples // 2, "B")
            rss_full = rss_bytes(gateway.pid)
            cpu_used = cpu_seconds(gateway.pid) - cpu_start
            received = sum(tab.received for tab in tabs)
            await asyncio.gather(*(tab.close() for tab in tabs))
        finally:
            gateway.terminate()
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
    return {
        "machine": info,
        "connections": connections,
        "room_size": ROOM_SIZE,
        "open_and_register_s": opening,
        "registrations_per_s": connections / opening,
        "gateway_rss_idle_mb": rss_idle / 2**20,
        "gateway_rss_loaded_mb": rss_full / 2**20,
        "rss_per_connection_kb": (rss_full - rss_idle) / connections / 1024,
        "gateway_cpu_s": cpu_used,
        "messages_to_tabs": received,
        "latency": [quiet, busy],
    }


def table(result: dict[str, Any]) -> str:
    n = result["connections"]
    lines = [
        f"zchat web: {n} WebSockets registered in {result['open_and_register_s']:.1f}s "
        f"({result['registrations_per_s']:.0f}/s), rooms of {result['room_size']}",
        f"gateway RSS: {result['gateway_rss_idle_mb']:.1f} MB idle, "
        f"{result['gateway_rss_loaded_mb']:.1f} MB with {n} tabs: "
        f"{result['rss_per_connection_kb']:.0f} KB per connection",
        "",
        f"{'round trip (ms)':<28}{'p50':>8}{'p99':>8}",
    ]
    for row in result["latency"]:
        members = "quiet room" if row["room"] == "quiet" else f"room of {result['room_size']}"
        for label, key in [("via the gateway", "gateway_ms"), ("direct Client", "direct_ms")]:
            cells = row[key]
            lines.append(f"{label + ', ' + members:<28}{cells['p50']:>8.2f}{cells['p99']:>8.2f}")
        added = row["added_ms"]
        lines.append(f"{'added, ' + members:<28}{added['p50']:>8.2f}{added['p99']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web_load", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300, help="round trips per path")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        result = asyncio.run(run(args.connections, args.samples))
    except BenchError as exc:
        print(f"web_load: {exc}", file=sys.stderr)
        return 1
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
