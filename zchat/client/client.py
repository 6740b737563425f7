"""The client library: chat on top of a :class:`~zchat.client.link.Link` to the broker.

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
import logging
import time
from collections import OrderedDict
from types import TracebackType
from typing import Self, TypeVar

import zmq
import zmq.asyncio

from zchat.client.events import Status
from zchat.client.link import Link
from zchat.client.rooms import Confirmed, Effect, Fetch, RoomState, RoomTracker, SelfLeft
from zchat.curve import CurveKeys
from zchat.errors import (
    BrokerError,
    ConnectTimeout,
    NotConnected,
    RegistrationError,
    Unregistered,
    ZchatError,
)
from zchat.handshake import HandshakeWatch
from zchat.protocol.commands import (
    Bye,
    Dm,
    Hello,
    History,
    Join,
    Leave,
    List,
    Nick,
    Ping,
    Say,
    Stats,
    Topic,
    Who,
)
from zchat.protocol.events import (
    Ack,
    DirectMessage,
    ErrorReply,
    Event,
    HistoryReply,
    NickChanged,
    Reply,
    RoomEvent,
    RoomInfo,
    RoomList,
    StatsReply,
    Welcome,
)
from zchat.protocol.names import (
    ErrorCode,
    check_nick,
    check_room,
)
from zchat.protocol.wire import room_topic

log = logging.getLogger("zchat.client")

_R = TypeVar("_R", bound=Event)

DEFAULT_ROUTER = "tcp://localhost:5555"
DEFAULT_PUB = "tcp://localhost:5556"

#: Unconfirmed messages kept for resending after an outage.
MAX_UNCONFIRMED = 1000
#: How long a gap repair may take before the gap is reported as missed.
REPAIR_TIMEOUT = 5.0


class Client(Link):
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
        super().__init__(
            router=router, pub=pub, connect_timeout=connect_timeout, curve=curve, context=context
        )
        self._tracker = RoomTracker(check_nick(nick))
        self.backlog = backlog
        #: The broker says its pace in ``welcome``; this is only the value before it.
        self.heartbeat = 5.0
        self.epoch: str | None = None
        #: The rooms we are in, as the tracker keeps them (roster, topic, seq).
        self.rooms: dict[str, RoomState] = self._tracker.rooms
        self._wanted_rooms = list(dict.fromkeys(check_room(r) for r in rooms))
        self._session: str | None = None
        self._unconfirmed: OrderedDict[str, Say] = OrderedDict()
        self._registered = asyncio.Event()
        #: The current registration has its welcome (backlog may still be loading).
        self._welcomed = False
        self._recovering: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._left: asyncio.Future[None] | None = None

    @property
    def nick(self) -> str:
        return self._tracker.nick

    @nick.setter
    def nick(self, value: str) -> None:
        self._tracker.nick = value

    @property
    def duplicates(self) -> int:
        """Copies of messages dropped because their (room, nick, id) was seen already."""
        return self._tracker.duplicates

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
        self._watch_disconnects()
        self._spawn(self._heartbeat(), "zchat-heartbeat", keep=True)
        self._emit(Status("connected", f"connected as {self.nick}"))

    async def close(self, reason: str | None = None) -> None:
        """Say ``bye`` and close; waits briefly for our own ``leave`` to be seen."""
        if self._closed:
            return
        self._closed = True
        if self._registered.is_set() and self._dealer is not None:
            self._left = asyncio.get_running_loop().create_future()
            if self._send(Bye(reason or None)) and self.rooms:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._left, 1.0)
        await self._teardown()

    async def _teardown(self) -> None:
        extra = [self._recovering] if self._recovering else []
        tasks = [
            t
            for t in self._tasks + extra + list(self._background)
            if t is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        # Each must get to run its cleanup (a handshake watch holds a socket open),
        # or the context below would wait for ever.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        await self._stop_sockets()
        if self._own_context:
            self._context.term()
        # Only now: close() may still be waiting for our own leave, an event too.
        self._finished = True
        self._event_ready.set()

    @property
    def connected(self) -> bool:
        """Registered and hearing from the broker."""
        return self._registered.is_set() and not self._silent

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out what the room tracker decided."""
        for effect in effects:
            if isinstance(effect, Fetch):
                self._spawn(self._repair(effect), "zchat-repair")
            elif isinstance(effect, Confirmed):
                self._unconfirmed.pop(effect.id, None)
            elif isinstance(effect, SelfLeft):
                if not self._closed and effect.room not in self._wanted_rooms:
                    self._forget_room(effect.room)
                if self._left is not None and not self._left.done():
                    self._left.set_result(None)
            else:
                self._emit(effect)

    # ------------------------------------------------------------ commands

    async def say(self, text: str, room: str | None = None, *, action: bool = False) -> str:
        """Say ``text`` in ``room`` (default: the first room); returns the message id.

        The message counts as delivered when it comes back on the SUB; until
        then it is kept and resent after a reconnection.
        """
        say = Say(self._default_room(room), text, action, next(self._ids))
        assert say.id is not None
        self._unconfirmed[say.id] = say
        while len(self._unconfirmed) > MAX_UNCONFIRMED:
            self._unconfirmed.popitem(last=False)
        self._send(say)
        return say.id

    async def dm(self, nick: str, text: str, *, action: bool = False) -> DirectMessage:
        """Send a direct message; returns the broker's confirmation."""
        return await self.request(Dm(nick, text, action), DirectMessage)

    async def join(self, room: str) -> RoomState:
        """Join a room (no-op if already in it); its backlog arrives as events."""
        name = check_room(room)
        current = self.rooms.get(name)
        if current is not None and current.held is None and name in self._wanted_rooms:
            return current
        if name not in self._wanted_rooms:
            self._wanted_rooms.append(name)
        assert self._sub is not None
        state = self.rooms.get(name) or self._tracker.hold(name)
        self._sub.setsockopt(zmq.SUBSCRIBE, room_topic(name))
        # The subscription must reach the broker before our join is published.
        await self._sync(asyncio.get_running_loop().time() + self.connect_timeout)
        try:
            info = await self.request(Join(name), RoomInfo)
        except BaseException:
            self._forget_room(name)
            raise
        if info.room != name:
            # The broker's canonical name is the one it publishes on: take it, not ours.
            self._forget_room(name)
            state = self._take_room(info.room)
            # What was published there before this subscription arrives comes as backlog.
            await self._sync(asyncio.get_running_loop().time() + self.connect_timeout)
        await self._adopt_room(info, first=True)
        return state

    async def leave(self, room: str | None = None, reason: str | None = None) -> None:
        name = self._default_room(room)
        if name in self._wanted_rooms:
            self._wanted_rooms.remove(name)
        self._send(Leave(name, reason or None))

    async def who(self, room: str | None = None) -> RoomInfo:
        """The room's ``who`` reply: ``users``, ``count``, ``topic``, ``seq``."""
        return await self.request(Who(self._default_room(room)), RoomInfo)

    async def set_topic(self, text: str, room: str | None = None) -> None:
        self._send(Topic(self._default_room(room), text))

    async def change_nick(self, nick: str) -> None:
        reply = await self.request(Nick(check_nick(nick)), NickChanged)
        self.nick = reply.new

    async def stats(self) -> StatsReply:
        return await self.request(Stats(), StatsReply)

    async def list_rooms(self) -> RoomList:
        """The occupied rooms, busiest first (at most the broker's limit; ``total`` says
        how many in all)."""
        return await self.request(List(), RoomList)

    async def history(
        self, room: str, *, after: int = 0, before: int | None = None, limit: int = 100
    ) -> HistoryReply:
        return await self.request(History(room, after, before, limit), HistoryReply)

    def _default_room(self, room: str | None) -> str:
        if room is not None:
            return check_room(room)
        if not self._wanted_rooms:
            raise ZchatError("not in any room: join one first")
        return self._wanted_rooms[0]

    # ------------------------------------------------------------ registration

    async def _register(self, deadline: float) -> None:
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        self._registered.clear()
        self._welcomed = False
        for name in self._wanted_rooms:
            self._sub.setsockopt(zmq.SUBSCRIBE, room_topic(name))
            self._tracker.hold(name)
        await self._sync(deadline)
        hello = Hello(self.nick, tuple(self._wanted_rooms), self._session)
        try:
            welcome = await self.request(hello, Welcome, max(deadline - loop.time(), 0.1))
        except TimeoutError:
            raise ConnectTimeout(self.router, self.pub, self.connect_timeout) from None
        except BrokerError as exc:
            raise RegistrationError(exc.code, exc.reason, exc.data) from None
        new_epoch = welcome.epoch != self.epoch
        self.epoch = welcome.epoch
        self.nick = welcome.nick
        self._session = welcome.session
        self._welcomed = True
        if welcome.heartbeat > 0:
            self.heartbeat = welcome.heartbeat
        self._last_heard = time.monotonic()
        self._silent = False
        infos = {info.room: info for info in welcome.rooms}
        for name in list(self.rooms):
            if name not in infos:
                self._forget_room(name)
        taken = [self._take_room(name) for name in infos if name not in self._wanted_rooms]
        if taken:
            await self._sync(loop.time() + self.connect_timeout)
        if new_epoch:
            self._tracker.restart()  # seq started over with the broker
        for info in infos.values():
            await self._adopt_room(info, first=new_epoch)
        self._registered.set()
        for say in list(self._unconfirmed.values()):
            self._send(say)

    async def _adopt_room(self, info: RoomInfo, *, first: bool) -> None:
        """Take a room's welcome/who info, fetch what came before, release held events."""
        fetch = self._tracker.adopt(info, first=first, backlog=self.backlog)
        if fetch is not None:
            await self._fetch(fetch)
        self._apply(self._tracker.settle(info.room, info.seq - 1))

    async def _fetch(self, fetch: Fetch) -> None:
        try:
            reply = await self.history(
                fetch.room, after=fetch.after, before=fetch.before, limit=max(fetch.limit, 1)
            )
        except (TimeoutError, ZchatError) as exc:
            unknown = isinstance(exc, BrokerError) and exc.code == ErrorCode.NOT_REGISTERED
            restarting = unknown or isinstance(exc, NotConnected)
            if not fetch.history and (restarting or (fetch.repair and self._recovering_now)):
                # The broker restarted, or is restarting: registering again fetches
                # this range from where we are, so nothing counts as missed yet.
                self._start_recovery("the broker does not know us (restarted?)")
                raise Unregistered(ErrorCode.NOT_REGISTERED, str(exc)) from None
            log.info("history of %s unavailable: %s", fetch.room, exc)
            self._apply(self._tracker.unavailable(fetch))
            return
        self._apply(self._tracker.fetched(fetch, reply))

    async def _repair(self, fetch: Fetch) -> None:
        try:
            async with asyncio.timeout(REPAIR_TIMEOUT):
                await self._fetch(fetch)
        except Unregistered:
            return  # keep holding: the registration under way repairs and releases
        except TimeoutError:
            self._apply(self._tracker.unavailable(fetch))
        self._apply(self._tracker.repaired(fetch))

    def _take_room(self, name: str) -> RoomState:
        """A room the broker named (canonical) that we did not: subscribe and hold it."""
        assert self._sub is not None
        self._wanted_rooms.append(name)
        self._sub.setsockopt(zmq.SUBSCRIBE, room_topic(name))
        return self._tracker.hold(name)

    def _forget_room(self, name: str) -> None:
        self._tracker.forget(name)
        if name in self._wanted_rooms:
            self._wanted_rooms.remove(name)
        if self._sub is not None:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, room_topic(name))

    # ------------------------------------------------------------ replies

    def _on_reply(self, reply: Reply) -> None:
        if isinstance(reply, Ack):
            self._unconfirmed.pop(reply.re, None)
        elif isinstance(reply, ErrorReply):
            if reply.code == ErrorCode.NOT_REGISTERED:
                self._start_recovery("the broker does not know us (restarted?)")
                return
            if reply.code == ErrorCode.REPLACED:
                # Our nick was registered again with our key from elsewhere: coming
                # back would take it away again, and the two would take turns for ever.
                self._registered.clear()
                self._emit(reply)
                self._closing = asyncio.create_task(self.close(), name="zchat-replaced")
                return
            if reply.re is not None:
                self._unconfirmed.pop(reply.re, None)
            self._emit(reply)
        elif isinstance(reply, DirectMessage):
            self._emit(reply)

    def _on_disconnected(self) -> None:
        self._start_recovery("the broker closed the connection")

    def _on_room_event(self, event: RoomEvent) -> None:
        self._apply(self._tracker.live(event))

    # ------------------------------------------------------------ liveness

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            # From the welcome on, even while backlog or a gap repair is still
            # loading: a slow fetch must not get the new session dropped as silent.
            if self._welcomed:
                self._send(Ping())
            silence = time.monotonic() - self._last_heard
            if not self._silent and silence > 3 * self.heartbeat:
                self._silent = True
                text = f"no word from the broker for {silence:.0f}s; still trying"
                self._emit(Status("silent", text))
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
        self._emit(Status("reconnecting", f"{why}; registering again"))
        loop = asyncio.get_running_loop()
        wait = 0.5
        told: str | None = None
        while not self._closed:
            # Start afresh, as the guide's Lazy Pirate does: whatever the old sockets
            # hold (a backlog for a session that is gone, a stalled pipe) goes with them.
            await self._stop_sockets()
            # Given several brokers (a cluster), try the next: this one went away.
            self._next_broker()
            dealer = self._new_dealer()
            # A broker back with other security refuses each handshake: say why, once.
            watch = HandshakeWatch(dealer)
            self._start_sockets(dealer)
            try:
                await self._register(loop.time() + max(self.connect_timeout, 3 * self.heartbeat))
            except RegistrationError as exc:
                self._emit(Status("refused", f"registration refused: {exc}"))
            except (ConnectTimeout, TimeoutError, ZchatError) as exc:
                log.info("re-registration failed: %s", exc)
                hint = watch.diagnose(curve=self._curve is not None)
                if hint is not None and hint != told:
                    told = hint
                    self._emit(Status("reconnecting", f"still reconnecting: {hint}"))
            else:
                self._watch_disconnects()
                self._emit(Status("registered", f"registered again as {self.nick}"))
                return
            finally:
                watch.close()
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)
