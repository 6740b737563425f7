"""``zchat stats`` and ``zchat ping``: a broker asked without registering
(:mod:`zchat.client.probe`)."""

from __future__ import annotations

from typing import Annotated

import typer

from zchat.cli.common import KeyOpt, RouterOpt, ServerKeyOpt, call, curve_keys
from zchat.client.client import DEFAULT_ROUTER
from zchat.client.probe import Probe
from zchat.client.probe import ping as send_ping
from zchat.ui.render import clean
from zchat.ui.stats import run_stats


def stats(
    router: RouterOpt = DEFAULT_ROUTER,
    json_mode: Annotated[
        bool, typer.Option("--json", envvar="ZCHAT_JSON", help="One JSON object per reading.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", envvar="ZCHAT_WATCH", help="Refresh until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            envvar="ZCHAT_INTERVAL", min=0.1, help="Seconds between readings with --watch."
        ),
    ] = 2.0,
    timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
    ] = 2.0,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
) -> None:
    """Ask a running broker for its counters (works without registering)."""

    def ask() -> None:
        probe = Probe(router, timeout=timeout, curve=curve_keys(server_key, key))
        try:
            title = f"zchat broker at {router}"
            run_stats(probe, title=title, json_mode=json_mode, watch=watch, interval=interval)
        finally:
            probe.close()

    call(ask)


def ping(
    router: RouterOpt = DEFAULT_ROUTER,
    timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_PING_TIMEOUT", min=0.05, help="Seconds to wait for an answer."),
    ] = 2.0,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
) -> None:
    """Exit 0 if a broker answers, 3 if none does within the timeout (a health check).

    The ping is sent unregistered, so a live broker answers "error
    not_registered": that answer is the proof of life.
    """
    reply = call(lambda: send_ping(router, timeout, curve=curve_keys(server_key, key)))
    # The answer's code comes from whatever answered: clean it like any wire text.
    typer.echo(f"zchat: broker at {clean(router)} {clean(reply.describe())}")
