"""The terminal UI, headless (Textual's Pilot) against a real broker and real clients."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from conftest import ROOT, BrokerThread
from helpers import collect_until, everything_until, wait_for
from rich.style import Style
from rich.text import Text
from textual.pilot import Pilot

from zchat import (
    Client,
    ClientEvent,
    DirectMessage,
    Joined,
    Left,
    Message,
    Missed,
    NickChanged,
    TopicSet,
)
from zchat.ui.lines import MENTION, event_line
from zchat.ui.noise import Joins
from zchat.ui.personal import Notify, alert_sequence
from zchat.ui.render import mention_spans, nick_colour
from zchat.ui.tui import ChatApp, dm_key
from zchat.ui.widgets import ChatInput, ChatLog

SIZE = (110, 30)
INJECTIONS = ["\x1b[31mred", "[@click=app.bell]x[/]", "[bold]x[/bold]", "abc\u202edef"]

Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
def broker(make_broker: Callable[..., BrokerThread]) -> BrokerThread:
    # Starting an app blocks the test's event loop for a moment, which on a busy
    # machine can outlast three 0.2 s heartbeats and time the clients out.
    return make_broker(heartbeat=1.0)


@pytest.fixture
async def connect(broker: BrokerThread) -> AsyncIterator[Connect]:
    """Connect real clients to ``broker`` (or another); all are closed at teardown."""
    clients: list[Client] = []

    async def start(nick: str, *rooms: str, on: BrokerThread | None = None) -> Client:
        where = on or broker
        client = Client(nick, router=where.router, pub=where.pub, rooms=rooms or ("lobby",))
        await client.connect()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def until(
    pilot: Pilot[int], check: Callable[[], object], what: str, timeout: float = 10
) -> None:
    """Let the app run until ``check()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


def lines(app: ChatApp, room: str | None = None) -> list[str]:
    """The plain text of a room's lines (the open room by default)."""
    name = room or app.current
    view = app.views.get(name) if name is not None else None
    return [line.plain for line in (view.lines if view is not None else app.home.source)]


def shows(app: ChatApp, text: str, room: str | None = None) -> bool:
    return any(text in line for line in lines(app, room))


def screen_lines(app: ChatApp) -> list[str]:
    """What the log widget actually rendered, segment text joined."""
    return ["".join(seg.text for seg in strip) for strip in app.current_log.lines]


def users(app: ChatApp) -> list[str]:
    text = app.query_one("#users").render()
    return str(text).split("\n")[2:]


async def type_line(pilot: Pilot[int], line: str) -> None:
    app = pilot.app
    assert isinstance(app, ChatApp)
    box = app.query_one(ChatInput)
    box.value = line
    box.cursor_position = len(line)
    await pilot.press("enter")


def said(text: str) -> Callable[[ClientEvent], bool]:
    return lambda event: isinstance(event, Message) and event.text == text


def assert_no_actions(text: Text) -> None:
    """No span carries a link or a Textual action (``@click`` lives in ``meta``)."""
    for span in text.spans:
        style = span.style if isinstance(span.style, Style) else Style.parse(span.style)
        assert style.link is None, span
        assert not style.meta, span


# ---------------------------------------------------------------- pure parts


def test_nick_colour_is_stable_and_case_blind() -> None:
    assert nick_colour("Robin") == nick_colour("robin") == nick_colour("ROBIN")
    assert len({nick_colour(f"user{n}") for n in range(100)}) > 6


def test_mention_spans_whole_words_any_case() -> None:
    text = "Robin, robin! Robinson @ROBIN"
    assert mention_spans(text, "Robin") == [(0, 5), (7, 12), (24, 29)]
    assert mention_spans("x .* y", ".*") == [(2, 4)]
    assert mention_spans("xyz", ".*") == []
    assert mention_spans("anything", "") == []


@pytest.mark.parametrize("evil", INJECTIONS)
def test_event_line_keeps_hostile_text_literal(evil: str) -> None:
    line = event_line(Message("lobby", evil, evil, 0.0, 1), "Robin")
    assert line is not None
    assert "\x1b" not in line.plain
    assert "\u202e" not in line.plain
    if evil.startswith("["):
        assert line.plain.count(evil) == 2  # nick and text, both verbatim
    assert_no_actions(line)


