"""The long fault suite: real broker processes hurt on purpose, figures as JSON.

    python -m benchmarks.faults                 # short run, every scenario (~2 min)
    python -m benchmarks.faults --long          # nightly sizes (~20 min)
    python -m benchmarks.faults soak --json out.json

Scenarios: ``dead`` (SIGKILLed and SIGSTOPped clients, at the default heartbeat;
also part of ``python -m benchmarks``), ``frozen`` (a frozen
subscriber while others chat), ``flood`` (one client as fast as it can),
``restart`` (broker SIGKILLed under load), ``garbage`` (random bytes and
garbage CURVE handshakes), ``soak`` (many clients for minutes). The fast
versions run in CI as tests/test_faults.py; docs/reliability.md has the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from benchmarks.common import run_scenarios
from zchat import Client, CurveKeys, Message
from zchat.broker.state import BrokerConfig
from zchat.client.probe import Probe
from zchat.protocol import pack, split_pub_frame, unpack

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- measuring


def spread(values: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def accept_backlog(port: int) -> int:
    """The accept queue's length of the listener on ``port`` (rx_queue of a LISTEN row)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def settled_fds(pid: int, endpoints: list[str], limit: int, timeout: float) -> int:
    """The descriptor count once every closed peer was accepted (then it only falls)."""
    ports = [int(endpoint.rsplit(":", 1)[1]) for endpoint in endpoints]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(accept_backlog(port) for port in ports) and open_fds(pid) <= limit:
            break
        time.sleep(0.1)
    return open_fds(pid)


#: What a broker logs once bound: the endpoints it really got (it binds port 0).
LISTENING = re.compile(r"broker listening: router (\S+), pub (\S+),")
ANY_PORT = "tcp://127.0.0.1:0"


