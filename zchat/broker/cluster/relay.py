"""What Redis delivers to a cluster node, passed on: room events republished on the
broker's PUB, once each and in seq order per room; direct messages sent to their
session. Runs on the broker's loop, which polls the subscription's socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from zchat.broker.cluster.engine import DirectDelivery, Engine, RoomDelivery, Unavailable
from zchat.broker.state import Output, Publish, Reply
from zchat.errors import ProtocolError
from zchat.protocol.wire import room_topic, unpack

if TYPE_CHECKING:
    from zchat.broker.core import BrokerCore

log = logging.getLogger("zchat.broker.cluster")

#: Deliveries read per wake-up before the ROUTER gets a turn.
READ_BATCH = 1000


class Relay:
    def __init__(self, engine: Engine, went_down: Callable[[Exception], None]) -> None:
        self.engine = engine
        self._went_down = went_down
        #: Rooms this node is subscribed to in Redis: those with members here.
        self.subscribed: set[str] = set()
        #: The last seq republished per room: later deliveries are checked against it.
        self.last: dict[str, int] = {}
        #: The last read stopped at READ_BATCH: more may wait in redis-py's buffer,
        #: where polling the socket would not see them.
        self.more = False

    def subscribe(self, room: str) -> None:
        """Subscribed once Redis confirmed it: nothing published after is missed."""
        if room not in self.subscribed:
            self.engine.subscribe([room])
            self.subscribed.add(room)

    def unsubscribe(self, room: str) -> None:
        self.subscribed.discard(room)
        self.last.pop(room, None)
        try:
            self.engine.unsubscribe([room])
        except Unavailable as exc:
            self._went_down(exc)

    def fileno(self) -> int | None:
        try:
            return self.engine.fileno()
        except Unavailable as exc:
            self._went_down(exc)
            return None

    def read(self, core: BrokerCore) -> list[Output]:
        """Republish what Redis delivered: room events on the PUB, in seq order per room
        (a gap is filled from the shared history first), direct messages to their session."""
        try:
            deliveries = self.engine.deliveries(READ_BATCH)
        except Unavailable as exc:
            self._went_down(exc)
            return []
        self.more = len(deliveries) >= READ_BATCH
        out: list[Output] = []
        for delivery in deliveries:
            if isinstance(delivery, DirectDelivery):
                session = core.registry.by_nick.get(delivery.nick_key)
                if session is not None:
                    out.append(Reply(session.peer, delivery.envelope))
                continue
            self._republish(core, delivery, out)
        return out

    def _republish(self, core: BrokerCore, delivery: RoomDelivery, out: list[Output]) -> None:
        room = delivery.room
        if room not in self.subscribed:
            return
        last = self.last.get(room)
        if last is not None and delivery.seq <= last:
            return
        topic = room_topic(room)
        if last is not None and delivery.seq > last + 1:
            try:
                page = self.engine.fetch(room, last, delivery.seq, delivery.seq - last - 1)
            except Unavailable as exc:
                self._went_down(exc)
            else:
                out.extend(Publish(topic + envelope) for envelope in page.envelopes)
        out.append(Publish(topic + delivery.envelope))
        self.last[room] = delivery.seq
        local = core.rooms.rooms.get(room)
        if local is None:
            return
        if delivery.op == "topic":
            local.topic = _topic_of(delivery.envelope)
        if delivery.seq > local.seq:
            local.seq = delivery.seq

    def resubscribe(self, out: list[Output]) -> None:
        """A fresh subscription connection (after Redis was away), and what was
        published meanwhile, from the shared history."""
        rooms = sorted(self.subscribed)
        try:
            self.engine.resubscribe(rooms)
        except Unavailable as exc:
            self._went_down(exc)
            return
        for room in rooms:
            last = self.last.get(room)
            if last is None:
                continue
            try:
                page = self.engine.fetch(room, last, None, self.engine.history)
            except Unavailable as exc:
                self._went_down(exc)
                return
            topic = room_topic(room)
            out.extend(Publish(topic + envelope) for envelope in page.envelopes)
            self.last[room] = max(last, page.top)


def _topic_of(envelope: bytes) -> str:
    try:
        text = unpack(envelope).get("text")
    except ProtocolError:
        return ""
    return text if isinstance(text, str) else ""
