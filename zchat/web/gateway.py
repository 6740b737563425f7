"""The web gateway: one page, one WebSocket, one zchat ``Client`` per browser tab.

The gateway is an ordinary zchat client towards the broker, so heartbeats,
re-registration, gap repair and dedupe hold for browser users as for anyone.
What the page sends is untrusted: it is size-checked, parsed as JSON and
handed to ``bridge.carry_out`` as typed text, never executed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from zchat import Client, CurveKeys, ZchatError
from zchat.web import bridge

log = logging.getLogger("zchat.web")

STATIC = Path(__file__).resolve().parent / "static"

#: Largest WebSocket message the gateway reads, in bytes of UTF-8.
MAX_MESSAGE = 16 * 1024
#: WebSocket close codes (RFC 6455): policy violation, try again later.
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013
#: A Host header we are willing to echo into the CSP: host[:port], nothing else.
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Everything ``zchat web`` is told; every field has a safe default."""

    router: str = "tcp://localhost:5555"
    pub: str = "tcp://localhost:5556"
    host: str = "127.0.0.1"
    port: int = 8080
    curve: CurveKeys | None = None
    #: Origins accepted besides the page's own (``https://chat.example.org``).
    allow_origins: tuple[str, ...] = ()
    max_connections: int = 1000
    max_message: int = MAX_MESSAGE
    connect_timeout: float = 5.0
    backlog: int = 50
    #: Seconds an open WebSocket may wait before registering (a nick form left open).
    hello_timeout: float = 300.0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) into its parts; ``ValueError`` if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen wants HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


