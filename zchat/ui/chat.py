"""``zchat client``: connect, then the full-screen UI on a terminal, line mode otherwise."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from zchat.client.client import DEFAULT_PUB, DEFAULT_ROUTER, Client
from zchat.curve import CurveKeys
from zchat.errors import EXIT_OK, ProtocolError, UsageError, ZchatError, exit_code
from zchat.protocol.names import check_nick
from zchat.ui.linemode import LineMode
from zchat.ui.noise import Joins
from zchat.ui.personal import Notify, Personal
from zchat.ui.render import clean, error_json, error_line
from zchat.ui.transcript import Transcript


@dataclass(frozen=True, slots=True)
class ChatConfig:
    nick: str
    router: str = DEFAULT_ROUTER
    pub: str = DEFAULT_PUB
    rooms: tuple[str, ...] = ("lobby",)
    json_mode: bool = False
    #: Line mode even on a terminal.
    plain: bool = False
    connect_timeout: float = 5.0
    backlog: int = 50
    joins: Joins = Joins.AUTO
    notify: Notify = Notify.BELL
    #: Where each room's live lines are appended (ROOM.log); None: nowhere.
    log_dir: Path | None = None
    curve: CurveKeys | None = field(default=None, repr=False)


def wants_tui(config: ChatConfig, streams: tuple[TextIO, ...] | None = None) -> bool:
    """Full screen only on a terminal: Textual hangs on a piped stdin and draws on stderr."""
    streams = streams or (sys.stdin, sys.stdout, sys.stderr)
    on_terminal = all(stream.isatty() for stream in streams)
    return on_terminal and not (config.plain or config.json_mode)


def prepare(config: ChatConfig) -> None:
    """Refuse before connecting what cannot work: a ``log_dir`` that cannot be made
    (it is made here), a bad nick."""
    if config.log_dir is not None:
        try:
            config.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use --log-dir {config.log_dir}: {exc.strerror}") from None
    try:
        check_nick(config.nick)
    except ProtocolError as exc:
        if config.json_mode:  # a script reads the code (bad_nick) the broker would send
            raise
        raise ZchatError(f"bad nick {config.nick!r}: {exc.reason}") from None


async def run_chat(
    config: ChatConfig, *, err: TextIO = sys.stderr, out: TextIO = sys.stdout
) -> int:
    """Connect and chat until the person quits; returns the exit code."""

    def fail(exc: ZchatError) -> int:
        if config.json_mode:  # docs/cli-json.md: even a fatal error is a JSON object on stdout
            out.write(error_json(exc) + "\n")
            out.flush()
        else:
            err.write(error_line(exc) + "\n")
        return exit_code(exc)

    try:
        prepare(config)
    except ZchatError as exc:
        return fail(exc)
    tui = wants_tui(config)
    if tui:
        # Only the full screen needs Textual (line mode and bots never pay for it), and
        # before connecting: importing it takes long enough to miss heartbeats.
        from zchat.ui.tui import run_tui
    chat = Client(
        config.nick,
        router=config.router,
        pub=config.pub,
        rooms=config.rooms,
        connect_timeout=config.connect_timeout,
        backlog=config.backlog,
        curve=config.curve,
    )
    if tui:
        # The full screen starts only once connected: until then, say what is going on.
        err.write(
            f"zchat: connecting to {clean(config.router)} as {clean(config.nick)}"
            # Each broker of the list gets connect_timeout in turn.
            f" (up to {len(chat.brokers) * config.connect_timeout:g}s)...\n"
        )
        err.flush()
    try:
        await chat.connect()
    except ZchatError as exc:
        return fail(exc)
    transcript = Transcript(config.log_dir) if config.log_dir is not None else None
    if tui:
        return await run_tui(
            chat, joins=config.joins, personal=Personal(config.notify), transcript=transcript
        )
    mode = LineMode(
        chat,
        json_mode=config.json_mode,
        joins=config.joins,
        personal=Personal(config.notify),
        transcript=transcript,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, mode.stop)
    await mode.run()
    return EXIT_OK