def test_event_line_marks_history_notices_and_missed() -> None:
    history = Message("lobby", "Bob", "old", 0.0, 1, history=True)
    line = event_line(history, "Robin")
    assert line is not None
    assert any(str(span.style) == "dim italic" for span in line.spans)
    missed = event_line(Missed("lobby", 7), "Robin")
    assert missed is not None
    assert "7 messages missed in lobby" in missed.plain
    join = event_line(Joined("lobby", "Bob", 0.0, 2), "Robin")
    assert join is not None
    assert join.plain.endswith("--> │ Bob joined lobby")
    mention = event_line(Message("lobby", "Bob", "hey robin!", 0.0, 3), "Robin")
    assert mention is not None
    assert any(span.style is MENTION for span in mention.spans)
    own = event_line(Message("lobby", "Robin", "I am Robin", 0.0, 4), "Robin")
    assert own is not None
    assert not any(span.style is MENTION for span in own.spans)


# ---------------------------------------------------------------- with a broker


async def test_typed_message_reaches_another_client(connect: Connect) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"hello bob")
        await pilot.press("enter")
        await wait_for(bob, Message, nick="Robin", text="hello bob")
        await until(pilot, lambda: shows(app, "hello bob"), "own line echoed")
        assert app.query_one(ChatInput).value == ""
        # Text being typed stays put while messages arrive.
        await pilot.press(*"half a thou")
        await bob.say("interrupting", "lobby")
        await until(pilot, lambda: shows(app, "interrupting"), "Bob's line")
        assert app.query_one(ChatInput).value == "half a thou"
        assert any("Bob" in line and "interrupting" in line for line in screen_lines(app))


async def test_user_list_follows_joins_and_leaves(connect: Connect) -> None:
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: users(app) == ["Robin"], "only Robin listed")
        carol = await connect("Carol")
        await until(pilot, lambda: users(app) == ["Carol", "Robin"], "Carol listed")
        assert shows(app, "Carol joined lobby")
        await carol.close("off to bed")
        await until(pilot, lambda: users(app) == ["Robin"], "Carol gone")
        assert shows(app, "Carol left lobby (quit")


async def test_msg_reaches_only_its_recipient(connect: Connect) -> None:
    bob = await connect("Bob")
    carol = await connect("Carol")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/msg Bob the password is swordfish")
        dm = await wait_for(bob, DirectMessage, nick="Robin")
        assert (dm.to, dm.text) == ("Bob", "the password is swordfish")
        await until(pilot, lambda: shows(app, "→ *Bob*"), "the outgoing DM shown")
        await type_line(pilot, "done")
        # Carol sees the later room message, and nothing of the DM before it.
        seen = await everything_until(carol, said("done"))
        assert not any(isinstance(e, DirectMessage) for e in seen), seen
        assert not any("swordfish" in repr(e) for e in seen), seen
        await bob.dm("Robin", "got it")
        bobs = dm_key("Bob")
        await until(pilot, lambda: shows(app, "*Bob* │ got it", bobs), "the incoming DM")
        assert shows(app, "→ *Bob*", bobs), "the conversation has both sides"
        assert not shows(app, "got it"), "a DM is not room chat"


async def test_dms_are_conversations_with_a_tab_each(connect: Connect) -> None:
    bob = await connect("Bob")
    carol = await connect("Carol")
    app = ChatApp(await connect("Robin", "lobby", "dev"))
    async with app.run_test(size=SIZE) as pilot:
        bobs, carols = dm_key("Bob"), dm_key("Carol")
        await bob.dm("Robin", "hi there")
        await until(pilot, lambda: bobs in app.views, "Bob's tab")
        assert app.views[bobs].unread == 1
        assert app.views[bobs].tab.label.plain == "@Bob !1"
        assert app.current == "lobby"
        await type_line(pilot, "/join dev")
        await until(pilot, lambda: app.current == "dev", "dev")
        await carol.dm("Robin", "me too")
        await until(pilot, lambda: carols in app.views, "Carol's tab")
        assert app.views[bobs].unread == 1, "kept across room switches"
        await type_line(pilot, "/query bob")
        await until(pilot, lambda: app.current == bobs, "Bob's conversation open")
        assert app.views[bobs].tab.label.plain == "@Bob"
        assert shows(app, "hi there")
        await type_line(pilot, "back at you")
        reply = await wait_for(bob, DirectMessage, nick="Robin")
        assert reply.text == "back at you"
        await until(pilot, lambda: shows(app, "back at you"), "our side shown")
        assert app.current == bobs
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.current == carols, "tabs cycle through conversations")
        await type_line(pilot, "/msg Bob and another")
        await until(pilot, lambda: shows(app, "and another", bobs), "/msg lands in its tab")
        await type_line(pilot, "/query")
        await until(pilot, lambda: carols not in app.views, "/query alone closes it")
        assert app.current in {"lobby", "dev", bobs}


