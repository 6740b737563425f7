"""Every contact between the web gateway and zchat's internals, in one place.

The gateway and the page see only JSON-ready dicts from here: events as
``Event.to_json()`` gives them, and the outcome of a typed line, parsed by the
same ``parse_input`` as line mode and the terminal UI. Nothing else under
``zchat.web`` imports a zchat module beyond the public ``zchat`` package, so
moving the internals means changing the imports of this file only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from zchat import BrokerError, Client, ConnectTimeout, CurveKeys, RegistrationError, ZchatError
from zchat.client import Event
from zchat.commands import Chat, InputError, SlashCommand, help_text, parse_input
from zchat.protocol import ProtocolError, fold

log = logging.getLogger("zchat.web")

Message = dict[str, Any]

#: Rooms a page may ask to be in when it registers (the broker allows 32 per hello).
MAX_HELLO_ROOMS = 32


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How each browser tab's ``Client`` reaches the broker."""

    router: str
    pub: str
    curve: CurveKeys | None = None
    connect_timeout: float = 5.0
    backlog: int = 50
    #: Shared by every tab's client: a context each would cost an I/O thread per tab.
    context: zmq.asyncio.Context | None = None


def shared_context(max_clients: int) -> zmq.asyncio.Context:
    """One ZeroMQ context for ``max_clients`` clients (two sockets each, and a monitor)."""
    context = zmq.asyncio.Context()
    # libzmq's default of 1023 sockets would stop the gateway at about 500 tabs.
    context.set(zmq.MAX_SOCKETS, 3 * max_clients + 64)
    return context


class LoginRefused(Exception):
    """Registration failed; ``code`` is the broker's error code or a gateway one."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


def error(code: str, text: str, **extra: Any) -> Message:
    return {"type": "error", "code": code, "text": text, **extra}


def info(text: str) -> Message:
    return {"type": "info", "text": text}


async def open_client(nick: str, rooms: Iterable[str], settings: ClientSettings) -> Client:
    """A registered ``Client`` for one browser tab, or ``LoginRefused``."""
    wanted = list(dict.fromkeys(rooms))[:MAX_HELLO_ROOMS] or ["lobby"]
    try:
        client = Client(
            nick,
            router=settings.router,
            pub=settings.pub,
            rooms=wanted,
            connect_timeout=settings.connect_timeout,
            backlog=settings.backlog,
            curve=settings.curve,
            context=settings.context,
        )
    except ProtocolError as exc:
        raise LoginRefused(str(exc.code), exc.reason) from None
    try:
        await client.connect()
    except RegistrationError as exc:
        raise LoginRefused(exc.code, exc.reason) from None
    except ConnectTimeout as exc:
        raise LoginRefused("no_broker", str(exc)) from None
    except (ZchatError, ProtocolError) as exc:
        raise LoginRefused("unavailable", str(exc)) from None
    return client


def nick_key(nick: str) -> str:
    """The key under which the broker compares nicks (case and width folded)."""
    return fold(nick)


def event_message(event: Event) -> Message:
    """What the page gets for one client event: the ``--json`` form, wrapped."""
    return {"type": "event", "event": event.to_json()}


def is_registration(event: Event) -> bool:
    """A (re-)registration: rosters and topics may have changed meanwhile."""
    return event.type == "status" and event.data.get("state") in {"connected", "registered"}


def rooms_message(client: Client, *, focus: str | None = None) -> Message:
    """A snapshot of every room the client is in: topic and members."""
    rooms = {
        name: {"topic": state.topic, "users": list(state.users)}
        for name, state in client.rooms.items()
    }
    message: Message = {
        "type": "rooms",
        "nick": client.nick,
        "epoch": client.epoch,
        "rooms": rooms,
    }
    if focus is not None:
        message["focus"] = focus
    return message


def encode(message: Message) -> str | None:
    """JSON text for the page; None for what JSON cannot carry (never from a sane broker)."""
    try:
        return json.dumps(message, ensure_ascii=False, allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        log.warning("dropped a message the page cannot parse: %s", exc)
        return None


def _refuse(value: object) -> object:
    raise TypeError(f"not JSON: {type(value).__name__}")


async def run_line(
    client: Client,
    line: str,
    room: str | None,
    to: str | None,
    may_take: Callable[[str], bool] = lambda nick: True,
) -> list[Message]:
    """Parse a typed line and carry it out; the messages for the page, in order.

    ``room`` is the page's current room; ``to`` the nick of the current direct
    conversation, where chat goes as a ``dm``; ``may_take`` says whether
    ``/nick`` may ask for a nick. Every failure comes back as one ``error``
    message: nothing is raised for the page's input.
    """
    try:
        parsed = parse_input(line)
        if parsed is None:
            return []
        if isinstance(parsed, Chat):
            if to is not None:
                sent = await client.dm(to, parsed.text, action=parsed.action)
                return [event_message(sent)]
            await client.say(parsed.text, room, action=parsed.action)
            return []
        return await _command(client, parsed, room, to, may_take)
    except InputError as exc:
        return [error("input", str(exc))]
    except (BrokerError, ProtocolError) as exc:
        # ProtocolError: a nick or room refused before sending (too long, ...).
        return [error(str(exc.code), exc.reason)]
    except TimeoutError:
        return [error("timeout", "no answer from the broker")]
    except ZchatError as exc:
        return [error("unavailable", str(exc) or "not connected to the broker")]


async def _command(
    client: Client,
    cmd: SlashCommand,
    room: str | None,
    to: str | None,
    may_take: Callable[[str], bool],
) -> list[Message]:
    args = cmd.args
    if cmd.name == "quit":
        return [{"type": "quit", "reason": args[0] if args else None}]
    if cmd.name == "help":
        return [info(text) for text in help_text(args[0] if args else None)]
    if cmd.name == "join":
        state = await client.join(args[0])
        return [rooms_message(client, focus=state.name)]
    if cmd.name == "leave":
        if not args and to is not None:
            return [{"type": "left", "to": to}]
        name = args[0] if args else room
        await client.leave(name, args[1] if len(args) > 1 else None)
        return [{"type": "left", "room": name}]
    if cmd.name == "msg":
        sent = await client.dm(args[0], args[1])
        return [event_message(sent)]
    if cmd.name == "nick":
        if not may_take(args[0]):
            return [error("nick_taken", f"{args[0]} is in use in another tab")]
        await client.change_nick(args[0])
        return [{"type": "self", "nick": client.nick}]
    if cmd.name == "who":
        reply = await client.who(args[0] if args else room)
        users = reply.get("users")
        names = [str(u) for u in users] if isinstance(users, list) else []
        count = reply.get("count", len(names))
        return [info(f"{reply.get('room', room)} ({count}): {', '.join(names)}")]
    if cmd.name == "topic":
        if args:
            await client.set_topic(args[0], room)
            return []
        current = client.rooms.get(room or "")
        topic = current.topic if current is not None and current.topic else "(no topic)"
        return [info(f"topic of {room or '?'}: {topic}")]
    return [error("input", f"/{cmd.name} does not work here")]