def csp(host: str | None) -> str:
    """The Content-Security-Policy: our own files only, and our own WebSocket."""
    connect = "'self'"
    if host is not None and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so that every HTTP response carries the CSP and friends."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        host = _header(scope, b"host")

        async def send_with_headers(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp(host).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            try:
                return bytes(value).decode("latin-1")
            except UnicodeDecodeError:
                return None
    return None


class Gateway:
    """The ASGI app and its sessions."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.settings = bridge.ClientSettings(
            router=config.router,
            pub=config.pub,
            curve=config.curve,
            connect_timeout=config.connect_timeout,
            backlog=config.backlog,
            context=bridge.shared_context(config.max_connections),
        )
        self.sessions: set[Session] = set()
        #: Nicks held by this gateway's tabs. Every tab shares the gateway's CURVE
        #: key, and the broker lets the same key take a nick over: without this,
        #: one browser user could push another out by registering their nick.
        self.nicks: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self.failures = 0
        routes = [
            Route("/", self.index),
            WebSocketRoute("/ws", self.websocket),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        self.starlette = Starlette(routes=routes)
        self.app: ASGIApp = security_headers(self.starlette)

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Same origin as the Host the browser asked for, or one allowed explicitly.

        A missing Origin is refused too: every browser sends one, so only a
        script would leave it out, and a script can send the right one.
        """
        if origin is None:
            return False
        if origin in self.config.allow_origins:
            return True
        return host is not None and origin in {f"http://{host}", f"https://{host}"}

    async def websocket(self, ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if not self.origin_allowed(origin, ws.headers.get("host")):
            log.warning("refused a WebSocket from origin %r", (origin or "(none)")[:200])
            # Before accept: the browser sees HTTP 403, the handshake never completes.
            await ws.close(CLOSE_POLICY)
            return
        if len(self.sessions) >= self.config.max_connections:
            log.warning("refused a WebSocket: %d connections", len(self.sessions))
            await ws.accept()
            limit = self.config.max_connections
            await _send_text(ws, bridge.error("full", f"the gateway is full ({limit} connections)"))
            await ws.close(CLOSE_TRY_LATER, "gateway full")
            return
        session = Session(next(self._ids), ws, self)
        # Counted before the first await, so concurrent handshakes cannot overshoot.
        self.sessions.add(session)
        try:
            await ws.accept()
            await session.run()
        except Exception as exc:
            self.failures += 1
            log.error("session %d (%s) failed: %s: %s", session.id, session.nick, _name(exc), exc)
        finally:
            self.sessions.discard(session)
            await session.finish()

    async def close_all(self) -> None:
        """Close every session's client (each says ``bye`` to the broker), then the context."""
        await asyncio.gather(*(s.finish() for s in list(self.sessions)), return_exceptions=True)
        if self.settings.context is not None:
            self.settings.context.destroy(linger=0)


def _name(exc: BaseException) -> str:
    return type(exc).__name__


async def _send_text(ws: WebSocket, message: bridge.Message) -> bool:
    text = bridge.encode(message)
    if text is None:
        return True
    try:
        await ws.send_text(text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True


class PageGone(ZchatError):
    """The WebSocket closed: the page went away or reloaded."""


@dataclass(eq=False)
class Session:
    """One browser tab: its WebSocket and, once registered, its ``Client``."""

    id: int
    ws: WebSocket
    gateway: Gateway
    client: Client | None = None
    quit_reason: str | None = None
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _finished: bool = False

    @property
    def nick(self) -> str:
        return self.client.nick if self.client is not None else "-"

    async def send(self, message: bridge.Message) -> None:
        async with self._send_lock:
            if not await _send_text(self.ws, message):
                raise PageGone

    async def receive(self) -> dict[str, Any]:
        """The next well-formed message from the page; ``PageGone`` when it closes."""
        limit = self.gateway.config.max_message
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError) as exc:
                raise PageGone from exc
            if message["type"] == "websocket.disconnect":
                raise PageGone
            text = message.get("text")
            if text is None:
                await self.send(bridge.error("bad_message", "send JSON text, not binary"))
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > limit:
                await self.send(
                    bridge.error(
                        "too_large",
                        f"message of {size} bytes refused: the limit is {limit}",
                        size=size,
                        limit=limit,
                    )
                )
                continue
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                await self.send(bridge.error("bad_message", 'expected a JSON object with a "type"'))
                continue
            return data

    async def run(self) -> None:
        try:
            self.client = await self.login()
            if self.client is None:
                return
            await self.chat(self.client)
        except PageGone:
            return

    async def login(self) -> Client | None:
        """Wait for a ``hello`` the broker accepts; errors go back, the page may try again."""
        config = self.gateway.config
        while True:
            try:
                async with asyncio.timeout(config.hello_timeout):
                    data = await self.receive()
            except TimeoutError:
                await self.send(bridge.error("timeout", "no nick chosen in time"))
                return None
            if data["type"] != "hello":
                await self.send(bridge.error("not_registered", "choose a nick first"))
                continue
            nick, rooms = data.get("nick"), data.get("rooms", [])
            if not isinstance(nick, str) or not isinstance(rooms, list):
                await self.send(bridge.error("bad_message", "hello wants a nick and rooms"))
                continue
            wanted = [r for r in rooms if isinstance(r, str)]
            # Held before registering: two tabs asking at once must not both get in.
            if not self.hold_nick(nick):
                await self.send(
                    bridge.error("nick_taken", f"{nick} is in use in another tab", during="hello")
                )
                continue
            try:
                client = await bridge.open_client(nick, wanted, self.gateway.settings)
            except bridge.LoginRefused as exc:
                self.release_nick()
                await self.send(bridge.error(exc.code, exc.text, during="hello"))
                continue
            log.info("session %d registered as %s", self.id, client.nick)
            self.client = client
            await self.send(bridge.rooms_message(client) | {"type": "welcome"})
            return client

    async def chat(self, client: Client) -> None:
        pump = asyncio.create_task(self.pump(client), name=f"zchat-web-pump-{self.id}")
        typed = asyncio.create_task(self.read_lines(client), name=f"zchat-web-read-{self.id}")
        try:
            done, _ = await asyncio.wait({pump, typed}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, PageGone):
                    raise exc
        finally:
            for task in (pump, typed):
                task.cancel()
            for task in (pump, typed):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def pump(self, client: Client) -> None:
        """Client events to the page, until the client closes (``/quit``, ``replaced``)."""
        async for event in client.events():
            await self.send(bridge.event_message(event))
            if bridge.is_registration(event):
                await self.send(bridge.rooms_message(client))
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(1000, "session ended")

    async def read_lines(self, client: Client) -> None:
        front = bridge.PageFront(client)
        while True:
            data = await self.receive()
            if data["type"] == "hello":
                await self.send(bridge.error("already_registered", f"registered as {client.nick}"))
                continue
            if data["type"] != "line":
                await self.send(bridge.error("bad_message", f"unknown type {data['type']!r}"))
                continue
            text, room, to = data.get("text"), data.get("room"), data.get("to")
            if not isinstance(text, str) or not all(
                v is None or isinstance(v, str) for v in (room, to)
            ):
                await self.send(bridge.error("bad_message", "line wants text, room or to"))
                continue
            try:
                replies = await bridge.carry_out(
                    front, text, room=room, to=to, reserve=self.reserve_nick
                )
            finally:
                # Whatever /nick did, this tab holds the nick its client has now.
                self.hold_nick(client.nick)
            for message in replies:
                await self.send(message)
            if front.quitting:
                self.quit_reason = front.quit_reason
                return

    def hold_nick(self, nick: str) -> bool:
        """Record ``nick`` as this tab's only one; False if another tab holds it."""
        if not self.reserve_nick(nick):
            return False
        key = bridge.nick_key(nick)
        nicks = self.gateway.nicks
        for other in [k for k, holder in nicks.items() if holder is self and k != key]:
            del nicks[other]
        return True

    def reserve_nick(self, nick: str) -> bool:
        """Claim ``nick`` too (for a ``/nick`` in flight); False if another tab holds it.

        Claimed before the broker is asked: two tabs asking at once must not both
        get it (with one CURVE key for all, the broker would let the second take it).
        """
        key = bridge.nick_key(nick)
        if self.gateway.nicks.get(key, self) is not self:
            return False
        self.gateway.nicks[key] = self
        return True

    def release_nick(self) -> None:
        nicks = self.gateway.nicks
        for key in [k for k, holder in nicks.items() if holder is self]:
            del nicks[key]

    async def finish(self) -> None:
        """Close the client (with ``bye``) and the WebSocket; safe to call twice."""
        if self._finished:
            return
        self._finished = True
        self.release_nick()
        if self.client is not None:
            try:
                await self.client.close(self.quit_reason)
            except Exception as exc:
                log.error("session %d: closing its client failed: %s: %s", self.id, _name(exc), exc)
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(1000)


def create_app(config: WebConfig) -> Gateway:
    return Gateway(config)
