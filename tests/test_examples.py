"""The examples in examples/ and the README run, against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, BrokerThread
from helpers import wait_for

from zchat import Client, Joined, Message


async def test_greeter_example_greets_a_newcomer(broker: BrokerThread) -> None:
    env = {**os.environ, "ZCHAT_ROUTER": broker.router, "ZCHAT_PUB": broker.pub}
    script = ROOT / "examples" / "greeter.py"
    async with Client("Watcher", router=broker.router, pub=broker.pub) as watcher:
        proc = subprocess.Popen([sys.executable, str(script)], env=env)
        try:
            await wait_for(watcher, Joined, nick="Greeter", timeout=10)
            async with Client("Newcomer", router=broker.router, pub=broker.pub):
                greeting = await wait_for(watcher, Message, nick="Greeter", timeout=10)
                assert greeting.text == "welcome, Newcomer!"
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_readme_shows_the_greeter_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    body = Path(ROOT / "examples" / "greeter.py").read_text()
    code = body.split('"""', 2)[2].strip()
    assert code in readme
