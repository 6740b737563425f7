"""Cluster mode against one broker, in one run: ``python -m benchmarks.cluster``.

- inbound: messages per second the brokers accept together, with 1, 2 and 3 nodes
  (one sender per node, each as fast as its broker takes them; broker-bound), and a
  single broker without Redis;
- deliveries per second to 10 and 100 subscribers spread over 3 nodes;
- round trip at 1,000 msg/s, sent through node A and received from node B, against
  one broker sending and receiving.

Real processes: ``redis-server`` (append-only file, fsync every second, as
docs/cluster.md recommends), ``zchat broker`` processes, senders and receivers with
raw zmq sockets. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from benchmarks.common import MP, BenchError, cpu_seconds, percentile, run_seconds
from benchmarks.peers import ServerProcess, free_port
from zchat.protocol.commands import Hello, Ping, Say, to_wire
from zchat.protocol.wire import pack, room_topic

LISTENING = re.compile(r"broker listening: router (\S+), pub (\S+),")
ROOM = "bench"


# ---------------------------------------------------------------- servers


def start_redis() -> ServerProcess:
    port = free_port()
    argv = [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "yes", "--appendfsync", "everysec",
        "--client-output-buffer-limit", "pubsub 0 0 0",
    ]  # fmt: skip
    return ServerProcess(argv, port, tempfile.TemporaryDirectory(prefix="bench-cluster-"))


class Node:
    """A ``zchat broker`` process (cluster node if given a Redis URL)."""

    def __init__(self, redis_url: str | None) -> None:
        argv = [
            sys.executable, "-m", "zchat", "broker",
            "--router", "tcp://127.0.0.1:0", "--pub", "tcp://127.0.0.1:0",
            "--heartbeat", "30", "--rate-limit", "0",
        ]  # fmt: skip
        if redis_url is not None:
            argv += ["--cluster", redis_url]
        env = {**os.environ, "ZCHAT_LOG_LEVEL": "info"}
        self.popen = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.router = self.pub = ""
        assert self.popen.stderr is not None
        deadline = time.monotonic() + 20
        for line in self.popen.stderr:
            found = LISTENING.search(line)
            if found:
                self.router, self.pub = found.group(1), found.group(2)
                break
            if time.monotonic() > deadline:
                break
        else:
            raise BenchError("broker exited before listening")
        if not self.router:
            self.stop()
            raise BenchError("broker did not listen")
        # Its log must never fill a pipe and stall it: read it to the end.
        threading.Thread(target=self.popen.stderr.read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class Cluster(list[Node]):
    """The started nodes, and their Redis (None for a single broker)."""

    redis: ServerProcess | None = None


@contextmanager
def cluster(nodes: int, with_redis: bool = True) -> Iterator[Cluster]:
    redis = start_redis() if with_redis else None
    started = Cluster()
    started.redis = redis
    try:
        url = f"redis://127.0.0.1:{redis.port}/0" if redis is not None else None
        for _ in range(nodes):
            started.append(Node(url))
        yield started
    finally:
        for node in started:
            node.stop()
        if redis is not None:
            redis.stop()


# ---------------------------------------------------------------- workers


def _register(ctx: zmq.Context[zmq.Socket[bytes]], router: str, nick: str) -> zmq.Socket[bytes]:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(router)
    dealer.send(pack(to_wire(Hello(nick, (ROOM,), id="h"))))
    if not dealer.poll(20_000):
        raise BenchError(f"{nick}: no welcome")
    dealer.recv()
    return dealer


def _round_trip(dealer: zmq.Socket[bytes]) -> None:
    dealer.send(pack(to_wire(Ping(id="p"))))
    while dealer.poll(60_000):
        if b"pong" in dealer.recv():
            return
    raise BenchError("no pong")


def sender(conn: Connection, router: str, nick: str, n: int) -> None:
    """Send ``n`` says as fast as the broker takes them; report the seconds it took."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _register(ctx, router, nick)
    frame = pack(to_wire(Say(ROOM, "x" * 100)))
    conn.send("ready")
    conn.recv()
    start = time.perf_counter()
    for _ in range(n):
        dealer.send(frame)
    # The broker handles a connection's envelopes in order: its pong means all were taken.
    _round_trip(dealer)
    conn.send(time.perf_counter() - start)
    ctx.destroy(0)


