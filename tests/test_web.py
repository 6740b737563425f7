"""The web gateway: non-browser checks of its limits, then real pages in Chromium.

Browser tests drive Debian's /usr/bin/chromium through Playwright (no browser is
downloaded); they are skipped only when it is absent. Every wait has a deadline
on something observable: a DOM element, a JSON event, a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets
from conftest import BrokerThread, ZchatProcess
from helpers import web_listening
from websockets.typing import Origin

from zchat.web import WebConfig, WebServer, bind, bridge

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Deadline for anything a page shows, in milliseconds (Playwright's unit).
SHOWN = 15_000


class GatewayThread:
    """A gateway on a free 127.0.0.1 port, served by a thread with its own loop."""

    def __init__(self, config: WebConfig) -> None:
        self.server = WebServer(config, bind("127.0.0.1", 0))
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.run(ready.set)), name="gateway", daemon=True
        )
        self._thread.start()
        assert ready.wait(10), "the gateway did not start"

    @property
    def failures(self) -> int:
        return self.server.gateway.failures

    def stop(self) -> None:
        self.server.stop()
        self._thread.join(10)
        assert not self._thread.is_alive(), "gateway thread did not stop"
        self.server.sock.close()


@pytest.fixture
def make_gateway(broker: BrokerThread) -> Iterator[Callable[..., GatewayThread]]:
    started: list[GatewayThread] = []

    def start(**config: Any) -> GatewayThread:
        gateway = GatewayThread(WebConfig(router=broker.router, pub=broker.pub, **config))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return make_gateway()


def origin(gw: GatewayThread) -> str:
    return f"http://127.0.0.1:{gw.port}"


def connect(gw: GatewayThread, from_origin: str | None = None) -> Any:
    """A WebSocket to the gateway, as a page of ``from_origin`` (default: its own)."""
    return websockets.connect(gw.ws_url, origin=Origin(from_origin or origin(gw)))


async def drain(ws: Any) -> None:
    """Read until the gateway closes the socket (``ConnectionClosed``)."""
    async with asyncio.timeout(10):
        while True:
            await ws.recv()


async def receive_json(ws: Any, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The next message from the gateway whose fields include ``fields``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if all(message.get(k) == v for k, v in fields.items()):
                assert isinstance(message, dict)
                return message
            seen.append(message)


# ---------------------------------------------------------------- without a browser


def test_every_response_has_a_strict_csp(gateway: GatewayThread) -> None:
    for path, kind in [("/", "text/html"), ("/static/app.js", "javascript")]:
        with urllib.request.urlopen(gateway.url + path, timeout=10) as response:
            policy = response.headers["Content-Security-Policy"]
            assert kind in response.headers["Content-Type"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in policy
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        assert f"ws://127.0.0.1:{gateway.port}" in policy
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(gateway.url + "/static/nothing.js", timeout=10)
    assert "default-src 'self'" in missing.value.headers["Content-Security-Policy"]
    page = urllib.request.urlopen(gateway.url + "/", timeout=10).read().decode()
    assert '<script type="module" src="/static/app.js">' in page
    assert "style=" not in page
    assert "onclick" not in page


def test_a_forged_host_header_does_not_reach_the_csp() -> None:
    from zchat.web.gateway import csp

    assert "evil" not in csp("evil.example; script-src *")
    assert "ws://chat.example:8080" in csp("chat.example:8080")


async def test_other_origins_are_refused(make_gateway: Callable[..., GatewayThread]) -> None:
    gw = make_gateway(allow_origins=("https://chat.example.org",))
    for bad in ["http://evil.example", "null", f"http://127.0.0.1:{gw.port + 1}"]:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(gw, bad)
        assert refused.value.response.status_code == 403
    # Without an Origin header: refused as well (browsers always send one).
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(gw.ws_url)
    for good in [origin(gw), "https://chat.example.org"]:
        async with connect(gw, good) as ws:
            await ws.send(json.dumps({"type": "line", "text": "hi"}))
            assert (await receive_json(ws))["code"] == "not_registered"


async def test_an_oversize_message_gets_a_clear_error(gateway: GatewayThread) -> None:
    async with connect(gateway) as ws:
        await ws.send(json.dumps({"type": "hello", "nick": "Big", "pad": "x" * 17_000}))
        refused = await receive_json(ws, type="error")
        assert refused["code"] == "too_large"
        assert refused["limit"] == 16 * 1024
        assert "the limit is 16384" in refused["text"]
        # The session survives the refusal: it can still register and talk.
        await ws.send(json.dumps({"type": "hello", "nick": "Big"}))
        welcome = await receive_json(ws, type="welcome")
        assert welcome["nick"] == "Big"
        assert "lobby" in welcome["rooms"]
        await ws.send(json.dumps({"type": "line", "text": "x" * 17_000, "room": "lobby"}))
        assert (await receive_json(ws, type="error"))["code"] == "too_large"


async def test_the_connection_limit_is_told_to_the_page(
    make_gateway: Callable[..., GatewayThread],
) -> None:
    gw = make_gateway(max_connections=2)
    first = await connect(gw)
    second = await connect(gw)
    try:
        async with connect(gw) as third:
            refused = await receive_json(third, type="error")
            assert refused["code"] == "full"
            assert "2 connections" in refused["text"]
            with pytest.raises(websockets.ConnectionClosed):
                await drain(third)
            assert third.close_code == 1013
    finally:
        await first.close()
        await second.close()
    # A place freed is a place taken: the limit counts open sockets only.
    deadline = asyncio.get_running_loop().time() + 10
    while gw.server.gateway.sessions:
        assert asyncio.get_running_loop().time() < deadline, "sessions not released"
        await asyncio.sleep(0.02)
    async with connect(gw) as again:
        await again.send(json.dumps({"type": "hello", "nick": "Late"}))
        assert (await receive_json(again, type="welcome"))["nick"] == "Late"


async def test_bad_input_gets_one_clear_line(gateway: GatewayThread) -> None:
    async with connect(gateway) as ws:
        await ws.send("not json")
        assert (await receive_json(ws))["code"] == "bad_message"
        await ws.send(b"\x00binary")
        assert (await receive_json(ws))["code"] == "bad_message"
        await ws.send(json.dumps({"type": "hello", "nick": "no spaces allowed"}))
        refused = await receive_json(ws)
        assert refused["code"] == "bad_nick"
        assert refused["during"] == "hello"
        await ws.send(json.dumps({"type": "hello", "nick": "Oracle", "rooms": ["lobby", "ops"]}))
        welcome = await receive_json(ws, type="welcome")
        assert set(welcome["rooms"]) == {"lobby", "ops"}
        # Typed lines fail with the lines the terminal shows: one runner for both.
        for line, said in [
            ("/bogus", "unknown command /bogus; /help lists them (// sends a literal /)"),
            ("/msg", "usage: /msg NICK text"),
            ("/msg Nobody hi", "no_such_nick: "),
            ("/join " + "r" * 300, "bad_room: "),
            ("hello", "not in a room: /join ROOM first"),
        ]:
            room = "nowhere" if line == "hello" else "lobby"
            await ws.send(json.dumps({"type": "line", "text": line, "room": room}))
            failed = await receive_json(ws, type="info")
            assert failed.get("error") is True, (line, failed)
            assert failed["text"].startswith(said), (line, failed)
        await ws.send(json.dumps({"type": "line", "text": "/who", "room": "ops"}))
        assert (await receive_json(ws, type="info"))["text"] == "ops (1): Oracle"
        await ws.send(json.dumps({"type": "line", "text": "/quit done", "room": "ops"}))
        assert (await receive_json(ws, type="quit"))["reason"] == "done"
        with pytest.raises(websockets.ConnectionClosedOK):
            await drain(ws)


async def test_in_a_direct_conversation_chat_is_a_direct_message(gateway: GatewayThread) -> None:
    async with connect(gateway) as ann, connect(gateway) as bob:
        for ws, nick in [(ann, "Ann"), (bob, "Bob")]:
            await ws.send(json.dumps({"type": "hello", "nick": nick}))
            await receive_json(ws, type="welcome")
        await ann.send(json.dumps({"type": "line", "text": "//slash first", "to": "Bob"}))
        sent, got = await _dm(ann), await _dm(bob)
        assert (sent["nick"], sent["to"], sent["text"]) == ("Ann", "Bob", "/slash first")
        assert (got["nick"], got["to"], got["text"]) == ("Ann", "Bob", "/slash first")
        # /me in a direct conversation is a direct action, as in the terminal's /query.
        await ann.send(json.dumps({"type": "line", "text": "/me waves", "to": "Bob"}))
        sent, got = await _dm(ann), await _dm(bob)
        assert (sent["text"], sent.get("action"), got["text"], got.get("action")) == (
            "waves",
            True,
            "waves",
            True,
        )
        await ann.send(json.dumps({"type": "line", "text": "/query Cat", "room": "lobby"}))
        assert await receive_json(ann, type="query") == {"type": "query", "to": "Cat"}
        await ann.send(json.dumps({"type": "line", "text": "psst", "to": "Bob Eve"}))
        assert (await receive_json(ann, type="error"))["code"] == "bad_message"
        await ann.send(json.dumps({"type": "line", "text": "/leave", "to": "Bob"}))
        assert await receive_json(ann, type="left") == {"type": "left", "to": "Bob"}
        # /leave ROOM from a direct conversation still leaves the room.
        await ann.send(json.dumps({"type": "line", "text": "/leave lobby", "to": "Bob"}))
        assert await receive_json(ann, type="left") == {"type": "left", "room": "lobby"}


async def test_one_nick_per_gateway_even_with_one_key_for_all(gateway: GatewayThread) -> None:
    # With CURVE every tab shares the gateway's key, and the broker lets the same
    # key take a nick over: the gateway itself must refuse a nick another tab holds.
    async with connect(gateway) as first, connect(gateway) as second:
        await first.send(json.dumps({"type": "hello", "nick": "Twin"}))
        await receive_json(first, type="welcome")
        await second.send(json.dumps({"type": "hello", "nick": "TWIN"}))
        refused = await receive_json(second, type="error")
        assert (refused["code"], refused["during"]) == ("nick_taken", "hello")
        await second.send(json.dumps({"type": "hello", "nick": "Other"}))
        await receive_json(second, type="welcome")
        await second.send(json.dumps({"type": "line", "text": "/nick twin", "room": "lobby"}))
        assert (await receive_json(second, type="error"))["code"] == "nick_taken"
        await second.send(json.dumps({"type": "hello", "nick": "Other"}))
        assert (await receive_json(second, type="error"))["code"] == "already_registered"
        await first.send(json.dumps({"type": "line", "text": "/nick Solo", "room": "lobby"}))
        assert (await receive_json(first, type="self"))["nick"] == "Solo"
        await second.send(json.dumps({"type": "line", "text": "/nick Twin", "room": "lobby"}))
        assert (await receive_json(second, type="self"))["nick"] == "Twin"


async def test_a_failing_session_leaves_the_others_alone(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = bridge.run_line

    async def run_line(client: Any, front: Any, line: str) -> bool:
        if line == "boom":
            raise RuntimeError("a bug in one session")
        return await real(client, front, line)

    monkeypatch.setattr(bridge, "run_line", run_line)
    caplog.set_level(logging.ERROR, logger="zchat.web")
    async with (
        connect(gateway) as doomed,
        connect(gateway) as fine,
    ):
        for ws, nick in [(doomed, "Doomed"), (fine, "Fine")]:
            await ws.send(json.dumps({"type": "hello", "nick": nick}))
            await receive_json(ws, type="welcome")
        await doomed.send(json.dumps({"type": "line", "text": "boom", "room": "lobby"}))
        with pytest.raises(websockets.ConnectionClosed):
            await drain(doomed)
        await fine.send(json.dumps({"type": "line", "text": "still here", "room": "lobby"}))
        said = await _msg_from(fine, "Fine", "still here")
        assert said["text"] == "still here"
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "RuntimeError: a bug in one session" in failures[0].getMessage()
    assert "\n" not in failures[0].getMessage()
    assert gateway.failures == 1


async def _dm(ws: Any) -> dict[str, Any]:
    """The next direct message event the gateway sends."""
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await ws.recv()).get("event", {})
            if event.get("type") == "dm":
                return dict(event)


async def _msg_from(ws: Any, nick: str, text: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            event = message.get("event", {})
            said = (event.get("type"), event.get("nick"), event.get("text"))
            if said == ("msg", nick, text):
                return dict(event)


# ---------------------------------------------------------------- in Chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    contexts = []
    problems: list[str] = []

    def open_at(url: str, **options: Any) -> Page:
        # One context per page: separate tabs of separate people, nothing shared.
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(SHOWN)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text
                else None
            ),
        )
        page.goto(url)
        return page

    yield open_at
    for context in contexts:
        context.close()
    # The page needs nothing the policy forbids, and throws nothing.
    assert not problems, problems


def login(page: Page, nick: str) -> None:
    from playwright.sync_api import expect

    page.fill("#nick", nick)
    page.click("#nick-submit")
    expect(page.locator("#chat")).to_be_visible()


def type_line(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def shown_line(page: Page, text: str, key: str | None = None) -> Any:
    """The log line (of conversation ``key``, else of any) that contains ``text``."""
    from playwright.sync_api import expect

    where = f'.log[data-key="{key}"]' if key else ".log"
    found = page.locator(f"{where} .line").filter(has_text=text).last
    expect(found).to_be_attached()
    return found


def line_client(zchat_proc: Callable[..., ZchatProcess], broker: BrokerThread) -> ZchatProcess:
    """Batman in line mode (``--json``: one JSON object per event on stdout)."""
    proc = zchat_proc(
        "client", "--nick", "Batman", "--router", broker.router, "--pub", broker.pub,
        "--plain", "--json",
    )  # fmt: skip
    proc.expect_json(type="status", state="connected")
    return proc


def test_browsers_and_a_terminal_talk_in_one_room(
    broker: BrokerThread,
    gateway: GatewayThread,
    open_page: Callable[..., Page],
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    from playwright.sync_api import expect

    batman = line_client(zchat_proc, broker)
    batman.send("said before anyone came")
    batman.expect_json(type="msg", text="said before anyone came")

    robin = open_page(gateway.url)
    login(robin, "Robin")
    # The backlog is there, marked as earlier messages.
    earlier = shown_line(robin, "said before anyone came")
    expect(earlier).to_have_attribute("data-history", "true")
    expect(robin.locator(".divider", has_text="Earlier messages")).to_have_count(1)
    expect(robin.locator("#state")).to_have_text("connected")
    expect(robin.locator("#members")).to_contain_text("Batman")

    alfred = open_page(gateway.url)
    login(alfred, "Alfred")
    joined = shown_line(robin, "Alfred joined lobby")
    expect(joined).not_to_have_attribute("data-history", "true")
    expect(robin.locator("#members")).to_contain_text("Alfred")

    # Browser to terminal and browser.
    type_line(robin, "hello from the web")
    batman.expect_json(type="msg", nick="Robin", text="hello from the web")
    shown_line(alfred, "hello from the web")
    # Terminal to both browsers.
    batman.send("hello from the terminal")
    for page in (robin, alfred):
        shown_line(page, "hello from the terminal")

    # A direct message reaches its recipient, in a conversation of its own, only.
    batman.send("/msg Robin psst, only for you")
    shown_line(robin, "psst, only for you", key="dm:batman")
    expect(robin.locator('.tab[data-key="dm:batman"] .badge.unread')).to_have_text("1")
    batman.send("after the direct message")
    shown_line(alfred, "after the direct message")
    assert "psst" not in alfred.locator("body").inner_text()
    assert alfred.locator('.tab[data-key="dm:batman"]').count() == 0
    robin.click('.tab[data-key="dm:batman"]')
    type_line(robin, "copy that")
    batman.expect_json(type="dm", nick="Robin", to="Batman", text="copy that")

    # Hostile text stays text: no element is made of it, no script runs.
    robin.click('.tab[data-key="room:lobby"]')
    script = "<script>window.pwned = 1</script>"
    image = '<img src=x onerror="window.pwned = 2">'
    batman.send(script)
    batman.send(image)
    for page in (robin, alfred):
        text = shown_line(page, "window.pwned = 2").locator(".text")
        expect(text).to_have_text(image)
        expect(shown_line(page, "window.pwned = 1").locator(".text")).to_have_text(script)
        assert page.locator("#logs img, #logs script").count() == 0
        assert page.evaluate("window.pwned") is None

    # A mention counts on a tab not looked at; /join opens and focuses a tab.
    type_line(alfred, "/join gotham")
    expect(alfred.locator('.tab[data-key="room:gotham"]')).to_have_class(re.compile("active"))
    batman.send("Alfred, the car please")
    expect(alfred.locator('.tab[data-key="room:lobby"] .badge.mention')).to_have_text("@1")
    type_line(alfred, "/nosuch")
    expect(shown_line(alfred, "unknown command /nosuch")).to_have_class(re.compile("error"))

    # Leaving is seen by the others.
    type_line(alfred, "/quit off to the cave")
    shown_line(robin, "Alfred left lobby (quit: off to the cave)")
    batman.expect_json(type="leave", nick="Alfred", reason="quit")
    expect(alfred.locator("#state")).to_have_text("left the chat")


def test_a_taken_nick_is_shown_in_the_nick_form(
    broker: BrokerThread,
    gateway: GatewayThread,
    open_page: Callable[..., Page],
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    from playwright.sync_api import expect

    line_client(zchat_proc, broker)
    page = open_page(gateway.url)
    page.fill("#nick", "batman")
    page.click("#nick-submit")
    expect(page.locator("#nick-error")).to_contain_text("nick_taken")
    expect(page.locator("#nick-form")).to_be_visible()
    expect(page.locator("#chat")).to_be_hidden()
    # Another nick, on the same socket: in.
    login(page, "Nightwing")
    expect(page.locator("#members")).to_contain_text("Batman")


def test_the_page_comes_back_by_itself_after_a_gateway_restart(
    broker: BrokerThread,
    open_page: Callable[..., Page],
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    from playwright.sync_api import expect

    def start_gateway(port: int = 0) -> tuple[ZchatProcess, int]:
        proc = zchat_proc(
            "web", "--listen", f"127.0.0.1:{port}", "--router", broker.router, "--pub", broker.pub,
        )  # fmt: skip
        return proc, web_listening(proc)

    # A free port first; the restart takes it over, so the page finds it again.
    first, port = start_gateway()
    batman = line_client(zchat_proc, broker)
    robin = open_page(f"http://127.0.0.1:{port}/")
    login(robin, "Robin")
    type_line(robin, "before the crash")
    batman.expect_json(type="msg", nick="Robin", text="before the crash")

    first.proc.kill()  # SIGKILL, by PID: no bye reaches the broker
    first.wait()
    expect(robin.locator("#state")).to_contain_text("retrying")
    second, _ = start_gateway(port)
    # The old session times out at the broker; the page registers again as Robin.
    expect(robin.locator("#state")).to_have_text("registered again", timeout=30_000)
    batman.expect_json(type="join", nick="Robin", timeout=30)
    type_line(robin, "back again")
    batman.expect_json(type="msg", nick="Robin", text="back again")
    batman.send("welcome back")
    shown_line(robin, "welcome back")
    # The backlog fetched again on re-registration is not shown twice.
    expect(robin.locator(".line", has_text="before the crash")).to_have_count(1)
    assert second.proc.poll() is None


def test_at_phone_width_the_member_list_folds_away(
    gateway: GatewayThread, open_page: Callable[..., Page]
) -> None:
    from playwright.sync_api import expect

    page = open_page(gateway.url, viewport={"width": 390, "height": 780}, is_mobile=True)
    login(page, "Pocket")
    expect(page.locator("#sidebar")).to_be_hidden()
    page.click("#menu")
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#members")).to_contain_text("Pocket")
    page.click("#menu")
    expect(page.locator("#sidebar")).to_be_hidden()
    type_line(page, "small screens welcome")
    shown_line(page, "small screens welcome")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_page_shows_a_broker_restart(
    make_broker: Callable[..., BrokerThread], open_page: Callable[..., Page]
) -> None:
    from playwright.sync_api import expect

    first = make_broker()
    gateway = GatewayThread(WebConfig(router=first.router, pub=first.pub))
    try:
        page = open_page(gateway.url)
        login(page, "Robin")
        first.stop()
        expect(page.locator("#state")).to_have_text(re.compile("broker silent|reconnecting"))
        make_broker(router=first.router, pub=first.pub)
        # The tab's client registers again by itself; the page says so and works on.
        expect(page.locator("#state")).to_have_text("registered again", timeout=30_000)
        type_line(page, "still with you")
        shown_line(page, "still with you")
    finally:
        gateway.stop()
