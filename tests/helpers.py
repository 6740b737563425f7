"""Helpers shared by the test modules: clients, processes, waiting with deadlines."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BrokerThread, ZchatProcess

from zchat import Client, Event

HEARTBEAT = 0.5


def client_for(target: BrokerThread | tuple[str, str], nick: str, **kwargs: Any) -> Client:
    """A library client for a broker thread, or for (router, pub) endpoints."""
    router, pub = (target.router, target.pub) if isinstance(target, BrokerThread) else target
    return Client(nick, router=router, pub=pub, **kwargs)


def start_broker(
    zchat_proc: Callable[..., ZchatProcess], endpoints: tuple[str, str], *extra: str
) -> ZchatProcess:
    """A real ``zchat broker`` process; its heartbeat is short, yet safe on a loaded machine."""
    router, pub = endpoints
    return zchat_proc(
        "broker", "--router", router, "--pub", pub, "--heartbeat", str(HEARTBEAT), *extra
    )


def start_client(
    zchat_proc: Callable[..., ZchatProcess], endpoints: tuple[str, str], nick: str, *extra: str
) -> ZchatProcess:
    """A real ``zchat client`` process (line mode: its stdio are pipes)."""
    router, pub = endpoints
    return zchat_proc("client", "--nick", nick, "--router", router, "--pub", pub, *extra)


def wait_for_line(lines: list[str], pattern: str, timeout: float = 10.0) -> str:
    """The first line matching the regex ``pattern`` in a list a reader thread fills."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if re.search(pattern, line):
                return line
        time.sleep(0.02)
    pytest.fail(f"no line matching {pattern!r} within {timeout}s; saw {lines[-20:]}")


async def wait_event(
    client: Client,
    predicate: Callable[[Event], bool] | None = None,
    timeout: float = 5.0,
    **fields: Any,
) -> Event:
    """The next event matching ``predicate`` and ``fields``; fails with what was seen."""
    seen: list[Event] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            event = await client.next_event(timeout=left)
        except TimeoutError:
            break
        if event is None:
            break
        if all(event.to_json().get(k) == v for k, v in fields.items()) and (
            predicate is None or predicate(event)
        ):
            return event
        seen.append(event)
    wanted = repr(fields or predicate)[:200]
    saw = [repr(e)[:200] for e in seen[-15:]]
    pytest.fail(f"{client.nick}: no event {wanted} within {timeout}s; saw {saw}")


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a condition on the event loop until it holds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)
