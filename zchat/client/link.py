"""One connection to a broker: a DEALER to its ROUTER and a SUB to its PUB.

The part of the client that moves envelopes: sockets (fresh ones on every
registration), typed requests matched to replies by id, the ``sync`` round
trip that proves the SUB live, the readers, liveness (``_heard``) and the
queue of events for the application. Registration and recovery live in
``zchat.client.session``, the chat API in ``zchat.client.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from zchat.client.events import ClientEvent, Status
from zchat.curve import CurveKeys, apply_client
from zchat.errors import (
    BrokerError,
    ClosedError,
    ConnectTimeout,
    NotConnected,
    ProtocolError,
    UsageError,
)
from zchat.protocol.commands import Command, Sync, to_wire
from zchat.protocol.decode import decode_event
from zchat.protocol.events import ErrorReply, Event, Reply, RoomEvent, SyncSeen
from zchat.protocol.names import MAX_REPLY_ARRAY, MAX_REPLY_FRAME, ErrorCode
from zchat.protocol.wire import pack, split_pub_frame, sync_topic, unpack

log = logging.getLogger("zchat.client")

#: Received events waiting for the application; the oldest go first when full.
MAX_QUEUED_EVENTS = 10_000

_R = TypeVar("_R", bound=Event)


class Link:
    """Sockets, requests and the event queue; :class:`zchat.client.session.Session` is a Link."""

    def __init__(
        self,
        *,
        router: str,
        pub: str,
        connect_timeout: float,
        curve: CurveKeys | None,
        context: zmq.asyncio.Context | None,
    ) -> None:
        #: Several brokers of one cluster: comma-separated, router and pub in the same
        #: order. The first is tried first; a first registration that gets no answer,
        #: and every re-registration, moves to the next.
        self.brokers = _pairs(router, pub)
        self.router, self.pub = self.brokers[0]
        self.connect_timeout = connect_timeout
        self._curve = curve
        self._own_context = context is None
        self._context = context or zmq.asyncio.Context()
        self._dealer: zmq.asyncio.Socket | None = None
        # Sends go through a plain shadow of the DEALER: with NOBLOCK it raises
        # Again at once, where the asyncio socket would hide it in a future.
        self._sender: zmq.Socket[bytes] | None = None
        self._sub: zmq.asyncio.Socket | None = None
        #: The DEALER's disconnect monitor, from registration until it fires or we stop.
        self._monitor: zmq.asyncio.Socket | None = None
        # Unique across restarts of this program too: the broker dedupes by (nick, id).
        prefix = secrets.token_hex(3)
        self._ids = (f"{prefix}-{n}" for n in itertools.count(1))
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._events: deque[ClientEvent] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._event_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._last_heard = 0.0
        self._silent = False
        self._closed = False
        self._finished = False
        #: Set by the first background task that failed: a bug, re-raised to the caller.
        self.failure: BaseException | None = None
        self.dropped_events = 0

    # ------------------------------------------------------------ hooks

    def _on_reply(self, reply: Reply) -> None:
        """A reply no request is waiting for (an ack, an error, a DM to us)."""
        raise NotImplementedError

    def _on_room_event(self, event: RoomEvent) -> None:
        """A room event from the PUB."""
        raise NotImplementedError

    def _on_disconnected(self) -> None:
        """The connection to the broker closed."""
        raise NotImplementedError

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        apply_client(sock, self._curve)
        return sock

    def _new_dealer(self) -> zmq.asyncio.Socket:
        dealer = self._socket(zmq.DEALER)
        # Nothing queues for a broker that is not there: a ping from before an
        # outage must not arrive after it, and unconfirmed messages are resent.
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        return dealer

    def _next_broker(self) -> None:
        """Move on to the next broker of the list (a cluster's other node), if any."""
        at = self.brokers.index((self.router, self.pub))
        self.router, self.pub = self.brokers[(at + 1) % len(self.brokers)]

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
        for task in self._readers:
            task.add_done_callback(self._task_done)

    def _watch_disconnects(self) -> None:
        """Once registered: a closed connection (a killed broker) is noticed at once,
        not after three silent heartbeats."""
        assert self._dealer is not None
        self._monitor = self._dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        task = asyncio.create_task(self._read_monitor(self._monitor), name="zchat-monitor")
        task.add_done_callback(self._task_done)
        self._readers.append(task)

    async def _read_monitor(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            await monitor.recv_multipart()
        finally:
            self._stop_monitor()
        self._on_disconnected()

    def _stop_monitor(self) -> None:
        # Disabled while its reading end is still open: libzmq then sends a stop
        # notice to that PAIR, and a notice to a closed PAIR blocks for ever (a bot
        # killed together with its broker hung in close()).
        if self._monitor is None:
            return
        if self._dealer is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._dealer.disable_monitor()
        self._monitor.close(0)
        self._monitor = None

    async def _stop_sockets(self) -> None:
        readers, self._readers = self._readers, []
        for task in readers:
            task.cancel()
        # gather, not a suppressed await per task: a cancellation of the caller itself
        # (close() during a recovery) must not be swallowed with the readers' own.
        await asyncio.gather(*readers, return_exceptions=True)
        # A reader cancelled before it first ran never reached its finally.
        self._stop_monitor()
        for sock in (self._dealer, self._sub):
            if sock is not None:
                sock.close(0)
        self._dealer = self._sub = None
        self._sender = None

    def _spawn(
        self, work: Coroutine[Any, Any, None], name: str, *, keep: bool = False
    ) -> asyncio.Task[None]:
        """Run ``work`` in the background; a failure is logged and kept, never swallowed."""
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        (self._tasks.append if keep else self._background.add)(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("background task %s failed: %r", task.get_name(), exc, exc_info=exc)
        if self.failure is None:
            self.failure = exc
        # The application learns of it from next_event, which re-raises it.
        self._event_ready.set()

    # ------------------------------------------------------------ events

    def events(self) -> AsyncIterator[ClientEvent]:
        """Every event, in order, until the client is closed."""
        return self._iter_events()

    async def _iter_events(self) -> AsyncIterator[ClientEvent]:
        while True:
            event = await self.next_event()
            if event is None:
                return
            yield event

    async def next_event(self, timeout: float | None = None) -> ClientEvent | None:
        """The next event; None once closed (or ``TimeoutError`` after ``timeout``).

        Re-raises the failure of a background task: a bug must not pass silently.
        """
        async with asyncio.timeout(timeout):
            while not self._events:
                if self.failure is not None:
                    raise self.failure
                if self._finished:
                    return None
                self._event_ready.clear()
                await self._event_ready.wait()
        return self._events.popleft()

    def _emit(self, event: ClientEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(event)
        self._event_ready.set()

    # ------------------------------------------------------------ requests

    async def request(self, command: Command, expect: type[_R], timeout: float | None = None) -> _R:
        """Send a command and wait for the reply carrying its id; errors raise ``BrokerError``."""
        if self._closed:
            raise ClosedError("the client is closed")
        ref = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            if not self._send(replace(command, id=ref)):
                raise NotConnected("not connected to the broker")
            reply = await asyncio.wait_for(future, timeout or self.connect_timeout)
        finally:
            self._pending.pop(ref, None)
        if isinstance(reply, ErrorReply):
            raise BrokerError(reply.code, reply.reason, reply.to_wire())
        if not isinstance(reply, expect):
            raise BrokerError(
                ErrorCode.BAD_ENVELOPE, f"expected a {expect.type} reply, got {reply.type}"
            )
        return reply

    def _send(self, command: Command) -> bool:
        if self._sender is None:
            return False
        try:
            self._sender.send(pack(to_wire(command)), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

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
                self._send(Sync(token, ref))
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

    # ------------------------------------------------------------ readers

    async def _read_dealer(self) -> None:
        assert self._dealer is not None
        while True:
            frame = await self._dealer.recv()
            self._heard()
            try:
                event = decode_event(unpack(frame, MAX_REPLY_FRAME, max_array=MAX_REPLY_ARRAY))
            except ProtocolError as exc:
                log.warning("bad envelope from broker: %s", exc)
                continue
            if not isinstance(event, Reply):
                continue  # a type this version does not know, or one that belongs on the PUB
            future = self._pending.get(event.re) if event.re is not None else None
            if future is not None and not future.done():
                future.set_result(event)
                continue
            self._on_reply(event)

    async def _read_sub(self) -> None:
        assert self._sub is not None
        while True:
            frame = await self._sub.recv()
            self._heard()
            try:
                _, body = split_pub_frame(frame)
                event = decode_event(unpack(body))
            except ProtocolError as exc:
                log.warning("bad PUB frame: %s", exc)
                continue
            if isinstance(event, SyncSeen):
                seen = self._syncs.get(event.re or "")
                if seen is not None and not seen.done():
                    seen.set_result(None)
            elif isinstance(event, RoomEvent):
                self._on_room_event(event)

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        if self._silent:
            self._silent = False
            self._emit(Status("connected", "the broker answers again"))


def _pairs(router: str, pub: str) -> list[tuple[str, str]]:
    routers = [r.strip() for r in router.split(",") if r.strip()]
    pubs = [p.strip() for p in pub.split(",") if p.strip()]
    if not routers or len(routers) != len(pubs):
        raise UsageError(
            f"give as many pub endpoints as router endpoints ({len(routers)} and {len(pubs)})"
        )
    return list(zip(routers, pubs, strict=True))
