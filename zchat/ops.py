"""Operations: asking a broker for its counters, Prometheus metrics, JSON logs.

``zchat stats`` talks to a running broker with the same ``stats`` envelope a
client can send (answered even before registration); ``--metrics-port`` reads
the very same :meth:`BrokerCore.snapshot`, so the table, the JSON and the
Prometheus series never disagree and nothing is counted twice.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import zmq
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rich.table import Table
from rich.text import Text

from zchat.client import CurveKeys
from zchat.protocol import ProtocolError, pack, unpack
from zchat.text import clean

# ---------------------------------------------------------------- stats query


class NoAnswer(Exception):
    """No broker answered the ``stats`` request in time."""


class StatsProbe:
    """A DEALER that asks one broker for ``stats``; replies to older asks are skipped."""

    def __init__(
        self,
        router: str,
        *,
        timeout: float = 2.0,
        context: zmq.Context[Any] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.router = router
        self.timeout = timeout
        self._own_context = context is None
        self._context: zmq.Context[Any] = context or zmq.Context()
        self._sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # Nothing queues for an absent broker, so a late answer cannot pile up.
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        if curve is not None:
            self._sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
            self._sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            self._sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
        self._sock.connect(router)
        self._prefix = secrets.token_hex(4)
        self._n = 0

    def ask(self) -> dict[str, Any]:
        """One ``stats`` reply, or :class:`NoAnswer` after ``timeout`` seconds."""
        self._n += 1
        ref = f"{self._prefix}-{self._n}"
        request = pack({"type": "stats", "id": ref})
        deadline = time.monotonic() + self.timeout
        sent = False
        while (left := deadline - time.monotonic()) > 0:
            if not sent:
                try:
                    self._sock.send(request, zmq.NOBLOCK)
                    sent = True
                except zmq.Again:
                    pass  # not connected yet (IMMEDIATE): try again shortly
            if self._sock.poll(int(min(left, 0.05 if not sent else left) * 1000) + 1):
                try:
                    reply = unpack(self._sock.recv())
                except ProtocolError:
                    continue
                if reply.get("re") == ref and reply.get("type") == "stats":
                    return reply
        raise NoAnswer(f"no broker answered at {self.router} within {self.timeout:g}s")

    def close(self) -> None:
        self._sock.close(0)
        if self._own_context:
            self._context.term()


# ---------------------------------------------------------------- rendering

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


# ---------------------------------------------------------------- Prometheus

_HELP: Mapping[str, str] = {
    "envelopes_in": "Envelopes received on the ROUTER, valid or not.",
    "messages": "Chat messages accepted (say and dm).",
    "published": "Room events published on the PUB.",
    "replies": "Direct replies sent over the ROUTER.",
    "registrations": "Successful hello registrations.",
    "duplicates": "Resent messages dropped as duplicates.",
}
_LABELLED: Mapping[str, tuple[str, str]] = {
    "errors": ("code", "Error replies (and refusals) by code."),
    "drops": ("reason", "Envelopes or replies dropped by the broker, by reason."),
    "leaves": ("reason", "Sessions that ended, by leave reason."),
}


class SnapshotCollector(Collector):
    """Prometheus series read from ``snapshot()`` at scrape time: no second bookkeeping."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def _read(self) -> Mapping[str, Any]:
        # The broker thread may grow a table while we copy it; a retry is enough.
        for _ in range(5):
            try:
                return self._snapshot()
            except RuntimeError:
                continue
        return {}

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        for key, doc in (("sessions", "Registered sessions."), ("rooms", "Occupied rooms.")):
            yield GaugeMetricFamily(f"zchat_{key}", doc, value=_int(snap.get(key)))
        for key, doc in _HELP.items():
            yield CounterMetricFamily(f"zchat_{key}", doc, value=_int(snap.get(key)))
        for key, (label, doc) in _LABELLED.items():
            family = CounterMetricFamily(f"zchat_{key}", doc, labels=[label])
            for name, count in sorted(_group(snap, key).items()):
                family.add_metric([name], count)
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


#: Batch latencies span tens of microseconds (idle) to tens of milliseconds (floods).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class Metrics:
    """A registry of its own (so several brokers can live in one process, as in tests)."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))
        self.batch_seconds = Histogram(
            "zchat_batch_seconds",
            "Time from taking a batch of envelopes off the ROUTER until all its outputs are sent.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_envelopes = Histogram(
            "zchat_batch_envelopes",
            "Envelopes handled per batch.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self._server: Any = None

    def observe_batch(self, envelopes: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)
        self.batch_envelopes.observe(envelopes)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on a daemon thread; returns the bound port (0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound: int = server.server_port
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---------------------------------------------------------------- JSON logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, message (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii keeps hostile text (escape sequences in nicks) inert in a terminal.
        return json.dumps(entry, ensure_ascii=True, default=str)
