"""The ``zchat`` command: parses options (and ``ZCHAT_*`` variables), calls the library."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from zchat import client as client_lib
from zchat.broker import DEFAULT_PUB, DEFAULT_ROUTER, Broker
from zchat.client import Client, ConnectTimeout, RegistrationError, ZchatError
from zchat.core import BrokerConfig
from zchat.protocol import ProtocolError, check_nick

app = typer.Typer(
    name="zchat",
    help="A chat broker and client on ZeroMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit codes beyond 0 (success) and 2 (bad usage, from typer).
EXIT_REFUSED = 1
EXIT_NO_BROKER = 3

RouterOpt = Annotated[
    str, typer.Option(envvar="ZCHAT_ROUTER", help="The broker's ROUTER endpoint.")
]
PubOpt = Annotated[str, typer.Option(envvar="ZCHAT_PUB", help="The broker's PUB endpoint.")]
LogLevelOpt = Annotated[
    str, typer.Option(envvar="ZCHAT_LOG_LEVEL", help="debug, info, warning or error.")
]


def fail(message: str, code: int = EXIT_REFUSED) -> typer.Exit:
    """Print one clear line on stderr; the caller raises the returned Exit."""
    typer.echo(f"zchat: {message}", err=True)
    return typer.Exit(code)


def setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise fail(f"unknown log level {level!r}", 2)
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def broker(
    router: RouterOpt = DEFAULT_ROUTER,
    pub: PubOpt = DEFAULT_PUB,
    heartbeat: Annotated[
        float, typer.Option(envvar="ZCHAT_HEARTBEAT", min=0.05, help="Heartbeat interval, seconds.")
    ] = 1.0,
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
) -> None:
    """Run the broker: a ROUTER for commands and a PUB for room events."""
    setup_logging(log_level)
    config = BrokerConfig(
        heartbeat=heartbeat,
        history=history,
        max_clients=max_clients,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        text_limit=text_limit,
    )
    store = None
    if db is not None:
        from zchat.store import SqliteStore

        try:
            store = SqliteStore(db, history)
        except Exception as exc:
            raise fail(f"cannot open database {db}: {exc}") from None
    try:
        server = Broker(config, router=router, pub=pub, store=store)
    except Exception as exc:
        raise fail(f"cannot start the broker: {exc}") from None

    def on_signal(signum: int, frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.run()
    finally:
        server.close()
        if store is not None:
            store.close()
    logging.getLogger("zchat.broker").info("broker stopped")


@app.command()
def client(
    nick: Annotated[str, typer.Option(envvar="ZCHAT_NICK", help="Your nick (1-32 characters).")],
    router: RouterOpt = client_lib.DEFAULT_ROUTER,
    pub: PubOpt = client_lib.DEFAULT_PUB,
    room: Annotated[
        list[str] | None,
        typer.Option(envvar="ZCHAT_ROOM", help="Room to join (repeat for more); default lobby."),
    ] = None,
    json_mode: Annotated[
        bool, typer.Option("--json", help="One JSON object per event on stdout.")
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", envvar="ZCHAT_PLAIN", help="Line mode even on a terminal.")
    ] = False,
    connect_timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
    ] = 5.0,
    backlog: Annotated[
        int, typer.Option(envvar="ZCHAT_BACKLOG", min=0, max=500, help="History shown on joining.")
    ] = 50,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Chat: stdin lines are said, events are printed (line mode)."""
    setup_logging(log_level)
    try:
        check_nick(nick)
    except ProtocolError as exc:
        raise fail(f"bad nick {nick!r}: {exc.reason}") from None
    rooms = room or ["lobby"]
    code = asyncio.run(_run_client(nick, router, pub, rooms, json_mode, connect_timeout, backlog))
    raise typer.Exit(code)


async def _run_client(
    nick: str,
    router: str,
    pub: str,
    rooms: list[str],
    json_mode: bool,
    connect_timeout: float,
    backlog: int,
) -> int:
    from zchat.linemode import LineMode

    try:
        chat = Client(
            nick,
            router=router,
            pub=pub,
            rooms=rooms,
            connect_timeout=connect_timeout,
            backlog=backlog,
        )
        await chat.connect()
    except RegistrationError as exc:
        typer.echo(f"zchat: {exc.code}: {exc.reason}", err=True)
        return EXIT_REFUSED
    except ConnectTimeout as exc:
        typer.echo(f"zchat: {exc}", err=True)
        return EXIT_NO_BROKER
    except (ZchatError, ProtocolError) as exc:
        typer.echo(f"zchat: {exc}", err=True)
        return EXIT_REFUSED
    mode = LineMode(chat, json_mode=json_mode)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, mode.stop)
    await mode.run()
    return 0


def main() -> None:
    app()
