"""Regenerate docs/web-screenshot.png: the real page, in headless Chromium, in a real conversation.

A broker runs in a thread on 127.0.0.1, the gateway on a free port of the same
event loop; two pages (Robin and Oracle) and a few library clients talk::

    python docs/make_web_screenshot.py   # docs/web-screenshot.png

Chromium is Debian's /usr/bin/chromium (Playwright's own download is not used).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from zchat import Client
from zchat.broker.adapter import Broker
from zchat.broker.state import BrokerConfig
from zchat.web import WebConfig, WebServer, bind

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SIZE = {"width": 1100, "height": 620}


async def login(page: Page, url: str, nick: str) -> None:
    await page.goto(url)
    await page.fill("#nick", nick)
    await page.click("#nick-submit")
    await expect(page.locator("#chat")).to_be_visible()


async def type_line(page: Page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def shown(page: Page, text: str) -> None:
    await expect(page.locator(".line").filter(has_text=text).last).to_be_attached()


async def make(out: Path) -> None:
    broker = Broker(
        BrokerConfig(heartbeat=1.0), router="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*"
    )
    thread = threading.Thread(target=broker.run, name="broker", daemon=True)
    thread.start()
    router, pub = broker.router_endpoint, broker.pub_endpoint
    server = WebServer(WebConfig(router=router, pub=pub), bind("127.0.0.1", 0))
    ready = asyncio.Event()
    serving = asyncio.create_task(server.run(ready.set))
    await ready.wait()
    url = f"http://127.0.0.1:{server.port}/"
    bots: list[Client] = []
    try:
        for nick, rooms in [("Batman", ["lobby", "zeromq"]), ("Alfred", ["lobby"])]:
            bot = Client(nick, rooms=rooms, router=router, pub=pub)
            await bot.connect()
            bots.append(bot)
        batman, alfred = bots
        await batman.set_topic("Gotham night shift: patrol routes and tea", "lobby")
        await alfred.say("Tea is ready in the cave, sirs.", "lobby")
        await batman.say("Thanks Alfred. Anyone seen the signal tonight?", "lobby")
        await batman.say("PUB/SUB fan-out holds at 50k msgs/s here", "zeromq")

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            robin = await (await browser.new_context(viewport=SIZE)).new_page()
            oracle = await (await browser.new_context(viewport=SIZE)).new_page()
            await login(robin, url, "Robin")
            await shown(robin, "signal tonight")
            await type_line(robin, "/join zeromq")
            await type_line(robin, "/join lobby")
            await login(oracle, url, "Oracle")
            await shown(robin, "Oracle joined lobby")
            await type_line(oracle, "Quiet so far. Monitoring the police band.")
            await type_line(robin, "hi all, reporting for duty")
            await shown(oracle, "reporting for duty")
            await batman.say("Welcome, Robin. Take the east side with Oracle.", "lobby")
            await alfred.say("waves a tea towel", "lobby", action=True)
            await type_line(oracle, "robin: I'll route you via the docks, stay on channel")
            await batman.say("SUB sockets need a round trip before they trust a join", "zeromq")
            await batman.say("(the slow joiner problem)", "zeromq")
            await batman.say("<img src=x onerror=alert(1)> stays text, by the way", "lobby")
            await batman.dm("Robin", "Mind the Joker's balloons at the docks.")
            await expect(robin.locator('.tab[data-key="dm:batman"] .badge.unread')).to_have_text(
                "1"
            )
            await expect(robin.locator('.tab[data-key="room:zeromq"] .badge.unread')).to_have_text(
                "2"
            )
            await shown(robin, "stays text")
            await robin.fill("#input", "on my way")
            await robin.screenshot(path=str(out))
            await browser.close()
        for bot in bots:
            await bot.close()
    finally:
        server.stop()
        await serving
        server.sock.close()
        broker.stop()
        thread.join(5)
        broker.close()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("web-screenshot.png"))
    asyncio.run(make(out.resolve()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