async def test_room_switching_and_unread_markers(connect: Connect) -> None:
    bob = await connect("Bob", "lobby", "dev")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/join dev")
        await until(pilot, lambda: app.current == "dev", "switch to dev")
        assert [log for log in app.query(ChatLog) if log.display] == [app.current_log]
        assert list(app.views) == ["lobby", "dev"]
        await until(pilot, lambda: users(app) == ["Bob", "Robin"], "dev's users")
        await bob.say("psst robin, over here", "lobby")
        await until(pilot, lambda: app.views["lobby"].unread == 1, "lobby unread")
        assert app.views["lobby"].mentioned
        assert app.views["lobby"].tab.label.plain == "lobby !1"
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.current == "lobby", "back to lobby")
        assert app.views["lobby"].unread == 0
        assert app.views["lobby"].tab.label.plain == "lobby"
        await until(pilot, lambda: any("over here" in x for x in screen_lines(app)), "on screen")
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.current == "dev", "dev again")
        await pilot.click(f"#{app.views['lobby'].tab.id}")
        await until(pilot, lambda: app.current == "lobby", "lobby by a click")
        assert [log for log in app.query(ChatLog) if log.display] == [app.current_log]
        assert isinstance(app.focused, ChatInput)
        await pilot.click(f"#{app.views['dev'].tab.id}")
        await until(pilot, lambda: app.current == "dev", "dev by a click")
        await type_line(pilot, "in dev")
        await wait_for(bob, Message, room="dev", text="in dev")
        await type_line(pilot, "/leave")
        await until(pilot, lambda: app.current == "lobby" and "dev" not in app.views, "dev left")
        await wait_for(bob, Left, room="dev", nick="Robin")


async def test_reconnect_state_shown_after_broker_restart(
    make_broker: Callable[..., BrokerThread], connect: Connect
) -> None:
    first = make_broker(heartbeat=0.5)
    app = ChatApp(await connect("Robin", on=first))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state == "connected", "connected")
        first.stop()
        await until(pilot, lambda: app.state in ("silent", "reconnecting"), "outage noticed")
        header = str(app.query_one("#header-state").render())
        assert "silent" in header or "reconnecting" in header
        # Where the app's client looks for it.
        second = make_broker(router=first.router, pub=first.pub, heartbeat=0.5)
        await until(pilot, lambda: app.state == "registered", "registered again")
        assert "re-registered" in str(app.query_one("#header-state").render())
        bob = await connect("Bob", on=second)
        await bob.say("welcome back", "lobby")
        await until(pilot, lambda: shows(app, "welcome back"), "chat after the restart")


async def test_hostile_text_is_shown_literally(connect: Connect) -> None:
    joker = await connect("[bold]J[/bold]")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        for evil in INJECTIONS:
            await joker.say(evil, "lobby")
        await joker.set_topic("[@click=app.bell]topic[/] \x1b[2J", "lobby")
        await until(pilot, lambda: shows(app, "set the topic"), "the topic change")
        text = "\n".join(lines(app))
        assert "[@click=app.bell]x[/]" in text
        assert "[bold]x[/bold]" in text
        assert "[bold]J[/bold]" in text
        assert "^[[31mred" in text
        assert "abc\ufffddef" in text
        assert "\x1b" not in text
        assert "\u202e" not in text
        view = app.views["lobby"]
        for line in view.lines:
            assert_no_actions(line)
        screen = "\n".join(screen_lines(app))
        assert "[@click=app.bell]x[/]" in screen
        assert "\x1b" not in screen
        for strip in app.current_log.lines:
            for seg in strip:
                assert seg.style is None or (seg.style.link is None and not seg.style.meta)
        header = str(app.query_one("#header-room").render())
        assert "[@click=app.bell]topic[/] ^[[2J" in header