class Proc:
    """A child process we started; ended by its own PID only. Stderr goes to a file."""

    def __init__(self, args: list[str], *, stdout: bool = False) -> None:
        self.stderr = tempfile.NamedTemporaryFile(prefix="zchat-fault-", suffix=".log")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,  # line-mode clients quit at end of input
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        # Read stdout all along: a full pipe would block the child's event loop.
        self._lines: queue.Queue[str | None] = queue.Queue()
        if stdout:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self, timeout: float) -> str:
        """The next stdout line (workers print ``ready`` and their results)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            raise RuntimeError(f"pid {self.pid}: no output within {timeout}s")
        return line

    def wait_stderr(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(Path(self.stderr.name).read_text(errors="replace"))
            if found is not None:
                return found
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        log = Path(self.stderr.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pid {self.pid}: no {pattern.pattern!r} within {timeout}s: {log}")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def end(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.stderr.close()


class BrokerProc(Proc):
    """A broker process on ports of its own choosing, or on ``endpoints`` (a restart
    takes over its predecessor's): ``router`` and ``pub`` are read from its log."""

    def __init__(
        self,
        *extra: str,
        endpoints: tuple[str, str] = (ANY_PORT, ANY_PORT),
        heartbeat: float = 1.0,
    ) -> None:
        args = ["-m", "zchat", "broker", "--router", endpoints[0], "--pub", endpoints[1]]
        args += ["--heartbeat", str(heartbeat), "--log-level", "info", *extra]
        super().__init__(args)
        found = self.wait_stderr(LISTENING, 15)
        self.router, self.pub = found.group(1), found.group(2)


@contextmanager
def cleanup(procs: list[Proc]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for proc in procs:
            proc.end()


class Observer:
    """An unregistered SUB on rooms, made live by a ``sync`` round trip."""

    def __init__(self, ctx: zmq.Context[Any], broker: BrokerProc, rooms: list[str]) -> None:
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        for room in rooms:
            self.sub.setsockopt(zmq.SUBSCRIBE, f"#{room}\x00".encode())
        self.sub.setsockopt(zmq.SUBSCRIBE, b"!observer\x00")
        self.sub.connect(broker.pub)
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(broker.router)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dealer.send(pack({"type": "sync", "token": "observer"}))
            if self.sub.poll(200):
                self.sub.recv()
                break
        dealer.close(0)
        self.events: list[tuple[float, dict[str, Any]]] = []

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sub.poll(int(left * 1000) + 1):
                while True:
                    try:
                        frame = self.sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    _, body = split_pub_frame(frame)
                    self.events.append((time.time(), unpack(body)))

    def of(self, kind: str, nick: str | None = None) -> list[dict[str, Any]]:
        return [
            e for _, e in self.events if e["type"] == kind and (nick is None or e["nick"] == nick)
        ]


# ---------------------------------------------------------------- raw client worker


def worker(
    router: str, pub: str, prefix: str, count: int, heartbeat: float, say_every: float
) -> None:
    """``count`` raw sessions: hello, ping every heartbeat, re-hello with the resume
    token on ``not_registered``; with ``say_every`` > 0 each also talks and reads
    its SUB. Prints ``ready``, then a JSON summary on SIGTERM."""
    ctx: zmq.Context[Any] = zmq.Context()
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    poller = zmq.Poller()
    dealers = []
    subs = []
    for _ in range(count):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(router)
        dealers.append(d)
        poller.register(d, zmq.POLLIN)
        if say_every > 0:
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, b"#lobby\x00")
            s.connect(pub)
            subs.append(s)
            poller.register(s, zmq.POLLIN)
    nicks = [f"{prefix}{n}" for n in range(count)]
    resume: dict[int, str] = {}

    def hello(i: int) -> None:
        env: dict[str, Any] = {"type": "hello", "v": 1, "nick": nicks[i], "rooms": ["lobby"]}
        if i in resume:
            env["resume"] = resume[i]
        dealers[i].send(pack(env))

    for i in range(count):
        hello(i)
    welcomed: set[int] = set()
    received = said = rehellos = 0
    next_ping = time.monotonic() + heartbeat
    rng = random.Random(prefix)
    next_say = [time.monotonic() + rng.random() * say_every for _ in range(count)]
    index = {d: i for i, d in enumerate(dealers)}
    while not stop:
        try:
            ready = dict(poller.poll(100))
        except zmq.ZMQError:
            continue
        for sock in ready:
            if sock in index:
                i = index[sock]
                env = unpack(sock.recv())
                if env["type"] == "welcome":
                    resume[i] = env["session"]
                    if i not in welcomed:
                        welcomed.add(i)
                        if len(welcomed) == count:
                            print("ready", flush=True)
                elif env["type"] == "error" and env.get("code") == "not_registered":
                    rehellos += 1
                    hello(i)
            else:
                sock.recv()
                received += 1
        now = time.monotonic()
        if now >= next_ping:
            for d in dealers:
                d.send(pack({"type": "ping"}), zmq.NOBLOCK)
            next_ping = now + heartbeat
        if say_every > 0:
            for i, due in enumerate(next_say):
                if now >= due:
                    dealers[i].send(
                        pack({"type": "say", "room": "lobby", "text": f"soak {said}"}), zmq.NOBLOCK
                    )
                    said += 1
                    next_say[i] = now + say_every
    print(json.dumps({"said": said, "received": received, "rehellos": rehellos}), flush=True)
    ctx.destroy(linger=0)


def start_workers(
    broker: BrokerProc, prefix: str, procs: int, per: int, heartbeat: float, say_every: float = 0
) -> list[Proc]:
    workers = [
        Proc(
            [
                "-m",
                "benchmarks.faults",
                "worker",
                broker.router,
                broker.pub,
                f"{prefix}{p}x",
                str(per),
                str(heartbeat),
                str(say_every),
            ],
            stdout=True,
        )
        for p in range(procs)
    ]
    for w in workers:
        if w.line(120) != "ready":
            raise RuntimeError("worker did not register")
    return workers


# ---------------------------------------------------------------- scenarios


def dead(long: bool, heartbeat: float | None = None, settle: float = 4.0) -> dict[str, Any]:
    """Clients SIGKILLed and SIGSTOPped at once, at the broker's default heartbeat unless
    told otherwise: how long until each leaves, seen by an observer on the PUB, and that
    each leaves once (any late second leave shows up within ``settle`` heartbeats)."""
    hb = BrokerConfig().heartbeat if heartbeat is None else heartbeat
    kill_procs, kill_per = (5, 10) if long else (2, 5)
    stop_procs, stop_per = (2, 5) if long else (2, 2)
    broker = BrokerProc(heartbeat=hb)
    ctx: zmq.Context[Any] = zmq.Context()
    with cleanup([broker]) as procs:
        obs = Observer(ctx, broker, ["lobby"])
        killed = start_workers(broker, "k", kill_procs, kill_per, hb)
        frozen = start_workers(broker, "f", stop_procs, stop_per, hb)
        procs += killed + frozen
        obs.pump(0.5)
        stopped_at = time.time()
        for w in killed:
            w.signal(signal.SIGKILL)
        for w in frozen:
            w.signal(signal.SIGSTOP)
        victims = kill_procs * kill_per + stop_procs * stop_per
        deadline = time.monotonic() + 3 * hb + 10
        while len(obs.of("leave")) < victims and time.monotonic() < deadline:
            obs.pump(0.2)
        leaves = obs.of("leave")
        delays = {
            who: [e["ts"] - stopped_at for e in leaves if e["nick"].startswith(who)]
            for who in ("k", "f")
        }
        probe = Probe(broker.router)
        ghosts = probe.stats()["sessions"]
        for w in frozen:
            w.signal(signal.SIGCONT)
        deadline = time.monotonic() + 4 * hb + 10
        while time.monotonic() < deadline:
            obs.pump(0.5)
            rejoined = {e["nick"] for e in obs.of("join") if e["nick"].startswith("f")}
            everyone_back = len(rejoined) == stop_procs * stop_per
            if everyone_back and probe.stats()["sessions"] == len(rejoined):
                break
        obs.pump(settle * hb)  # any late duplicate leave would show up here
        per_nick = Counter(e["nick"] for e in obs.of("leave"))
        probe.close()
    ctx.destroy(linger=0)
    return {
        "heartbeat_s": hb,
        "sigkilled": kill_procs * kill_per,
        "sigstopped": stop_procs * stop_per,
        "leaves_seen": len(leaves),
        "reasons": dict(Counter(e["reason"] for e in leaves)),
        "after_kill": spread(delays["k"]),
        "after_stop": spread(delays["f"]),
        #: The slowest leave after SIGSTOP, in heartbeats (the bound is liveness, 3).
        "after_stop_heartbeats": max(delays["f"]) / hb if delays["f"] else None,
        "guarantee_ms": (3 * hb + 1) * 1000,
        "ghosts": ghosts,
        "duplicate_leaves": sum(c - 1 for c in per_nick.values()),
    }


async def _chatter(
    talker: Client, listener: Client, rate: float, seconds: float, text: str
) -> list[float]:
    """Say at ``rate``/s for ``seconds``; latency = listener's arrival - send."""
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    async def listen() -> None:
        async for event in listener.events():
            if isinstance(event, Message) and event.text in sent:
                arrived[event.text] = time.time()

    task = asyncio.create_task(listen())
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        line = f"{talker.nick} {n} {text}"
        sent[line] = time.time()
        await talker.say(line)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.sleep(1.0)
    task.cancel()
    return [arrived[k] - v for k, v in sent.items() if k in arrived] + [
        float("inf") for k in sent if k not in arrived
    ]


def frozen(long: bool) -> dict[str, Any]:
    freeze = 60.0 if long else 10.0
    broker = BrokerProc("--rate-limit", "0")
    ctx: zmq.Context[Any] = zmq.Context()
    client_args = ["-m", "zchat", "client", "--nick", "frozen", "--json"]
    client_args += ["--router", broker.router, "--pub", broker.pub]
    rss: list[float] = []

    async def run() -> dict[str, Any]:
        deaf = ctx.socket(zmq.SUB)
        deaf.setsockopt(zmq.LINGER, 0)
        deaf.setsockopt(zmq.SUBSCRIBE, b"#lobby\x00")
        deaf.connect(broker.pub)
        async with (
            Client("alice", router=broker.router, pub=broker.pub) as alice,
            Client("bob", router=broker.router, pub=broker.pub) as bob,
        ):
            base = await _chatter(alice, bob, 200, 3, "x" * 500)

            async def sample() -> None:
                while True:
                    rss.append(rss_mib(broker.pid))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            frozen_proc.signal(signal.SIGSTOP)
            during = await _chatter(alice, bob, 200, freeze, "x" * 500)
            sampler.cancel()
            frozen_proc.signal(signal.SIGCONT)
        deaf.close(0)
        return {"baseline": spread(base), "during": spread(during)}

    with cleanup([broker]) as procs:
        frozen_proc = Proc(client_args, stdout=True)
        procs.append(frozen_proc)
        while '"join"' not in frozen_proc.line(30):
            pass
        latency = asyncio.run(run())
        missed = 0
        repaired = 0
        deadline = time.monotonic() + 30
        kinds: Counter[str] = Counter()
        while time.monotonic() < deadline:
            try:
                event = json.loads(frozen_proc.line(30))
            except RuntimeError:
                raise RuntimeError(f"frozen client stuck; saw {kinds}") from None
            kinds[f"{event['type']}:{event.get('state', '')}"] += 1
            if event["type"] == "missed":
                missed += event["count"]
            elif event["type"] == "msg":
                repaired += 1
            elif event["type"] == "status" and event.get("state") == "registered":
                break
    ctx.destroy(linger=0)
    return {
        "frozen_s": freeze,
        "rate_per_s": 200,
        "message_bytes": 500,
        "others_latency_baseline": latency["baseline"],
        "others_latency_during_freeze": latency["during"],
        "broker_rss_mib_min": min(rss),
        "broker_rss_mib_max": max(rss),
        "frozen_missed_notice_count": missed,
        "frozen_msgs_after_resume": repaired,
    }


def flood(long: bool) -> dict[str, Any]:
    seconds = 20.0 if long else 5.0
    broker = BrokerProc()
    ctx: zmq.Context[Any] = zmq.Context()
    flooded = {"sent": 0, "registrations": 0}

    def blast(until: float) -> None:
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.SNDHWM, 100_000)
        d.connect(broker.router)
        say = pack({"type": "say", "room": "lobby", "text": "spam " * 50})
        while time.monotonic() < until:
            # Come back after every drop: a determined flooder.
            d.send(pack({"type": "hello", "v": 1, "nick": f"flood{flooded['registrations']}"}))
            flooded["registrations"] += 1
            for _ in range(2000):
                try:
                    d.send(say, zmq.NOBLOCK)
                    flooded["sent"] += 1
                except zmq.Again:
                    time.sleep(0.001)
        d.close(0)

    async def run() -> dict[str, Any]:
        async with (
            Client("alice", router=broker.router, pub=broker.pub) as alice,
            Client("bob", router=broker.router, pub=broker.pub) as bob,
        ):
            base = await _chatter(alice, bob, 10, 3, "calm")
            loop = asyncio.get_running_loop()
            flooder = loop.run_in_executor(None, blast, time.monotonic() + seconds)
            during = await _chatter(alice, bob, 10, seconds, "calm")
            await flooder
        return {"baseline": spread(base), "during": spread(during), "n": len(during)}

    with cleanup([broker]):
        result = asyncio.run(run())
        probe = Probe(broker.router)
        stats = probe.stats()
        probe.close()
    ctx.destroy(linger=0)
    return {
        "seconds": seconds,
        "flooder_sent": flooded["sent"],
        "flooder_registrations": flooded["registrations"],
        "flooder_leaves_flood": stats["leaves"].get("flood", 0),
        "broker_envelopes_in": stats["envelopes_in"],
        "broker_drops": stats["drops"],
        "messages_accepted_total": stats["messages"],
        "rate_limited": stats["errors"].get("rate_limited", 0),
        "others_latency_baseline": result["baseline"],
        "others_latency_during_flood": result["during"],
        "others_delivered_during_flood": result["during"]["n"],
    }


