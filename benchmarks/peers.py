"""The systems zchat is compared with, on the fan-out workload of ``fanout``.

- ``threaded``: the original design, a socket server with a thread per client
  that writes every line it reads to every client, written here.
- ``redis``: ``redis-server`` pub/sub, redis-py (with hiredis when installed).
- ``nats``: ``nats-server`` core pub/sub, nats-py.

Servers listen on 127.0.0.1 only and are stopped by PID after each run. A
peer whose server or Python client is not installed is skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import importlib.util
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError, expect, spawn, wait_stop
from benchmarks.fanout import LINE_MARK, PROBE, ROOM, Setup, sample

CHANNEL = ROOM


def payload() -> bytes:
    """The same bytes the broker publishes, so every system carries as much."""
    return sample()[1]


def line() -> bytes:
    """A line as long as the broker's frame, ending in the message mark."""
    return b"x" * (len(payload()) - len(LINE_MARK)) + LINE_MARK


def missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here, or None if it can."""
    if name == "threaded":
        return None
    server, module = {"redis": ("redis-server", "redis"), "nats": ("nats-server", "nats")}[name]
    if shutil.which(server) is None:
        return f"{server} not installed (apt-get install {server})"
    if importlib.util.find_spec(module) is None:
        extra = "redis hiredis" if name == "redis" else "nats-py"
        return f"Python client not installed (pip install {extra}, or the 'bench' extra)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """An external server we started; stopped by its PID."""

    def __init__(self, argv: list[str], port: int, tmp: tempfile.TemporaryDirectory[str]) -> None:
        self.port = port
        self._tmp = tmp
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp.name
        )
        deadline = time.monotonic() + 15
        while True:
            if self.popen.poll() is not None:
                raise BenchError(f"{argv[0]} exited with {self.popen.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{argv[0]} did not listen on port {port}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._tmp.cleanup()


# ---------------------------------------------------------------- threaded


def threaded_server(conn: Connection) -> None:
    """The original design: a thread per client, every line to every client."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    clients: list[socket.socket] = []
    lock = threading.Lock()

    def serve(client: socket.socket) -> None:
        with contextlib.suppress(OSError), client.makefile("rb") as lines:
            for text in lines:
                with lock:
                    for other in clients:
                        other.sendall(text)
        with lock:
            clients.remove(client)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                with lock:
                    clients.append(client)
                threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    conn.send(("ready", listener.getsockname()[1]))
    wait_stop(conn)
    listener.close()


def threaded_sender(conn: Connection, port: int, n: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))

    def drain() -> None:
        # The server sends our own lines back too; unread, they would stall it.
        with contextlib.suppress(OSError):
            while sock.recv(1 << 16):
                pass

    threading.Thread(target=drain, daemon=True).start()
    conn.send(("ready",))
    while not conn.poll(0.005):
        sock.sendall(b"P\n")
    conn.recv()
    text = line()
    send = sock.sendall
    t0 = time.monotonic()
    for _ in range(n):
        send(text)
    conn.send(("sent", t0, time.monotonic()))
    wait_stop(conn)
    sock.close()


def threaded_receiver(
    conn: Connection, sockets: int, expected: int, quiet: float, port: int
) -> None:
    selector = selectors.DefaultSelector()
    socks = []
    for i in range(sockets):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
    waiting = set(range(sockets))
    deadline = time.monotonic() + 60
    tails = [b""] * sockets
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(waiting)} subscribers never saw a probe")
        for key, _ in selector.select(0.1):
            chunk = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
            tails[key.data] = chunk[-1:]
            waiting.discard(key.data)
    conn.send(("ready",))
    counts = [0] * sockets
    got, last, total = 0, 0.0, expected * sockets
    deadline = time.monotonic() + 120
    while got < total:
        events = selector.select(quiet)
        if not events:
            if got or time.monotonic() > deadline:
                break
            continue
        for key, _ in events:
            i = key.data
            chunk = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
            # A mark split across two reads is found by keeping the last byte.
            found = (tails[i] + chunk).count(LINE_MARK)
            tails[i] = chunk[-1:]
            counts[i] += found
            got += found
        last = time.monotonic()
    conn.send(("done", counts, last))
    wait_stop(conn)
    for sock in socks:
        sock.close()


def setup_threaded(started: list[Any], n: int) -> Setup:
    server = spawn("threaded-server", threaded_server)
    started.append(server)
    _, port = expect(server, "ready", 30)
    source = spawn("threaded-sender", threaded_sender, port, n)
    started.append(source)
    expect(source, "ready", 30)
    return Setup(source, server.pid, threaded_receiver, (port,))


# ---------------------------------------------------------------- redis


def start_redis(maxclients: int = 10_000) -> ServerProcess:
    port = free_port()
    argv = [
        "redis-server",
        "--maxclients", str(maxclients),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        # Unbounded like every other system here: slow subscribers lag, never get cut off.
        "--client-output-buffer-limit", "pubsub 0 0 0",
    ]  # fmt: skip
    return ServerProcess(argv, port, tempfile.TemporaryDirectory(prefix="bench-redis-"))


def redis_sender(conn: Connection, port: int, n: int) -> None:
    redis: Any = importlib.import_module("redis")
    client = redis.Redis(host="127.0.0.1", port=port)
    client.ping()
    conn.send(("ready",))
    while not conn.poll(0.005):
        client.publish(PROBE, b"p")
    conn.recv()
    data = payload()
    t0 = time.monotonic()
    # Pipelined, or every publish would wait a round trip for its receiver count.
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.publish(CHANNEL, data)
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()
    conn.send(("sent", t0, time.monotonic()))
    wait_stop(conn)
    client.close()


