"""The ``zchat`` command: parses options (and ``ZCHAT_*`` variables), calls the library."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from zchat import client as client_lib
from zchat.broker import DEFAULT_PUB, DEFAULT_ROUTER, StartError, serve
from zchat.client import Client, ConnectTimeout, RegistrationError, ZchatError
from zchat.core import BrokerConfig
from zchat.protocol import ProtocolError, check_nick
from zchat.security import SecurityError, client_curve, generate_keypair, load_server

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
LogFormatOpt = Annotated[
    str, typer.Option(envvar="ZCHAT_LOG_FORMAT", help="text, or json (one object per line).")
]

ServerKeyOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="ZCHAT_SERVER_KEY",
        help="The broker's public key file (NAME.key): turns on CURVE encryption.",
    ),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="ZCHAT_KEY",
        help="Your own NAME.key_secret file; default: a pair made on first use"
        " in $XDG_CONFIG_HOME/zchat (or ~/.config/zchat).",
    ),
]


def curve_keys(server_key: Path | None, key: Path | None) -> client_lib.CurveKeys | None:
    """CURVE keys from --server-key/--key, or a clear exit; for every client command."""
    try:
        return client_curve(server_key, key)
    except SecurityError as exc:
        raise fail(str(exc), 2) from None


def fail(message: str, code: int = EXIT_REFUSED) -> typer.Exit:
    """Print one clear line on stderr; the caller raises the returned Exit."""
    typer.echo(f"zchat: {message}", err=True)
    return typer.Exit(code)


def setup_logging(level: str, log_format: str = "text") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise fail(f"unknown log level {level!r}", 2)
    if log_format not in ("text", "json"):
        raise fail(f"unknown log format {log_format!r} (text or json)", 2)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from zchat.ops import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=numeric, handlers=[handler])


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
) -> None:
    """Run the broker: a ROUTER for commands and a PUB for room events."""
    setup_logging(log_level, log_format)
    curve = None
    if secret_key is not None:
        try:
            curve = load_server(secret_key, allow)
        except SecurityError as exc:
            raise fail(str(exc), 2) from None
    elif allow is not None:
        raise fail("--allow needs --secret-key (the broker's own key)", 2)
    config = BrokerConfig(
        heartbeat=heartbeat,
        history=history,
        max_clients=max_clients,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        text_limit=text_limit,
    )
    try:
        serve(
            config,
            router=router,
            pub=pub,
            db=db,
            curve=curve,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    except StartError as exc:
        raise fail(str(exc)) from None


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
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
) -> None:
    """Chat: full screen on a terminal; else stdin lines are said, events printed."""
    setup_logging(log_level)
    try:
        check_nick(nick)
    except ProtocolError as exc:
        raise fail(f"bad nick {nick!r}: {exc.reason}") from None
    rooms = room or ["lobby"]
    curve = curve_keys(server_key, key)
    # Textual hangs on a piped stdin and draws on stderr: full screen only on a terminal.
    on_terminal = all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr))
    tui = on_terminal and not (plain or json_mode)
    code = asyncio.run(
        _run_client(nick, router, pub, rooms, json_mode, connect_timeout, backlog, curve, tui)
    )
    raise typer.Exit(code)


async def _run_client(
    nick: str,
    router: str,
    pub: str,
    rooms: list[str],
    json_mode: bool,
    connect_timeout: float,
    backlog: int,
    curve: client_lib.CurveKeys | None = None,
    tui: bool = False,
) -> int:
    from zchat.linemode import LineMode

    if tui:
        # Before connecting: importing Textual takes long enough to miss heartbeats.
        from zchat.tui import run_tui

    try:
        chat = Client(
            nick,
            router=router,
            pub=pub,
            rooms=rooms,
            connect_timeout=connect_timeout,
            backlog=backlog,
            curve=curve,
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
    if tui:
        return await run_tui(chat)
    mode = LineMode(chat, json_mode=json_mode)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, mode.stop)
    await mode.run()
    return 0


@app.command()
def stats(
    router: RouterOpt = client_lib.DEFAULT_ROUTER,
    json_mode: Annotated[bool, typer.Option("--json", help="One JSON object per reading.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between readings with --watch.")
    ] = 2.0,
    timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
    ] = 2.0,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
) -> None:
    """Ask a running broker for its counters (works without registering)."""
    from rich.console import Console
    from rich.live import Live

    from zchat.ops import NoAnswer, StatsProbe, stats_json, stats_table

    console = Console()
    probe = StatsProbe(router, timeout=timeout, curve=curve_keys(server_key, key))
    live: Live | None = None
    try:
        while True:
            reading = probe.ask()
            if json_mode:
                typer.echo(stats_json(reading))
            elif watch and console.is_terminal:
                table = stats_table(reading, title=f"zchat broker at {router}")
                if live is None:
                    live = Live(table, console=console, auto_refresh=False)
                    live.start()
                live.update(table, refresh=True)
            else:
                console.print(stats_table(reading, title=f"zchat broker at {router}"))
            if not watch:
                break
            time.sleep(interval)
    except NoAnswer as exc:
        raise fail(str(exc), EXIT_NO_BROKER) from None
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --watch ends
    finally:
        if live is not None:
            live.stop()
        probe.close()


@app.command()
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
    router: RouterOpt = client_lib.DEFAULT_ROUTER,
    pub: PubOpt = client_lib.DEFAULT_PUB,
    connect_timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
    ] = 5.0,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """A scripted client for demos and tests: says its lines, prints what it sees."""
    from zchat.bot import BotConfig, BotError, Show, parse_lines, read_script, run_bot

    setup_logging(log_level)
    if not say and os.environ.get("ZCHAT_SAY"):
        say = os.environ["ZCHAT_SAY"].splitlines()
    try:
        if say and script is not None:
            raise BotError("give lines with --say or --script, not both")
        lines = read_script(script) if script is not None else parse_lines(say or [], "--say")
        if show not in {s.value for s in Show}:
            raise BotError(f"--show must be all, own or none, not {show!r}")
        config = BotConfig(
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
    except BotError as exc:
        raise fail(str(exc), 2) from None
    raise typer.Exit(asyncio.run(run_bot(config)))


@app.command()
def ping(
    router: RouterOpt = client_lib.DEFAULT_ROUTER,
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
    from zchat.ping import PingError
    from zchat.ping import ping as send_ping

    try:
        reply = send_ping(router, timeout, curve=curve_keys(server_key, key))
    except PingError as exc:
        raise fail(str(exc), 2) from None
    if reply is None:
        raise fail(f"no broker answered at {router} within {timeout:g}s", EXIT_NO_BROKER)
    typer.echo(f"zchat: broker at {router} {reply.describe()}")


@app.command()
def web(
    listen: Annotated[
        str, typer.Option(envvar="ZCHAT_WEB_LISTEN", help="HOST:PORT to serve the page on.")
    ] = "127.0.0.1:8080",
    router: RouterOpt = client_lib.DEFAULT_ROUTER,
    pub: PubOpt = client_lib.DEFAULT_PUB,
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
    connect_timeout: Annotated[
        float,
        typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
    ] = 5.0,
    backlog: Annotated[
        int, typer.Option(envvar="ZCHAT_BACKLOG", min=0, max=500, help="History shown on joining.")
    ] = 50,
    server_key: ServerKeyOpt = None,
    key: KeyOpt = None,
    log_level: LogLevelOpt = "info",
    log_format: LogFormatOpt = "text",
) -> None:
    """Serve the chat to browsers: a page and a WebSocket, one client per tab."""
    from zchat.web import WebConfig, parse_listen, serve

    setup_logging(log_level, log_format)
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    config = WebConfig(
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
    raise typer.Exit(serve(config))


@app.command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write the pair (made 0700 if new).")],
    name: Annotated[str, typer.Option(help="File name: NAME.key and NAME.key_secret.")] = "zchat",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
) -> None:
    """Write a CURVE keypair as ZeroMQ certificate files; the secret is owner-only."""
    try:
        files = generate_keypair(directory, name, force=force)
    except SecurityError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"public key: {files.public}")
    typer.echo(f"secret key: {files.secret} (keep it private)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite (a source checkout's benchmarks/); --quick for a smoke run."""
    try:
        from benchmarks.run import main as run_benchmarks
    except ImportError:
        raise fail(
            "the benchmarks ship with the source, not the package: "
            "run `python -m benchmarks` in a checkout"
        ) from None
    raise typer.Exit(run_benchmarks(list(ctx.args)))


def main() -> None:
    app()
