"""The ``zchat`` command: parses options (and ``ZCHAT_*`` variables), calls the library.

One module per command; :mod:`zchat.cli.common` holds what they share.
"""

from __future__ import annotations

from zchat.cli import bot, broker, client, keys, probe, web
from zchat.cli.common import app, zchat_version

__all__ = ["app", "main", "zchat_version"]

# In the order ``zchat --help`` lists them.
for command in (
    broker.broker,
    client.client,
    probe.stats,
    bot.bot,
    probe.ping,
    web.web,
    keys.keygen,
):
    app.command()(command)


def main() -> None:
    app()
