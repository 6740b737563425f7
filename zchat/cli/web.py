"""``zchat web``: the browser gateway's options, then :func:`zchat.web.serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from zchat.cli.common import (
    BacklogOpt,
    ConnectTimeoutOpt,
    KeyOpt,
    LogFormatOpt,
    LogLevelOpt,
    PubOpt,
    RouterOpt,
    ServerKeyOpt,
    call,
    curve_keys,
)
from zchat.client.client import DEFAULT_PUB, DEFAULT_ROUTER
from zchat.errors import UsageError
from zchat.logs import setup_logging


def web(
    listen: Annotated[
        str, typer.Option(envvar="ZCHAT_WEB_LISTEN", help="HOST:PORT to serve the page on.")
    ] = "127.0.0.1:8080",
    router: RouterOpt = DEFAULT_ROUTER,
    pub: PubOpt = DEFAULT_PUB,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="ZCHAT_WEB_ALLOW_ORIGIN",
            help="Another origin whose pages may connect (repeat for more); default: same origin.",
        ),
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(envvar="ZCHAT_WEB_MAX_CONNECTIONS", min=1, help="Most WebSockets at once."),
    ] = 1000,
    connect_timeout: ConnectTimeoutOpt = 5.0,
    backlog: BacklogOpt = 50,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
    log_level: LogLevelOpt = "info",
    log_format: LogFormatOpt = "text",
) -> None:
    """Serve the chat to browsers: a page and a WebSocket, one client per tab."""
    # Here, not at the top: every other command would pay for loading Starlette and uvicorn.
    from zchat.web import WebConfig, parse_listen
    from zchat.web import serve as serve_web

    def start() -> WebConfig:
        setup_logging(log_level, log_format)
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return WebConfig(
            router=router,
            pub=pub,
            host=host,
            port=port,
            curve=curve_keys(server_key, key),
            allow_origins=tuple(allow_origin or ()),
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            backlog=backlog,
        )

    config = call(start)
    call(lambda: serve_web(config))
