"""The full-screen terminal client: a Textual app around a connected ``Client``.

Safety rule for everything on screen: other people's text (nicks, rooms,
topics, messages, reasons) goes through :func:`zchat.text.clean` and is
appended to ``rich.text.Text`` objects as plain strings with styles chosen
here. Nothing is ever built as a markup string, so ``[@click=...]`` or
``[bold]`` in a message stays literal and escape sequences never reach the
terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.await_complete import AwaitComplete
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import ContentSwitcher, Footer, Input, RichLog, Static, Tab, Tabs

from zchat.client.client import Client
from zchat.client.events import ClientEvent, Missed, Status
from zchat.errors import ZchatError
from zchat.protocol.events import (
    DirectMessage,
    ErrorReply,
    Joined,
    Left,
    Message,
    NickChanged,
    RoomEvent,
    TopicSet,
)
from zchat.ui.input import complete, run_line
from zchat.ui.render import clean, clock, mention_spans, nick_colour

#: Lines kept per room (and shown in the log): older ones scroll away for good.
SCROLLBACK: Final = 2000
#: Lines remembered by the input's up/down history.
INPUT_HISTORY: Final = 500
#: Width of the nick column.
GUTTER: Final = 12

TIME: Final = Style(color="grey50")
BAR: Final = Style(color="grey35")
MUTED: Final = Style(color="grey58")
HISTORY: Final = Style(dim=True, italic=True)
ACTION: Final = Style(italic=True)
MENTION_LINE: Final = Style(bgcolor="#3a2f0b")
MENTION: Final = Style(bold=True, color="#ffd75f")
DM: Final = Style(bold=True, color="#ff79c6")
ERROR: Final = Style(bold=True, color="#ff5f5f")
INFO: Final = Style(color="#8be9fd")
MISSED: Final = Style(bold=True, color="#ffb86c")
RULE: Final = Style(color="grey42")
UNREAD: Final = Style(bold=True, color="#e5c07b")

#: Connection states from the client's ``status`` events: symbol, style, words.
STATES: Final[dict[str, tuple[str, str, str]]] = {
    "connected": ("●", "bold #50fa7b", "connected"),
    "registered": ("●", "bold #50fa7b", "re-registered"),
    "silent": ("◌", "bold #f1fa8c", "broker silent"),
    "reconnecting": ("↻", "bold #f1fa8c", "reconnecting"),
    "refused": ("✖", "bold #ff5f5f", "refused"),
    "closing": ("○", "grey58", "leaving"),
}


# ---------------------------------------------------------------- pure rendering


def nick_style(nick: str, own_nick: str | None = None) -> Style:
    """Bold in the nick's stable colour; one's own nick reversed so it stands out."""
    return Style(bold=True, color=nick_colour(nick), reverse=nick == own_nick)


def _gutter(line: Text, label: str, style: Style | str) -> None:
    line.append(" " * max(0, GUTTER - cell_len(label)))
    line.append(label, style)
    line.append(" │ ", BAR)


def _start(ts: float | None) -> Text:
    line = Text()
    line.append(clock(ts), TIME)
    line.append(" ")
    return line


def event_line(event: ClientEvent, own_nick: str) -> Text | None:
    """One log line for ``event``, or None for events the log does not show.

    Every untrusted string is cleaned and appended as plain text: the result
    carries no markup, links or actions that came from the wire.
    """
    line = _start(getattr(event, "ts", None))
    match event:
        case Message(nick=nick, text=raw, action=action):
            text = clean(raw)
            style = nick_style(nick, own_nick)
            if action:
                _gutter(line, "*", ACTION)
                line.append(clean(nick), style)
                line.append(" ")
            else:
                _gutter(line, clean(nick), style)
            start = len(line)
            line.append(text, ACTION if action else "")
            spans = [] if nick == own_nick else mention_spans(text, clean(own_nick))
            for begin, end in spans:
                line.stylize(MENTION, start + begin, start + end)
            if spans:
                line.stylize(MENTION_LINE)
        case Joined(nick=nick, room=room):
            _gutter(line, "-->", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(f" joined {clean(room)}", MUTED)
        case Left(nick=nick, room=room, reason=reason, message=message):
            _gutter(line, "<--", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(f" left {clean(room)}", MUTED)
            extra = f": {clean(message)}" if message else ""
            if reason or extra:
                line.append(f" ({clean(reason)}{extra})", MUTED)
        case NickChanged(old=old, new=new):
            _gutter(line, "-!-", MUTED)
            line.append(clean(old), nick_style(old))
            line.append(" is now known as ", MUTED)
            line.append(clean(new), nick_style(new))
        case TopicSet(nick=nick, text=text):
            _gutter(line, "-!-", MUTED)
            line.append(clean(nick), nick_style(nick))
            line.append(" set the topic: ", MUTED)
            line.append(clean(text))
        case DirectMessage(nick=nick, to=to, text=raw, action=action):
            text = clean(raw)
            outgoing = nick == own_nick and to != own_nick
            _gutter(line, f"→ *{clean(to)}*" if outgoing else f"*{clean(nick)}*", DM)
            if action:
                line.append(f"* {clean(nick)} ", ACTION)
            line.append(text, DM if not outgoing else "")
        case ErrorReply(code=code, reason=reason):
            _gutter(line, "!!!", ERROR)
            line.append(f"{clean(code)}: {clean(reason)}", ERROR)
        case Status(state=state, text=text):
            symbol, colour, _ = STATES.get(state, ("-!-", "", ""))
            _gutter(line, symbol, colour)
            line.append(clean(text), colour)
        case Missed(room=room, count=count):
            _gutter(line, "!!!", MISSED)
            line.append(
                f"{count} messages missed in {clean(room)}: the broker no longer had them", MISSED
            )
        case _:
            return None
    if getattr(event, "history", False):
        line.stylize(HISTORY)
    return line


def info_line(text: str, *, error: bool = False) -> Text:
    """A local line (help, who, a typing error); ``text`` is cleaned all the same."""
    line = _start(None)
    _gutter(line, "!!!" if error else "-!-", ERROR if error else INFO)
    line.append(clean(text), ERROR if error else INFO)
    return line


def rule_line(label: str) -> Text:
    line = Text()
    line.append(f"──────── {label} ────────", RULE)
    return line


# ---------------------------------------------------------------- widgets


class ChatLog(RichLog, can_focus=False):
    """One room's log: keeps its lines, follows new ones while at the bottom, rewraps.

    Every room has its own, so switching rooms is instant and keeps each
    room's scroll position; a log renders nothing until it is first shown.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            wrap=True,
            markup=False,
            highlight=False,
            auto_scroll=False,
            max_lines=SCROLLBACK,
            min_width=20,
            **kwargs,
        )
        self.source: deque[Text] = deque(maxlen=SCROLLBACK)
        self._shown_width = 0

    def add(self, line: Text) -> None:
        self.source.append(line)
        self._write_line(line)

    def redraw(self) -> None:
        """Render every kept line again (at a new width) and follow the bottom."""
        self.clear()
        for line in self.source:
            self._write_line(line)
        self.anchor()

    def _write_line(self, line: Text) -> None:
        """Write one line; a long message wraps under its own text, not under the time."""
        if not self._shown_width:
            return  # not laid out yet: the first resize shows everything
        cut = line.plain.find(" │ ") + 3
        # The last width seen: a hidden log (another room's) has none of its own.
        width = self._shown_width
        # An explicit width: RichLog would measure against the console's width.
        if cut < 3 or width <= cut + 10 or cell_len(line.plain) <= width:
            self.write(line, width=width)
            return
        head, body = line.divide([cut])
        indent = " " * head.cell_len
        out = Text()
        for n, part in enumerate(body.wrap(self.app.console, width - head.cell_len)):
            if n:
                out.append("\n")
            out.append_text(head if n == 0 else Text(indent, style=head.style))
            part.rstrip()  # a trailing space past the width would wrap the line again
            out.append_text(part)
        self.write(out, width=width)

    def release_anchor(self) -> None:
        super().release_anchor()
        # Textual releases on every scroll, even one that cannot move past the
        # bottom (PgDn or the wheel there): follow again once it settles there.
        self.call_after_refresh(self._follow_if_at_bottom)

    def _follow_if_at_bottom(self) -> None:
        if self.scroll_target_y >= self.max_scroll_y and self.scroll_y >= self.max_scroll_y:
            self.anchor()

    def on_resize(self, event: events.Resize) -> None:
        # After RichLog's own handler: it only renders once it knows its size.
        self.call_later(self._rewrap)

    def _rewrap(self) -> None:
        width = self.scrollable_content_region.width
        if width and width != self._shown_width:
            self._shown_width = width
            self.redraw()


