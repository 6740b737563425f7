"""The terminal UI's widgets: a room's log, the input line with history and completion,
the room tabs and the sidebar."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.await_complete import AwaitComplete
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Input, RichLog, Tab, Tabs

from zchat.ui.input import complete
from zchat.ui.lines import INPUT_HISTORY, SCROLLBACK
from zchat.ui.render import clean

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
    """The app's side of one room (or one conversation of direct messages): its
    tab, its log and unread state."""

    name: str
    tab: Tab
    log: ChatLog
    unread: int = 0
    mentioned: bool = False
    in_history: bool = False
    mounted: AwaitComplete | None = None
    #: The other person, for a conversation of direct messages; None for a room.
    dm: str | None = None

    @property
    def lines(self) -> deque[Text]:
        return self.log.source


class RoomTabs(Tabs, can_focus=False):
    """Room tabs that leave the keyboard to the input line when clicked."""


class Sidebar(VerticalScroll, can_focus=False):
    """The user list."""
