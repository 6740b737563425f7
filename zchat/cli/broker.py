"""``zchat broker``: the broker's options, then :func:`zchat.broker.serve.serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zchat.broker.adapter import DEFAULT_PUB, DEFAULT_ROUTER
from zchat.broker.serve import serve
from zchat.broker.state import BrokerConfig
from zchat.cli.common import LogFormatOpt, LogLevelOpt, PubOpt, RouterOpt, call
from zchat.curve import load_server
from zchat.errors import SecurityError, UsageError
from zchat.logs import setup_logging


def broker(
    router: RouterOpt = DEFAULT_ROUTER,
    pub: PubOpt = DEFAULT_PUB,
    heartbeat: Annotated[
        float, typer.Option(envvar="ZCHAT_HEARTBEAT", min=0.05, help="Heartbeat interval, seconds.")
    ] = 5.0,
    history: Annotated[
        int, typer.Option(envvar="ZCHAT_HISTORY", min=0, help="Events kept per room.")
    ] = 500,
    db: Annotated[
        Path | None,
        typer.Option(envvar="ZCHAT_DB", help="SQLite file: history and topics survive restarts."),
    ] = None,
    max_clients: Annotated[
        int, typer.Option(envvar="ZCHAT_MAX_CLIENTS", min=1, help="Most sessions at once.")
    ] = 10_000,
    rate_limit: Annotated[
        float,
        typer.Option(envvar="ZCHAT_RATE_LIMIT", min=0, help="Envelopes/s per session; 0 = off."),
    ] = 20.0,
    rate_burst: Annotated[
        int, typer.Option(envvar="ZCHAT_RATE_BURST", min=1, help="Burst size of the rate limit.")
    ] = 40,
    text_limit: Annotated[
        int, typer.Option(envvar="ZCHAT_TEXT_LIMIT", min=1, max=60_000, help="Bytes per text.")
    ] = 4096,
    log_level: LogLevelOpt = "info",
    log_format: LogFormatOpt = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="ZCHAT_METRICS_PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://HOST:PORT/metrics.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar="ZCHAT_METRICS_HOST", help="Address the metrics server binds.")
    ] = "127.0.0.1",
    secret_key: Annotated[
        Path | None,
        typer.Option(
            envvar="ZCHAT_SECRET_KEY",
            help="The broker's NAME.key_secret file: CURVE on both sockets.",
        ),
    ] = None,
    allow: Annotated[
        Path | None,
        typer.Option(
            envvar="ZCHAT_ALLOW",
            help="Directory of accepted client .key files (SIGHUP re-reads it); default: any key.",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            envvar="ZCHAT_CLUSTER",
            help="redis://HOST:PORT/DB: one chat across the brokers on this Redis.",
        ),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(
            envvar="ZCHAT_NODE_ID",
            help="This broker's name in the cluster; default: host-pid-random.",
        ),
    ] = None,
) -> None:
    """Run the broker: a ROUTER for commands and a PUB for room events."""

    def start() -> None:
        setup_logging(log_level, log_format)
        if allow is not None and secret_key is None:
            raise UsageError("--allow needs --secret-key (the broker's own key)")
        if cluster is not None and db is not None:
            raise UsageError(
                "--cluster and --db exclude each other: a cluster keeps history in Redis"
            )
        if node_id is not None and cluster is None:
            raise UsageError("--node-id needs --cluster")
        try:
            curve = load_server(secret_key, allow) if secret_key is not None else None
        except SecurityError as exc:
            raise UsageError(str(exc)) from None
        config = BrokerConfig(
            heartbeat=heartbeat,
            history=history,
            max_clients=max_clients,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            text_limit=text_limit,
        )
        serve(
            config,
            router=router,
            pub=pub,
            db=db,
            curve=curve,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            cluster=cluster,
            node_id=node_id,
        )

    call(start)