def restart(long: bool) -> dict[str, Any]:
    talkers_n = 100 if long else 20
    seconds = 30.0 if long else 10.0
    broker = BrokerProc()
    procs: list[Proc] = [broker]
    times: dict[str, float] = {}

    async def run() -> dict[str, Any]:
        kw: dict[str, Any] = {"router": broker.router, "pub": broker.pub, "connect_timeout": 30}
        watcher = Client("watcher", backlog=500, **kw)
        await watcher.connect()
        talkers = [Client(f"t{i}", **kw) for i in range(talkers_n)]
        await asyncio.gather(*(t.connect() for t in talkers))
        texts: list[str] = []
        seen: Counter[str] = Counter()

        async def watch() -> None:
            async for event in watcher.events():
                if isinstance(event, Message) and event.text:
                    seen[event.text] += 1

        watching = asyncio.create_task(watch())
        start = time.monotonic()
        n = 0
        killed = False
        while time.monotonic() - start < seconds:
            for t in talkers:
                text = f"{t.nick} {n}"
                texts.append(text)
                await t.say(text)
            n += 1
            if not killed and time.monotonic() - start > seconds / 3:
                killed = True
                broker.signal(signal.SIGKILL)
                broker.popen.wait()
                times["killed"] = time.time()
                # Where the clients look for it.
                procs.append(BrokerProc(endpoints=(broker.router, broker.pub)))
                times["restarted"] = time.time()
            await asyncio.sleep(0.5)
        everyone = [*talkers, watcher]
        while not all(c.connected for c in everyone):
            await asyncio.sleep(0.05)
        times["registered"] = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(texts) <= set(seen):
            await asyncio.sleep(0.1)
        watching.cancel()
        await asyncio.gather(*(c.close() for c in everyone))
        return {
            "messages": len(texts),
            "lost": len(set(texts) - set(seen)),
            "doubled": sum(c - 1 for c in seen.values() if c > 1),
        }

    with cleanup(procs):
        result = asyncio.run(run())
    return {
        "clients": talkers_n + 1,
        "seconds": seconds,
        "restart_s": round(times["restarted"] - times["killed"], 2),
        "all_registered_after_restart_s": round(times["registered"] - times["restarted"], 2),
        **result,
    }


