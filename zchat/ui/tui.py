"""The full-screen terminal client: a Textual app around a connected ``Client``.

Safety rule for everything on screen: other people's text (nicks, rooms,
topics, messages, reasons) goes through :func:`zchat.ui.render.clean` and is
appended to ``rich.text.Text`` objects as plain strings with styles chosen
here. Nothing is ever built as a markup string, so ``[@click=...]`` or
``[bold]`` in a message stays literal and escape sequences never reach the
terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, Footer, Input, Static

from zchat.client.client import Client
from zchat.client.events import ClientEvent, Missed, Status
from zchat.errors import ZchatError
from zchat.protocol.events import (
    DirectMessage,
    Left,
    Message,
    NickChanged,
    RoomEvent,
)
from zchat.ui.input import run_line
from zchat.ui.lines import (
    MENTION,
    MUTED,
    STATES,
    event_line,
    info_line,
    nick_style,
)
from zchat.ui.noise import Joins, hidden
from zchat.ui.personal import Personal, alert_sequence
from zchat.ui.render import clean, mention_spans
from zchat.ui.tabs import TabbedApp, dm_key
from zchat.ui.transcript import Transcript
from zchat.ui.widgets import ChatInput, ChatLog, RoomTabs, Sidebar

__all__ = ["MENTION", "ChatApp", "ChatInput", "ChatLog", "dm_key", "event_line", "run_tui"]


#: Narrower than this, the user list gives its columns to the messages (Ctrl+B brings it back).
NARROW = 80


class ChatApp(TabbedApp):
    """A full-screen chat client for an already connected ``Client``."""

    TITLE = "zchat"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { height: 1; background: $panel; }
    #header-room { width: 1fr; padding: 0 1; }
    #header-state { width: auto; padding: 0 1; }
    #rooms { height: 2; }
    #body { height: 1fr; }
    #logs { width: 1fr; }
    ChatLog {
        border: none;
        padding: 0 1;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
        scrollbar-background: $surface;
    }
    #sidebar { width: 24; border-left: solid $panel-lighten-2; padding: 0 1; }
    #input { border: tall $panel-lighten-2; }
    #input:focus { border: tall $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit", "Quit", priority=True),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("ctrl+n", "switch(1)", "Next room", priority=True),
        Binding("ctrl+p", "switch(-1)", "Previous room", priority=True),
        Binding("ctrl+b", "toggle_sidebar", "Users", priority=True),
        Binding("ctrl+f", "search", "Search", priority=True),
        Binding("pageup", "page(-1)", "Scroll up"),
        Binding("pagedown", "page(1)", "Scroll down"),
    ]

    def __init__(
        self,
        client: Client,
        *,
        joins: Joins = Joins.AUTO,
        personal: Personal | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        super().__init__(client)
        self.transcript = transcript
        self.joins = joins
        self.personal = personal or Personal()
        self.state = "connected" if client.connected else "reconnecting"
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._quitting = False
        #: Shown or hidden by Ctrl+B; None: by the width (hidden below NARROW).
        self.sidebar_choice: bool | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            yield Static(id="header-room", markup=False)
            yield Static(id="header-state", markup=False)
        yield RoomTabs(id="rooms")
        with Horizontal(id="body"):
            with ContentSwitcher(id="logs", initial="log-home"):
                yield self.home
            with Sidebar(id="sidebar"):
                yield Static(id="users", markup=False)
        yield ChatInput(self._known_nicks, id="input", placeholder="Message, or /help for commands")
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        self._place_sidebar(event.size.width)

    def _place_sidebar(self, width: int) -> None:
        show = self.sidebar_choice if self.sidebar_choice is not None else width >= NARROW
        self.query_one(Sidebar).display = show

    def action_search(self) -> None:
        box = self.query_one(ChatInput)
        box.value = "/search "
        box.cursor_position = len(box.value)
        box.focus()

    def action_toggle_sidebar(self) -> None:
        self.sidebar_choice = not self.query_one(Sidebar).display
        self._place_sidebar(self.size.width)

    async def on_mount(self) -> None:
        self._place_sidebar(self.size.width)
        for name in list(self.client.rooms):
            await self._ensure_view(name)
        first = next(iter(self.views), None)
        self._switch(first)
        self.query_one(ChatInput).focus()
        self.run_worker(self._pump_events(), name="events", group="zchat")
        self.run_worker(self._run_commands(), name="commands", group="zchat")

    # ------------------------------------------------------------ views

    def _switched(self) -> None:
        self._refresh_users()
        self._refresh_header()

    def show_info(
        self, text: str, *, error: bool = False, data: Mapping[str, Any] | None = None
    ) -> None:
        self._add(None, info_line(text, error=error))

    def _refresh_header(self) -> None:
        room = Text()
        state = self.client.rooms.get(self.current) if self.current is not None else None
        if self.current is None:
            room.append("not in a room: /join ROOM", MUTED)
        elif self.current_dm is not None:
            room.append("direct messages with ", MUTED)
            room.append(clean(self.current_dm), nick_style(self.current_dm))
        else:
            room.append(f"#{clean(self.current)}", "bold")
            room.append("  ")
            topic = state.topic if state is not None else ""
            room.append(clean(topic) if topic else "(no topic)", "" if topic else MUTED)
        self.query_one("#header-room", Static).update(room)
        symbol, style, words = STATES.get(self.state, ("?", "", self.state))
        right = Text()
        right.append(f"{symbol} {words}", style)
        right.append(" as ", MUTED)
        right.append(clean(self.client.nick), nick_style(self.client.nick))
        if self.personal.away is not None:
            right.append(" (away)", MUTED)
        self.query_one("#header-state", Static).update(right)

    def _refresh_users(self) -> None:
        state = self.client.rooms.get(self.current) if self.current is not None else None
        users = sorted(state.users, key=str.casefold) if state is not None else []
        if self.current_dm is not None:
            users = [self.client.nick, self.current_dm]
        text = Text()
        text.append(f"{len(users)} here\n", MUTED)
        for nick in users:
            text.append("\n")
            text.append(clean(nick), nick_style(nick, self.client.nick))
        self.query_one("#users", Static).update(text)

    def _known_nicks(self) -> list[str]:
        nicks: dict[str, None] = {}
        current = self.client.rooms.get(self.current) if self.current is not None else None
        for state in [current, *self.client.rooms.values()]:
            if state is not None:
                nicks.update(dict.fromkeys(state.users))
        nicks.update(dict.fromkeys(self.dm_nicks))
        return list(nicks)

    # ------------------------------------------------------------ events

    async def _pump_events(self) -> None:
        async for event in self.client.events():
            await self.show_event(event)

    async def show_event(self, event: ClientEvent) -> None:
        """Show one event from the client: in its room, or in the open one."""
        if self.personal.hides(event):
            return
        if self.transcript is not None:
            self.transcript.write(event, self.client.nick)
        if self.personal.calls_for(event, self.client.nick):
            self.alert(getattr(event, "nick", ""), getattr(event, "text", ""))
        answer = self.personal.auto_reply(event, self.client.nick)
        if answer is not None and isinstance(event, DirectMessage):
            self.run_worker(self._answer(event.nick, answer), group="away")
        line = event_line(event, self.client.nick)
        if isinstance(event, Status):
            self.state = event.state
            self._refresh_header()
        if isinstance(event, RoomEvent) and event.room is not None:
            await self._show_room_event(event, line)
            return
        if isinstance(event, DirectMessage):
            self._show_dm(event, line)
            return
        target = event.room if isinstance(event, Missed) and event.room in self.views else None
        if line is not None:
            self._add(target, line)

    async def _show_room_event(self, event: RoomEvent, line: Text | None) -> None:
        room = event.room
        assert room is not None
        if room not in self.views:
            if room not in self.client.rooms:
                return  # a late event of a room we left
            await self._ensure_view(room)
        view = self.views[room]
        state = self.client.rooms.get(room)
        members = len(state.users) if state is not None else 0
        if hidden(event, joins=self.joins, members=members, own_nick=self.client.nick):
            line = None
        if line is not None:
            self._add(room, line, history=event.history)
        if isinstance(event, Message) and not event.history and room != self.current:
            view.unread += 1
            if event.nick != self.client.nick and mention_spans(
                clean(event.text), clean(self.client.nick)
            ):
                view.mentioned = True
            self._relabel(view)
        own_leave = isinstance(event, Left) and event.nick == self.client.nick
        if own_leave and room not in self.client.rooms:
            await self._drop_view(room)
        if room == self.current and not event.history:
            self._refresh_users()
            self._refresh_header()
        if isinstance(event, NickChanged):
            self._refresh_header()

    def alert(self, title: str, body: str) -> None:
        """Get the person's attention: the bell, and a desktop notification if set."""
        sequence = alert_sequence(self.personal.notify, title, body)
        if not sequence:
            return
        self.bell()
        driver = self._driver
        if sequence != "\a" and driver is not None:
            driver.write(sequence.removesuffix("\a"))

    async def _answer(self, nick: str, text: str) -> None:
        with contextlib.suppress(ZchatError, TimeoutError):
            self.show_reply(await self.client.dm(nick, text))

    # ------------------------------------------------------------ input

    def on_input_submitted(self, event: Input.Submitted) -> None:
        chat_input = self.query_one(ChatInput)
        chat_input.remember(event.value)
        chat_input.value = ""
        self._lines.put_nowait(event.value)

    async def _run_commands(self) -> None:
        # One line at a time, in order, without blocking the screen meanwhile.
        while True:
            line = await self._lines.get()
            await self.handle_line(line)

    async def handle_line(self, line: str) -> None:
        """Act on one typed line; every mistake becomes one local error line."""
        await run_line(self.client, self, line)

    # The front end's side of zchat.ui.input.run_line.

    async def joined(self, room: str) -> None:
        await self._ensure_view(room)
        self._switch(room)

    async def left(self, room: str) -> None:
        await self._drop_view(room)

    async def quit(self, reason: str | None) -> None:
        await self.action_quit(reason)

    def nick_changed(self) -> None:
        self._refresh_header()
        self._refresh_users()

    # ------------------------------------------------------------ actions

    async def action_quit(self, reason: str | None = None) -> None:
        """Say ``bye`` (with ``reason``) and leave the app with exit code 0."""
        if self._quitting:
            return
        self._quitting = True
        self.state = "closing"
        self._refresh_header()
        with contextlib.suppress(ZchatError, TimeoutError):
            await self.client.close(reason)
        self.exit(0)

    def request_quit(self) -> None:
        """Quit from outside the app's handlers (a signal)."""
        self.run_worker(self.action_quit(), name="quit")


class _LogToApp(logging.Handler):
    """Log records as local lines: a write to stderr would tear the screen."""

    def __init__(self, app: ChatApp, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self._app = app
        self._loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {record.getMessage()}"
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._show, text)

    def _show(self, text: str) -> None:
        if self._app.is_running:
            self._app.show_info(text, error=True)


async def run_tui(
    client: Client,
    *,
    joins: Joins = Joins.AUTO,
    personal: Personal | None = None,
    transcript: Transcript | None = None,
) -> int:
    """Run the app on an already connected client; returns the exit code."""
    app = ChatApp(client, joins=joins, personal=personal, transcript=transcript)
    loop = asyncio.get_running_loop()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_LogToApp(app, loop)]
    loop.add_signal_handler(signal.SIGTERM, app.request_quit)
    try:
        result = await app.run_async()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        root.handlers = saved
        await client.close()
    return result or 0
