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

from zchat.client import BrokerError, Client, Event, ZchatError
from zchat.commands import Chat, InputError, SlashCommand, help_text, parse_input
from zchat.protocol import ProtocolError
from zchat.text import clean, format_event


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

    def stop(self) -> None:
        self._stop.set()

    def show(self, line: str) -> None:
        """A local line for the person; in JSON mode stdout is for events only."""
        stream = sys.stderr if self.json_mode else self.out
        stream.write(line + "\n")
        stream.flush()

    def show_event(self, event: Event) -> None:
        if self.json_mode:
            self.out.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
            self.out.flush()
            return
        line = format_event(event, own_nick=self.client.nick, room=self.room)
        if line is not None:
            self.show(line)

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
                if line is None or not await self.handle(line):
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

    async def handle(self, line: str) -> bool:
        """Act on one typed line; False when the user asked to quit."""
        try:
            parsed = parse_input(line)
            if parsed is None:
                return True
            if isinstance(parsed, Chat):
                await self.client.say(parsed.text, self.room, action=parsed.action)
                return True
            return await self.command(parsed)
        except InputError as exc:
            self.show(f"!!! {exc}")
        except (BrokerError, ProtocolError) as exc:
            # ProtocolError: a room or nick refused before sending (too long, ...).
            self.show(f"!!! {exc.code}: {clean(exc.reason)}")
        except (ZchatError, TimeoutError) as exc:
            self.show(f"!!! {exc or 'no answer from the broker'}")
        return True

    async def command(self, cmd: SlashCommand) -> bool:
        client = self.client
        args = cmd.args
        if cmd.name == "quit":
            self.quit_reason = args[0] if args else None
            return False
        if cmd.name == "help":
            for text in help_text(args[0] if args else None):
                self.show(text)
        elif cmd.name == "join":
            state = await client.join(args[0])
            self.room = state.name
            self.show(f"-!- now talking in {clean(state.name)}")
        elif cmd.name == "leave":
            room = args[0] if args else self.room
            await client.leave(room, args[1] if len(args) > 1 else None)
            if room == self.room:
                self.room = next((r for r in client.rooms if r != room), None)
        elif cmd.name == "msg":
            self.show_event(await client.dm(args[0], args[1]))
        elif cmd.name == "nick":
            await client.change_nick(args[0])
        elif cmd.name == "who":
            info = await client.who(args[0] if args else self.room)
            users = ", ".join(clean(str(u)) for u in info.get("users", []))
            self.show(f"-!- {clean(str(info.get('room')))} ({info.get('count', 0)}): {users}")
        elif cmd.name == "topic":
            if args:
                await client.set_topic(args[0], self.room)
            else:
                current = client.rooms.get(self.room or "")
                topic = clean(current.topic) if current and current.topic else "(no topic)"
                self.show(f"-!- topic of {clean(self.room or '?')}: {topic}")
        return True
