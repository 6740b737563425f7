"""Turn results into the targets' verdicts, a console summary, plots and a Markdown table."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BEGIN = "<!-- results:begin (written by python -m benchmarks) -->"
END = "<!-- results:end -->"
SYSTEMS = ("pyzmq", "zchat", "zchat-pure", "threaded", "redis", "nats")
LABELS = {
    "pyzmq": "raw pyzmq PUB (ceiling)",
    "zchat": "zchat broker",
    "zchat-pure": "zchat broker, pure Python (`ZCHAT_PURE=1`)",
    "threaded": "threaded socket server",
    "redis": "Redis pub/sub",
    "nats": "NATS",
    "echo": "plain pyzmq echo",
}


def _median(node: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, dict):
        value = node.get("median")
        return float(value) if isinstance(value, int | float) else None
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issues 6 and 14 with its measured median and whether it is met."""
    r = results.get("ratios", {})
    sc = results.get("scale", {})
    dead = results.get("faults", {}).get("dead", {})
    kill_ms = _median(dead, "after_kill_max_ms")
    at10k = "at 10,000 clients"
    checks = [
        ("fan-out at 10 subscribers / raw pyzmq", ">=", 0.7, _median(r, "fanout_vs_pyzmq", "10")),
        ("fan-out at 10 subscribers / Redis", ">=", 3.0, _median(r, "fanout_vs_redis", "10")),
        ("fan-out at 10 subscribers / NATS", ">=", 2.0, _median(r, "fanout_vs_nats", "10")),
        (
            "p99 RTT at 1000 msg/s / pyzmq echo",
            "<=",
            1.5,
            _median(r, "latency_p99_us_vs_echo", "1000"),
        ),
        (
            f"idle CPU {at10k}, default heartbeat (5 s), % of a core",
            "<",
            10.0,
            _median(sc, "10000", "heartbeat 5s", "idle_cpu_percent"),
        ),
        (
            f"RSS per client {at10k}, KB",
            "<",
            50.0,
            _median(sc, "10000", "heartbeat 5s", "rss_per_client_kb"),
        ),
        (
            "leave after kill -9 (slowest of a run), s",
            "<",
            1.0,
            None if kill_ms is None else kill_ms / 1000,
        ),
        (
            "leave after SIGSTOP (slowest of a run), heartbeats",
            "<=",
            3.0,
            _median(dead, "after_stop_heartbeats"),
        ),
        (
            "cluster: 2 nodes accept / 1 node (broker-bound)",
            ">=",
            1.6,
            _median(r, "cluster_inbound_vs_1_node", "2"),
        ),
        (
            "cluster: p99 RTT at 1000 msg/s / single broker",
            "<=",
            2.0,
            _median(r, "cluster_rtt_p99_ms_vs_single", "1000"),
        ),
    ]
    found = []
    for name, op, goal, value in checks:
        met = None
        if value is not None:
            met = value >= goal if op == ">=" else value <= goal if op == "<=" else value < goal
        found.append({"target": name, "goal": f"{op} {goal:g}", "median": value, "met": met})
    return found


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _span(node: Any, scale: float = 1.0, digits: int = 2) -> str:
    """median (min-max) of a summary."""
    if not isinstance(node, dict) or node.get("median") is None:
        return "-"
    med, lo, hi = (node[k] * scale for k in ("median", "min", "max"))
    if node["min"] == node["max"]:
        return _fmt(med, digits)
    return f"{_fmt(med, digits)} ({_fmt(lo, digits)}-{_fmt(hi, digits)})"


def print_summary(results: dict[str, Any], console: Console) -> None:
    table = Table(title="targets (medians of per-repetition ratios)")
    for column in ("target", "goal", "median", "met"):
        table.add_column(column)
    for t in results["targets"]:
        met = {True: "[green]yes", False: "[red]no", None: "-"}[t["met"]]
        table.add_row(t["target"], t["goal"], _fmt(t["median"]), met)
    console.print(table)
    if not results["fanout"]:
        return  # a run of other suites (--only)
    fan = Table(title="fan-out deliveries/s")
    fan.add_column("system")
    subs = sorted({int(k) for v in results["fanout"].values() for k in v})
    for n in subs:
        fan.add_column(f"{n} sub")
    for system in SYSTEMS:
        if system in results["fanout"]:
            row = results["fanout"][system]
            fan.add_row(
                system, *(_span(row.get(str(n), {}).get("deliveries_per_s"), 1, 0) for n in subs)
            )
    console.print(fan)


