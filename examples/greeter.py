"""A bot in a dozen lines: greet everyone who joins, answer "!ping", stop after one greeting.

Run it beside a broker: ZCHAT_ROUTER=tcp://localhost:5555 python examples/greeter.py
"""

import asyncio
import os

from zchat import Client


async def main() -> None:
    router = os.environ.get("ZCHAT_ROUTER", "tcp://localhost:5555")
    pub = os.environ.get("ZCHAT_PUB", "tcp://localhost:5556")
    async with Client("Greeter", router=router, pub=pub, backlog=0) as bot:
        async for event in bot.events():
            if event.type == "join" and event.nick != bot.nick:
                await bot.say(f"welcome, {event.nick}!", event.room)
                return
            if event.type == "msg" and event.text == "!ping":
                await bot.say("pong", event.room)


if __name__ == "__main__":
    asyncio.run(main())
