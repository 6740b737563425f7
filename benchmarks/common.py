"""What every benchmark shares: worker processes, /proc readings, statistics."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import zmq

from zchat import native
from zchat.broker.adapter import Broker
from zchat.broker.state import BrokerConfig

#: Workers start fresh: a forked child would inherit the parent's zmq context.
MP = multiprocessing.get_context("spawn")

LOOPBACK = "tcp://127.0.0.1:*"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run could not be measured (a worker failed or timed out)."""


# ---------------------------------------------------------------- processes


@dataclass
class Worker:
    """A spawned process and the coordinator's end of its pipe."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    name: str

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise BenchError(f"{self.name}: no answer within {timeout:g}s")
        try:
            return self.conn.recv()
        except EOFError:
            raise BenchError(f"{self.name}: exited (code {self.process.exitcode})") from None

    def send(self, message: Any) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(message)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask politely (``stop`` on the pipe), then SIGTERM, then SIGKILL, by PID."""
        self.send(("stop",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def spawn(name: str, target: Callable[..., None], *args: Any) -> Worker:
    """Start ``target(conn, *args)`` in a new process."""
    ours, theirs = MP.Pipe()
    process = MP.Process(target=_enter, args=(target, theirs, *args), name=name, daemon=True)
    process.start()
    theirs.close()
    return Worker(process, ours, name)


def _enter(target: Callable[..., None], conn: Connection, *args: Any) -> None:
    # The coordinator stops workers with SIGTERM when all else fails: exit quietly.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        target(conn, *args)
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


@contextlib.contextmanager
def workers() -> Iterator[list[Worker]]:
    """Collect workers; all are stopped on the way out, whatever happened."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in reversed(started):
            worker.stop()


def expect(worker: Worker, kind: str, timeout: float) -> tuple[Any, ...]:
    message = worker.recv(timeout)
    if not isinstance(message, tuple) or not message or message[0] != kind:
        raise BenchError(f"{worker.name}: expected {kind!r}, got {message!r:.300}")
    return message


def wait_stop(conn: Connection, timeout: float = 600.0) -> None:
    """Block a worker until the coordinator says ``stop`` (or goes away)."""
    with contextlib.suppress(EOFError, OSError):
        if conn.poll(timeout):
            conn.recv()


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def run_seconds(pid: int) -> float:
    """The time a process's live threads have spent on a CPU, exact to the nanosecond
    (schedstat), or :func:`cpu_seconds` where the kernel keeps no schedstat.

    At a few hundred microseconds of work per message, clock ticks (10 ms) charge a
    process for whatever runs when they fire: a process that wakes often at low load
    is over- or under-counted. A thread that ended before the call is not counted.
    """
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        if not os.path.exists(f"/proc/{pid}/task/{tids[0]}/schedstat"):
            return cpu_seconds(pid)
    except (FileNotFoundError, IndexError):
        raise BenchError(f"no process {pid}") from None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return total / 1e9


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "load_before": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- statistics


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of the repetitions (and the repetitions themselves)."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ---------------------------------------------------------------- the broker


def broker_worker(conn: Connection, heartbeat: float, max_clients: int, pub_hwm: int) -> None:
    """Run a zchat broker on ephemeral loopback ports until told to stop."""
    raise_fd_limit(max_clients * 2 + 1024)
    config = BrokerConfig(heartbeat=heartbeat, rate_limit=0, max_clients=max_clients)
    broker = Broker(config, router=LOOPBACK, pub=LOOPBACK, pub_hwm=pub_hwm)
    # Which path this process runs, from zchat itself (its start line says the same).
    conn.send(("ready", broker.router_endpoint, broker.pub_endpoint, bool(native.compiled())))

    def watch() -> None:
        wait_stop(conn, 24 * 3600)
        broker.stop()

    threading.Thread(target=watch, daemon=True).start()
    try:
        broker.run()
    finally:
        broker.close(farewell=False)


def start_broker(
    started: list[Worker],
    *,
    heartbeat: float = 1.0,
    max_clients: int = 1000,
    pub_hwm: int = 0,
    compiled: bool | None = None,
) -> tuple[Worker, str, str]:
    """A broker process; ``compiled``: the path it must run (BenchError if not)."""
    worker = spawn("broker", broker_worker, heartbeat, max_clients, pub_hwm)
    started.append(worker)
    _, router, pub, runs = expect(worker, "ready", 30)
    if compiled is not None and runs != compiled:
        path = "the compiled modules" if runs else "pure Python"
        raise BenchError(f"the broker runs {path}, not the path it was started for")
    return worker, router, pub


def until(deadline: float) -> float:
    """Seconds left before ``deadline`` (monotonic), never negative."""
    return max(0.0, deadline - time.monotonic())


def run_scenarios(
    prog: str,
    scenarios: Mapping[str, Callable[[bool], dict[str, Any]]],
    long_help: str,
    argv: Sequence[str] | None = None,
) -> None:
    """The command line of a scenario suite (faults, attacks): run the named scenarios,
    or all, print each one's figures as a JSON line, and write them all with --json."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("scenarios", nargs="*", choices=[*scenarios, []], default=[])
    parser.add_argument("--long", action="store_true", help=long_help)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"long": args.long}
    for name in args.scenarios or list(scenarios):
        started = time.monotonic()
        results[name] = scenarios[name](args.long)
        results[name]["wall_s"] = round(time.monotonic() - started, 1)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
