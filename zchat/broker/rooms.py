"""The broker's rooms: who is in each, its seq and topic, and publishing into it.

Pure: no zmq, no clock. Every event published to a room goes through
:meth:`Rooms.publish`, the one place that bumps ``seq``, so each room's seq
goes up by exactly one per event and the store sees every one.
"""

from __future__ import annotations

from collections import OrderedDict

from zchat.broker.shared import Shared
from zchat.broker.state import Counters, Output, Publish, Room, Session
from zchat.broker.store import Store
from zchat.errors import ProtocolError
from zchat.protocol.events import HistoryReply, Joined, Left, RoomEvent, RoomInfo
from zchat.protocol.names import ErrorCode, LeaveReason
from zchat.protocol.wire import pack, pack_with_raw_array


class Rooms:
    def __init__(
        self, store: Store, counters: Counters, max_idle: int, shared: Shared | None = None
    ) -> None:
        self.store = store
        #: Other brokers of a cluster, or None: then seq, roster and history are ours alone.
        self.shared = shared
        self.counters = counters
        self.max_idle = max_idle
        self.rooms: dict[str, Room] = {}
        #: Empty rooms still in memory, oldest first: evicted past ``max_idle``.
        self.idle: OrderedDict[str, None] = OrderedDict()

    def get(self, name: str) -> Room:
        """The room, loaded from the store (or new) if not in memory; no longer idle."""
        room = self.rooms.get(name)
        if room is None:
            room = self.peek(name)
            self.rooms[name] = room
        self.idle.pop(name, None)
        return room

    def peek(self, name: str) -> Room:
        """The room as it stands, without keeping it in memory (``who`` of an empty room)."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        # Not in memory (empty, or evicted): a durable store may still know it.
        state = self.store.room_state(name)
        return Room(name, *state) if state else Room(name)

    @staticmethod
    def member_room(session: Session, name: str) -> Room:
        room = session.rooms.get(name)
        if room is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"not in room {name}", room=name)
        return room

    def publish(self, room: Room, event: RoomEvent, out: list[Output]) -> tuple[int, bool]:
        """Publish ``event`` (built with ``seq`` = room.seq + 1) and store it.

        Returns (seq, dup): in a cluster, a say id already published (through any
        node) is not published again, and dup is True with the seq it had.
        """
        if self.shared is not None:
            return self.shared.publish(room, event, out)
        assert event.seq == room.seq + 1
        self.publish_packed(room, pack(event.to_wire()), out)
        return room.seq, False

    def publish_packed(self, room: Room, data: bytes, out: list[Output]) -> None:
        """Publish an event already packed with ``seq`` = room.seq + 1 (single broker)."""
        room.seq += 1
        self.store.append(room.name, room.seq, data)
        self.counters.published += 1
        out.append(Publish(room.wire_topic + data))

    def info(self, room: Room, ref: str | None = None) -> RoomInfo:
        """The ``who`` reply: in a cluster, with the members on every node."""
        if self.shared is not None:
            return self.shared.info(room, ref)
        return room.info(ref)

    def enter(self, session: Session, name: str, now: float, out: list[Output]) -> Room:
        room = self.get(name)
        # Published first: in a cluster it can be refused, and then nothing changed.
        try:
            self.publish(room, Joined(name, session.nick, now, room.seq + 1), out)
        except ProtocolError:
            if not room.members:
                self.idle[name] = None
            raise
        room.members[session.peer] = session
        session.rooms[name] = room
        return room

    def exit(
        self,
        session: Session,
        room: Room,
        reason: LeaveReason,
        message: str | None,
        now: float,
        out: list[Output],
    ) -> None:
        del room.members[session.peer]
        del session.rooms[room.name]
        left = Left(room.name, session.nick, str(reason), now, room.seq + 1, message or None)
        self.publish(room, left, out)
        if not room.members:
            self.idle[room.name] = None
            while len(self.idle) > self.max_idle:
                evicted, _ = self.idle.popitem(last=False)
                del self.rooms[evicted]
                self.store.forget(evicted)

    def history(
        self, room: Room, after: int, before: int | None, limit: int, epoch: str, ref: str | None
    ) -> bytes:
        """The packed ``history`` reply: stored envelopes go out as stored, not re-encoded."""
        if self.shared is not None:
            return self.shared.history(room, after, before, limit, ref)
        end = before if before is not None else room.seq + 1
        events = self.store.fetch(room.name, after, end, limit)
        wanted = max(0, min(end, room.seq + 1) - after - 1)
        missing = max(0, wanted - len(events))
        header = HistoryReply(room.name, after, end, epoch, missing, re=ref).header()
        return pack_with_raw_array(header, "events", events)
