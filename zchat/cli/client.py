"""``zchat client``: the chat's options, then :func:`zchat.ui.chat.run_chat`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from zchat.cli.common import (
    BacklogOpt,
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
from zchat.ui.chat import ChatConfig, run_chat
from zchat.ui.noise import CROWD, Joins
from zchat.ui.personal import Notify


def client(
    nick: Annotated[str, typer.Option(envvar="ZCHAT_NICK", help="Your nick (1-32 characters).")],
    router: RouterOpt = DEFAULT_ROUTER,
    pub: PubOpt = DEFAULT_PUB,
    room: Annotated[
        list[str] | None,
        typer.Option(envvar="ZCHAT_ROOM", help="Room to join (repeat for more); default lobby."),
    ] = None,
    json_mode: Annotated[
        bool,
        typer.Option("--json", envvar="ZCHAT_JSON", help="One JSON object per event on stdout."),
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", envvar="ZCHAT_PLAIN", help="Line mode even on a terminal.")
    ] = False,
    connect_timeout: ConnectTimeoutOpt = 5.0,
    backlog: BacklogOpt = 50,
    joins: Annotated[
        Joins,
        typer.Option(
            envvar="ZCHAT_JOINS",
            help="Join and leave lines: show, hide, or auto (hidden in the backlog"
            f" and in rooms of more than {CROWD} people).",
        ),
    ] = Joins.AUTO,
    notify: Annotated[
        Notify,
        typer.Option(
            envvar="ZCHAT_NOTIFY",
            help="A mention or a DM rings the bell; osc9 or osc777 adds a desktop"
            " notification where the terminal supports it; none is silent.",
        ),
    ] = Notify.BELL,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="ZCHAT_LOG_DIR",
            help="Append each room's live lines to DIR/ROOM.log (made if need be).",
        ),
    ] = None,
    log_level: LogLevelOpt = "warning",
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
) -> None:
    """Chat: full screen on a terminal; else stdin lines are said, events printed."""

    def start() -> ChatConfig:
        setup_logging(log_level)
        return ChatConfig(
            nick,
            router=router,
            pub=pub,
            rooms=tuple(room or ["lobby"]),
            json_mode=json_mode,
            plain=plain,
            connect_timeout=connect_timeout,
            backlog=backlog,
            joins=joins,
            notify=notify,
            log_dir=log_dir,
            curve=curve_keys(server_key, key),
        )

    config = call(start)
    raise typer.Exit(asyncio.run(run_chat(config)))
