"""Line mode: stdin lines in, one flushed line (or JSON object) per event out.

For pipes, scripts and terminals without the full-screen UI. Stdin is read
by a daemon thread because asyncio cannot read every kind of stdin (files,
/dev/null) and a blocked read must never keep the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

from zchat.client.client import Client
from zchat.client.events import ClientEvent
from zchat.errors import ZchatError
from zchat.protocol.events import DirectMessage, NickChanged
from zchat.ui.input import run_line
from zchat.ui.lines import SCROLLBACK
from zchat.ui.noise import Joins, hidden
from zchat.ui.personal import Personal, alert_sequence
from zchat.ui.render import clean, format_event, json_line
from zchat.ui.transcript import Transcript


def _stdin_lines(loop: asyncio.AbstractEventLoop, stream: TextIO) -> asyncio.Queue[str | None]:
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="zchat-stdin", daemon=True).start()
    return lines


class LineMode:
    """Runs a connected client until stdin ends, ``/quit``, or ``stop()``."""

    def __init__(
        self,
        client: Client,
        *,
        json_mode: bool = False,
        joins: Joins = Joins.AUTO,
        personal: Personal | None = None,
        transcript: Transcript | None = None,
        out: TextIO = sys.stdout,
        stdin: TextIO = sys.stdin,
    ) -> None:
        self.client = client
        self.json_mode = json_mode
        self.joins = joins
        self.personal = personal or Personal()
        self.transcript = transcript
        #: What was printed, per room ("" for the rest): what /search looks through.
        self._scrollback: dict[str, deque[str]] = {}
        self.out = out
        self.stdin = stdin
        self.room: str | None = next(iter(client.rooms), None)
        self.quit_reason: str | None = None
        self.dm_to: str | None = None
        self._stop = asyncio.Event()
        # One nick change arrives once per shared room (and once more as the reply to
        # our own /nick), all with the same (old, new, ts): print it once.
        self._nick_changes: deque[tuple[str, str, float]] = deque(maxlen=64)

    @property
    def current(self) -> str | None:
        return self.room

    @property
    def current_dm(self) -> str | None:
        return self.dm_to

    async def talk_to(self, nick: str | None) -> None:
        self.dm_to = nick
        if nick is not None:
            self.show_info(f"talking to {nick} directly; /query alone goes back to the room")
        else:
            self.show_info(f"talking in {self.room or '(no room)'}")

    def stop(self) -> None:
        self._stop.set()

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _write_json(self, obj: Mapping[str, Any]) -> None:
        self._write(json_line(obj))

    def show_info(
        self, text: str, *, error: bool = False, data: Mapping[str, Any] | None = None
    ) -> None:
        if self.json_mode:
            # docs/cli-json.md: an error keeps its text in ``reason``, an info in ``text``.
            kind, key = ("error", "reason") if error else ("info", "text")
            obj = {"type": kind, **(data or {})}
            obj.setdefault(key, text)
            self._write_json(obj)
            return
        self._write(f"{'!!!' if error else '-!-'} {clean(text)}")

    def show_event(self, event: ClientEvent) -> None:
        if self.json_mode:
            self._write_json(event.to_json())
            return
        room = self.client.rooms.get(getattr(event, "room", None) or "")
        members = len(room.users) if room is not None else 0
        if hidden(event, joins=self.joins, members=members, own_nick=self.client.nick):
            return
        if isinstance(event, NickChanged):
            change = (event.old, event.new, event.ts)
            if change in self._nick_changes:
                return
            self._nick_changes.append(change)
        line = format_event(event, own_nick=self.client.nick, room=self.room)
        if line is not None:
            self._keep(getattr(event, "room", None) or "", line)
            self._write(line)

    def _keep(self, room: str, line: str) -> None:
        if room not in self._scrollback and room and room not in self.client.rooms:
            return  # a late event of a room we left
        self._scrollback.setdefault(room, deque(maxlen=SCROLLBACK)).append(line)

    def scrollback(self) -> list[str]:
        return list(self._scrollback.get(self.room or "", ()))

    def show_reply(self, event: DirectMessage) -> None:
        self.show_event(event)

    async def joined(self, room: str) -> None:
        self.room = room
        self.show_info(f"now talking in {room}", data={"what": "joined", "room": room})

    async def left(self, room: str) -> None:
        self._scrollback.pop(room, None)
        if room == self.room:
            self.room = next((r for r in self.client.rooms if r != room), None)

    async def quit(self, reason: str | None) -> None:
        self.quit_reason = reason

    def nick_changed(self) -> None:
        pass

    async def _attend(self, event: ClientEvent) -> None:
        """Ring for a mention or a DM (on a terminal only: never into a pipe), and
        answer a DM while away."""
        nick = self.client.nick
        if not self.json_mode and self.personal.calls_for(event, nick) and self.out.isatty():
            text = getattr(event, "text", "")
            self.out.write(alert_sequence(self.personal.notify, getattr(event, "nick", ""), text))
            self.out.flush()
        answer = self.personal.auto_reply(event, nick)
        if answer is not None and isinstance(event, DirectMessage):
            with contextlib.suppress(ZchatError, TimeoutError):
                self.show_reply(await self.client.dm(event.nick, answer))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lines = _stdin_lines(loop, self.stdin)
        printer = asyncio.create_task(self._print_events())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            while True:
                reader = asyncio.create_task(lines.get())
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    reader.cancel()
                    break
                line = reader.result()
                if line is None or not await run_line(self.client, self, line):
                    break
        finally:
            stopper.cancel()
            await self.client.close(self.quit_reason)
            await printer

    async def _print_events(self) -> None:
        async for event in self.client.events():
            if self.personal.hides(event):
                continue
            if self.transcript is not None:
                self.transcript.write(event, self.client.nick)
            self.show_event(event)
            await self._attend(event)
        # The client closed itself (replaced by another connection): nothing more to do.
        self.stop()