async def test_unknown_command_is_local_and_double_slash_is_literal(connect: Connect) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/frobnicate now")
        await until(pilot, lambda: shows(app, "unknown command /frobnicate"), "local error")
        await type_line(pilot, "//shrug")
        seen = await collect_until(bob, said("/shrug"))
        assert not any("frobnicate" in repr(e) for e in seen), seen
        await type_line(pilot, "/join " + "r" * 100)
        await until(pilot, lambda: shows(app, "bad_room: room must be"), "the bad room refused")
        await type_line(pilot, "/help msg")
        await until(pilot, lambda: shows(app, "/msg NICK text"), "help line")


async def test_input_history_and_completion(connect: Connect) -> None:
    await connect("Bobby")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        box = app.query_one(ChatInput)
        await until(pilot, lambda: "Bobby" in users(app), "Bobby listed")
        await pilot.press("slash", "j", "o", "tab")
        assert box.value == "/join "
        box.value = ""
        await pilot.press("B", "o", "tab")
        assert box.value == "Bobby: "
        await pilot.press(*"hi", "enter")
        await type_line(pilot, "second")
        await pilot.press(*"draft", "up")
        assert box.value == "second"
        await pilot.press("up")
        assert box.value == "Bobby: hi"
        await pilot.press("down", "down")
        assert box.value == "draft"


async def test_log_follows_only_when_at_bottom(connect: Connect) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        log = app.current_log
        for n in range(32):
            await bob.say(f"line {n}", "lobby")
        await until(pilot, lambda: shows(app, "line 31"), "the flood")
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y > 0, "at the bottom")
        await pilot.press("pageup")
        await until(pilot, lambda: log.scroll_y < log.max_scroll_y, "scrolled up")
        where = log.scroll_y
        await bob.say("while reading", "lobby")
        await until(pilot, lambda: shows(app, "while reading"), "new line")
        await pilot.pause()
        assert log.scroll_y == where
        await pilot.press("pagedown", "pagedown", "pagedown")
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, "back at the bottom")
        await bob.say("following again", "lobby")
        await until(pilot, lambda: shows(app, "following again"), "next line")
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, "followed")


@pytest.mark.parametrize(("keys", "reason"), [(("ctrl+c",), None), ((), "gone fishing")])
async def test_quit_says_bye(connect: Connect, keys: tuple[str, ...], reason: str | None) -> None:
    bob = await connect("Bob")
    robin = await connect("Robin")
    app = ChatApp(robin)
    async with app.run_test(size=SIZE) as pilot:
        if keys:
            await pilot.press(*keys)
        else:
            await type_line(pilot, f"/quit {reason}")
        await until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == 0
    left = await wait_for(bob, Left, nick="Robin")
    assert left.reason == "quit"
    if reason:
        assert left.message == reason


async def test_nick_topic_who_and_leaving_every_room(connect: Connect) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/topic tea at five")
        await wait_for(bob, TopicSet, text="tea at five")

        def header() -> str:
            return str(app.query_one("#header-room").render())

        await until(pilot, lambda: "tea at five" in header(), "the topic in the header")
        await type_line(pilot, "/nick Nightwing")
        await wait_for(bob, NickChanged, old="Robin", new="Nightwing")
        await until(pilot, lambda: "Nightwing" in users(app), "the new nick listed")
        assert "Nightwing" in str(app.query_one("#header-state").render())
        await type_line(pilot, "/who")
        await until(pilot, lambda: shows(app, "lobby (2): "), "the who line")
        await type_line(pilot, "/leave")
        await until(pilot, lambda: app.current is None, "no room open")
        await wait_for(bob, Left, nick="Nightwing")
        assert "not in a room" in header()
        await type_line(pilot, "anyone?")
        await until(pilot, lambda: shows(app, "not in a room: /join ROOM first"), "local error")
        await type_line(pilot, "/join lobby")
        await until(pilot, lambda: app.current == "lobby", "back in lobby")