# ---------------------------------------------------------------- docs


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        BEGIN,
        "",
        f"Measured {results['started']} with `{results['command']}` "
        f"({results['reps']} interleaved repetitions, {results['seconds']:.0f} s). "
        "Cells are median (min-max) over repetitions; ratios are taken within each "
        "repetition, then summarised.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
        f"pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, msgpack {m['msgpack']}; "
        f"load average {m['load_before']:.2f} at the start (the machine is shared).",
    ]
    if "zchat_path" in results:
        lines.append(f"zchat: {results['zchat_path']}.")
    versions = results.get("peers", {})
    if versions:
        lines.append("Peers: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".")
    for note in results.get("notes", []):
        lines.append(f"\nNote: {note}.")
    lines += ["", "### Targets", "", "| target | goal | median | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['goal']} | {_fmt(t['median'])} | {met} |")
    fan = results.get("fanout", {})
    if fan:
        subs = sorted({int(k) for v in fan.values() for k in v})
        lines += [
            "",
            "### Fan-out: deliveries per second",
            "",
            "| system | " + " | ".join(f"{n} subscriber{'s' * (n > 1)}" for n in subs) + " |",
            "|---|" + "---|" * len(subs),
        ]
        for system in SYSTEMS:
            if system in fan:
                cells = [
                    _span(fan[system].get(str(n), {}).get("deliveries_per_s"), 1, 0) for n in subs
                ]
                lines.append(f"| {LABELS[system]} | " + " | ".join(cells) + " |")
        ratios = results.get("ratios", {})
        for other in ("pyzmq", "threaded", "redis", "nats"):
            row = ratios.get(f"fanout_vs_{other}")
            if row:
                cells = [_span(row.get(str(n))) for n in subs]
                lines.append(f"| *zchat / {other}* | " + " | ".join(cells) + " |")
        for key, label in (
            ("fanout_pure_vs_pyzmq", "zchat pure Python / pyzmq"),
            ("fanout_compiled_vs_pure", "zchat compiled / pure Python"),
        ):
            row = ratios.get(key)
            if row:
                cells = [_span(row.get(str(n))) for n in subs]
                lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Server CPU per delivered message, microseconds (the broker, the raw PUB or "
            "the peer's server process, all threads):",
            "",
            "| system | " + " | ".join(str(n) for n in subs) + " |",
            "|---|" + "---|" * len(subs),
        ]
        for system in SYSTEMS:
            if system in fan:
                cells = [
                    _span(fan[system].get(str(n), {}).get("server_us_per_delivery")) for n in subs
                ]
                lines.append(f"| {LABELS[system]} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "CPU per message sent, microseconds, by process (all threads), at 10 subscribers: "
            "on two cores the sum is what bounds a run.",
            "",
            "| system | server | sender | subscribers' processes | total |",
            "|---|---|---|---|---|",
        ]
        for system in SYSTEMS:
            roles = fan.get(system, {}).get("10", {}).get("cpu_us_per_message")
            if roles:
                meds = {k: v["median"] for k, v in roles.items()}
                lines.append(
                    f"| {LABELS[system]} | {_fmt(meds.get('server'), 1)} | "
                    f"{_fmt(meds.get('source'), 1) if 'source' in meds else '(same process)'} | "
                    f"{_fmt(meds.get('receivers'), 1)} | {_fmt(sum(meds.values()), 1)} |"
                )
        dropped = {s: sum(v.get("dropped", 0) for v in fan[s].values()) for s in fan}
        lines.append(
            "\nDropped (not counted): " + ", ".join(f"{s} {d}" for s, d in dropped.items()) + "."
        )
        lines += ["", "![fan-out throughput](bench-fanout.svg)"]
    lat = results.get("latency", {})
    if lat:
        rates = sorted({int(k) for v in lat.values() for k in v})
        lines += [
            "",
            f"### Round trip, say to own msg, {results.get('idle', 100)} idle clients connected, "
            "microseconds",
            "",
            "| system | rate/s | p50 | p99 | p99.9 | samples |",
            "|---|---|---|---|---|---|",
        ]
        for rate in rates:
            for system in ("echo", "zchat"):
                e = lat.get(system, {}).get(str(rate))
                if e:
                    lines.append(
                        f"| {LABELS[system]} | {rate:,} | {_span(e['p50_us'], 1, 0)} | "
                        f"{_span(e['p99_us'], 1, 0)} | {_span(e['p99.9_us'], 1, 0)} | "
                        f"{e['samples']:,} |"
                    )
            ratios = [
                results["ratios"].get(f"latency_{pct}_vs_echo", {}).get(str(rate))
                for pct in ("p50_us", "p99_us", "p99.9_us")
            ]
            if any(ratios):
                lines.append(
                    f"| *zchat / echo* | {rate:,} | " + " | ".join(map(_span, ratios)) + " | |"
                )
        lines += ["", "![latency percentiles](bench-latency.svg)"]
    sc = results.get("scale", {})
    if sc:
        lines += [
            "",
            "### Scale: idle clients (zchat's ping once per heartbeat and are answered)",
            "",
            "| clients | zchat heartbeat, or peer | time to register all, s | registrations/s "
            "| server RSS per client, KB | server CPU at idle, % of a core "
            "| server CPU per ping and pong, us | sessions after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for clients in sorted(sc, key=int):
            for beat, e in sorted(sc[clients].items()):
                lines.append(
                    f"| {int(clients):,} | {beat.removeprefix('heartbeat ')} | "
                    f"{_span(e['register_seconds'])} | "
                    f"{_span(e['registrations_per_s'], 1, 0)} | "
                    f"{_span(e['rss_per_client_kb'], 1, 1)} | "
                    f"{_span(e['idle_cpu_percent'], 1, 1)} | "
                    f"{_span(e['us_per_heartbeat'], 1, 1) if 'us_per_heartbeat' in e else '-'} | "
                    f"{_span(e['sessions_after'], 1, 0)} |"
                )
    dead = results.get("faults", {}).get("dead")
    if dead and dead.get("repetitions"):
        reps = dead["repetitions"]
        lines += [
            "",
            f"### Leaving: clients killed (SIGKILL) and frozen (SIGSTOP) at once, "
            f"heartbeat {dead['heartbeat_s']:g} s (the default)",
            "",
            "Clients per repetition; cells are the median and the slowest client of each "
            "repetition, summarised over them; `python -m benchmarks.faults dead` (short sizes).",
            "",
            "| clients | leave after, median | leave after, slowest | slowest, heartbeats |",
            "|---|---|---|---|",
            f"| {dead['sigkilled'] // reps:,} killed with SIGKILL | "
            f"{_span(dead['after_kill_p50_ms'], 1, 0)} ms | "
            f"{_span(dead['after_kill_max_ms'], 1, 0)} ms | - |",
            f"| {dead['sigstopped'] // reps:,} frozen with SIGSTOP | "
            f"{_span(dead['after_stop_p50_s'])} s | {_span(dead['after_stop_max_s'])} s | "
            f"{_span(dead['after_stop_heartbeats'])} |",
            "",
            f"Leaves seen {dead['leaves_seen']:,} of {dead['sigkilled'] + dead['sigstopped']:,}; "
            f"sessions left behind {dead['ghosts']}; duplicate leaves {dead['duplicate_leaves']} "
            "(all repetitions).",
        ]
    lines += cluster_markdown(results)
    lines += ["", END]
    return "\n".join(lines)


def cluster_markdown(results: dict[str, Any]) -> list[str]:
    """The cluster suite's table (benchmarks/cluster.py, docs/cluster.md)."""
    cl = results.get("cluster", {})
    if not cl:
        return []
    ratios = results.get("ratios", {})
    lines = [
        "",
        "### Cluster mode: nodes on one Redis beside one broker",
        "",
        "| measurement | value | CPU per process (median): cores, or us per message |",
        "|---|---|---|",
    ]

    def cpu(entry: dict[str, Any]) -> str:
        shares = entry.get("cpu_per_s", {})
        return ", ".join(f"{name} {_fmt(v['median'])}" for name, v in shares.items()) or "-"

    def per_message(entry: dict[str, Any]) -> str:
        # The round trip's processes: microseconds of CPU per message, not cores.
        used = entry.get("cpu_us_per_msg", {})
        return ", ".join(f"{name} {v['median']:.0f} us/msg" for name, v in used.items()) or "-"

    single = cl.get("single", {}).get("1")
    if single:
        lines.append(
            f"| inbound msg/s, 1 broker without Redis | {_span(single.get('msgs_per_s'), 1, 0)} "
            f"| {cpu(single)} |"
        )
    for nodes, entry in sorted(cl.get("nodes", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| inbound msg/s, {nodes} node(s) | {_span(entry.get('msgs_per_s'), 1, 0)} "
            f"| {cpu(entry)} |"
        )
    for nodes, ratio in sorted(ratios.get("cluster_inbound_vs_1_node", {}).items()):
        if nodes != "1":
            lines.append(f"| *{nodes} nodes / 1 node* | {_span(ratio)} | |")
    for subs, entry in sorted(cl.get("deliveries", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| deliveries/s, {subs} subscribers over 3 nodes "
            f"| {_span(entry.get('deliveries_per_s'), 1, 0)} "
            f"({entry.get('delivered', 0):,}/{entry.get('expected', 0):,} delivered) | |"
        )
    for system, what in (("rtt single", "single broker"), ("rtt cluster", "cluster, A to B")):
        for rate, entry in cl.get(system, {}).items():
            lines.append(
                f"| round trip at {int(rate):,} msg/s, {what}, ms | p50 "
                f"{_span(entry.get('p50_ms'))}, p99 {_span(entry.get('p99_ms'))} "
                f"({entry.get('received', 0):,}/{entry.get('sent', 0):,} received; "
                f"slow windows per run: {_windows(entry)}) | {per_message(entry)} |"
            )
    for pct in ("p50_ms", "p99_ms"):
        for rate, ratio in ratios.get(f"cluster_rtt_{pct}_vs_single", {}).items():
            lines.append(
                f"| *{pct.removesuffix('_ms')} cluster / single, {int(rate):,} msg/s* "
                f"| {_span(ratio)} | |"
            )
    return lines


def _windows(entry: dict[str, Any]) -> str:
    """The machine's slow windows the probe saw, run by run (benchmarks.cluster.stall_probe)."""
    seen = entry.get("slow_windows") or []
    return ", ".join("?" if n is None else str(n) for n in seen) or "-"


def plots(results: dict[str, Any], docs: Path) -> list[Path]:
    """SVG plots, if matplotlib is installed (the ``bench`` extra)."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    written = []
    fan = results.get("fanout", {})
    if fan:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for system in SYSTEMS:
            if system not in fan:
                continue
            subs = sorted(int(k) for k in fan[system])
            med = [fan[system][str(n)]["deliveries_per_s"]["median"] for n in subs]
            lo = [
                m - fan[system][str(n)]["deliveries_per_s"]["min"]
                for n, m in zip(subs, med, strict=True)
            ]
            hi = [
                fan[system][str(n)]["deliveries_per_s"]["max"] - m
                for n, m in zip(subs, med, strict=True)
            ]
            ax.errorbar(subs, med, yerr=[lo, hi], marker="o", capsize=3, label=LABELS[system])
        ax.set_xscale("log")
        ax.set_xlabel("subscribers in the room")
        ax.set_ylabel("deliveries per second")
        ax.set_title("Fan-out throughput (median, min-max)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = docs / "bench-fanout.svg"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    lat = results.get("latency", {})
    if lat:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        rates = sorted({int(k) for v in lat.values() for k in v})
        pcts = ("p50_us", "p99_us", "p99.9_us")
        width = 0.8 / (2 * len(rates))
        for j, system in enumerate(("echo", "zchat")):
            for k, rate in enumerate(rates):
                e = lat.get(system, {}).get(str(rate))
                if not e:
                    continue
                xs = [i + (2 * k + j) * width - 0.4 + width / 2 for i in range(len(pcts))]
                ax.bar(
                    xs,
                    [e[p]["median"] for p in pcts],
                    width,
                    label=f"{LABELS[system]}, {rate:,}/s",
                    hatch="//" if system == "zchat" else None,
                    alpha=0.85,
                )
        ax.set_xticks(range(len(pcts)), ["p50", "p99", "p99.9"])
        ax.set_yscale("log")
        ax.set_ylabel("round trip, microseconds")
        ax.set_title("say to own msg, open loop, 100 idle clients (median of reps)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = docs / "bench-latency.svg"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def write_docs(results: dict[str, Any], docs: Path) -> list[Path]:
    """Plots, and the generated block of docs/benchmarks.md (the prose around it stays)."""
    docs.mkdir(exist_ok=True)
    written = plots(results, docs)
    page = docs / "benchmarks.md"
    block = markdown(results)
    text = page.read_text() if page.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(text)
    written.append(page)
    return written
