"""The terminal UI's tabs: one view per room and per conversation of direct messages,
which one is open, unread markers, and where a line goes.

:class:`TabbedApp` is the base of :class:`zchat.ui.tui.ChatApp`; the same safety rule
holds here: other people's text goes through :func:`zchat.ui.render.clean` and into
``rich.text.Text`` as plain strings.
"""

from __future__ import annotations

import itertools

from rich.text import Text
from textual.app import App
from textual.await_complete import AwaitComplete
from textual.widgets import ContentSwitcher, Tab, Tabs

from zchat.client.client import Client
from zchat.protocol.events import DirectMessage
from zchat.protocol.names import fold
from zchat.ui.lines import UNREAD, event_line, rule_line
from zchat.ui.render import clean
from zchat.ui.widgets import ChatLog, RoomView

#: Conversations of direct messages remembered for completion.
DM_NICKS = 50


def dm_key(nick: str) -> str:
    """The view key of a conversation with ``nick``: a room name has no spaces, so
    this never names a room."""
    return f" @{fold(nick)}"


class TabbedApp(App[int]):
    """The views of a client's rooms and conversations, each a tab with its own log."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.views: dict[str, RoomView] = {}
        #: Where local lines go when no room is open.
        self.home = ChatLog(id="log-home")
        self.current: str | None = None
        #: The people of recent conversations, most recent last.
        self.dm_nicks: list[str] = []
        self._tab_ids = itertools.count(1)

    def _switched(self) -> None:
        """The open view changed: the app redraws what depends on it."""

    def _new_view(self, key: str, dm: str | None = None) -> RoomView:
        """The view of a room, or of a conversation with ``dm``; mounting starts now."""
        view = self.views.get(key)
        if view is None:
            n = next(self._tab_ids)
            label = Text(clean(key) if dm is None else f"@{clean(dm)}")
            view = RoomView(key, Tab(label, id=f"room-{n}"), ChatLog(id=f"log-{n}"), dm=dm)
            self.views[key] = view
            view.mounted = AwaitComplete(
                self.query_one(Tabs).add_tab(view.tab),
                self.query_one(ContentSwitcher).add_content(view.log),
            )
        return view

    async def _ensure_view(self, room: str, dm: str | None = None) -> RoomView:
        view = self._new_view(room, dm)
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
        self._switched()

    def _relabel(self, view: RoomView) -> None:
        label = Text(clean(view.name) if view.dm is None else f"@{clean(view.dm)}")
        if view.unread:
            label.append(f" {'!' if view.mentioned else ''}{view.unread}", UNREAD)
        view.tab.label = label

    @property
    def current_dm(self) -> str | None:
        view = self._current_view()
        return view.dm if view is not None else None

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

    def _show_dm(self, event: DirectMessage, line: Text | None) -> None:
        """A DM goes to the conversation with the other person, opened if need be."""
        outgoing = event.nick == self.client.nick and event.to != self.client.nick
        peer = event.to if outgoing else event.nick
        self._remember_dm(peer)
        view = self._new_view(dm_key(peer), peer)
        if line is None:
            return
        view.log.add(line)
        if view.name != self.current:
            if outgoing:
                # Sent from elsewhere (/msg in a room): confirm it where it was typed.
                self._add(None, line)
            else:
                view.unread += 1
                view.mentioned = True  # a DM is for you, as a mention is
                self._relabel(view)

    def _remember_dm(self, nick: str) -> None:
        if nick in self.dm_nicks:
            self.dm_nicks.remove(nick)
        self.dm_nicks.append(nick)
        del self.dm_nicks[:-DM_NICKS]

    # The tabs' part of the front end zchat.ui.input.run_line drives (Frontend).

    def show_reply(self, event: DirectMessage) -> None:
        self._show_dm(event, event_line(event, self.client.nick))

    async def talk_to(self, nick: str | None) -> None:
        if nick is not None:
            key = dm_key(nick)
            await self._ensure_view(key, self.views[key].dm if key in self.views else nick)
            self._switch(key)
        elif self.current_dm is not None and self.current is not None:
            await self._drop_view(self.current)

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

    def scrollback(self) -> list[str]:
        return [line.plain for line in self.current_log.source]
