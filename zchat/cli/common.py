"""What every ``zchat`` command shares: the app and its help format, the top-level
options (``--version``, ``--config``), the common options, and :func:`call`, where
every failure becomes one line and its exit code."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from zchat import native
from zchat.curve import CurveKeys, client_curve
from zchat.errors import SecurityError, UsageError, ZchatError, exit_code
from zchat.ui.config import SETTING_KEYS, default_map
from zchat.ui.config import default_path as default_config_path
from zchat.ui.config import load as load_config
from zchat.ui.render import error_line

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
