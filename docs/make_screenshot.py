"""Regenerate docs/screenshot.svg: the real app, headless, in a real conversation.

A broker runs in a thread on 127.0.0.1; a few bot clients talk; the terminal UI
(connected as Robin) is driven by Textual's Pilot and saves its own screen::

    python docs/make_screenshot.py   # docs/screenshot.svg (+ .png if rsvg-convert is installed)
"""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from zchat import Client
from zchat.broker.adapter import Broker
from zchat.broker.state import BrokerConfig
from zchat.ui.tui import ChatApp

SIZE = (110, 32)


async def until(
    pilot: Pilot[int], check: Callable[[], bool], what: str, timeout: float = 10
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await pilot.pause(0.02)


def shown(app: ChatApp, text: str, room: str = "lobby") -> bool:
    return any(text in line.plain for line in app.views[room].lines) if room in app.views else False


async def make(out: Path) -> None:
    broker = Broker(
        BrokerConfig(heartbeat=1.0), router="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*"
    )
    thread = threading.Thread(target=broker.run, name="broker", daemon=True)
    thread.start()
    router, pub = broker.router_endpoint, broker.pub_endpoint
    bots: list[Client] = []
    try:
        for nick, rooms in [
            ("Batman", ["lobby", "zeromq"]),
            ("Alfred", ["lobby"]),
            ("Oracle", ["lobby", "zeromq"]),
        ]:
            bot = Client(nick, rooms=rooms, router=router, pub=pub)
            await bot.connect()
            bots.append(bot)
        batman, alfred, oracle = bots
        await batman.set_topic("Gotham night shift: patrol routes and tea", "lobby")
        await alfred.say("Tea is ready in the cave, sirs.", "lobby")
        await batman.say("Thanks Alfred. Anyone seen the signal tonight?", "lobby")
        await oracle.say("Quiet so far. Monitoring the police band.", "lobby")
        await oracle.say("PUB/SUB fan-out holds at 50k msgs/s here", "zeromq")
        await batman.next_event(5)

        robin = Client("Robin", rooms=["lobby", "zeromq"], router=router, pub=pub)
        await robin.connect()
        # The backlog came with the join; wait until the bots see Robin arrive.
        app = ChatApp(robin)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: shown(app, "Monitoring"), "the backlog")
            await pilot.press(*"hi all, reporting for duty")
            await pilot.press("enter")
            await until(pilot, lambda: shown(app, "reporting for duty"), "Robin's line")
            await batman.say("Welcome, Robin. Take the east side with Oracle.", "lobby")
            await alfred.say("waves a tea towel", "lobby", action=True)
            await oracle.say("robin: I'll route you via the docks, stay on channel", "lobby")
            await oracle.say("SUB sockets need a round trip before they trust a join", "zeromq")
            await oracle.say("(the slow joiner problem)", "zeromq")
            await batman.dm("Robin", "Mind the Joker's balloons at the docks.")
            await until(pilot, lambda: shown(app, "balloons"), "the DM")
            await until(pilot, lambda: app.views["zeromq"].unread >= 2, "unread zeromq lines")
            await until(pilot, lambda: shown(app, "stay on channel"), "the mention")
            await pilot.press(*"on my way /msg Ora")
            await pilot.pause(0.2)
            app.save_screenshot(out.name, str(out.parent))
            await app.action_quit()
        for bot in bots:
            await bot.close()
    finally:
        broker.stop()
        thread.join(5)
        broker.close()


_TEXT = re.compile(
    r'(<text [^>]*?x=")([0-9.]+)("[^>]*?textLength=")([0-9.]+)("[^>]*>)([^<]*)(</text>)'
)


def _shift_leading_spaces(match: re.Match[str]) -> str:
    start, x, mid, length, tag, body, end = match.groups()
    chars = html.unescape(body)
    stripped = chars.lstrip("\xa0")
    skip = len(chars) - len(stripped)
    if not skip or not stripped:
        return match.group(0)
    cell = float(length) / len(chars)
    new_x = f"{float(x) + skip * cell:g}"
    new_length = f"{float(length) - skip * cell:g}"
    return f"{start}{new_x}{mid}{new_length}{tag}{html.escape(stripped)}{end}"


def write_png(svg: Path, png: Path) -> bool:
    """Render with rsvg-convert when installed (it drops a text's leading spaces: move x)."""
    tool = shutil.which("rsvg-convert")
    if tool is None:
        return False
    fixed = _TEXT.sub(_shift_leading_spaces, svg.read_text())
    subprocess.run([tool, "-o", str(png)], input=fixed.encode(), check=True)
    return True


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("screenshot.svg"))
    asyncio.run(make(out.resolve()))
    print(f"wrote {out}")
    if write_png(out, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
