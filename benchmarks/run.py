"""``python -m benchmarks``: plan the runs, interleave the repetitions, report."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import cluster, fanout, faults, idle, latency, peers, report, scale
from benchmarks.common import BenchError, machine, summary
from zchat import native
from zchat.broker.state import BrokerConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

FANOUT_SETUPS: dict[str, fanout.SetupFn] = {
    "pyzmq": fanout.setup_pyzmq,
    "zchat": fanout.setup_zchat,
    "zchat-pure": fanout.setup_zchat_pure,
    "threaded": peers.setup_threaded,
    "redis": peers.setup_redis,
    "nats": peers.setup_nats,
}
PEERS = ("threaded", "redis", "nats")


@dataclass(frozen=True)
class Task:
    """One measurement, repeated ``reps`` times, interleaved with all the others."""

    suite: str
    system: str
    param: float
    label: str
    call: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    reps: int
    fanout_subs: tuple[int, ...]
    peer_subs: tuple[int, ...]
    deliveries: int
    max_messages: int
    rates: tuple[float, ...]
    durations: dict[float, float]
    idle: int
    #: (clients, heartbeat in seconds)
    scale: tuple[tuple[int, float], ...]
    #: Idle clients held on Redis and NATS beside zchat's.
    idle_peers: tuple[int, ...]
    window: float
    #: Fan-out of the broker on its pure Python path too (when this install is compiled).
    pure_subs: tuple[int, ...]
    #: ``benchmarks.faults dead``: killed and frozen clients leaving, at the default heartbeat.
    dead: bool
    #: Cluster mode (docs/cluster.md): nodes for the inbound rate, says per sender,
    #: subscribers spread over 3 nodes, seconds of round trips at 1,000 msg/s.
    cluster_nodes: tuple[int, ...] = (1, 2, 3)
    cluster_messages: int = 30_000
    cluster_subs: tuple[int, ...] = (10, 100)
    cluster_seconds: float = 5.0


FULL = Plan(
    reps=5,
    fanout_subs=(1, 10, 100),
    peer_subs=(1, 10, 100),
    deliveries=600_000,
    max_messages=100_000,
    rates=(100, 1000, 10_000),
    durations={100: 5.0, 1000: 3.0, 10_000: 2.0},
    idle=100,
    scale=((1000, 5.0), (10_000, 1.0), (10_000, 5.0)),
    idle_peers=(10_000,),
    window=3.0,
    pure_subs=(10,),
    dead=True,
)
QUICK = Plan(
    reps=1,
    fanout_subs=(1, 10, 100),
    peer_subs=(10,),
    deliveries=100_000,
    max_messages=20_000,
    rates=(1000,),
    durations={1000: 1.0},
    idle=100,
    scale=((300, 5.0),),
    idle_peers=(300,),
    window=1.0,
    pure_subs=(10,),
    dead=False,
    cluster_nodes=(1, 2),
    cluster_messages=2_000,
    cluster_subs=(10,),
    cluster_seconds=1.0,
)

#: The rate of the cluster suite's round trips (issue 14's target is set at it).
RTT_RATE = 1000.0


def messages(plan: Plan, subscribers: int) -> int:
    return max(100, min(plan.max_messages, plan.deliveries // subscribers))


def tasks(plan: Plan, suites: set[str], notes: list[str]) -> list[Task]:
    found: list[Task] = []
    if "fanout" in suites:
        systems = ["pyzmq", "zchat"]
        if native.compiled():
            systems.append("zchat-pure")
        else:
            notes.append(f"zchat-pure skipped: this install runs {native.describe()} already")
        for peer in PEERS:
            why = peers.missing(peer)
            if why is None:
                systems.append(peer)
            else:
                notes.append(f"{peer} skipped: {why}")
        subscribers = {"pyzmq": plan.fanout_subs, "zchat": plan.fanout_subs}
        subscribers["zchat-pure"] = plan.pure_subs
        for subs in sorted({*plan.fanout_subs, *plan.peer_subs, *plan.pure_subs}):
            n = messages(plan, subs)
            for system in systems:
                if subs not in subscribers.get(system, plan.peer_subs):
                    continue
                setup = FANOUT_SETUPS[system]
                found.append(
                    Task(
                        "fanout",
                        system,
                        subs,
                        f"fan-out {system}, {subs} subscribers",
                        lambda setup=setup, subs=subs, n=n: fanout.run(setup, subs, n),  # type: ignore[misc]
                    )
                )
    if "latency" in suites:
        for rate in plan.rates:
            duration = plan.durations[rate]
            for system in ("echo", "zchat"):
                found.append(
                    Task(
                        "latency",
                        system,
                        rate,
                        f"latency {system}, {rate:g} msg/s",
                        lambda s=system, r=rate, d=duration: latency.run(s, r, d, plan.idle),  # type: ignore[misc]
                    )
                )
    if "scale" in suites:
        for clients, heartbeat in plan.scale:
            found.append(
                Task(
                    "scale",
                    f"heartbeat {heartbeat:g}s",
                    clients,
                    f"scale, {clients} idle clients, heartbeat {heartbeat:g}s",
                    lambda c=clients, h=heartbeat: scale.run(c, plan.window, h),  # type: ignore[misc]
                )
            )
        for system, label in idle.SYSTEMS.items():
            why = idle.missing(system)
            if why is not None:
                notes.append(f"idle {system} skipped: {why}")
                continue
            for clients in plan.idle_peers:
                found.append(
                    Task(
                        "scale",
                        label,
                        clients,
                        f"scale, {clients} idle clients on {system}",
                        lambda s=system, c=clients: idle.run(s, c, plan.window),  # type: ignore[misc]
                    )
                )
    if "faults" in suites and plan.dead:
        found.append(
            Task(
                "faults",
                "dead",
                BrokerConfig().heartbeat,
                "leaving: clients killed and frozen",
                # One heartbeat is enough to see a late second leave in a benchmark run.
                lambda: faults.dead(False, settle=1.0),
            )
        )
    if "cluster" in suites:
        if shutil.which("redis-server") is None:
            notes.append("cluster skipped: redis-server is not installed")
        else:
            found += cluster_tasks(plan)
    return found


def cluster_tasks(plan: Plan) -> list[Task]:
    n = plan.cluster_messages
    found = [
        Task(
            "cluster",
            "single",
            1,
            "cluster suite: inbound, 1 broker without Redis",
            lambda: cluster.inbound(1, n, with_redis=False),
        )
    ]
    for nodes in plan.cluster_nodes:
        found.append(
            Task(
                "cluster",
                "nodes",
                nodes,
                f"cluster suite: inbound, {nodes} node(s)",
                lambda k=nodes: cluster.inbound(k, n),  # type: ignore[misc]
            )
        )
    for subs in plan.cluster_subs:
        found.append(
            Task(
                "cluster",
                "deliveries",
                subs,
                f"cluster suite: deliveries, {subs} subscribers over 3 nodes",
                lambda k=subs: cluster.deliveries(k, max(100, n // 10)),  # type: ignore[misc]
            )
        )
    for system, clustered in (("rtt single", False), ("rtt cluster", True)):
        found.append(
            Task(
                "cluster",
                system,
                RTT_RATE,
                f"cluster suite: round trip at {RTT_RATE:g} msg/s, "
                + ("2 nodes" if clustered else "single broker"),
                lambda c=clustered: cluster.round_trip(c, RTT_RATE, plan.cluster_seconds),  # type: ignore[misc]
            )
        )
    return found


def measure(
    todo: list[Task], reps: int, console: Console
) -> dict[tuple[str, str, float], list[dict[str, Any]]]:
    runs: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("starting", total=len(todo) * reps)
        # Interleaved: every system once per repetition, so noise hits all alike.
        for rep in range(reps):
            for task in todo:
                progress.update(bar, description=f"rep {rep + 1}/{reps}: {task.label}")
                try:
                    result = task.call()
                    result["rep"] = rep
                except BenchError as exc:
                    result = {"rep": rep, "error": str(exc)}
                    console.print(f"[yellow]{task.label}: {exc}")
                except Exception as exc:
                    result = {"rep": rep, "error": f"{type(exc).__name__}: {exc}"}
                    console.print(f"[red]{task.label}: {traceback.format_exc()}")
                runs.setdefault((task.suite, task.system, task.param), []).append(result)
                progress.advance(bar)
    return runs


def per_rep_ratio(
    top: list[dict[str, Any]], bottom: list[dict[str, Any]], key: str
) -> dict[str, Any]:
    """Ratio of two systems' ``key``, repetition by repetition, then summarised."""
    values = []
    by_rep = {r["rep"]: r for r in bottom if r.get(key)}
    for r in top:
        other = by_rep.get(r["rep"])
        if other is not None and key in r:
            values.append(r[key] / other[key])
    return summary(values)