def member(conn: Connection, router: str, nick: str) -> None:
    """A registered member of the room, so that its node carries the room."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # Kept open: a closed connection ends the session, and its node unsubscribes.
    dealer = _register(ctx, router, nick)
    conn.send("ready")
    conn.recv()
    dealer.close(0)
    ctx.destroy(0)


def receivers(conn: Connection, pubs: list[str], expected: int) -> None:
    """SUB sockets on the given PUBs; count deliveries until each has ``expected``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    poller = zmq.Poller()
    socks = []
    for pub in pubs:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, room_topic(ROOM))
        sub.connect(pub)
        poller.register(sub, zmq.POLLIN)
        socks.append(sub)
    time.sleep(1.0)  # slow joiners: a benchmark's settling time, not a test's wait
    conn.send("ready")
    got = 0
    first = last = 0.0
    want = expected * len(socks)
    while got < want:
        ready = poller.poll(10_000)
        if not ready:
            break
        for sock, _ in ready:
            while True:
                try:
                    sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                got += 1
                last = time.perf_counter()
                if got == 1:
                    first = last
    conn.send((got, last - first))
    ctx.destroy(0)


def timed_sender(conn: Connection, router: str, rate: float, seconds: float) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _register(ctx, router, "ticker")
    conn.send("ready")
    conn.recv()
    period = 1.0 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = start + i * period
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.001))
        dealer.send(pack(to_wire(Say(ROOM, f"{time.perf_counter():.9f}"))))
    _round_trip(dealer)
    conn.send("done")
    ctx.destroy(0)


def latency_receiver(conn: Connection, router: str, pub: str, count: int) -> None:
    import msgpack

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # Kept open: a closed connection ends the session, and its node unsubscribes.
    dealer = _register(ctx, router, "clock")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, room_topic(ROOM))
    sub.connect(pub)
    time.sleep(1.0)
    conn.send("ready")
    rtts: list[float] = []
    while len(rtts) < count and sub.poll(10_000):
        frame = sub.recv()
        arrived = time.perf_counter()
        envelope = msgpack.unpackb(frame.split(b"\0", 1)[1])
        if envelope.get("type") == "msg" and envelope.get("nick") == "ticker":
            rtts.append((arrived - float(envelope["text"])) * 1000)
    conn.send(rtts)
    dealer.close(0)
    ctx.destroy(0)


# ---------------------------------------------------------------- measurements


def _spawn(target: Any, *args: Any) -> tuple[Any, Connection]:
    parent, child = MP.Pipe()
    proc = MP.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    return proc, parent


def _expect(conn: Connection, timeout: float = 120) -> Any:
    if not conn.poll(timeout):
        raise BenchError("a worker did not answer")
    return conn.recv()


def inbound(nodes: int, n: int, with_redis: bool = True) -> dict[str, Any]:
    """One sender per node, all at once: what the brokers accept together, and the
    CPU each process used meanwhile (in cores: 1.0 is one core busy all along)."""
    with cluster(nodes, with_redis) as started:
        workers = [_spawn(sender, node.router, f"s{i}", n) for i, node in enumerate(started)]
        for _, conn in workers:
            _expect(conn)
        pids = {f"broker {i + 1}": node.pid for i, node in enumerate(started)}
        if started.redis is not None:
            pids["redis"] = started.redis.pid
        for i, (proc, _) in enumerate(workers):
            pids[f"sender {i + 1}"] = proc.pid
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        for _, conn in workers:
            conn.send("go")
        seconds = [float(_expect(conn)) for _, conn in workers]
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        for proc, _ in workers:
            proc.join(10)
    wall = max(seconds)
    return {
        "nodes": nodes,
        "redis": with_redis,
        "messages": n * nodes,
        "msgs_per_s": n * nodes / wall,
        "broker_cpu_per_s": [cpu[f"broker {i + 1}"] / wall for i in range(nodes)],
        "cpu_per_s": {name: c / wall for name, c in cpu.items()},
    }


def deliveries(subscribers: int, n: int) -> dict[str, Any]:
    with cluster(3) as started:
        members = [_spawn(member, node.router, f"m{i}") for i, node in enumerate(started)]
        for _, conn in members:
            _expect(conn)
        pubs = [started[i % 3].pub for i in range(subscribers)]
        groups = [pubs[0::2], pubs[1::2]]
        recv = [_spawn(receivers, group, n) for group in groups if group]
        for _, conn in recv:
            _expect(conn)
        send_proc, send_conn = _spawn(sender, started[0].router, "sender", n)
        _expect(send_conn)
        send_conn.send("go")
        _expect(send_conn)
        results = [_expect(conn) for _, conn in recv]
        for _, conn in members:
            conn.send("stop")
        for proc, _ in [*members, *recv, (send_proc, send_conn)]:
            proc.join(10)
    got = sum(r[0] for r in results)
    span = max(r[1] for r in results) or 1e-9
    return {
        "subscribers": subscribers,
        "delivered": got,
        "expected": subscribers * n,
        "deliveries_per_s": got / span,
    }


