"""``zchat bot``: a scripted client's options, then :func:`zchat.ui.bot.run_bot`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from zchat.cli.common import (
    ConnectTimeoutOpt,
    KeyOpt,
    LogLevelOpt,
    PubOpt,
    RouterOpt,
    ServerKeyOpt,
    call,
    curve_keys,
)
from zchat.client.client import DEFAULT_PUB, DEFAULT_ROUTER
from zchat.logs import setup_logging
from zchat.ui.bot import BotConfig, BotError, Show, parse_lines, read_script, run_bot


def bot(
    nick: Annotated[str, typer.Option(envvar="ZCHAT_NICK", help="The bot's nick.")],
    say: Annotated[
        list[str] | None,
        typer.Option(
            help="A line to say (repeat for more; /me and /topic work). "
            "From the environment: ZCHAT_SAY, one line per line."
        ),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(envvar="ZCHAT_SCRIPT", help="File of lines to say (# starts a comment)."),
    ] = None,
    interval: Annotated[
        float, typer.Option(envvar="ZCHAT_INTERVAL", min=0, help="Seconds between lines.")
    ] = 3.0,
    count: Annotated[
        int,
        typer.Option(
            envvar="ZCHAT_COUNT", min=0, help="Lines to say in all, cycling; 0 = forever."
        ),
    ] = 0,
    delay: Annotated[
        float, typer.Option(envvar="ZCHAT_DELAY", min=0, help="Seconds before the first line.")
    ] = 0.0,
    respond: Annotated[
        bool,
        typer.Option(
            envvar="ZCHAT_RESPOND",
            help="Answer !time, !who, !echo TEXT and !help in the room (and keep running).",
        ),
    ] = False,
    show: Annotated[
        str,
        typer.Option(
            envvar="ZCHAT_SHOW", help="Print all events, only the bot's own (own), or none."
        ),
    ] = "all",
    room: Annotated[str, typer.Option(envvar="ZCHAT_ROOM", help="The room to talk in.")] = "lobby",
    router: RouterOpt = DEFAULT_ROUTER,
    pub: PubOpt = DEFAULT_PUB,
    connect_timeout: ConnectTimeoutOpt = 5.0,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """A scripted client for demos and tests: says its lines, prints what it sees."""
    if not say and os.environ.get("ZCHAT_SAY"):
        say = os.environ["ZCHAT_SAY"].splitlines()

    def start() -> BotConfig:
        setup_logging(log_level)
        if say and script is not None:
            raise BotError("give lines with --say or --script, not both")
        lines = read_script(script) if script is not None else parse_lines(say or [], "--say")
        if show not in {s.value for s in Show}:
            raise BotError(f"--show must be all, own or none, not {show!r}")
        return BotConfig(
            nick,
            lines,
            room=room,
            interval=interval,
            count=count,
            delay=delay,
            respond=respond,
            show=Show(show),
            router=router,
            pub=pub,
            connect_timeout=connect_timeout,
            curve=curve_keys(server_key, key),
        )

    raise typer.Exit(asyncio.run(run_bot(call(start))))
