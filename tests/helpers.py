"""Async helpers for tests that use the client library."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from zchat.client import Client, Event


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
