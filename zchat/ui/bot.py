"""Scripted clients for demos and tests, built on :class:`zchat.client.Client`.

A bot says its lines on a schedule (``delay``, then one every ``interval``,
``count`` in all or forever), prints what it sees in line-mode format, and
with ``respond`` answers ``!time``, ``!who``, ``!echo TEXT`` and ``!help``
in its room.

Bots cannot talk each other into a loop: every answer starts with the
asker's nick and a colon (``Robin: 12:00:00 UTC``), and a nick holds no
whitespace, so an answer's first word is never a command. Answers are also
rationed, and a bot never answers itself or the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TextIO

from zchat.client.client import DEFAULT_PUB, DEFAULT_ROUTER, Client
from zchat.client.events import ClientEvent, Missed, Status
from zchat.curve import CurveKeys
from zchat.errors import EXIT_OK, ProtocolError, UsageError, ZchatError, exit_code
from zchat.protocol.events import ErrorReply, Message
from zchat.protocol.names import check_nick, check_room, fold
from zchat.ratelimit import TokenBucket
from zchat.ui.input import Chat, InputError, SlashCommand, parse_input
from zchat.ui.render import error_line, format_event

#: Longest echo, so that an answer stays far below the broker's text limit.
MAX_ECHO: Final = 400

COMMANDS_HELP: Final = "commands: !time, !who, !echo TEXT, !help"


class BotError(UsageError):
    """A bot configuration or script that cannot work; the message says why."""


class Show(StrEnum):
    """What a bot prints: every event, only its own doings, or nothing."""

    ALL = "all"
    OWN = "own"
    NONE = "none"


#: What a script line can be: chat (``/me`` included) or ``/topic``.
Line = Chat | SlashCommand


def parse_lines(lines: Iterable[str], source: str = "script") -> tuple[Line, ...]:
    """Parse script lines: blank lines and ``#`` comments are skipped.

    A line is said as typed (``/me`` makes an action, ``//`` a literal
    slash); ``/topic TEXT`` sets the room's topic; other commands are refused.
    """
    out: list[Line] = []
    for number, raw in enumerate(lines, 1):
        if raw.lstrip().startswith("#"):
            continue
        try:
            parsed = parse_input(raw)
        except InputError as exc:
            raise BotError(f"{source} line {number}: {exc}") from None
        if parsed is None:
            continue
        if isinstance(parsed, SlashCommand) and not (parsed.name == "topic" and parsed.args):
            raise BotError(
                f"{source} line {number}: only chat, /me and /topic TEXT are allowed in a bot"
            )
        out.append(parsed)
    return tuple(out)


def read_script(path: Path) -> tuple[Line, ...]:
    """The parsed lines of a script file (UTF-8, one line per message)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BotError(f"cannot read script {path}: {exc}") from None
    return parse_lines(text.splitlines(), str(path))


@dataclass(frozen=True, slots=True)
class BotConfig:
    nick: str
    lines: tuple[Line, ...] = ()
    room: str = "lobby"
    #: Seconds between two lines.
    interval: float = 3.0
    #: Lines to say in all, cycling through ``lines``; 0 = forever.
    count: int = 0
    #: Seconds before the first line.
    delay: float = 0.0
    respond: bool = False
    show: Show = Show.ALL
    router: str = DEFAULT_ROUTER
    pub: str = DEFAULT_PUB
    connect_timeout: float = 5.0
    curve: CurveKeys | None = None

    def __post_init__(self) -> None:
        try:
            check_nick(self.nick)
        except ProtocolError as exc:
            raise BotError(f"bad nick {self.nick!r}: {exc.reason}") from None
        try:
            check_room(self.room)
        except ProtocolError as exc:
            raise BotError(f"bad room {self.room!r}: {exc.reason}") from None
        if not self.lines and not self.respond:
            raise BotError("a bot needs lines to say (--say or --script) or --respond")
        if self.interval < 0 or self.delay < 0 or self.count < 0:
            raise BotError("interval, delay and count cannot be negative")
        if self.lines and self.count == 0 and self.interval == 0:
            raise BotError("a bot that talks forever (count 0) needs an interval above 0")


# ---------------------------------------------------------------- responder


def ration() -> TokenBucket:
    """How often a bot answers: 5 at once, then one a second."""
    return TokenBucket(rate=1.0, burst=5.0)


