"""The client library: one DEALER to the broker's ROUTER, one SUB to its PUB.

Used by the line-mode CLI, the terminal UI and bots alike::

    async with Client("Robin", router="tcp://localhost:5555") as client:
        await client.say("hello")
        async for event in client.events():
            if event.type == "msg":
                print(event.nick, event.text)

The client proves its SUB live before it registers (a ``sync`` round trip it
can see on the SUB), so it misses nothing published after its own ``join``.
It heartbeats; re-registers by itself, on fresh sockets, when the broker
restarts or goes silent; drops duplicate events by ``seq`` and messages
published twice by their id; repairs gaps from the broker's history; and
resends the messages an outage may have swallowed (the broker drops the
duplicates it remembers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import zmq
import zmq.asyncio

from zchat.protocol import (
    MAX_REPLY_ARRAY,
    MAX_REPLY_FRAME,
    VERSION,
    ErrorCode,
    ProtocolError,
    check_nick,
    check_room,
    pack,
    room_topic,
    split_pub_frame,
    sync_topic,
    unpack,
)
from zchat.security import HandshakeWatch

log = logging.getLogger("zchat.client")

DEFAULT_ROUTER = "tcp://localhost:5555"
DEFAULT_PUB = "tcp://localhost:5556"

#: Unconfirmed messages kept for resending after an outage.
MAX_UNCONFIRMED = 1000
#: Received events waiting for the application; the oldest go first when full.
MAX_QUEUED_EVENTS = 10_000
#: Message ids remembered to drop copies a broker restart may publish twice.
MAX_SEEN_IDS = 10_000
#: How long a gap repair may take before the gap is reported as missed.
REPAIR_TIMEOUT = 5.0


class ZchatError(Exception):
    """Base of every error the client library raises."""


class ConnectTimeout(ZchatError):
    def __init__(self, router: str, pub: str, timeout: float, hint: str | None = None) -> None:
        if hint:
            message = f"no session with the broker at {router} within {timeout:g}s: {hint}"
        else:
            message = f"no broker answered at {router} (pub {pub}) within {timeout:g}s"
        super().__init__(message)
        self.router = router
        self.pub = pub
        self.timeout = timeout
        self.hint = hint


class BrokerError(ZchatError):
    """The broker answered a command with an ``error`` envelope."""

    def __init__(self, code: str, reason: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.data = dict(data or {})


class NotConnected(ZchatError):
    """No connection to the broker to send on (it is down, or restarting)."""


class Unregistered(BrokerError):
    """The broker no longer knows this client (it restarted); registering again."""


class RegistrationError(BrokerError):
    """``hello`` was refused: ``nick_taken``, ``bad_nick``, ``full``, ..."""


class ClosedError(ZchatError):
    """The client was closed."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event for the application: a broker envelope, or a local notice.

    ``type`` is the envelope's type (``msg``, ``join``, ``leave``, ``topic``,
    ``nick``, ``dm``, ``error``) or a local one: ``status`` (connection state
    in ``state``/``text``) and ``missed`` (``count`` events lost in ``room``).
    ``data`` holds every field; ``history`` marks backlog shown on joining.
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    history: bool = False

    @property
    def room(self) -> str | None:
        return _opt_str(self.data.get("room"))

    @property
    def nick(self) -> str | None:
        return _opt_str(self.data.get("nick"))

    @property
    def text(self) -> str | None:
        return _opt_str(self.data.get("text"))

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def ts(self) -> float | None:
        ts = self.data.get("ts")
        return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None

    def to_json(self) -> dict[str, Any]:
        """The envelope's fields, plus ``history`` for backlog (for ``--json``)."""
        out = {"type": self.type, **self.data}
        if self.history:
            out["history"] = True
        return out


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """CURVE keys for the client: the broker's public key and our own pair (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes


@dataclass(slots=True)
class RoomState:
    """What the client knows of one room it is in."""

    name: str
    topic: str = ""
    users: list[str] = field(default_factory=list)
    #: seq of the last event handed to the application; None before the first.
    seq: int | None = None
    #: Live events held back while the backlog or a gap repair is in flight.
    held: list[dict[str, Any]] | None = None


class Client:
    """An asyncio chat client. ``await connect()`` (or ``async with``), then use it."""

    def __init__(
        self,
        nick: str,
        *,
        router: str = DEFAULT_ROUTER,
        pub: str = DEFAULT_PUB,
        rooms: tuple[str, ...] | list[str] = ("lobby",),
        connect_timeout: float = 5.0,
        backlog: int = 50,
        curve: CurveKeys | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.nick = check_nick(nick)
        self.router = router
        self.pub = pub
        self.connect_timeout = connect_timeout
        self.backlog = backlog
        self.heartbeat = 1.0
        self.epoch: str | None = None
        self.rooms: dict[str, RoomState] = {}
        self._wanted_rooms = list(dict.fromkeys(check_room(r) for r in rooms))
        self._curve = curve
        self._own_context = context is None
        self._context = context or zmq.asyncio.Context()
        self._dealer: zmq.asyncio.Socket | None = None
        # Sends go through a plain shadow of the DEALER: with NOBLOCK it raises
        # Again at once, where the asyncio socket would hide it in a future.
        self._sender: zmq.Socket[bytes] | None = None
        self._sub: zmq.asyncio.Socket | None = None
        # Unique across restarts of this program too: the broker dedupes by (nick, id).
        prefix = secrets.token_hex(3)
        self._ids = (f"{prefix}-{n}" for n in itertools.count(1))
        self._session: str | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._unconfirmed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._events: deque[Event] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._event_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._last_heard = 0.0
        self._silent = False
        self._registered = asyncio.Event()
        #: The current registration has its welcome (backlog may still be loading).
        self._welcomed = False
        self._recovering: asyncio.Task[None] | None = None
        self._closed = False
        self._finished = False
        self._closing: asyncio.Task[None] | None = None
        self._left: asyncio.Future[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.dropped_events = 0
        #: Copies of messages dropped because their (room, nick, id) was seen already.
        self.duplicates = 0
        self._seen_ids: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Register with the broker; raises ``ConnectTimeout`` or ``RegistrationError``."""
        dealer = self._new_dealer()
        # Handshake events turn a bare timeout into "wrong key", "needs CURVE", ...
        watch = HandshakeWatch(dealer)
        try:
            self._start_sockets(dealer)
            await self._register(asyncio.get_running_loop().time() + self.connect_timeout)
        except ConnectTimeout:
            hint = watch.diagnose(curve=self._curve is not None)
            watch.close()
            await self._teardown()
            raise ConnectTimeout(self.router, self.pub, self.connect_timeout, hint) from None
        except BaseException:
            watch.close()
            await self._teardown()
            raise
        watch.close()
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="zchat-heartbeat"))
        self._notice("status", state="connected", text=f"connected as {self.nick}")

    async def close(self, reason: str | None = None) -> None:
        """Say ``bye`` and close; waits briefly for our own ``leave`` to be seen."""
        if self._closed:
            return
        self._closed = True
        if self._registered.is_set() and self._dealer is not None:
            envelope: dict[str, Any] = {"type": "bye"}
            if reason:
                envelope["reason"] = reason
            self._left = asyncio.get_running_loop().create_future()
            if self._send(envelope) and self.rooms:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._left, 1.0)
        await self._teardown()

    def _new_dealer(self) -> zmq.asyncio.Socket:
        dealer = self._socket(zmq.DEALER)
        # Nothing queues for a broker that is not there: a ping from before an
        # outage must not arrive after it, and unconfirmed messages are resent.
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        return dealer

    def _start_sockets(self, dealer: zmq.asyncio.Socket) -> None:
        """Connect ``dealer`` and a new SUB, and start reading both."""
        self._dealer = dealer
        dealer.connect(self.router)
        self._sender = zmq.Socket.shadow(dealer.underlying)
        self._sub = self._socket(zmq.SUB)
        self._sub.connect(self.pub)
        self._readers = [
            asyncio.create_task(self._read_dealer(), name="zchat-dealer"),
            asyncio.create_task(self._read_sub(), name="zchat-sub"),
        ]

    async def _stop_sockets(self) -> None:
        readers, self._readers = self._readers, []
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sock in (self._dealer, self._sub):
            if sock is not None:
                sock.close(0)
        self._dealer = self._sub = None
        self._sender = None

    async def _teardown(self) -> None:
        extra = [self._recovering] if self._recovering else []
        for task in self._tasks + extra + list(self._background):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._stop_sockets()
        if self._own_context:
            self._context.term()
        # Only now: close() may still be waiting for our own leave, an event too.
        self._finished = True
        self._event_ready.set()

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._curve.server_public)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret)
        return sock

    @property
    def connected(self) -> bool:
        """Registered and hearing from the broker."""
        return self._registered.is_set() and not self._silent

    # ------------------------------------------------------------ events

    def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the client is closed."""
        return self._iter_events()

    async def _iter_events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next_event()
            if event is None:
                return
            yield event

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; None once closed (or ``TimeoutError`` after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while not self._events:
                if self._finished:
                    return None
                self._event_ready.clear()
                await self._event_ready.wait()
        return self._events.popleft()

    def _emit(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(event)
        self._event_ready.set()

    def _notice(self, kind: str, **data: Any) -> None:
        self._emit(Event(kind, data))

    # ------------------------------------------------------------ commands

    async def say(self, text: str, room: str | None = None, *, action: bool = False) -> str:
        """Say ``text`` in ``room`` (default: the first room); returns the message id.

        The message counts as delivered when it comes back on the SUB; until
        then it is kept and resent after a reconnection.
        """
        name = self._default_room(room)
        msg_id = next(self._ids)
        envelope: dict[str, Any] = {"type": "say", "room": name, "text": text, "id": msg_id}
        if action:
            envelope["action"] = True
        self._unconfirmed[msg_id] = envelope
        while len(self._unconfirmed) > MAX_UNCONFIRMED:
            self._unconfirmed.popitem(last=False)
        self._send(envelope)
        return msg_id

    async def dm(self, nick: str, text: str, *, action: bool = False) -> Event:
        """Send a direct message; returns the broker's confirmation."""
        envelope: dict[str, Any] = {"type": "dm", "to": nick, "text": text}
        if action:
            envelope["action"] = True
        return Event("dm", await self.request(envelope))

    async def join(self, room: str) -> RoomState:
        """Join a room (no-op if already in it); its backlog arrives as events."""
        name = check_room(room)
        current = self.rooms.get(name)
        if current is not None and current.held is None and name in self._wanted_rooms:
            return current
        if name not in self._wanted_rooms:
            self._wanted_rooms.append(name)
        assert self._sub is not None
        state = self.rooms.setdefault(name, RoomState(name, held=[]))
        self._sub.setsockopt(zmq.SUBSCRIBE, room_topic(name))
        # The subscription must reach the broker before our join is published.
        await self._sync(asyncio.get_running_loop().time() + self.connect_timeout)
        try:
            info = await self.request({"type": "join", "room": name})
        except BaseException:
            self._forget_room(name)
            raise
        await self._adopt_room(state, info, first=True)
        return state

    async def leave(self, room: str | None = None, reason: str | None = None) -> None:
        name = self._default_room(room)
        envelope: dict[str, Any] = {"type": "leave", "room": name}
        if reason:
            envelope["reason"] = reason
        if name in self._wanted_rooms:
            self._wanted_rooms.remove(name)
        self._send(envelope)

    async def who(self, room: str | None = None) -> dict[str, Any]:
        """The room's ``who`` reply: ``users``, ``count``, ``topic``, ``seq``."""
        return await self.request({"type": "who", "room": self._default_room(room)})

    async def set_topic(self, text: str, room: str | None = None) -> None:
        self._send({"type": "topic", "room": self._default_room(room), "text": text})

    async def change_nick(self, nick: str) -> None:
        reply = await self.request({"type": "nick", "nick": check_nick(nick)})
        self.nick = str(reply["new"])

    async def stats(self) -> dict[str, Any]:
        return await self.request({"type": "stats"})

    async def history(
        self, room: str, *, after: int = 0, before: int | None = None, limit: int = 100
    ) -> dict[str, Any]:
        envelope: dict[str, Any] = {"type": "history", "room": room, "after": after, "limit": limit}
        if before is not None:
            envelope["before"] = before
        return await self.request(envelope)

    async def request(
        self, envelope: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a command and wait for the reply carrying its id; errors raise ``BrokerError``."""
        if self._closed:
            raise ClosedError("the client is closed")
        ref = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            if not self._send({**envelope, "id": ref}):
                raise NotConnected("not connected to the broker")
            reply = await asyncio.wait_for(future, timeout or self.connect_timeout)
        finally:
            self._pending.pop(ref, None)
        if reply.get("type") == "error":
            raise BrokerError(str(reply.get("code")), str(reply.get("reason")), reply)
        return reply

    def _default_room(self, room: str | None) -> str:
        if room is not None:
            return check_room(room)
        if not self._wanted_rooms:
            raise ZchatError("not in any room: join one first")
        return self._wanted_rooms[0]

    def _send(self, envelope: dict[str, Any]) -> bool:
        if self._sender is None:
            return False
        try:
            self._sender.send(pack(envelope), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # ------------------------------------------------------------ registration

    async def _sync(self, deadline: float) -> None:
        """Round trip to our own SUB: once it returns, every subscription is live.

        The token's topic is subscribed last, on the same SUB, so seeing it come
        back proves every subscription made before it has reached the broker.
        """
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        ref = next(self._ids)
        token = secrets.token_hex(8)
        seen: asyncio.Future[None] = loop.create_future()
        self._syncs[ref] = seen
        self._sub.setsockopt(zmq.SUBSCRIBE, sync_topic(token))
        wait = 0.05
        try:
            while True:
                self._send({"type": "sync", "token": token, "id": ref})
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ConnectTimeout(self.router, self.pub, self.connect_timeout)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(seen), min(wait, remaining))
                    return
                wait = min(wait * 2, 1.0)
        finally:
            self._syncs.pop(ref, None)
            if self._sub is not None:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, sync_topic(token))

    async def _register(self, deadline: float) -> None:
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        self._registered.clear()
        self._welcomed = False
        for name in self._wanted_rooms:
            self._sub.setsockopt(zmq.SUBSCRIBE, room_topic(name))
            state = self.rooms.setdefault(name, RoomState(name))
            state.held = []
        await self._sync(deadline)
        hello: dict[str, Any] = {
            "type": "hello",
            "v": VERSION,
            "nick": self.nick,
            "rooms": self._wanted_rooms,
        }
        if self._session is not None:
            hello["resume"] = self._session
        try:
            welcome = await self.request(hello, max(deadline - loop.time(), 0.1))
        except TimeoutError:
            raise ConnectTimeout(self.router, self.pub, self.connect_timeout) from None
        except BrokerError as exc:
            raise RegistrationError(exc.code, exc.reason, exc.data) from None
        new_epoch = welcome.get("epoch") != self.epoch
        self.epoch = _opt_str(welcome.get("epoch"))
        self.nick = str(welcome.get("nick", self.nick))
        self._session = _opt_str(welcome.get("session"))
        self._welcomed = True
        heartbeat = welcome.get("heartbeat")
        if isinstance(heartbeat, int | float) and heartbeat > 0:
            self.heartbeat = float(heartbeat)
        self._last_heard = time.monotonic()
        self._silent = False
        rooms = welcome.get("rooms")
        infos = rooms if isinstance(rooms, dict) else {}
        for name in list(self.rooms):
            if name not in infos:
                self._forget_room(name)
        for name, info in infos.items():
            state = self.rooms.setdefault(name, RoomState(name, held=[]))
            if new_epoch:
                state.seq = None  # seq started over with the broker
            await self._adopt_room(state, info, first=new_epoch)
        self._registered.set()
        for envelope in list(self._unconfirmed.values()):
            self._send(envelope)

    async def _adopt_room(self, state: RoomState, info: dict[str, Any], *, first: bool) -> None:
        """Take a room's welcome/who info, fetch what came before, release held events."""
        seq = info.get("seq")
        joined_at = seq if isinstance(seq, int) else 0
        state.topic = str(info.get("topic", ""))
        users = info.get("users")
        state.users = [u for u in users if isinstance(u, str)] if isinstance(users, list) else []
        # A room can start over within an epoch: forgotten by the broker while
        # empty, then joined again. Its seq then goes back; treat it as new.
        if first or state.seq is None or joined_at <= state.seq:
            # Backlog: what was said before our join, shown as history.
            if self.backlog > 0 and joined_at > 1:
                await self._fetch(state, after=0, before=joined_at, history=True)
            state.seq = joined_at - 1
        else:
            # Same broker epoch: fetch exactly what we missed while away.
            await self._fetch(state, after=state.seq, before=joined_at, history=False)
            state.seq = joined_at - 1
        self._release(state)

    async def _fetch(
        self, state: RoomState, *, after: int, before: int, history: bool, repair: bool = False
    ) -> None:
        if before - after <= 1:
            return
        limit = self.backlog if history else min(before - after - 1, 500)
        try:
            reply = await self.history(state.name, after=after, before=before, limit=max(limit, 1))
        except (TimeoutError, ZchatError) as exc:
            unknown = isinstance(exc, BrokerError) and exc.code == ErrorCode.NOT_REGISTERED
            restarting = unknown or isinstance(exc, NotConnected)
            if not history and (restarting or (repair and self._recovering_now)):
                # The broker restarted, or is restarting: registering again fetches
                # this range from where we are, so nothing counts as missed yet.
                self._start_recovery("the broker does not know us (restarted?)")
                raise Unregistered(ErrorCode.NOT_REGISTERED, str(exc)) from None
            log.info("history of %s unavailable: %s", state.name, exc)
            if not history:
                self._notice("missed", room=state.name, count=before - after - 1)
            return
        # What is missing is always older than what came back: report it first.
        missing = reply.get("missing")
        if not history and isinstance(missing, int) and missing > 0:
            self._notice("missed", room=state.name, count=missing)
        events = reply.get("events")
        for env in events if isinstance(events, list) else []:
            if isinstance(env, dict) and isinstance(env.get("type"), str):
                seq = env.get("seq")
                if history:
                    # The welcome's roster is current; old joins must not change it.
                    self._emit(Event(env["type"], env, history=True))
                elif isinstance(seq, int) and (state.seq is None or seq > state.seq):
                    self._deliver(state, env)
                    state.seq = seq

    def _forget_room(self, name: str) -> None:
        self.rooms.pop(name, None)
        if name in self._wanted_rooms:
            self._wanted_rooms.remove(name)
        if self._sub is not None:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, room_topic(name))

    # ------------------------------------------------------------ readers

    async def _read_dealer(self) -> None:
        assert self._dealer is not None
        while True:
            frame = await self._dealer.recv()
            self._heard()
            try:
                envelope = unpack(frame, MAX_REPLY_FRAME, max_array=MAX_REPLY_ARRAY)
            except ProtocolError as exc:
                log.warning("bad envelope from broker: %s", exc)
                continue
            ref = envelope.get("re")
            future = self._pending.get(ref) if isinstance(ref, str) else None
            if future is not None and not future.done():
                future.set_result(envelope)
                continue
            self._on_reply(envelope)

    def _on_reply(self, envelope: dict[str, Any]) -> None:
        kind = envelope["type"]
        ref = envelope.get("re")
        if kind == "pong":
            return
        if kind == "ack":
            if isinstance(ref, str):
                self._unconfirmed.pop(ref, None)
            return
        if kind == "error":
            if envelope.get("code") == ErrorCode.NOT_REGISTERED:
                self._start_recovery("the broker does not know us (restarted?)")
                return
            if envelope.get("code") == ErrorCode.REPLACED:
                # Our nick was registered again with our key from elsewhere: coming
                # back would take it away again, and the two would take turns for ever.
                self._registered.clear()
                self._emit(Event(kind, envelope))
                self._closing = asyncio.create_task(self.close(), name="zchat-replaced")
                return
            if isinstance(ref, str):
                self._unconfirmed.pop(ref, None)
        self._emit(Event(kind, envelope))

    async def _read_sub(self) -> None:
        assert self._sub is not None
        while True:
            frame = await self._sub.recv()
            self._heard()
            try:
                topic, body = split_pub_frame(frame)
                envelope = unpack(body)
            except ProtocolError as exc:
                log.warning("bad PUB frame: %s", exc)
                continue
            if topic.startswith(b"!"):
                seen = self._syncs.get(str(envelope.get("re")))
                if seen is not None and not seen.done():
                    seen.set_result(None)
                continue
            room = envelope.get("room")
            state = self.rooms.get(room) if isinstance(room, str) else None
            if state is None or not isinstance(envelope.get("seq"), int):
                continue
            if state.held is not None:
                state.held.append(envelope)
            else:
                self._on_room_event(state, envelope)

    def _on_room_event(self, state: RoomState, envelope: dict[str, Any]) -> None:
        seq: int = envelope["seq"]
        if state.seq is not None and seq <= state.seq:
            return  # already seen (backlog overlap or a repaired range)
        if state.seq is not None and seq > state.seq + 1:
            state.held = [envelope]
            after = state.seq
            task = asyncio.create_task(self._repair(state, after, seq))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        state.seq = seq
        self._deliver(state, envelope)

    def _deliver(self, state: RoomState, envelope: dict[str, Any]) -> None:
        """Hand one live room event to the application, unless it is a resent copy."""
        self._track_room_event(state, envelope)
        msg_id = envelope.get("id")
        if envelope.get("type") == "msg" and isinstance(msg_id, str):
            # A broker restarted without --db forgets which ids it has seen, so a
            # message resent across the restart can be published twice.
            key = (state.name, str(envelope.get("nick")), msg_id)
            if key in self._seen_ids:
                self.duplicates += 1
                return
            self._seen_ids[key] = None
            if len(self._seen_ids) > MAX_SEEN_IDS:
                self._seen_ids.popitem(last=False)
        self._emit(Event(envelope["type"], envelope))

    async def _repair(self, state: RoomState, after: int, before: int) -> None:
        try:
            async with asyncio.timeout(REPAIR_TIMEOUT):
                await self._fetch(state, after=after, before=before, history=False, repair=True)
        except Unregistered:
            return  # keep holding: the registration under way repairs and releases
        except TimeoutError:
            self._notice("missed", room=state.name, count=before - after - 1)
        state.seq = max(state.seq or 0, before - 1)
        self._release(state)

    def _release(self, state: RoomState) -> None:
        held, state.held = state.held or [], None
        for envelope in sorted(held, key=lambda e: int(e["seq"])):
            if state.held is not None:
                state.held.append(envelope)  # a new gap opened: keep holding
            else:
                self._on_room_event(state, envelope)

    def _track_room_event(self, state: RoomState, envelope: dict[str, Any]) -> None:
        """Keep roster, topic, own nick and unconfirmed messages up to date."""
        kind = envelope.get("type")
        nick = envelope.get("nick")
        if kind == "join" and isinstance(nick, str) and nick not in state.users:
            state.users.append(nick)
        elif kind == "leave" and isinstance(nick, str):
            if nick in state.users:
                state.users.remove(nick)
            if nick == self.nick and not self._closed and state.name not in self._wanted_rooms:
                self._forget_room(state.name)
            left = self._left
            if nick == self.nick and left is not None and not left.done():
                left.set_result(None)
        elif kind == "topic":
            state.topic = str(envelope.get("text", ""))
        elif kind == "nick":
            old, new = envelope.get("old"), envelope.get("new")
            if isinstance(old, str) and isinstance(new, str):
                state.users = [new if u == old else u for u in state.users]
        elif kind == "msg" and nick == self.nick:
            msg_id = envelope.get("id")
            if isinstance(msg_id, str):
                self._unconfirmed.pop(msg_id, None)

    # ------------------------------------------------------------ liveness

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        if self._silent:
            self._silent = False
            self._notice("status", state="connected", text="the broker answers again")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            # From the welcome on, even while backlog or a gap repair is still
            # loading: a slow fetch must not get the new session dropped as silent.
            if self._welcomed:
                self._send({"type": "ping"})
            silence = time.monotonic() - self._last_heard
            if not self._silent and silence > 3 * self.heartbeat:
                self._silent = True
                self._notice(
                    "status",
                    state="silent",
                    text=f"no word from the broker for {silence:.0f}s; still trying",
                )
                # A broker that lost us may never answer a ping we cannot send.
                self._start_recovery("the broker went silent")

    @property
    def _recovering_now(self) -> bool:
        return self._recovering is not None and not self._recovering.done()

    def _start_recovery(self, why: str) -> None:
        if self._closed or (self._recovering is not None and not self._recovering.done()):
            return
        self._recovering = asyncio.create_task(self._recover(why), name="zchat-recover")

    async def _recover(self, why: str) -> None:
        # No pings until the next welcome: one sent on a fresh socket before its
        # hello would earn a not_registered, and a second recovery after this one.
        self._registered.clear()
        self._welcomed = False
        self._notice("status", state="reconnecting", text=f"{why}; registering again")
        loop = asyncio.get_running_loop()
        wait = 0.5
        while not self._closed:
            # Start afresh, as the guide's Lazy Pirate does: whatever the old sockets
            # hold (a backlog for a session that is gone, a stalled pipe) goes with them.
            await self._stop_sockets()
            self._start_sockets(self._new_dealer())
            try:
                await self._register(loop.time() + max(self.connect_timeout, 3 * self.heartbeat))
            except RegistrationError as exc:
                self._notice("status", state="refused", text=f"registration refused: {exc}")
            except (ConnectTimeout, TimeoutError, ZchatError) as exc:
                log.info("re-registration failed: %s", exc)
            else:
                self._notice("status", state="registered", text=f"registered again as {self.nick}")
                return
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)