class ChatInput(Input):
    """The input line: up/down history and Tab completion of commands and nicks."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Previous line", show=False),
        Binding("down", "history(1)", "Next line", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    def __init__(self, nicks: Callable[[], list[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nicks = nicks
        self.history: list[str] = []
        self._index: int | None = None
        self._draft = ""
        # (text before the word, text after the cursor, candidates, index, value set)
        self._cycle: tuple[str, str, list[str], int, str] | None = None

    def remember(self, line: str) -> None:
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-INPUT_HISTORY]
        self._index = None
        self._draft = ""

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._index is None:
            if step > 0:
                return
            self._draft = self.value
            index = len(self.history) - 1
        else:
            index = self._index + step
        if index < 0:
            return
        if index >= len(self.history):
            self._index = None
            self.value = self._draft
        else:
            self._index = index
            self.value = self.history[index]
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        if self._cycle is not None and self._cycle[4] == self.value:
            head, tail, candidates, index, _ = self._cycle
            index = (index + 1) % len(candidates)
        else:
            before = self.value[: self.cursor_position]
            tail = self.value[self.cursor_position :]
            start = before.rfind(" ") + 1
            head, word = before[:start], before[start:]
            if word.startswith("/") and start > 0:
                return
            # Only nicks that can be typed back exactly are offered.
            nicks = [n for n in self._nicks() if clean(n) == n]
            candidates = complete(word, nicks)
            if not candidates:
                self.app.bell()
                return
            index = 0
        choice = candidates[index]
        suffix = ": " if not head and not choice.startswith("/") else " "
        if tail.startswith(" "):
            suffix = suffix.rstrip(" ")
        self.value = head + choice + suffix + tail
        self.cursor_position = len(head + choice + suffix)
        self._cycle = (head, tail, candidates, index, self.value)


@dataclass(slots=True)
class RoomView:
    """The app's side of one room: its tab, its log and unread state."""

    name: str
    tab: Tab
    log: ChatLog
    unread: int = 0
    mentioned: bool = False
    in_history: bool = False
    mounted: AwaitComplete | None = None

    @property
    def lines(self) -> deque[Text]:
        return self.log.source


