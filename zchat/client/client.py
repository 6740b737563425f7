"""The client library: the chat API on a :class:`~zchat.client.session.Session` with
the broker.

Used by the line-mode CLI, the terminal UI and bots alike::

    async with Client("Robin", router="tcp://localhost:5555") as client:
        await client.say("hello")
        async for event in client.events():
            if event.type == "msg":
                print(event.nick, event.text)

Staying registered (heartbeats, registering again on fresh sockets or another
broker, gap repair, resending) is the session's part; here are the nick and room
checks, the commands, and the resend list each ``say`` joins until its message
comes back on the SUB.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import zmq
import zmq.asyncio

from zchat.client.rooms import RoomState
from zchat.client.session import Session
from zchat.curve import CurveKeys
from zchat.errors import ZchatError
from zchat.protocol.commands import (
    Dm,
    History,
    Join,
    Leave,
    List,
    Nick,
    Say,
    Stats,
    Topic,
    Who,
)
from zchat.protocol.events import (
    DirectMessage,
    HistoryReply,
    NickChanged,
    RoomInfo,
    RoomList,
    StatsReply,
)
from zchat.protocol.names import check_nick, check_room
from zchat.protocol.wire import room_topic

DEFAULT_ROUTER = "tcp://localhost:5555"
DEFAULT_PUB = "tcp://localhost:5556"

#: Unconfirmed messages kept for resending after an outage.
MAX_UNCONFIRMED = 1000


class Client(Session):
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
            check_nick(nick),
            router=router,
            pub=pub,
            rooms=[check_room(r) for r in rooms],
            connect_timeout=connect_timeout,
            backlog=backlog,
            curve=curve,
            context=context,
        )

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