@dataclass(frozen=True)
class SlowWindow:
    #: Seconds from the start of the watch.
    start: float
    #: From its first slow piece to its last, milliseconds (0 for a single piece).
    length_ms: float
    #: The slowest piece's CPU time over the median piece's.
    worst: float


def slow_windows(seconds: float, period: float = 0.01) -> list[SlowWindow]:
    """The machine's slow windows over ``seconds``: the same small piece of work (about
    30 us) every ``period``, under 1% of a core at 10 ms, timed in CPU time; a window is
    a run of pieces that took over 3x the median (docs/benchmarks.md, "Cluster mode")."""

    def piece() -> None:
        total = 0
        for i in range(400):
            total += i * i

    start = time.perf_counter()
    took: list[tuple[float, float]] = []
    while (now := time.perf_counter()) - start < seconds:
        cpu = time.thread_time()
        piece()
        took.append((now - start, time.thread_time() - cpu))
        time.sleep(period)
    median = sorted(t for _, t in took)[len(took) // 2] if took else 0.0
    runs: list[list[float]] = []  # [first, last, worst] of each window
    for at, t in took:
        if t <= 3 * median:
            continue
        if runs and at - runs[-1][1] < 5 * period:
            runs[-1][1] = at
            runs[-1][2] = max(runs[-1][2], t)
        else:
            runs.append([at, at, t])
    return [SlowWindow(a, (b - a) * 1000, t / median) for a, b, t in runs]


def stall_probe(conn: Connection, seconds: float) -> None:
    """Beside a measurement: how many slow windows the machine had meanwhile."""
    conn.send("ready")
    conn.recv()
    conn.send(len(slow_windows(seconds)))


def round_trip(clustered: bool, rate: float, seconds: float) -> dict[str, Any]:
    with cluster(2 if clustered else 1, with_redis=clustered) as started:
        receiving = started[1] if clustered else started[0]
        count = int(rate * seconds)
        recv_proc, recv_conn = _spawn(latency_receiver, receiving.router, receiving.pub, count)
        _expect(recv_conn)
        send_proc, send_conn = _spawn(timed_sender, started[0].router, rate, seconds)
        _expect(send_conn)
        probe_proc, probe_conn = _spawn(stall_probe, seconds)
        _expect(probe_conn)
        # The path's processes (the sender and receiver are the same on both paths).
        path = {"broker": started[0].pid}
        if started.redis is not None:
            path = {"node A": started[0].pid, "Redis": started.redis.pid, "node B": started[1].pid}
        before = {name: run_seconds(pid) for name, pid in path.items()}
        probe_conn.send("go")
        send_conn.send("go")
        _expect(send_conn, 120)
        rtts = sorted(_expect(recv_conn, 120))
        used = {name: run_seconds(pid) - before[name] for name, pid in path.items()}
        windows = _expect(probe_conn, 120)
        for proc in (recv_proc, send_proc, probe_proc):
            proc.join(10)
    return {
        "cluster": clustered,
        "received": len(rtts),
        "sent": count,
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "slow_windows": windows,
        "cpu_us_per_msg": {name: seconds * 1e6 / count for name, seconds in used.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--out", type=Path, help="JSON results file")
    parser.add_argument(
        "--windows",
        type=float,
        metavar="SECONDS",
        help="only watch the machine's slow windows for this long, and list them",
    )
    args = parser.parse_args(argv)
    if args.windows is not None:
        print(f"uptime at start: {_uptime()}")
        found = slow_windows(args.windows)
        for w in found:
            print(f"at {w.start:6.2f} s: {w.length_ms:4.0f} ms, worst piece {w.worst:.1f}x median")
        print(f"{len(found)} slow windows in {args.windows:g} s")
        return 0
    # The suite's one repetition, as the full run measures and reports it (run.py
    # imports this module, hence here).
    from benchmarks import report, run

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-cluster-")) / "cluster.json"
    forwarded = ["--only", "cluster", "--reps", "1", "--no-docs", "--out", str(out)]
    status = run.main(forwarded + (["--quick"] if args.quick else []))
    print("\n".join(report.cluster_markdown(json.loads(out.read_text()))))
    return status


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