class RoomTabs(Tabs, can_focus=False):
    """Room tabs that leave the keyboard to the input line when clicked."""


class Sidebar(VerticalScroll, can_focus=False):
    """The user list."""


# ---------------------------------------------------------------- the app


class ChatApp(App[int]):
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
        Binding("pageup", "page(-1)", "Scroll up"),
        Binding("pagedown", "page(1)", "Scroll down"),
    ]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.views: dict[str, RoomView] = {}
        #: Where local lines go when no room is open.
        self.home = ChatLog(id="log-home")
        self.current: str | None = None
        self.state = "connected" if client.connected else "reconnecting"
        self.dm_nicks: list[str] = []
        self._tab_ids = itertools.count(1)
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._quitting = False

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

    async def on_mount(self) -> None:
        for name in list(self.client.rooms):
            await self._ensure_view(name)
        first = next(iter(self.views), None)
        self._switch(first)
        self.query_one(ChatInput).focus()
        self.run_worker(self._pump_events(), name="events", group="zchat")
        self.run_worker(self._run_commands(), name="commands", group="zchat")

    # ------------------------------------------------------------ views

    async def _ensure_view(self, room: str) -> RoomView:
        view = self.views.get(room)
        if view is None:
            n = next(self._tab_ids)
            view = RoomView(room, Tab(Text(clean(room)), id=f"room-{n}"), ChatLog(id=f"log-{n}"))
            self.views[room] = view
            view.mounted = AwaitComplete(
                self.query_one(Tabs).add_tab(view.tab),
                self.query_one(ContentSwitcher).add_content(view.log),
            )
        if view.mounted is not None and not view.mounted.is_done:
            await view.mounted
            if room == self.current:
                self._switch(room)  # switched to before its tab existed
        return view

    async def _drop_view(self, room: str) -> None:
        view = self.views.pop(room, None)
        if view is None:
            return
        tabs = self.query_one(Tabs)
        await tabs.remove_tab(view.tab)
        if self.current == room:
            self.query_one(ContentSwitcher).current = self.home.id
        await view.log.remove()
        if self.current == room:
            self._switch(self._room_of_tab(tabs.active) or next(iter(self.views), None))

    def _room_of_tab(self, tab_id: str | None) -> str | None:
        return next((r for r, v in self.views.items() if v.tab.id == tab_id), None)

    def _switch(self, room: str | None) -> None:
        self.current = room
        view = self.views.get(room) if room is not None else None
        log = self.home
        if view is not None:
            view.unread = 0
            view.mentioned = False
            self._relabel(view)
            if view.mounted is None or view.mounted.is_done:
                log = view.log
                tabs = self.query_one(Tabs)
                if tabs.active != view.tab.id:
                    tabs.active = view.tab.id or ""
        self.query_one(ContentSwitcher).current = log.id
        self._refresh_users()
        self._refresh_header()

    def _relabel(self, view: RoomView) -> None:
        label = Text(clean(view.name))
        if view.unread:
            label.append(f" {'!' if view.mentioned else ''}{view.unread}", UNREAD)
        view.tab.label = label

    def _current_view(self) -> RoomView | None:
        return self.views.get(self.current) if self.current is not None else None

    @property
    def current_log(self) -> ChatLog:
        view = self._current_view()
        return view.log if view is not None else self.home

    def _add(self, room: str | None, line: Text, *, history: bool = False) -> None:
        """Append to a room's lines (the open one if ``room`` is None)."""
        view = self.views.get(room) if room is not None else self._current_view()
        log = view.log if view is not None else self.home
        if view is not None and history != view.in_history:
            log.add(rule_line("earlier messages" if history else "now"))
            view.in_history = history
        log.add(line)

    def show_info(self, text: str, *, error: bool = False) -> None:
        self._add(None, info_line(text, error=error))

    def _refresh_header(self) -> None:
        room = Text()
        state = self.client.rooms.get(self.current) if self.current is not None else None
        if self.current is None:
            room.append("not in a room: /join ROOM", MUTED)
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
        self.query_one("#header-state", Static).update(right)

    def _refresh_users(self) -> None:
        state = self.client.rooms.get(self.current) if self.current is not None else None
        users = sorted(state.users, key=str.casefold) if state is not None else []
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
        line = event_line(event, self.client.nick)
        if isinstance(event, Status):
            self.state = event.state
            self._refresh_header()
        if isinstance(event, RoomEvent) and event.room is not None:
            await self._show_room_event(event, line)
            return
        if isinstance(event, DirectMessage) and event.nick != self.client.nick:
            self._remember_dm(event.nick)
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

    def _remember_dm(self, nick: str) -> None:
        if nick in self.dm_nicks:
            self.dm_nicks.remove(nick)
        self.dm_nicks.append(nick)
        del self.dm_nicks[:-50]

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

    def show_reply(self, event: DirectMessage) -> None:
        self._remember_dm(event.to)
        line = event_line(event, self.client.nick)
        if line is not None:
            self._add(None, line)

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

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        room = self._room_of_tab(event.tab.id)
        if room is not None and room != self.current:
            self._switch(room)

    def action_switch(self, step: int) -> None:
        rooms = list(self.views)
        if not rooms:
            return
        index = rooms.index(self.current) if self.current in rooms else -step
        self._switch(rooms[(index + step) % len(rooms)])

    def action_page(self, step: int) -> None:
        log = self.current_log
        if step < 0:
            log.scroll_page_up(animate=False)
        else:
            log.scroll_page_down(animate=False)

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


async def run_tui(client: Client) -> int:
    """Run the app on an already connected client; returns the exit code."""
    app = ChatApp(client)
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
