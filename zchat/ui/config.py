"""The config file, ``config.toml`` in the user's config directory (platformdirs:
``$XDG_CONFIG_HOME/zchat`` or ``~/.config/zchat`` on Linux). It supplies defaults
only: flags and ``ZCHAT_*`` variables override it. Example::

    nick = "Robin"
    rooms = ["lobby", "cave"]
    server = "home"            # the [servers.NAME] to use; ZCHAT_SERVER picks another
    notify = "osc9"
    joins = "auto"
    log_dir = "~/zchat-logs"

    [servers.home]
    router = "tcp://chat.example.org:5555"
    pub = "tcp://chat.example.org:5556"
    server_key = "~/.config/zchat/home.key"
    key = "~/.config/zchat/robin.key_secret"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from platformdirs import user_config_path

from zchat.errors import UsageError

#: Settings of one server: where it is and how to prove who we are.
SERVER_KEYS: Final = frozenset({"router", "pub", "server_key", "key", "connect_timeout"})
#: Settings of the person, for ``zchat client``.
CLIENT_KEYS: Final = frozenset(
    {"nick", "rooms", "notify", "joins", "log_dir", "backlog", "plain", "log_level"}
)
SETTING_KEYS: Final = SERVER_KEYS | CLIENT_KEYS
#: The commands that connect to a broker: the only ones the file configures.
CONNECTING: Final = frozenset({"client", "bot", "ping", "stats"})
PATHS: Final = frozenset({"server_key", "key", "log_dir"})
#: Config key -> option (parameter) name where they differ.
PARAM_OF: Final = {"rooms": "room"}


def default_path() -> Path:
    return user_config_path("zchat") / "config.toml"


def load(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The file's settings, flat and checked: a server's entries merged in (the one
    ``server`` or ``ZCHAT_SERVER`` names). Missing file: {} (an error if ``required``)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise UsageError(f"no config file {path}") from None
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"bad config file {path}: {exc}") from None
    servers = raw.pop("servers", {})
    chosen = os.environ.get("ZCHAT_SERVER") or raw.pop("server", None)
    raw.pop("server", None)
    _only(raw, SERVER_KEYS | CLIENT_KEYS, path, "")
    if not isinstance(servers, Mapping):
        raise UsageError(f"bad config file {path}: [servers] must be a table of tables")
    if chosen is not None:
        server = servers.get(chosen)
        if not isinstance(server, Mapping):
            known = ", ".join(sorted(servers)) or "none"
            raise UsageError(f"{path}: no [servers.{chosen}] (servers: {known})")
        _only(server, SERVER_KEYS, path, f"[servers.{chosen}] ")
        raw.update(server)
    for key in PATHS & raw.keys():
        raw[key] = str(Path(str(raw[key])).expanduser())
    if "rooms" in raw and (
        not isinstance(raw["rooms"], list) or not all(isinstance(r, str) for r in raw["rooms"])
    ):
        raise UsageError(f"{path}: rooms must be a list of room names")
    return raw


def _only(table: Mapping[str, Any], allowed: Iterable[str], path: Path, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise UsageError(f"{path}: {where}unknown setting {', '.join(unknown)}")


def default_map(settings: Mapping[str, Any], params: Mapping[str, set[str]]) -> dict[str, Any]:
    """click's ``default_map``: for each command, the settings it has an option for.
    Server settings go to every command that talks to a broker; the person's to
    ``client`` only (a bot is not you)."""
    out: dict[str, Any] = {}
    for command, names in params.items():
        if command not in CONNECTING:
            continue  # the broker binds its endpoints: a client's server is not one
        keys = SERVER_KEYS | (CLIENT_KEYS if command == "client" else frozenset())
        mine = {PARAM_OF.get(k, k): v for k, v in settings.items() if k in keys}
        out[command] = {k: v for k, v in mine.items() if k in names}
    return out
