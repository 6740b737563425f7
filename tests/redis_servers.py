"""Real ``redis-server`` processes for the cluster tests: one server, or a 3-master
Redis Cluster, on free 127.0.0.1 ports, each waited for by what it prints or answers."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.cluster

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


#: Where Redis ports are drawn from: below the kernel's ephemeral range (32768 and up),
#: so that no socket bound to port 0 takes a stopped Redis's port before its restart.
#: Runs side by side (CI runs the suite twice at once) get disjoint ranges from
#: ZCHAT_TEST_REDIS_PORTS ("LOW-HIGH"): a killed Redis's port is never taken by the
#: other run's. A cluster node's bus is its port + 10000, so HIGH stays under 22768.
_PORTS = os.environ.get("ZCHAT_TEST_REDIS_PORTS", "10000-19999")


def _free_port() -> int:
    # Redis cannot bind port 0 and report it: find a port whose cluster bus
    # (port + 10000) is free too; a lost race is retried by the caller.
    low, high = (int(p) for p in _PORTS.split("-"))
    while True:
        port = random.randint(low, high)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class RedisProcess:
    def __init__(self, workdir: Path, *extra: str) -> None:
        assert REDIS_SERVER is not None
        self.workdir = workdir
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, port: int | None = None) -> None:
        """Start (or start again on the same port) and wait until it accepts connections."""
        for _ in range(5):
            chosen = port or _free_port()
            args = [
                str(REDIS_SERVER),
                "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--protected-mode", "no", *self.extra,
            ]  # fmt: skip
            if "--cluster-enabled" in self.extra:
                args += ["--cluster-config-file", f"nodes-{chosen}.conf"]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            seen = []
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                seen.append(line)
                if "Ready to accept connections" in line:
                    self.proc, self.port = proc, chosen
                    # Keep draining its output so a full pipe never stalls it.
                    _drain(proc)
                    return
            proc.wait()
            if port is not None or "already in use" not in "".join(seen):
                raise RuntimeError("redis-server did not start:\n" + "".join(seen[-20:]))
        raise RuntimeError("no free port for redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_up(self) -> None:
        """Running and not stopped, as a test that killed or paused it and failed
        before bringing it back may have left it."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
        else:
            self.start(self.port)

    def restart(self) -> None:
        """Kill -9 and start again on the same port (the append-only file brings the data back)."""
        self.kill()
        self.start(self.port)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered (a stalled Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def _drain(proc: subprocess.Popen[bytes]) -> None:
    import threading

    def run() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    threading.Thread(target=run, daemon=True).start()


class RedisCluster:
    """Three masters, no replicas, every slot assigned."""

    def __init__(self, workdir: Path) -> None:
        assert REDIS_CLI is not None
        self.nodes = [
            RedisProcess(_dir(workdir / f"n{i}"), "--cluster-enabled", "yes") for i in range(3)
        ]
        subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=30,
        )  # fmt: skip
        self._wait_ok()

    def _wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                client = redis.Redis(port=node.port, socket_timeout=1)
                try:
                    states.append(client.cluster("info").get("cluster_state"))
                except redis.RedisError:
                    states.append(None)
                finally:
                    client.close()
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ready: {states}")
            time.sleep(0.1)  # polling a server's state: there is no event to wait on

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def restart(self) -> None:
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            node.start(node.port)
        self._wait_ok()

    def ensure_up(self) -> None:
        if all(node.running for node in self.nodes):
            self.resume()
        else:
            self.restart()


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


Server = RedisProcess | RedisCluster


def fresh(server: Server) -> None:
    """``server`` ready for the next test: up (whatever a failed test left) and empty."""
    server.ensure_up()
    flush(server)


def flush(server: Server) -> None:
    """Empty every node of ``server``: data and scripts."""
    ports = [n.port for n in server.nodes] if isinstance(server, RedisCluster) else [server.port]
    for port in ports:
        client = redis.Redis(port=port)
        client.flushall()
        client.script_flush()
        client.close()


#: For a test module that needs Redis: skipped only where redis-server is not installed
#: (CI installs it).
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server is not installed"
)