def redis_receiver(conn: Connection, sockets: int, expected: int, quiet: float, port: int) -> None:
    """redis-py's blocking PubSub, many per process, woken by a selector."""
    redis: Any = importlib.import_module("redis")
    selector = selectors.DefaultSelector()
    subs = []
    for i in range(sockets):
        pubsub = redis.Redis(host="127.0.0.1", port=port).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL, PROBE)
        # redis-py has no public way to wait on many PubSubs: watch each one's socket.
        selector.register(pubsub.connection._sock, selectors.EVENT_READ, i)
        subs.append(pubsub)
    channel = CHANNEL.encode()
    waiting = set(range(sockets))
    deadline = time.monotonic() + 60
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(waiting)} subscribers never saw a probe")
        for key, _ in selector.select(0.1):
            while (message := subs[key.data].get_message(timeout=0.0)) is not None:
                if message["channel"] != channel:
                    waiting.discard(key.data)
    conn.send(("ready",))
    counts = [0] * sockets
    got, last, total = 0, 0.0, expected * sockets
    deadline = time.monotonic() + 120
    while got < total:
        events = selector.select(quiet)
        if not events:
            if got or time.monotonic() > deadline:
                break
            continue
        for key, _ in events:
            get = subs[key.data].get_message
            batch = 0
            while (message := get(timeout=0.0)) is not None:
                if message["channel"] == channel:
                    batch += 1
            counts[key.data] += batch
            got += batch
        last = time.monotonic()
    conn.send(("done", counts, last))
    wait_stop(conn)
    for pubsub in subs:
        pubsub.close()


def _setup_peer(
    started: list[Any],
    n: int,
    name: str,
    start: Callable[[], ServerProcess],
    sender: Callable[..., None],
    receiver: Callable[..., None],
) -> Setup:
    """Start a peer's server and its sender; every process goes into ``started``."""
    server = start()
    started.append(server)
    source = spawn(f"{name}-sender", sender, server.port, n)
    started.append(source)
    expect(source, "ready", 30)
    return Setup(source, server.pid, receiver, (server.port,))


def setup_redis(started: list[Any], n: int) -> Setup:
    return _setup_peer(started, n, "redis", start_redis, redis_sender, redis_receiver)


# ---------------------------------------------------------------- nats


def start_nats() -> ServerProcess:
    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="bench-nats-")
    config = Path(tmp.name) / "nats.conf"
    # Unbounded like every other system here: a slow consumer lags, never gets cut off.
    config.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_pending: 4294967296\nwrite_deadline: "120s"\n'
    )
    return ServerProcess(["nats-server", "-c", str(config)], port, tmp)


def nats_sender(conn: Connection, port: int, n: int) -> None:
    nats: Any = importlib.import_module("nats")

    async def main() -> None:
        client = await nats.connect(f"nats://127.0.0.1:{port}")
        conn.send(("ready",))
        while not conn.poll(0):
            await client.publish(PROBE, b"p")
            await client.flush()
            await asyncio.sleep(0.005)
        conn.recv()
        data = payload()
        publish = client.publish
        t0 = time.monotonic()
        for _ in range(n):
            await publish(CHANNEL, data)
        await client.flush()
        conn.send(("sent", t0, time.monotonic()))
        await asyncio.get_running_loop().run_in_executor(None, wait_stop, conn)
        await client.close()

    asyncio.run(main())


def nats_receiver(conn: Connection, sockets: int, expected: int, quiet: float, port: int) -> None:
    nats: Any = importlib.import_module("nats")

    async def main() -> None:
        counts = [0] * sockets
        total = expected * sockets
        state: dict[str, float] = {"got": 0, "last": 0.0}
        loop = asyncio.get_running_loop()
        all_done = loop.create_future()
        probes: list[asyncio.Future[None]] = []
        clients = []
        for i in range(sockets):
            client = await nats.connect(f"nats://127.0.0.1:{port}")
            clients.append(client)
            probed: asyncio.Future[None] = loop.create_future()
            probes.append(probed)

            async def on_probe(msg: Any, probed: asyncio.Future[None] = probed) -> None:
                if not probed.done():
                    probed.set_result(None)

            async def on_message(msg: Any, i: int = i) -> None:
                counts[i] += 1
                state["got"] += 1
                state["last"] = time.monotonic()
                if state["got"] >= total and not all_done.done():
                    all_done.set_result(None)

            limit = max(expected * 2, 65536)
            await client.subscribe(PROBE, cb=on_probe)
            await client.subscribe(
                CHANNEL, cb=on_message, pending_msgs_limit=limit, pending_bytes_limit=limit * 1024
            )
        await asyncio.wait_for(asyncio.gather(*probes), 60)
        conn.send(("ready",))
        deadline = time.monotonic() + 120
        seen = -1
        while not all_done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(all_done), quiet)
            got = int(state["got"])
            if got == seen and (got or time.monotonic() > deadline):
                break
            seen = got
        conn.send(("done", counts, state["last"]))
        await loop.run_in_executor(None, wait_stop, conn)
        for client in clients:
            await client.close()

    asyncio.run(main())


def setup_nats(started: list[Any], n: int) -> Setup:
    return _setup_peer(started, n, "nats", start_nats, nats_sender, nats_receiver)


def hiredis() -> bool:
    return importlib.util.find_spec("hiredis") is not None


def versions() -> dict[str, str]:
    """Versions of the peers' servers and clients, for the report."""
    found: dict[str, str] = {}
    for name, argv in (("redis-server", ["--version"]), ("nats-server", ["--version"])):
        if shutil.which(name):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [name, *argv], capture_output=True, text=True, timeout=10, check=False
                ).stdout
                found[name] = out.strip().split("\n")[0]
    for dist in ("redis", "hiredis", "nats-py"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found
