"""Line mode: stdin lines in, one flushed line (or JSON object) per event out.

For pipes, scripts and terminals without the full-screen UI. Stdin is read
by a daemon thread because asyncio cannot read every kind of stdin (files,
/dev/null) and a blocked read must never keep the process alive.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import TextIO

from zchat.client.client import Client
from zchat.client.events import ClientEvent
from zchat.protocol.events import DirectMessage
from zchat.ui.input import run_line
from zchat.ui.render import clean, format_event


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
        out: TextIO = sys.stdout,
        stdin: TextIO = sys.stdin,
    ) -> None:
        self.client = client
        self.json_mode = json_mode
        self.out = out
        self.stdin = stdin
        self.room: str | None = next(iter(client.rooms), None)
        self.quit_reason: str | None = None
        self._stop = asyncio.Event()

    @property
    def current(self) -> str | None:
        return self.room

    def stop(self) -> None:
        self._stop.set()

    def _write(self, line: str) -> None:
        # In JSON mode stdout is for events only.
        stream = sys.stderr if self.json_mode else self.out
        stream.write(line + "\n")
        stream.flush()

    def show_info(self, text: str, *, error: bool = False) -> None:
        self._write(f"{'!!!' if error else '-!-'} {clean(text)}")

    def show_event(self, event: ClientEvent) -> None:
        if self.json_mode:
            # ensure_ascii: C1 controls (U+009B is a CSI) and bidi overrides in other
            # users' text reach the terminal as \u escapes, inert.
            self.out.write(json.dumps(event.to_json(), ensure_ascii=True) + "\n")
            self.out.flush()
            return
        line = format_event(event, own_nick=self.client.nick, room=self.room)
        if line is not None:
            self._write(line)

    def show_reply(self, event: DirectMessage) -> None:
        self.show_event(event)

    async def joined(self, room: str) -> None:
        self.room = room
        self.show_info(f"now talking in {room}")

    async def left(self, room: str) -> None:
        if room == self.room:
            self.room = next((r for r in self.client.rooms if r != room), None)

    async def quit(self, reason: str | None) -> None:
        self.quit_reason = reason

    def nick_changed(self) -> None:
        pass

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
            self.show_event(event)
        # The client closed itself (replaced by another connection): nothing more to do.
        self.stop()
