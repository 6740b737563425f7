"""The ``zchat`` command: parses options (and ``ZCHAT_*`` variables), calls the library."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from zchat import native
from zchat.broker.adapter import DEFAULT_PUB, DEFAULT_ROUTER
from zchat.broker.serve import serve
from zchat.broker.state import BrokerConfig
from zchat.client.client import DEFAULT_PUB as DEFAULT_CLIENT_PUB
from zchat.client.client import DEFAULT_ROUTER as DEFAULT_CLIENT_ROUTER
from zchat.client.probe import Probe
from zchat.client.probe import ping as send_ping
from zchat.curve import CurveKeys, client_curve, generate_keypair, load_server
from zchat.errors import ProtocolError, SecurityError, UsageError, ZchatError, exit_code
from zchat.logs import setup_logging
from zchat.protocol.names import check_nick
from zchat.ui.bot import BotConfig, BotError, Show, parse_lines, read_script, run_bot
from zchat.ui.chat import ChatConfig, run_chat
from zchat.ui.config import SETTING_KEYS, default_map
from zchat.ui.config import default_path as default_config_path
from zchat.ui.config import load as load_config
from zchat.ui.noise import CROWD, Joins
from zchat.ui.personal import Notify
from zchat.ui.render import clean, error_json, error_line
from zchat.ui.stats import run_stats

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


class _FlagsAsFlags:
    """typer's rich help shows a type after every option, flags included
    (``--json <bool>``, ``--help <bool>``) and writes a required argument
    ``{directory}``; a flag takes no value, and an argument is written in
    capitals, as man pages and click do."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = (param.name or "").upper()
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = []
        for piece in super().collect_usage_pieces(ctx):  # type: ignore[misc]
            pieces.append(piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece)
        return pieces


class Command(_FlagsAsFlags, TyperCommand):
    pass


class Group(_FlagsAsFlags, TyperGroup):
    pass


class Typer(typer.Typer):
    """Every command of the app gets :class:`Command`: flags read as flags."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_F], _F]:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


def zchat_version() -> str:
    try:
        return package_version("zchat-zmq")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


app = Typer(
    name="zchat",
    help="A chat broker and client on ZeroMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"zchat {zchat_version()}, {native.describe()}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar="ZCHAT_CONFIG",
            help="Settings file (TOML); default: config.toml in the user's config"
            " directory (~/.config/zchat). Flags and ZCHAT_* variables override it.",
        ),
    ] = None,
) -> None:
    """A chat broker and client on ZeroMQ."""

    def read() -> dict[str, Any]:
        return load_config(config or default_config_path(), required=config is not None)

    group = ctx.command
    assert isinstance(group, TyperGroup)
    params = {name: {p.name or "" for p in cmd.params} for name, cmd in group.commands.items()}
    # Only commands with something to take from it read it: a broken file must
    # not stop a broker.
    if not default_map({k: None for k in SETTING_KEYS}, params).get(ctx.invoked_subcommand or ""):
        return
    settings = call(read)
    # Subcommand contexts take their defaults from here: below flags and variables.
    ctx.default_map = default_map(settings, params)


RouterOpt = Annotated[
    str,
    typer.Option(
        envvar="ZCHAT_ROUTER",
        help="The broker's ROUTER endpoint (a client: several, comma-separated, for a cluster).",
    ),
]
PubOpt = Annotated[
    str,
    typer.Option(
        envvar="ZCHAT_PUB", help="The broker's PUB endpoint (several: in the --router order)."
    ),
]
LogLevelOpt = Annotated[
    str, typer.Option(envvar="ZCHAT_LOG_LEVEL", help="debug, info, warning or error.")
]
LogFormatOpt = Annotated[
    str, typer.Option(envvar="ZCHAT_LOG_FORMAT", help="text, or json (one object per line).")
]

ConnectTimeoutOpt = Annotated[
    float,
    typer.Option(envvar="ZCHAT_CONNECT_TIMEOUT", min=0.1, help="Seconds to wait for a broker."),
]
BacklogOpt = Annotated[
    int, typer.Option(envvar="ZCHAT_BACKLOG", min=0, max=500, help="History shown on joining.")
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


def curve_keys(server_key: Path | None, key: Path | None) -> CurveKeys | None:
    """CURVE keys from --server-key/--key; a bad key file is a usage error."""
    try:
        return client_curve(server_key, key)
    except SecurityError as exc:
        raise UsageError(str(exc)) from None


def call(work: Callable[[], _T]) -> _T:
    """Run one library call; any zchat error becomes one line and its exit code."""
    try:
        return work()
    except ZchatError as exc:
        typer.echo(error_line(exc), err=True)
        raise typer.Exit(exit_code(exc)) from None


@app.command()
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


@app.command()
def client(
    nick: Annotated[str, typer.Option(envvar="ZCHAT_NICK", help="Your nick (1-32 characters).")],
    router: RouterOpt = DEFAULT_CLIENT_ROUTER,
    pub: PubOpt = DEFAULT_CLIENT_PUB,
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
        if log_dir is not None:
            try:
                log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot use --log-dir {log_dir}: {exc.strerror}") from None
        try:
            check_nick(nick)
        except ProtocolError as exc:
            if json_mode:  # docs/cli-json.md: even this is a JSON object on stdout
                typer.echo(error_json(exc))
                raise typer.Exit(exit_code(exc)) from None
            raise ZchatError(f"bad nick {nick!r}: {exc.reason}") from None
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


@app.command()
def stats(
    router: RouterOpt = DEFAULT_CLIENT_ROUTER,
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
    router: RouterOpt = DEFAULT_CLIENT_ROUTER,
    pub: PubOpt = DEFAULT_CLIENT_PUB,
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


@app.command()
def ping(
    router: RouterOpt = DEFAULT_CLIENT_ROUTER,
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


@app.command()
def web(
    listen: Annotated[
        str, typer.Option(envvar="ZCHAT_WEB_LISTEN", help="HOST:PORT to serve the page on.")
    ] = "127.0.0.1:8080",
    router: RouterOpt = DEFAULT_CLIENT_ROUTER,
    pub: PubOpt = DEFAULT_CLIENT_PUB,
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


@app.command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write the pair (made 0700 if new).")],
    name: Annotated[
        str,
        typer.Option(envvar="ZCHAT_KEY_NAME", help="File name: NAME.key and NAME.key_secret."),
    ] = "zchat",
    force: Annotated[
        bool, typer.Option("--force", envvar="ZCHAT_FORCE", help="Replace an existing pair.")
    ] = False,
) -> None:
    """Write a CURVE keypair as ZeroMQ certificate files; the secret is owner-only."""
    files = call(lambda: generate_keypair(directory, name, force=force))
    typer.echo(f"public key: {files.public}")
    typer.echo(f"secret key: {files.secret} (keep it private)")


def main() -> None:
    app()