def _garbage(endpoint: str, count: int, mechanism: bytes, seed: int) -> int:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    rng = random.Random(seed)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + mechanism.ljust(20, b"\x00") + b"\x00" * 32
    sent = 0
    for batch in range(0, count, 100):
        socks = []
        for n in range(batch, min(count, batch + 100)):
            s = socket.create_connection((host, int(port)), timeout=5)
            payload = rng.randbytes(rng.randint(1, 8192))
            if n % 2:
                payload = greeting + payload
            try:
                s.sendall(payload)
                sent += len(payload)
            except OSError:
                pass
            socks.append(s)
        for s in socks:
            s.close()
    return sent


def garbage(long: bool) -> dict[str, Any]:
    count = 1000 if long else 300
    out: dict[str, Any] = {"connections_each": count}
    with tempfile.TemporaryDirectory() as tmp:
        _, secret = zmq.auth.create_certificates(tmp, "broker")
        for name, extra, mechanism in (
            ("plain", (), b"NULL"),
            ("curve", ("--secret-key", secret), b"CURVE"),
        ):
            broker = BrokerProc(*extra)
            with cleanup([broker]):
                before = (rss_mib(broker.pid), open_fds(broker.pid))
                sent = _garbage(broker.router, count, mechanism, 1)
                sent += _garbage(broker.pub, count // 4, mechanism, 2)
                fds = settled_fds(broker.pid, [broker.router, broker.pub], before[1] + 5, 10)
                after = (rss_mib(broker.pid), fds)
                alive = broker.popen.poll() is None
                ok = asyncio.run(_one_client(broker, secret if name == "curve" else None))
            out[name] = {
                "bytes_sent": sent,
                "rss_mib_before": before[0],
                "rss_mib_after": after[0],
                "fds_before": before[1],
                "fds_after": after[1],
                "alive": alive,
                "client_ok_after": ok,
            }
    return out


async def _one_client(broker: BrokerProc, secret: str | None) -> bool:
    curve = None
    if secret is not None:
        server_public, _ = zmq.auth.load_certificate(secret)
        public, own_secret = zmq.curve_keypair()
        curve = CurveKeys(server_public, public, own_secret)
    async with Client("after", router=broker.router, pub=broker.pub, curve=curve) as client:
        await client.say("still fine")
        return True


def soak(long: bool) -> dict[str, Any]:
    clients, seconds = (200, 600.0) if long else (50, 25.0)
    procs_n = 4
    broker = BrokerProc()
    samples: list[tuple[float, float, int]] = []
    with cleanup([broker]) as procs:
        workers = start_workers(broker, "s", procs_n, clients // procs_n, 1.0, say_every=10.0)
        procs += workers
        start = time.monotonic()
        while (t := time.monotonic() - start) < seconds:
            samples.append((round(t, 1), rss_mib(broker.pid), open_fds(broker.pid)))
            time.sleep(min(5.0, seconds / 10))
        samples.append(
            (round(time.monotonic() - start, 1), rss_mib(broker.pid), open_fds(broker.pid))
        )
        totals: Counter[str] = Counter()
        for w in workers:
            w.signal(signal.SIGTERM)
            totals.update(json.loads(w.line(30)))
        probe = Probe(broker.router)
        stats = probe.stats()
        probe.close()
    half = len(samples) // 2
    return {
        "clients": clients,
        "seconds": seconds,
        "said": totals["said"],
        "delivered": totals["received"],
        "rss_mib_first_half_max": max(s[1] for s in samples[:half]),
        "rss_mib_second_half_max": max(s[1] for s in samples[half:]),
        "fds_min": min(s[2] for s in samples),
        "fds_max": max(s[2] for s in samples),
        "broker_drops": stats["drops"],
        "samples": samples,
    }


SCENARIOS = {
    "dead": dead,
    "frozen": frozen,
    "flood": flood,
    "restart": restart,
    "garbage": garbage,
    "soak": soak,
}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        router, pub, prefix, count, hb, say_every = sys.argv[2:8]
        worker(router, pub, prefix, int(count), float(hb), float(say_every))
        return
    run_scenarios("python -m benchmarks.faults", SCENARIOS, "nightly sizes")


if __name__ == "__main__":
    main()
