"""Fixtures: brokers on ephemeral 127.0.0.1 ports, real ``zchat`` processes, and
receive helpers that fail with what they saw instead of hanging.

Every server binds port 0 and the test reads the real endpoint back (a broker
thread's ``router``/``pub``, a broker process's "broker listening" line): no
port is picked first and bound later, so no other process can take it between.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import zmq
from redis_servers import RedisCluster, RedisProcess, Server, fresh

from zchat.broker.adapter import Broker
from zchat.broker.cluster.engine import Engine, connect
from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig
from zchat.broker.store import Store
from zchat.curve import CurveServer

ROOT = Path(__file__).resolve().parent.parent

#: Bind here to get a port the kernel picks; read the endpoint back after binding.
ANY_PORT = "tcp://127.0.0.1:0"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the attacks of tests/test_attacks.py at their full sizes (minutes, GBs)",
    )


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True with ``--long``: attack tests use their full sizes, not the CI ones."""
    return bool(request.config.getoption("--long"))


class BrokerThread:
    """A real broker on ephemeral ports, served by a thread of the test process."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.router = broker.router_endpoint
        self.pub = broker.pub_endpoint
        self._closed = False
        self._thread = threading.Thread(target=broker.run, name="broker", daemon=True)
        self._thread.start()

    @property
    def core(self) -> BrokerCore:
        return self.broker.core

    def stop(self) -> None:
        """Stop serving and close the sockets (idempotent): the ports are free after."""
        if self._closed:
            return
        self.broker.stop()
        self._thread.join(5)
        assert not self._thread.is_alive(), "broker thread did not stop"
        self.broker.close()
        self._closed = True


@pytest.fixture
def make_broker() -> Iterator[Callable[..., BrokerThread]]:
    started: list[BrokerThread] = []

    def start(
        *,
        router: str = ANY_PORT,
        pub: str = ANY_PORT,
        store: Store | None = None,
        curve: CurveServer | None = None,
        **config: Any,
    ) -> BrokerThread:
        config.setdefault("heartbeat", 0.5)
        broker = Broker(BrokerConfig(**config), router=router, pub=pub, store=store, curve=curve)
        thread = BrokerThread(broker)
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def broker(make_broker: Callable[..., BrokerThread]) -> BrokerThread:
    return make_broker()


@pytest.fixture
def dead_endpoint() -> Iterator[Callable[[], str]]:
    """Make endpoints on 127.0.0.1 where nothing listens, nor can while the test runs.

    Each port is held by a bound socket that never listens: a connection to it
    is refused, and no server can bind it meanwhile (not even with SO_REUSEADDR).
    """
    held: list[socket.socket] = []

    def make() -> str:
        sock = socket.socket()
        held.append(sock)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    yield make
    for sock in held:
        sock.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context whose sockets are all closed with linger 0 at teardown."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def recv_until(
    sock: zmq.Socket[bytes], predicate: Callable[[bytes], bool], timeout: float = 5.0
) -> bytes:
    """Receive until ``predicate`` holds; fail with what was seen on the deadline."""
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            frame = sock.recv()
            if predicate(frame):
                return frame
            seen.append(frame)
    pytest.fail(f"no matching frame within {timeout}s; saw {seen[-10:]!r}")


# ---------------------------------------------------------------- processes


@dataclass
class ZchatProcess:
    """A real ``python -m zchat ...`` process with line-by-line stdout capture."""

    args: list[str]
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)

    def start_readers(self) -> None:
        def pump_out() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        def pump_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))

        threading.Thread(target=pump_out, daemon=True).start()
        threading.Thread(target=pump_err, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def expect(self, pattern: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The next stdout line matching ``pattern`` (a regex or a predicate)."""
        match = pattern if callable(pattern) else re.compile(pattern).search
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.lines.put(None)
                break
            self.seen.append(line)
            if match(line):
                return line
        seen = [line[:300] for line in self.seen[-20:]]
        pytest.fail(
            f"{self.args[:3]}: no line matching {pattern!r} within {timeout}s\n"
            f"stdout: {seen}\nstderr: {self.stderr_lines[-20:]}"
        )

    def expect_json(self, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The next JSON event whose fields include ``fields``."""

        def matches(line: str) -> bool:
            try:
                event = json.loads(line)
            except ValueError:
                return False
            return isinstance(event, dict) and all(event.get(k) == v for k, v in fields.items())

        event: dict[str, Any] = json.loads(self.expect(matches, timeout))
        return event

    def events(self) -> list[dict[str, Any]]:
        """Every JSON event seen so far (after draining what is queued)."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self.lines.put(None)
                break
            self.seen.append(line)
        out = []
        for line in self.seen:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


@pytest.fixture
def zchat_proc() -> Iterator[Callable[..., ZchatProcess]]:
    """Start ``zchat`` processes; each one is killed (by PID) at teardown."""
    procs: list[ZchatProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ZchatProcess:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        cmd = [sys.executable, "-m", "zchat", *args]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=ROOT,
        )
        zp = ZchatProcess(list(args), proc)
        zp.start_readers()
        procs.append(zp)
        return zp

    yield start
    for zp in procs:
        if zp.proc.poll() is None:
            # SIGCONT first: a test may have frozen it with SIGSTOP.
            zp.proc.send_signal(signal.SIGCONT)
            zp.proc.kill()
        zp.proc.wait(5)


@pytest.fixture(scope="module", params=["single", "cluster"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real redis-server, then a real 3-master Redis Cluster: each test runs on both."""
    workdir = tmp_path_factory.mktemp(f"redis-{request.param}")
    started: Server = RedisProcess(workdir) if request.param == "single" else RedisCluster(workdir)
    yield started
    started.kill()


@pytest.fixture
def make_engine(server: Server) -> Iterator[Callable[..., Engine]]:
    """Cluster engines (node ids given) on an emptied ``server``; closed afterwards."""
    fresh(server)
    made: list[Engine] = []

    def make(node: str, **options: Any) -> Engine:
        engine = Engine(connect(server.url), node, **options)
        engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        with contextlib.suppress(redis.RedisError):
            engine.close()
