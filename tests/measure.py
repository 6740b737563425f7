"""Figures the fault tests report about a process: memory, descriptors, latency spread.

benchmarks/faults.py keeps its own copy: tests do not import the benchmarks.
"""

from __future__ import annotations

import os
import statistics
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
