"""Client-side room logs (``--log-dir``): one file per room, one line per live event,
in line mode's format. Backlog is not written: it was live once, and a restart would
write it again."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from zchat.client.events import ClientEvent
from zchat.protocol.events import RoomEvent
from zchat.ui.render import format_event

log = logging.getLogger("zchat.ui")


def log_file(directory: Path, room: str) -> Path:
    """The file of ``room``: its name with anything a path could misread escaped
    (``/``, a leading dot, ``%``), so every room stays inside ``directory``."""
    name = quote(room, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return directory / f"{name}.log"


class Transcript:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._failed = False

    def write(self, event: ClientEvent, own_nick: str) -> None:
        if not isinstance(event, RoomEvent) or event.room is None or event.history:
            return
        line = format_event(event, own_nick=own_nick, room=event.room)
        if line is None:
            return
        try:
            with log_file(self.directory, event.room).open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            if not self._failed:  # once: a full disk must not flood the screen
                log.warning("cannot write the room log in %s: %s", self.directory, exc)
            self._failed = True
