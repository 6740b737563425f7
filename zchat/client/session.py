"""The client's side of its session with a broker: registering, and staying registered.

:class:`Session` is a :class:`~zchat.client.link.Link` that registers (a ``sync``
round trip first, so the SUB is live before its own ``join``), heartbeats, and
registers again by itself, on fresh sockets and on the next broker of its list,
when the broker restarts, closes the connection or goes silent. It feeds the
:class:`~zchat.client.rooms.RoomTracker` and carries out what it decides: gap
repair from the broker's history, events for the application, and the resend of
messages an outage may have swallowed. The chat API on top is
:class:`zchat.client.client.Client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

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
from zchat.protocol.commands import Bye, Hello, History, Ping, Say
from zchat.protocol.events import (
    Ack,
    DirectMessage,
    ErrorReply,
    HistoryReply,
    Reply,
    RoomEvent,
    RoomInfo,
    Welcome,
)
from zchat.protocol.names import ErrorCode
from zchat.protocol.wire import room_topic

log = logging.getLogger("zchat.client")

#: How long a gap repair may take before the gap is reported as missed.
REPAIR_TIMEOUT = 5.0


class Session(Link):
    """Registration, heartbeats, recovery and gap repair; ``nick`` and ``rooms`` are
    already checked (:class:`~zchat.client.client.Client` checks them)."""

    def __init__(
        self,
        nick: str,
        *,
        router: str,
        pub: str,
        rooms: list[str],
        connect_timeout: float,
        backlog: int,
        curve: CurveKeys | None,
        context: zmq.asyncio.Context | None,
    ) -> None:
        super().__init__(
            router=router, pub=pub, connect_timeout=connect_timeout, curve=curve, context=context
        )
        self._tracker = RoomTracker(nick)
        self.backlog = backlog
        #: The broker says its pace in ``welcome``; this is only the value before it.
        self.heartbeat = 5.0
        self.epoch: str | None = None
        #: The rooms we are in, as the tracker keeps them (roster, topic, seq).
        self.rooms: dict[str, RoomState] = self._tracker.rooms
        self._wanted_rooms = list(dict.fromkeys(rooms))
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

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Register with the first broker of the list that answers; raises
        ``ConnectTimeout`` (none did) or ``RegistrationError`` (one refused)."""
        timeouts: list[ConnectTimeout] = []
        for attempt in range(len(self.brokers)):
            if attempt:
                # As a later failover does: this one did not answer in time, try the next.
                await self._stop_sockets()
                self._next_broker()
            dealer = self._new_dealer()
            # Handshake events turn a bare timeout into "wrong key", "needs CURVE", ...
            watch = HandshakeWatch(dealer)
            try:
                self._start_sockets(dealer)
                await self._register(self._attempt_deadline())
            except ConnectTimeout:
                hint = watch.diagnose(curve=self._curve is not None)
                timeouts.append(ConnectTimeout(self.router, self.pub, self.connect_timeout, hint))
                continue
            except BaseException:
                watch.close()  # before the teardown: its socket would keep the context open
                await self._teardown()
                raise
            finally:
                watch.close()
            self._watch_disconnects()
            self._spawn(self._heartbeat(), "zchat-heartbeat", keep=True)
            self._emit(Status("connected", f"connected as {self.nick}"))
            return
        await self._teardown()
        # A broker that said why (a wrong key, no CURVE) tells the most; else name them all.
        hinted = [exc for exc in timeouts if exc.hint]
        if hinted:
            raise hinted[0]
        routers = ",".join(router for router, _ in self.brokers)
        pubs = ",".join(pub for _, pub in self.brokers)
        raise ConnectTimeout(routers, pubs, self.connect_timeout)

    def _attempt_deadline(self) -> float:
        """When one registration attempt gives up and the next broker gets its turn, on
        the first connection as on a later failover: three of the broker's heartbeats,
        never less than ``connect_timeout``. Before a first welcome the broker's pace
        is unknown, so the first connection waits ``connect_timeout`` per broker."""
        bound = self.connect_timeout
        if self.epoch is not None:
            bound = max(bound, 3 * self.heartbeat)
        return asyncio.get_running_loop().time() + bound

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
            history = History(fetch.room, fetch.after, fetch.before, max(fetch.limit, 1))
            reply = await self.request(history, HistoryReply)
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
                await self._register(self._attempt_deadline())
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
