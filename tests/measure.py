"""Figures the fault tests report about a process: memory, descriptors, latency spread.

benchmarks/faults.py keeps its own copy: tests do not import the benchmarks.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path


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
    """The resident set of process ``pid``, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def accept_backlog(port: int) -> int:
    """Connections waiting in the accept queue of the listener on ``port`` (Linux /proc).

    For a listening socket the kernel shows the accept queue's length as rx_queue.
    """
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def settled_fds(pid: int, endpoints: list[str], limit: int, timeout: float) -> int:
    """``pid``'s descriptor count once closed peers are accepted and hung up on.

    A peer that connected and closed before the process accepted it still costs a
    descriptor later, when it is accepted: so the count is read only once the accept
    queues are empty, and then it can only fall.
    """
    ports = [int(endpoint.rsplit(":", 1)[1]) for endpoint in endpoints]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(accept_backlog(port) for port in ports) and open_fds(pid) <= limit:
            break
        time.sleep(0.05)
    return open_fds(pid)
