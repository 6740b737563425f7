"""Helpers shared by the test modules: clients, processes, waiting with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from conftest import ANY_PORT, BrokerThread, ZchatProcess

from zchat import Client, ClientEvent, Event
from zchat.protocol.events import RoomEvent

HEARTBEAT = 0.5

#: What a broker logs once both sockets are bound: the endpoints it really got.
LISTENING = re.compile(r"broker listening: router (\S+), pub (\S+),")

#: What ``zchat web`` logs once it accepts connections: the port it really got.
WEB_LISTENING = re.compile(r"zchat web listening on http://(\S+):(\d+) ")

_E = TypeVar("_E", bound=Event)


@dataclass
class BrokerProcess:
    """A real ``zchat broker`` process and the endpoints it bound."""

    proc: ZchatProcess
    router: str
    pub: str

    @property
    def endpoints(self) -> tuple[str, str]:
        return self.router, self.pub


Target = BrokerThread | BrokerProcess | tuple[str, str]


def endpoints_of(target: Target) -> tuple[str, str]:
    """(router, pub) of a broker thread, a broker process, or the pair itself."""
    if isinstance(target, BrokerThread | BrokerProcess):
        return target.router, target.pub
    return target


def client_for(target: Target, nick: str, **kwargs: Any) -> Client:
    """A library client for a broker thread or process, or for (router, pub) endpoints."""
    router, pub = endpoints_of(target)
    return Client(nick, router=router, pub=pub, **kwargs)


def listening(proc: ZchatProcess, timeout: float = 15.0) -> tuple[str, str]:
    """The (router, pub) endpoints a broker process logged once it had bound them."""
    line = wait_for_line(proc.stderr_lines, LISTENING.pattern, timeout)
    found = LISTENING.search(line)
    assert found is not None
    return found.group(1), found.group(2)


def web_listening(proc: ZchatProcess, timeout: float = 15.0) -> int:
    """The port a ``zchat web`` process logged once it was serving (``--listen HOST:0``)."""
    line = wait_for_line(proc.stderr_lines, WEB_LISTENING.pattern, timeout)
    found = WEB_LISTENING.search(line)
    assert found is not None
    return int(found.group(2))


def start_broker(
    zchat_proc: Callable[..., ZchatProcess],
    *extra: str,
    endpoints: tuple[str, str] = (ANY_PORT, ANY_PORT),
    heartbeat: float = HEARTBEAT,
    env: dict[str, str] | None = None,
) -> BrokerProcess:
    """A real ``zchat broker`` process, once it listens; its heartbeat is short, yet safe
    on a loaded machine. It binds ports of its own choosing unless given ``endpoints``
    (a restart takes over its predecessor's)."""
    router, pub = endpoints
    proc = zchat_proc(
        "broker", "--router", router, "--pub", pub, "--heartbeat", str(heartbeat), *extra, env=env
    )
    return BrokerProcess(proc, *listening(proc))


def start_client(
    zchat_proc: Callable[..., ZchatProcess], target: Target, nick: str, *extra: str
) -> ZchatProcess:
    """A real ``zchat client`` process (line mode: its stdio are pipes)."""
    router, pub = endpoints_of(target)
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
    predicate: Callable[[ClientEvent], bool] | None = None,
    timeout: float = 5.0,
    **fields: Any,
) -> ClientEvent:
    """The next event matching ``predicate`` and ``fields`` (compared with its
    ``to_json()``); fails with what was seen. Events before it are consumed."""
    seen: list[ClientEvent] = []
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


async def wait_for(
    client: Client,
    kind: type[_E],
    predicate: Callable[[_E], bool] | None = None,
    timeout: float = 5.0,
    **fields: Any,
) -> _E:
    """The next event of class ``kind`` matching ``predicate`` and ``fields``: already
    narrowed, so its fields are typed. Events before it are consumed."""

    def match(event: ClientEvent) -> bool:
        return isinstance(event, kind) and (predicate is None or predicate(event))

    event = await wait_event(client, match, timeout, **fields)
    assert isinstance(event, kind)
    return event


def numbered(event: ClientEvent) -> bool:
    """A room event with its room's ``seq`` (a nick change has one when published in a room)."""
    return isinstance(event, RoomEvent) and event.seq is not None


async def collect_until(
    client: Client, marker: Callable[[ClientEvent], bool], timeout: float = 5.0
) -> list[ClientEvent]:
    """Every event ``client`` receives up to and including the first ``marker`` one."""
    seen: list[ClientEvent] = []

    def keep(event: ClientEvent) -> bool:
        seen.append(event)
        return marker(event)

    await wait_event(client, keep, timeout)
    return seen


async def everything_until(
    client: Client, marker: Callable[[ClientEvent], bool], timeout: float = 5.0
) -> list[ClientEvent]:
    """Every event ``client`` received up to a ``marker`` event, and then whatever the
    broker had sent it before answering one more request of it.

    Room events come on the PUB, replies (a DM among them) on the ROUTER, with no
    order between the two: the ``who`` round trip on the ROUTER brings in behind it
    anything sent there before, so nothing delivered to ``client`` goes unseen.
    """
    seen = await collect_until(client, marker, timeout)
    await client.who()
    with contextlib.suppress(TimeoutError):
        while (event := await client.next_event(timeout=0)) is not None:
            seen.append(event)
    return seen


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a condition on the event loop until it holds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
