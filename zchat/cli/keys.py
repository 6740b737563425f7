"""``zchat keygen``: a CURVE keypair written by :func:`zchat.curve.generate_keypair`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zchat.cli.common import call
from zchat.curve import generate_keypair


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