# ---------------------------------------------------------------- the command


def _drain(fd: int, seen: bytearray) -> None:
    """Keep reading the terminal so the app never blocks on a full pty."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        seen.extend(chunk)


def run_on_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int, bytearray]:
    """Start ``python -m zchat ARGS`` with a pty as its terminal; a thread drains it."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zchat", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,  # Textual draws on stderr
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()
    threading.Thread(target=_drain, args=(master, seen), daemon=True).start()
    return proc, master, seen


@pytest.mark.parametrize("problem", ["nick_taken", "no_broker"])
async def test_client_command_on_a_terminal_fails_in_one_line(
    broker: BrokerThread, connect: Connect, problem: str, dead_endpoint: Callable[[], str]
) -> None:
    await connect("Bob")
    router = broker.router if problem == "nick_taken" else dead_endpoint()
    proc, master, seen = run_on_terminal(
        "client", "--nick", "Bob", "--router", router, "--pub", broker.pub,
        "--connect-timeout", "1",
    )  # fmt: skip
    try:
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    # Drain what is left: the reader thread stops at EOF.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while b"\n" not in seen and loop.time() < deadline:
        await asyncio.sleep(0.02)
    os.close(master)
    text = bytes(seen).decode(errors="replace").strip()
    assert code == (1 if problem == "nick_taken" else 3)
    connecting, failure = text.splitlines()
    # Feedback at once, not a blank terminal until the timeout.
    assert connecting == f"zchat: connecting to {router} as Bob (up to 1s)..."
    text = failure
    assert text.startswith("zchat: ")
    assert ("nick_taken" if problem == "nick_taken" else "no broker") in text
    assert "\x1b" not in text  # the full screen never started


async def test_client_command_opens_the_tui_on_a_terminal(
    broker: BrokerThread, connect: Connect
) -> None:
    bob = await connect("Bob")
    proc, master, seen = run_on_terminal(
        "client", "--nick", "Robin", "--router", broker.router, "--pub", broker.pub
    )
    try:
        await wait_for(bob, Joined, nick="Robin", timeout=20)
        await bob.say("are you there?", "lobby")
        # The full screen switched the terminal to the alternate screen.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while b"\x1b[?1049h" not in seen or b"there?" not in seen:
            assert loop.time() < deadline, f"no full screen: {bytes(seen[-300:])!r}"
            await asyncio.sleep(0.05)
        os.write(master, b"\x03")  # Ctrl+C, as a key: the terminal is raw
        left = await wait_for(bob, Left, nick="Robin", timeout=10)
        assert left.reason == "quit"
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


@pytest.mark.parametrize("joins", [Joins.AUTO, Joins.HIDE])
async def test_presence_lines_can_be_hidden(connect: Connect, joins: Joins) -> None:
    app = ChatApp(await connect("Robin"), joins=joins)
    async with app.run_test(size=SIZE) as pilot:
        bob = await connect("Bob")
        await until(pilot, lambda: "Bob" in users(app), "Bob in the user list")
        await bob.say("hi all")
        await until(pilot, lambda: shows(app, "hi all"), "Bob's line")
        joined = any("Bob joined" in line for line in lines(app))
        # A room of two is no crowd: auto shows it live.
        assert joined is (joins is Joins.AUTO)


async def test_narrow_terminal_collapses_the_sidebar_and_indents_wrapped_lines(
    connect: Connect,
) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=(60, 24)) as pilot:
        sidebar = app.query_one("#sidebar")
        await until(pilot, lambda: not sidebar.display, "the sidebar collapsed")
        long = " ".join(f"word{n}" for n in range(30))
        await bob.say(long)
        await until(pilot, lambda: any("word29" in x for x in screen_lines(app)), "wrapped")
        rendered = screen_lines(app)
        first = next(i for i, x in enumerate(rendered) if "word0" in x)
        last = next(i for i, x in enumerate(rendered) if "word29" in x)
        assert last > first, "the message wraps"
        text_column = rendered[first].index("word0")
        assert text_column < 30, "the text keeps most of the width"
        for row in rendered[first + 1 : last + 1]:
            assert row[:text_column].strip() == "", f"not indented under the text: {row!r}"
            assert row[text_column] != " ", row
        await pilot.press("ctrl+b")
        await until(pilot, lambda: sidebar.display, "Ctrl+B shows it again")
        await pilot.resize_terminal(120, 30)
        await pilot.press("ctrl+b")
        await until(pilot, lambda: not sidebar.display, "and hides it, whatever the width")


