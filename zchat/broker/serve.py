"""Run a broker until SIGINT or SIGTERM: configuration in, store, CURVE, metrics and
signals set up, everything closed in order on the way out. The CLI's one call."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zchat.broker.adapter import DEFAULT_PUB, DEFAULT_ROUTER, Broker
from zchat.broker.metrics import Metrics
from zchat.broker.sqlite import SqliteStore
from zchat.broker.state import BrokerConfig
from zchat.broker.store import Store
from zchat.curve import CurveServer
from zchat.errors import SecurityError, StartError

if TYPE_CHECKING:
    from zchat.broker.cluster.node import ClusterNode

log = logging.getLogger("zchat.broker")


def serve(
    config: BrokerConfig,
    *,
    router: str = DEFAULT_ROUTER,
    pub: str = DEFAULT_PUB,
    db: Path | None = None,
    curve: CurveServer | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    cluster: str | None = None,
    node_id: str | None = None,
) -> None:
    """Run a broker in this (main) thread until SIGINT or SIGTERM, then stop cleanly.

    SIGHUP re-reads the CURVE allow list. Raises :class:`StartError` when the
    database, the endpoints or the metrics port cannot be had.
    """
    resources: list[Callable[[], None]] = []
    try:
        store: Store | None = None
        if db is not None:
            try:
                sqlite = SqliteStore(
                    db,
                    config.history,
                    config.nicks_per_key,
                    clock=time.monotonic,
                    max_rooms=config.db_rooms,
                )
            except Exception as exc:
                raise StartError(f"cannot open database {db}: {exc}") from None
            resources.append(sqlite.close)
            store = sqlite
        node = None
        if cluster is not None:
            node = join_cluster(cluster, config, node_id)
            store = node.store
        try:
            server = Broker(config, router=router, pub=pub, store=store, curve=curve, cluster=node)
        except Exception as exc:
            raise StartError(f"cannot start the broker: {exc}") from None
        resources.append(server.close)
        exposed = [e for e in (server.router_endpoint, server.pub_endpoint) if beyond_loopback(e)]
        if exposed and curve is None:
            log.warning(
                "listening beyond loopback without CURVE (%s): anyone who can reach it"
                " can read and send; add --secret-key (and --allow), or bind 127.0.0.1",
                ", ".join(exposed),
            )
        auth = server.auth
        if auth is not None:
            server.core.extra_stats = lambda: {"handshakes_refused": auth.refused}
        if curve is not None:
            log.info(
                "CURVE on, public key %s; %s",
                curve.public.decode(),
                f"allow list {curve.allow}" if curve.allow else "any client key (open enrolment)",
            )
        if metrics_port is not None:
            metrics = Metrics(server.core.snapshot)
            try:
                bound = metrics.serve(metrics_port, metrics_host)
            except OSError as exc:
                raise StartError(
                    f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
                ) from None
            resources.append(metrics.close)
            server.on_batch = metrics.observe_batch
            log.info("metrics at http://%s:%d/metrics", metrics_host, bound)
        _handle_signals(server)
        server.run()
    finally:
        # Last opened, first closed: the broker says its farewells before the store goes.
        for close in reversed(resources):
            close()
    log.info("broker stopped")


def beyond_loopback(endpoint: str) -> bool:
    """Whether a bound endpoint can be reached from another machine (ipc and
    inproc cannot; a tcp host other than a loopback address can)."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def join_cluster(url: str, config: BrokerConfig, node_id: str | None = None) -> ClusterNode:
    """This broker's part in the cluster on the Redis at ``url``, or :class:`StartError`."""
    # Imported here: redis-py is only needed in cluster mode.
    try:
        from zchat.broker.cluster.engine import Engine, Unavailable, connect
        from zchat.broker.cluster.node import ClusterNode
    except ImportError as exc:
        raise StartError(
            f"cluster mode needs redis-py and hiredis: pip install 'zchat-zmq[cluster]' ({exc})"
        ) from None
    host = re.sub(r"[^A-Za-z0-9_.-]", "", socket.gethostname())[:40] or "node"
    node = node_id or f"{host}-{os.getpid()}-{secrets.token_hex(2)}"
    # A node's lease runs out as a silent session does: heartbeat x liveness.
    lease = max(config.heartbeat * config.liveness, 1.0)
    try:
        client = connect(url)
        engine = Engine(
            client, node, history=config.history, lease=lease, say_ttl=config.dedupe_ttl
        )
        joined = ClusterNode(engine, history=config.history)
    except (Unavailable, ValueError) as exc:
        raise StartError(f"cannot join the cluster at {url}: {exc}") from None
    log.info("cluster node %s on %s, epoch %s", node, url, engine.epoch)
    return joined


def _handle_signals(server: Broker) -> None:
    def stop(signum: int, frame: object) -> None:
        server.stop()

    def reload_allow_list(signum: int, frame: object) -> None:
        if server.auth is None:
            return
        try:
            count = server.auth.reload()
        except SecurityError as exc:
            log.error("allow list kept: %s", exc)
        else:
            log.info("allow list: %d keys", count)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if server.auth is not None and server.auth.allow is not None:
        signal.signal(signal.SIGHUP, reload_allow_list)
