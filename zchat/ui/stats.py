"""``zchat stats``: a broker's counters as a table or one line of JSON, and the watch loop.

Every string in a reply came from the broker: shown literally, made harmless.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zchat.client.probe import Probe
from zchat.ui.render import clean

#: Scalar counters in the order the table shows them, with their labels.
SCALARS: tuple[tuple[str, str], ...] = (
    ("sessions", "sessions"),
    ("rooms", "rooms (occupied)"),
    ("envelopes_in", "envelopes in"),
    ("messages", "messages"),
    ("published", "events published"),
    ("replies", "replies"),
    ("registrations", "registrations"),
    ("duplicates", "duplicates dropped"),
    ("health_checks", "health checks"),
    ("handshakes_refused", "handshakes refused"),
)
#: Labelled counters: snapshot key, table heading.
GROUPS: tuple[tuple[str, str], ...] = (
    ("drops", "drops"),
    ("errors", "errors"),
    ("leaves", "leaves"),
)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _group(stats: Mapping[str, Any], key: str) -> dict[str, int]:
    raw = stats.get(key)
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): _int(v) for k, v in raw.items()}


def rate_limited(stats: Mapping[str, Any]) -> int:
    """Envelopes refused by rate limiting (answered with an error or silently dropped)."""
    return _group(stats, "errors").get("rate_limited", 0)


def stats_table(stats: Mapping[str, Any], *, title: str = "zchat broker") -> Table:
    """A table of a ``stats`` reply; every broker-supplied string is shown literally."""
    table = Table(title=Text(clean(title)), show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    epoch = stats.get("epoch")
    if isinstance(epoch, str):
        table.add_row("epoch", Text(clean(epoch)))
    for key, label in SCALARS:
        table.add_row(label, f"{_int(stats.get(key)):,}")
    table.add_row("rate-limited", f"{rate_limited(stats):,}")
    for key, heading in GROUPS:
        group = _group(stats, key)
        if not group:
            table.add_row(f"{heading}", "0")
            continue
        table.add_section()
        for name, count in sorted(group.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(Text(clean(f"{heading}: {name}")), f"{count:,}")
    return table


def stats_json(stats: Mapping[str, Any]) -> str:
    """The reply without protocol fields, as one line of JSON for scripts."""
    body = {k: v for k, v in stats.items() if k not in ("type", "re")}
    body["rate_limited"] = rate_limited(stats)
    return json.dumps(body, sort_keys=True, default=str)


def run_stats(probe: Probe, *, title: str, json_mode: bool, watch: bool, interval: float) -> None:
    """Print one reading (table or JSON), or refresh until Ctrl-C with ``watch``.

    Raises :class:`NoAnswer` when the broker does not answer.
    """
    console = Console()
    live: Live | None = None
    try:
        while True:
            reading = probe.ask()
            if json_mode:
                print(stats_json(reading), flush=True)
            elif watch and console.is_terminal:
                table = stats_table(reading, title=title)
                if live is None:
                    live = Live(table, console=console, auto_refresh=False)
                    live.start()
                live.update(table, refresh=True)
            else:
                console.print(stats_table(reading, title=title))
            if not watch:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --watch ends
    finally:
        if live is not None:
            live.stop()