def answer(text: str, asker: str, *, room: str, users: Sequence[str], now: float) -> str | None:
    """The answer to a ``!command`` said by ``asker``, or None if it is not one (pure)."""
    if not text.startswith("!"):
        return None
    word, _, rest = text[1:].partition(" ")
    command = word.lower()
    if command == "time":
        body = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    elif command == "who":
        body = f"in {room} ({len(users)}): {', '.join(sorted(users, key=fold))}"
    elif command == "echo":
        rest = rest.strip()
        body = rest[:MAX_ECHO] if rest else "usage: !echo TEXT"
    elif command == "help":
        body = COMMANDS_HELP
    else:
        return None  # someone else's command, or a typo: stay quiet
    return f"{asker}: {body}"


# ---------------------------------------------------------------- the bot


@dataclass
class Bot:
    """Runs one bot on a client until its lines are said, or :meth:`stop`."""

    config: BotConfig
    client: Client
    out: TextIO = field(default=sys.stdout)
    ration: TokenBucket = field(default_factory=ration)
    #: Lines said so far, and answers given.
    said: int = 0
    answered: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def stop(self) -> None:
        self.stopping.set()

    @property
    def room(self) -> str:
        return check_room(self.config.room)

    async def run(self) -> None:
        """Speak (and answer) until done or stopped, then say bye and close the client."""
        listener = asyncio.create_task(self._listen(), name="zchat-bot-listen")
        speaker = asyncio.create_task(self._speak(), name="zchat-bot-speak")
        stopper = asyncio.create_task(self.stopping.wait())
        try:
            waits: set[asyncio.Task[Any]] = {stopper, listener}
            if not self.config.respond:
                waits.add(speaker)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            speaker.cancel()
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker
            await self.client.close()
            # The listener ends once the client is closed and its queue is drained.
            await listener

    async def _speak(self) -> None:
        lines = self.config.lines
        if not lines:
            return
        loop = asyncio.get_running_loop()
        start = loop.time() + self.config.delay
        n = 0
        while self.config.count == 0 or n < self.config.count:
            # Absolute times: bots started together keep their order, without drift.
            due = start + n * self.config.interval
            if await self._stopped_within(due - loop.time()):
                return
            await self._say(lines[n % len(lines)])
            n += 1

    async def _stopped_within(self, seconds: float) -> bool:
        if seconds <= 0:
            await asyncio.sleep(0)  # a burst of lines still lets the client read
            return self.stopping.is_set()
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _say(self, line: Line) -> None:
        try:
            if isinstance(line, Chat):
                await self.client.say(line.text, self.room, action=line.action)
            else:
                await self.client.set_topic(line.args[0], self.room)
        except ZchatError as exc:
            self._print(f"!!! {exc}")
            return
        self.said += 1

    async def _listen(self) -> None:
        async for event in self.client.events():
            self._show(event)
            if self.config.respond:
                await self._maybe_answer(event)

    async def _maybe_answer(self, event: ClientEvent) -> None:
        if not isinstance(event, Message) or event.history or event.action:
            return
        nick, text = event.nick, event.text
        if event.room != self.room:
            return
        if fold(nick) == fold(self.client.nick):
            return
        state = self.client.rooms.get(self.room)
        reply = answer(
            text, nick, room=self.room, users=state.users if state else [], now=time.time()
        )
        if reply is None or not self.ration.take(time.monotonic()):
            return
        try:
            await self.client.say(reply, self.room)
        except ZchatError as exc:
            self._print(f"!!! {exc}")
            return
        self.answered += 1

    def _show(self, event: ClientEvent) -> None:
        show = self.config.show
        if show is Show.NONE:
            return
        if show is Show.OWN and not self._own(event):
            return
        line = format_event(event, own_nick=self.client.nick, room=self.room)
        if line is not None:
            self._print(line)

    def _own(self, event: ClientEvent) -> bool:
        if isinstance(event, Status | ErrorReply | Missed):
            return True
        nick = event.nick
        return fold(nick) == fold(self.client.nick) and not getattr(event, "history", False)

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def run_bot(config: BotConfig, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Connect, run the bot until done or SIGINT/SIGTERM, close; returns an exit code.

    A signal while connecting gives up at once and still exits 0: there is
    nothing to say goodbye to yet.
    """
    client = Client(
        config.nick,
        router=config.router,
        pub=config.pub,
        rooms=[config.room],
        connect_timeout=config.connect_timeout,
        backlog=0,
        curve=config.curve,
    )
    bot = Bot(config, client, out=out)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, bot.stop)
    try:
        connecting = asyncio.create_task(client.connect())
        stopper = asyncio.create_task(bot.stopping.wait())
        await asyncio.wait({connecting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, ZchatError):
                await connecting
            return EXIT_OK
        try:
            connecting.result()
        except ZchatError as exc:
            err.write(error_line(exc) + "\n")
            return exit_code(exc)
        await bot.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return EXIT_OK
