"""Every contact between the web gateway and zchat's internals, in one place.

The gateway and the page see only JSON-ready dicts from here: events as
``to_json()`` gives them (``zchat client --json`` prints the same), and the
outcome of a typed line. Typed lines are parsed and carried out by the runner
line mode and the terminal UI use (``zchat.ui.input.run_line``): :class:`PageFront`
is its front end for one browser tab, collecting what it shows as messages for
the page. Nothing else under ``zchat.web`` imports a zchat module beyond the
public ``zchat`` package, so moving the internals means changing this file only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from zchat import (
    Client,
    ClientEvent,
    ConnectTimeout,
    CurveKeys,
    DirectMessage,
    RegistrationError,
    Status,
    ZchatError,
)
from zchat.errors import ProtocolError
from zchat.protocol.names import fold
from zchat.ui.input import InputError, SlashCommand, parse_input, run_line
from zchat.ui.personal import Notify, Personal

__all__ = [
    "ClientSettings",
    "LoginRefused",
    "PageFront",
    "carry_out",
    "encode",
    "error",
    "event_message",
    "info",
    "is_registration",
    "nick_key",
    "open_client",
    "rooms_message",
    "run_line",
    "shared_context",
]

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
    """One ZeroMQ context for ``max_clients`` clients: a DEALER and a SUB each, and the
    DEALER's disconnect monitor (two PAIR sockets, libzmq's and the reader's)."""
    context = zmq.asyncio.Context()
    # libzmq's default of 1023 sockets would stop the gateway at about 250 tabs.
    context.set(zmq.MAX_SOCKETS, 4 * max_clients + 64)
    return context


class LoginRefused(ZchatError):
    """Registration failed; ``code`` is the broker's error code or a gateway one."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


def error(code: str, text: str, **extra: Any) -> Message:
    """Something the gateway refused, with a code the page may act on (``during``...)."""
    return {"type": "error", "code": code, "text": text, **extra}


def info(text: str, *, failed: bool = False) -> Message:
    """A line for the person; ``error`` when a typed line failed (shown in red)."""
    message: Message = {"type": "info", "text": text}
    if failed:
        message["error"] = True
    return message


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
        # A nick or room refused before anything is sent (too long, bad characters).
        raise LoginRefused(exc.code, exc.reason) from None
    try:
        await client.connect()
    except RegistrationError as exc:
        raise LoginRefused(exc.code, exc.reason) from None
    except ConnectTimeout as exc:
        raise LoginRefused("no_broker", str(exc)) from None
    except ZchatError as exc:
        raise LoginRefused("unavailable", str(exc)) from None
    return client


def nick_key(nick: str) -> str:
    """The key under which the broker compares nicks (case and width folded)."""
    return fold(nick)


def event_message(event: ClientEvent) -> Message:
    """What the page gets for one client event: the ``--json`` form, wrapped."""
    return {"type": "event", "event": event.to_json()}


def is_registration(event: ClientEvent) -> bool:
    """A (re-)registration: rosters and topics may have changed meanwhile."""
    return isinstance(event, Status) and event.state in {"connected", "registered"}


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


@dataclass(eq=False)
class PageFront:
    """One browser tab as the ``Frontend`` of ``run_line``.

    What the runner shows is collected in ``outbox`` as messages for the page
    (the page draws them); ``current`` is the room of the page's current tab,
    as the page said with the line.
    """

    client: Client
    current: str | None = None
    #: The nick of the page's direct conversation, if that is its current tab.
    current_dm: str | None = None
    outbox: list[Message] = field(default_factory=list)
    #: Ignored nicks and away state: the page keeps no notification settings here.
    personal: Personal = field(default_factory=lambda: Personal(Notify.NONE))
    #: Set by ``/quit``: the session ends, and the client says ``bye`` with it.
    quit_reason: str | None = None
    quitting: bool = False

    def show_info(
        self, text: str, *, error: bool = False, data: Mapping[str, Any] | None = None
    ) -> None:
        # No cleaning: the page puts every string in as text, never as markup. The
        # page shows the line itself; ``data`` is for programs (zchat client --json).
        self.outbox.append(info(text, failed=error))

    def show_reply(self, event: DirectMessage) -> None:
        self.outbox.append(event_message(event))

    async def joined(self, room: str) -> None:
        self.outbox.append(rooms_message(self.client, focus=room))

    async def left(self, room: str) -> None:
        self.outbox.append({"type": "left", "room": room})

    async def quit(self, reason: str | None) -> None:
        self.quitting = True
        self.quit_reason = reason
        self.outbox.append({"type": "quit", "reason": reason})

    def nick_changed(self) -> None:
        self.outbox.append({"type": "self", "nick": self.client.nick})

    async def talk_to(self, nick: str | None) -> None:
        # ``/query NICK`` opens (or shows) the conversation's tab; ``/query`` alone
        # closes the current one.
        if nick is None:
            if self.current_dm is not None:
                self.outbox.append({"type": "left", "to": self.current_dm})
        else:
            self.outbox.append({"type": "query", "to": nick})

    def scrollback(self) -> list[str]:
        # The page keeps its own scrollback and searches it there.
        return []


async def carry_out(
    front: PageFront,
    line: str,
    *,
    room: str | None,
    to: str | None,
    reserve: Callable[[str], bool] = lambda nick: True,
) -> list[Message]:
    """Carry out one typed line with ``run_line``; the messages for the page, in order.

    ``room`` is the page's current room; ``to`` the nick of its current direct
    conversation, where chat is ``/msg to text`` and a bare ``/leave`` closes it.
    ``reserve`` claims a nick before ``/nick`` asks the broker for it (False: another
    tab of this gateway holds it). Every mistake comes back as a message; only a
    bug raises.
    """
    front.current = room
    front.current_dm = to
    front.outbox = []
    try:
        parsed = parse_input(line)
    except InputError:
        parsed = None  # run_line says what is wrong, as it does in the terminal
    if to is not None:
        if not to or any(c.isspace() for c in to):
            return [error("bad_message", "to wants a nick")]
        if parsed == SlashCommand("leave"):
            return [{"type": "left", "to": to}]
    if isinstance(parsed, SlashCommand) and parsed.name == "nick" and not reserve(parsed.args[0]):
        return [error("nick_taken", f"{parsed.args[0]} is in use in another tab")]
    await run_line(front.client, front, line)
    return front.outbox