def summarise(
    runs: dict[tuple[str, str, float], list[dict[str, Any]]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fanout": {},
        "latency": {},
        "scale": {},
        "faults": {},
        "cluster": {},
        "ratios": {},
    }
    for (suite, system, param), results in runs.items():
        good = [r for r in results if "error" not in r]
        entry: dict[str, Any] = {"errors": [r["error"] for r in results if "error" in r]}
        if suite == "fanout":
            entry["deliveries_per_s"] = summary([r["deliveries_per_s"] for r in good])
            entry["server_us_per_delivery"] = summary(
                [r["server_us_per_delivery"] for r in good if r["server_us_per_delivery"]]
            )
            for role in ("server", "source", "receivers"):
                values = [
                    r["cpu_us_per_message"][role] for r in good if role in r["cpu_us_per_message"]
                ]
                if values:
                    entry.setdefault("cpu_us_per_message", {})[role] = summary(values)
            entry["dropped"] = sum(r["dropped"] for r in good)
            entry["messages"] = good[0]["messages"] if good else None
            out["fanout"].setdefault(system, {})[str(int(param))] = entry
        elif suite == "cluster":
            out["cluster"].setdefault(system, {})[str(int(param))] = _cluster_entry(entry, good)
        elif suite == "latency":
            for key in ("p50_us", "p99_us", "p99.9_us", "max_us", "achieved_rate"):
                entry[key] = summary([r[key] for r in good])
            entry["samples"] = sum(r["samples"] for r in good)
            entry["lost"] = sum(r["lost"] for r in good)
            out["latency"].setdefault(system, {})[str(int(param))] = entry
        elif suite == "faults":
            kills = [r["after_kill"] for r in good if r["after_kill"].get("n")]
            stops = [r["after_stop"] for r in good if r["after_stop"].get("n")]
            entry["heartbeat_s"] = param
            entry["after_kill_p50_ms"] = summary([k["p50_ms"] for k in kills])
            entry["after_kill_max_ms"] = summary([k["max_ms"] for k in kills])
            entry["after_stop_p50_s"] = summary([k["p50_ms"] / 1000 for k in stops])
            entry["after_stop_max_s"] = summary([k["max_ms"] / 1000 for k in stops])
            entry["after_stop_heartbeats"] = summary(
                [r["after_stop_heartbeats"] for r in good if r["after_stop_heartbeats"]]
            )
            entry["repetitions"] = len(good)
            for key in ("sigkilled", "sigstopped", "leaves_seen", "ghosts", "duplicate_leaves"):
                entry[key] = sum(r[key] for r in good)
            out["faults"][system] = entry
        else:
            for key in (
                "register_seconds",
                "registrations_per_s",
                "rss_per_client_kb",
                "idle_cpu_percent",
                "us_per_heartbeat",
                "sessions_after",
            ):
                # Redis and NATS idle clients send no heartbeat to cost anything.
                if all(key in r for r in good):
                    entry[key] = summary([r[key] for r in good])
            entry["refused"] = sum(r["refused"] for r in good)
            out["scale"].setdefault(str(int(param)), {})[system] = entry
    ratios = out["ratios"]
    ratios.update(cluster_ratios(runs))
    for (suite, system, param), results in runs.items():
        if suite == "fanout" and system == "zchat":
            key = str(int(param))
            for other in ("pyzmq", *PEERS):
                reference = runs.get(("fanout", other, param))
                if reference:
                    ratios.setdefault(f"fanout_vs_{other}", {})[key] = per_rep_ratio(
                        results, reference, "deliveries_per_s"
                    )
        if suite == "fanout" and system == "zchat-pure":
            key = str(int(param))
            for name, top, bottom in (
                ("fanout_pure_vs_pyzmq", results, runs.get(("fanout", "pyzmq", param))),
                ("fanout_compiled_vs_pure", runs.get(("fanout", "zchat", param)), results),
            ):
                if top and bottom:
                    ratios.setdefault(name, {})[key] = per_rep_ratio(
                        top, bottom, "deliveries_per_s"
                    )
        if suite == "latency" and system == "zchat":
            reference = runs.get(("latency", "echo", param))
            if reference:
                for pct in ("p50_us", "p99_us", "p99.9_us"):
                    ratios.setdefault(f"latency_{pct}_vs_echo", {})[str(int(param))] = (
                        per_rep_ratio(results, reference, pct)
                    )
    return out


def _cluster_entry(entry: dict[str, Any], good: list[dict[str, Any]]) -> dict[str, Any]:
    for key in ("msgs_per_s", "deliveries_per_s", "p50_ms", "p99_ms"):
        if good and all(key in r for r in good):
            entry[key] = summary([r[key] for r in good])
    for key in ("cpu_per_s", "cpu_us_per_msg"):
        cpu = [r[key] for r in good if key in r]
        if cpu:
            entry[key] = {name: summary([c[name] for c in cpu]) for name in cpu[0]}
    if good and "received" in good[0]:
        entry["received"] = sum(r["received"] for r in good)
        entry["sent"] = sum(r["sent"] for r in good)
        entry["slow_windows"] = [r.get("slow_windows") for r in good]
    if good and "delivered" in good[0]:
        entry["delivered"] = sum(r["delivered"] for r in good)
        entry["expected"] = sum(r["expected"] for r in good)
    return entry


def cluster_ratios(
    runs: dict[tuple[str, str, float], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Cluster against one node and one broker, repetition by repetition."""
    ratios: dict[str, Any] = {}
    one = runs.get(("cluster", "nodes", 1))
    single = runs.get(("cluster", "single", 1))
    for (suite, system, param), results in runs.items():
        if suite != "cluster" or system != "nodes":
            continue
        if one:
            ratios.setdefault("cluster_inbound_vs_1_node", {})[str(int(param))] = per_rep_ratio(
                results, one, "msgs_per_s"
            )
        if single:
            ratios.setdefault("cluster_inbound_vs_single", {})[str(int(param))] = per_rep_ratio(
                results, single, "msgs_per_s"
            )
    rtt = runs.get(("cluster", "rtt cluster", RTT_RATE))
    reference = runs.get(("cluster", "rtt single", RTT_RATE))
    if rtt and reference:
        for pct in ("p50_ms", "p99_ms"):
            ratios.setdefault(f"cluster_rtt_{pct}_vs_single", {})[str(int(RTT_RATE))] = (
                per_rep_ratio(rtt, reference, pct)
            )
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, quick 1)")
    parser.add_argument(
        "--only",
        action="append",
        choices=("fanout", "latency", "scale", "faults", "cluster"),
        help="run only this suite (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="JSON results file")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write plots and the table into docs/ (default: yes unless --quick or --only)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    reps = args.reps or plan.reps
    if reps < 1:
        parser.error("--reps must be at least 1")
    suites = set(args.only or ("fanout", "latency", "scale", "faults", "cluster"))
    if args.docs and args.only:
        # The docs' results block is written whole from one run's results.
        parser.error("--docs needs every suite: it rewrites the whole results block")
    # latest.json holds the full run the docs' table was written from: a partial run
    # goes elsewhere.
    default = "quick.json" if args.quick else "latest.json"
    if args.only and not args.quick:
        default = "only-" + "-".join(sorted(suites)) + ".json"
    out = args.out or RESULTS / default
    docs = (not args.quick and not args.only) if args.docs is None else args.docs
    console = Console(stderr=True)
    notes: list[str] = []
    todo = tasks(plan, suites, notes)
    for note in notes:
        console.print(f"[yellow]{note}")
    command = "python -m benchmarks" + (" " + shlex.join(argv) if argv else "")
    started = time.time()
    info = machine()
    runs = measure(todo, reps, console)
    results: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "reps": reps,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": time.time() - started,
        "machine": info,
        "zchat_path": native.describe(),
        "peers": peers.versions(),
        "notes": notes,
        "idle": plan.idle,
        **summarise(runs),
        "raw": [{"suite": s, "system": n, "param": p, "runs": r} for (s, n, p), r in runs.items()],
    }
    results["targets"] = report.targets(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    report.print_summary(results, console)
    console.print(f"results: {out}")
    if docs:
        for written in report.write_docs(results, ROOT / "docs"):
            console.print(f"wrote {written}")
    failed = sum(1 for r in results["raw"] for x in r["runs"] if "error" in x)
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
