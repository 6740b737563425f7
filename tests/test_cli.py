"""The command line itself: help that reads right, a version, a variable for every option."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import typer
from conftest import BrokerThread, ZchatProcess
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from zchat import native
from zchat.cli import app, zchat_version

#: Options with no ZCHAT_* variable of their own, and why.
NO_VARIABLE = {
    "--help": "prints help",
    "--version": "prints the version",
}


def commands() -> dict[str, typer.core.TyperCommand | TyperGroup]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    subs = dict(root.commands)
    assert set(subs) >= {"broker", "client", "stats", "bot", "ping", "keygen"}
    return {"": root, **subs}  # type: ignore[dict-item]


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_option_has_a_zchat_variable() -> None:
    missing = []
    for name, command in commands().items():
        ctx = typer.Context(command)
        for param in command.get_params(ctx):
            if not isinstance(param, TyperOption) or param.opts[0] in NO_VARIABLE:
                continue
            envvar = param.envvar
            # --say takes one line per line of ZCHAT_SAY, which click cannot split.
            documented = "ZCHAT_" in (param.help or "")
            if not (isinstance(envvar, str) and envvar.startswith("ZCHAT_")) and not documented:
                missing.append(f"zchat {name} {param.opts[0]}")
    assert missing == []


@pytest.mark.parametrize("name", ["", "broker", "client", "stats", "bot", "ping", "keygen"])
def test_help_shows_flags_as_flags(name: str) -> None:
    text = help_of(*([name] if name else []))
    assert "<bool>" not in text
    assert re.search(r"--help\s+Show this message", text)


def test_help_writes_the_argument_in_capitals() -> None:
    text = help_of("keygen")
    assert "Usage: zchat keygen [OPTIONS] DIRECTORY" in text
    assert "{" not in text


def test_help_of_stats_shows_the_variables_of_its_flags() -> None:
    text = help_of("stats")
    for var in ("ZCHAT_JSON", "ZCHAT_WATCH", "ZCHAT_INTERVAL"):
        assert var in text


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"zchat {zchat_version()}, {native.describe()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", zchat_version())


def test_zchat_json_turns_on_json_mode(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    env = {"ZCHAT_JSON": "1", "ZCHAT_ROUTER": broker.router, "ZCHAT_PUB": broker.pub}
    proc = zchat_proc("client", "--nick", "Jason", env=env)
    proc.expect_json(type="status", state="connected")
    proc.close_stdin()
    assert proc.wait() == 0
