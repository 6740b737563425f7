"""Prometheus metrics for ``--metrics-port``: read from :meth:`BrokerCore.snapshot` at
scrape time, so ``zchat stats`` and ``/metrics`` never disagree and nothing is counted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_HELP: Mapping[str, str] = {
    "envelopes_in": "Envelopes received on the ROUTER, valid or not.",
    "messages": "Chat messages accepted (say and dm).",
    "published": "Room events published on the PUB.",
    "replies": "Direct replies sent over the ROUTER.",
    "registrations": "Successful hello registrations.",
    "duplicates": "Resent messages dropped as duplicates.",
    "handshakes_refused": "CURVE handshakes the ZAP handler refused (with --secret-key only).",
    "health_checks": "Unregistered pings (zchat ping, health checks): answered, not errors.",
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
            yield GaugeMetricFamily(f"zchat_{key}", doc, value=snap.get(key, 0))
        for key, doc in _HELP.items():
            yield CounterMetricFamily(f"zchat_{key}", doc, value=snap.get(key, 0))
        for key, (label, doc) in _LABELLED.items():
            family = CounterMetricFamily(f"zchat_{key}", doc, labels=[label])
            for name, count in sorted(snap.get(key, {}).items()):
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