async def test_mentions_and_dms_ring_ignore_hides_and_away_answers(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await connect("Bob")
    carol = await connect("Carol")
    app = ChatApp(await connect("Robin"))
    rings: list[None] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(None))
    async with app.run_test(size=SIZE) as pilot:
        await bob.say("hello all")
        await until(pilot, lambda: shows(app, "hello all"), "a plain line")
        assert rings == []
        await bob.say("robin, look")
        await until(pilot, lambda: len(rings) == 1, "a mention rings")
        await bob.dm("Robin", "psst")
        await until(pilot, lambda: len(rings) == 2, "a DM rings")
        await type_line(pilot, "/ignore bob")
        await until(pilot, lambda: shows(app, "ignoring bob on this client"), "ignoring")
        await bob.say("robin? anyone?")
        await carol.say("after bob")
        await until(pilot, lambda: shows(app, "after bob"), "Carol's line")
        assert not shows(app, "anyone?")
        assert len(rings) == 2, "an ignored mention does not ring"
        await type_line(pilot, "/away at lunch")
        await until(pilot, lambda: app.personal.away == "at lunch", "away")
        await carol.dm("Robin", "are you there?")
        answer = await wait_for(carol, DirectMessage, nick="Robin")
        assert answer.text == "(away) at lunch"
        await carol.dm("Robin", "still?")
        await carol.dm("Robin", "marker")
        await until(pilot, lambda: shows(app, "marker", dm_key("Carol")), "Carol's marker")
        # The answer is decided as each DM is shown: "done" follows any second one.
        await type_line(pilot, "/msg Carol done")
        seen = await everything_until(
            carol, lambda e: isinstance(e, DirectMessage) and e.text == "done"
        )
        assert not any(isinstance(e, DirectMessage) and "(away)" in e.text for e in seen)
        await type_line(pilot, "/away")
        await until(pilot, lambda: app.personal.away is None, "back")


def test_alert_sequences_are_inert() -> None:
    evil = "x\x1b]0;pwned\x07y;z"
    assert alert_sequence(Notify.NONE, "Bob", evil) == ""
    assert alert_sequence(Notify.BELL, "Bob", evil) == "\a"
    osc9 = alert_sequence(Notify.OSC9, "Bob", evil)
    assert osc9.startswith("\x1b]9;Bob: ")
    assert osc9.endswith("\x07\a")  # the terminator, then the bell
    assert not {"\x1b", "\x07"} & set(osc9[len("\x1b]9;") : -2])
    osc777 = alert_sequence(Notify.OSC777, "Bob;x", evil)
    assert osc777.startswith("\x1b]777;notify;Bob,x;")
    assert not {"\x1b", "\x07"} & set(osc777[len("\x1b]") : -2])
    assert osc777.count(";") == 3


async def test_ctrl_f_searches_the_open_room(connect: Connect) -> None:
    bob = await connect("Bob")
    app = ChatApp(await connect("Robin"))
    async with app.run_test(size=SIZE) as pilot:
        for text in ("find the needle", "just hay", "another NEEDLE"):
            await bob.say(text)
        await until(pilot, lambda: shows(app, "another NEEDLE"), "Bob's lines")
        await pilot.press("ctrl+f")
        box = app.query_one(ChatInput)
        assert box.value == "/search "
        await type_line(pilot, "/search needle")
        await until(pilot, lambda: shows(app, "2 lines contain needle:"), "the results")
        header, first, second = lines(app)[-3:]
        assert "2 lines contain needle:" in header
        assert "find the needle" in first
        assert "another NEEDLE" in second
