"""Operations tooling: ``zchat stats``, Prometheus metrics, JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import sys
import urllib.request
from collections.abc import Callable

import pytest
from conftest import ANY_PORT, BrokerThread, ZchatProcess
from helpers import start_broker, until, wait_for, wait_for_line
from prometheus_client import generate_latest
from rich.console import Console

from zchat import Client, Message
from zchat.broker.adapter import DEFAULT_PUB, DEFAULT_ROUTER
from zchat.broker.core import BrokerCore
from zchat.broker.metrics import Metrics
from zchat.broker.serve import beyond_loopback
from zchat.client.probe import Probe
from zchat.errors import NoAnswer
from zchat.logs import JsonFormatter
from zchat.protocol import pack
from zchat.ui.stats import stats_json, stats_table

HOSTILE = "\x1b[31mred\x1b]0;title\x07"


def render(table: object) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False)
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


# ---------------------------------------------------------------- rendering


def test_table_shows_every_counter_and_keeps_broker_strings_inert() -> None:
    core = BrokerCore()
    core.receive(b"p1", pack({"type": "hello", "v": 1, "nick": "ann"}), 1.0)
    core.receive(b"p1", pack({"type": "say", "room": "lobby", "text": "hi"}), 1.0)
    core.receive(b"p2", b"\xc1garbage", 1.0)
    snap = {"type": "stats", **core.snapshot()}
    snap["drops"] = {HOSTILE: 3}
    out = render(stats_table(snap))
    for label in ("sessions", "rooms", "envelopes in", "messages", "events published"):
        assert label in out
    assert "errors: bad_envelope" in out
    assert "leaves" in out
    assert "rate-limited" in out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "^[[31mred" in out


def test_stats_json_is_one_line_with_rate_limited() -> None:
    snap = {"type": "stats", "re": "x", "sessions": 2, "errors": {"rate_limited": 7}}
    line = stats_json(snap)
    assert "\n" not in line
    body = json.loads(line)
    assert body["rate_limited"] == 7
    assert body["sessions"] == 2
    assert "type" not in body
    assert "re" not in body


def test_json_formatter_writes_one_object_per_record() -> None:
    record = logging.LogRecord(
        "zchat.broker", logging.WARNING, __file__, 1, "%s joined", (HOSTILE,), None
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "\x1b" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "zchat.broker"
    assert entry["message"] == f"{HOSTILE} joined"
    assert entry["ts"].endswith("Z")


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exc"]


def test_collector_reads_the_core_snapshot() -> None:
    core = BrokerCore()
    metrics = Metrics(core.snapshot)
    core.receive(b"p1", pack({"type": "hello", "v": 1, "nick": "ann"}), 1.0)
    core.receive(b"p1", pack({"type": "say", "room": "lobby", "text": "hi"}), 1.0)
    core.receive(b"p2", pack({"type": "say", "room": "lobby", "text": "hi"}), 1.0)
    metrics.observe_batch(3, 0.0004)
    text = generate_latest(metrics.registry).decode()
    assert "zchat_sessions 1.0" in text
    assert "zchat_messages_total 1.0" in text
    assert 'zchat_errors_total{code="not_registered"} 1.0' in text
    assert "zchat_health_checks_total 0.0" in text
    core.receive(b"p3", pack({"type": "ping"}), 1.0)
    text = generate_latest(metrics.registry).decode()
    assert "zchat_health_checks_total 1.0" in text
    assert 'zchat_errors_total{code="not_registered"} 1.0' in text, "a health check is no error"
    assert "zchat_batch_seconds_count 1.0" in text
    assert 'zchat_batch_seconds_bucket{le="0.0005"} 1.0' in text


def test_collector_survives_a_table_changing_under_it() -> None:
    calls = 0

    def flaky() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return {"sessions": 4}

    text = generate_latest(Metrics(flaky).registry).decode()
    assert "zchat_sessions 4.0" in text


# ---------------------------------------------------------------- against brokers


def test_probe_gets_stats_without_registering(broker: BrokerThread) -> None:
    probe = Probe(broker.router, timeout=5.0)
    try:
        first = probe.stats()
        second = probe.ask()  # what ``zchat stats --watch`` calls
        pong = probe.ping()
    finally:
        probe.close()
    assert first["sessions"] == 0
    assert second["envelopes_in"] > first["envelopes_in"]
    assert "type" not in first
    assert "re" not in first
    assert "answered in" in pong.describe()


def test_zchat_ping_is_a_health_check_not_an_error(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    for _ in range(2):
        assert zchat_proc("ping", "--router", broker.router).wait() == 0
    reading = zchat_proc("stats", "--router", broker.router, "--json")
    assert reading.wait() == 0
    snap = reading.expect_json()
    assert snap["health_checks"] == 2
    assert snap["errors"] == {}
    table = zchat_proc("stats", "--router", broker.router)
    assert table.wait() == 0
    table.expect(r"health checks\s+│\s+2 ")


def test_probe_without_broker_raises_no_answer(dead_endpoint: Callable[[], str]) -> None:
    probe = Probe(dead_endpoint(), timeout=0.3)
    try:
        with pytest.raises(NoAnswer, match="no broker answered"):
            probe.stats()
        with pytest.raises(NoAnswer, match="no broker answered"):
            probe.ping()
    finally:
        probe.close()


async def test_stats_command_prints_table_and_json(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    async with Client("ann", router=broker.router, pub=broker.pub) as ann:
        await ann.say("hello")
        table = zchat_proc("stats", "--router", broker.router)
        # Waiting in a thread keeps ann's heartbeat going meanwhile.
        assert await asyncio.to_thread(table.wait) == 0
        table.expect(r"sessions\s+│\s+1 ")
        table.expect(r"messages\s+│\s+1 ")
        as_json = zchat_proc("stats", "--router", broker.router, "--json")
        assert await asyncio.to_thread(as_json.wait) == 0
        reading = as_json.expect_json()
    assert reading["sessions"] == 1
    assert reading["registrations"] == 1
    assert "errors" in reading
    assert "drops" in reading


def test_stats_watch_refreshes_until_ctrl_c(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    watcher = zchat_proc(
        "stats", "--router", broker.router, "--watch", "--json", "--interval", "0.1"
    )
    first = watcher.expect_json()
    second = watcher.expect_json()
    assert second["envelopes_in"] > first["envelopes_in"]
    watcher.signal(signal.SIGINT)
    assert watcher.wait() == 0
    assert not any("Traceback" in line for line in watcher.stderr_lines)


def test_stats_without_broker_fails_clearly(
    zchat_proc: Callable[..., ZchatProcess], dead_endpoint: Callable[[], str]
) -> None:
    router = dead_endpoint()
    proc = zchat_proc("stats", "--router", router, "--timeout", "0.3")
    assert proc.wait() == 3
    line = wait_for_line(proc.stderr_lines, "no broker answered")
    assert line == f"zchat: no broker answered at {router} within 0.3s"
    assert len(proc.stderr_lines) == 1


async def test_broker_serves_metrics_and_json_logs(
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    # Port 0 everywhere: the log says what the broker got.
    server = start_broker(zchat_proc, env={"ZCHAT_METRICS_PORT": "0", "ZCHAT_LOG_FORMAT": "json"})
    broker = server.proc
    line = wait_for_line(broker.stderr_lines, r"metrics at http://127\.0\.0\.1:\d+/metrics")
    url = json.loads(line)["message"].removeprefix("metrics at ")
    scraped: list[str] = []

    def batches_timed() -> bool:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            scraped.append(response.read().decode())
        lines = scraped[-1].splitlines()
        count = next(s for s in lines if s.startswith("zchat_batch_seconds_count"))
        return float(count.split()[1]) >= 1

    async with Client("ann", router=server.router, pub=server.pub) as ann:
        await ann.say("hello")
        await wait_for(ann, Message, nick="ann")
        # At least one drained batch is timed. A batch is timed when its drain ends, after
        # its outputs went out (a loaded machine may drain everything in one): the message
        # can arrive before that, so read again until it is counted.
        await until(batches_timed, what="a timed batch")
    text = scraped[-1]
    assert "zchat_sessions 1.0" in text
    assert "zchat_messages_total 1.0" in text
    assert "zchat_registrations_total 1.0" in text
    assert 'zchat_batch_seconds_bucket{le="+Inf"}' in text
    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0
    wait_for_line(broker.stderr_lines, "broker stopped")
    entries = [json.loads(line) for line in broker.stderr_lines]
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    messages = [e["message"] for e in entries]
    assert any(m.startswith("ann registered") for m in messages)
    assert any("metrics at" in m for m in messages)


def test_metrics_port_in_use_fails_clearly(zchat_proc: Callable[..., ZchatProcess]) -> None:
    holder = Metrics(dict)
    port = holder.serve(0)
    try:
        broker = zchat_proc(
            "broker", "--router", ANY_PORT, "--pub", ANY_PORT, "--metrics-port", str(port)
        )
        assert broker.wait() == 1
    finally:
        holder.close()
    wait_for_line(broker.stderr_lines, f"cannot serve metrics on 127.0.0.1:{port}")
    assert not any("Traceback" in line for line in broker.stderr_lines)


def test_unknown_log_format_is_a_usage_error(zchat_proc: Callable[..., ZchatProcess]) -> None:
    broker = zchat_proc("broker", "--log-format", "xml")
    assert broker.wait() == 2
    wait_for_line(broker.stderr_lines, "unknown log format 'xml'")


# ---------------------------------------------------------------- where it listens


@pytest.mark.parametrize(
    ("endpoint", "exposed"),
    [
        ("tcp://127.0.0.1:5555", False),
        ("tcp://127.0.0.2:5555", False),
        ("tcp://localhost:5555", False),
        ("tcp://[::1]:5555", False),
        ("ipc:///tmp/zchat", False),
        ("tcp://0.0.0.0:5555", True),
        ("tcp://[::]:5555", True),
        ("tcp://192.168.1.4:5555", True),
        ("tcp://eth0:5555", True),
    ],
)
def test_beyond_loopback(endpoint: str, exposed: bool) -> None:
    assert beyond_loopback(endpoint) is exposed


def test_broker_defaults_to_loopback() -> None:
    assert DEFAULT_ROUTER == "tcp://127.0.0.1:5555"
    assert DEFAULT_PUB == "tcp://127.0.0.1:5556"


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_broker_warns_when_listening_beyond_loopback_in_the_clear(
    zchat_proc: Callable[..., ZchatProcess], host: str
) -> None:
    server = start_broker(zchat_proc, endpoints=(f"tcp://{host}:0", f"tcp://{host}:0"))
    warned = any("beyond loopback without CURVE" in line for line in server.proc.stderr_lines)
    # The warning is logged before the "listening" line the helper waited for.
    assert warned is (host == "0.0.0.0")
