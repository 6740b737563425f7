"""A broker as one node of a cluster: the :class:`~zchat.broker.shared.Shared` seam
the core calls, backed by the Redis :class:`~zchat.broker.cluster.engine.Engine`,
and the side channel the socket adapter polls (deliveries from Redis, leases,
the clean-up after dead nodes).

Redis is called from the broker's one thread, one pipelined round trip per call,
with a short socket timeout. After a failure the node answers ``unavailable`` at
once, without touching Redis, until a lease renewal in ``tick`` gets through
(docs/cluster.md says why, and what that costs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from zchat.broker.cluster import keys
from zchat.broker.cluster.engine import (
    Append,
    DirectDelivery,
    Engine,
    RoomDelivery,
    Unavailable,
    member_value,
)
from zchat.broker.state import MAX_ROSTER, Output, Publish, Reply, Room
from zchat.broker.store import MemoryStore
from zchat.errors import ProtocolError
from zchat.protocol.events import (
    DirectMessage,
    HistoryReply,
    Joined,
    Left,
    Message,
    NickChanged,
    RoomEvent,
    RoomInfo,
    TopicSet,
)
from zchat.protocol.names import ErrorCode, LeaveReason, fold
from zchat.protocol.wire import pack, pack_with_raw_array, room_topic, unpack

if TYPE_CHECKING:
    from zchat.broker.core import BrokerCore

log = logging.getLogger("zchat.broker.cluster")

T = TypeVar("T")
P = ParamSpec("P")

#: After Redis failed, how long the node refuses at once before trying again.
RETRY_AFTER = 1.0


class ClusterStore(MemoryStore):
    """The core's store on a cluster node: CURVE nick owners live in Redis; room
    history is the engine's (the core never appends here on a cluster node)."""

    def __init__(self, node: ClusterNode, history: int) -> None:
        super().__init__(history, epoch=node.engine.epoch)
        self._node = node

    def owner(self, nick_key: str) -> str | None:
        return self._node.call(self._node.engine.owner, nick_key)

    def set_owner(self, nick_key: str, key: str) -> None:
        self._node.call(self._node.engine.set_owner, nick_key, key)


class ClusterNode:
    """One broker's part in a cluster. Call :meth:`bind` with the core it serves."""

    def __init__(
        self, engine: Engine, *, history: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.node = engine.node
        self._clock = clock
        engine.start()
        self.store = ClusterStore(self, history)
        self._core: BrokerCore | None = None
        #: Rooms this node is subscribed to in Redis: those with members here.
        self.subscribed: set[str] = set()
        #: The last seq republished per room: later deliveries are checked against it.
        self.last: dict[str, int] = {}
        #: Leaves and nick changes Redis did not take, sent in order when it is back.
        self.pending: list[Append] = []
        self.pending_releases: list[tuple[str, str]] = []
        self.down_until = 0.0
        #: Redis failed since the last successful lease renewal.
        self.failed = False
        lease = engine.lease_ms / 1000
        self._renew_every = lease / 3
        self._reap_every = lease / 2
        self._next_renew = self._next_reap = clock()
        # A node restarted under the same id: what its last run left is cleaned up now.
        self._reap(self.node)

    def bind(self, core: BrokerCore) -> None:
        self._core = core

    @property
    def core(self) -> BrokerCore:
        assert self._core is not None, "ClusterNode.bind was not called"
        return self._core

    # ------------------------------------------------------------ Redis calls

    @property
    def up(self) -> bool:
        return self._clock() >= self.down_until

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(...)``, or ``ProtocolError(unavailable)`` if Redis is (or just went) down."""
        if not self.up:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")
        try:
            return fn(*args, **kwargs)
        except Unavailable as exc:
            self._went_down(exc)
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "the cluster's store is unavailable"
            ) from None

    def _went_down(self, exc: Exception) -> None:
        if not self.failed:
            log.warning("Redis unavailable: %s", exc)
        self.failed = True
        self.down_until = self._clock() + RETRY_AFTER

    # ------------------------------------------------------------ Shared (the core calls)

    def publish(self, room: Room, event: RoomEvent, out: list[Output]) -> tuple[int, bool]:
        append = self._append_for(room, event)
        if append.op == "join" and room.name not in self.subscribed:
            # Subscribed before the first member here is confirmed: nothing is missed.
            self.call(self.engine.subscribe, [room.name])
            self.subscribed.add(room.name)
        if append.op == "join":
            self._record(append.member, [*self._rooms_of(append.member), room.name])
        try:
            (result,) = self.call(self.engine.append, [append])
        except ProtocolError:
            if append.op not in ("leave", "nick"):
                raise
            # A session that ends, or a rename already made, is not refused: its
            # event goes out when Redis is back.
            self.pending.append(append)
            result = None
        if append.op == "leave":
            if append.member in self.core.registry.by_nick:
                self._record(append.member, self._rooms_of(append.member))
            if not room.members and room.name in self.subscribed:
                self._unsubscribe(room.name)
        if result is None or result.status in ("moved", "skip"):
            return room.seq, False
        room.seq = max(room.seq, result.seq)
        return result.seq, result.status == "dup"

    def _append_for(self, room: Room, event: RoomEvent) -> Append:
        head = keys.envelope_head(event.to_wire())
        match event:
            case Message():
                return Append(room.name, head, "say", member=fold(event.nick), say_id=event.id)
            case Joined():
                value = member_value(self.node, event.nick)
                return Append(room.name, head, "join", member=fold(event.nick), value=value)
            case Left():
                member = fold(event.nick)
                return Append(room.name, head, "leave", member=member, only_node=self.node)
            case TopicSet():
                return Append(room.name, head, "topic", value=event.text)
            case NickChanged():
                value = member_value(self.node, event.new)
                return Append(
                    room.name,
                    head,
                    "nick",
                    member=fold(event.old),
                    value=value,
                    new_member=fold(event.new),
                )
        raise AssertionError(f"not a room event: {event!r}")

    def _rooms_of(self, nick_key: str) -> list[str]:
        session = self.core.registry.by_nick.get(nick_key)
        return list(session.rooms) if session is not None else []

    def _record(self, nick_key: str, rooms: Sequence[str]) -> None:
        session = self.core.registry.by_nick.get(nick_key)
        if session is None:
            return
        try:
            self.engine.record_session(nick_key, session.nick, session.resume, rooms)
        except Unavailable as exc:
            self._went_down(exc)

    def _unsubscribe(self, room: str) -> None:
        self.subscribed.discard(room)
        self.last.pop(room, None)
        try:
            self.engine.unsubscribe([room])
        except Unavailable as exc:
            self._went_down(exc)

    def info(self, room: Room, ref: str | None) -> RoomInfo:
        state = self.call(self.engine.room, room.name)
        users = state.nicks[:MAX_ROSTER]
        return RoomInfo(room.name, state.seq, state.topic, users, len(state.nicks), ref)

    def history(
        self, room: Room, after: int, before: int | None, limit: int, ref: str | None
    ) -> bytes:
        page = self.call(self.engine.fetch, room.name, after, before, limit)
        end = before if before is not None else page.top + 1
        wanted = max(0, min(end, page.top + 1) - after - 1)
        missing = max(0, wanted - len(page.envelopes))
        header = HistoryReply(room.name, after, end, self.engine.epoch, missing, re=ref).header()
        return pack_with_raw_array(header, "events", page.envelopes)

    def claim(
        self,
        nick_key: str,
        nick: str,
        resume: str,
        given: str | None,
        key: str | None,
        rooms: Iterable[str],
    ) -> None:
        claim = self.call(
            self.engine.claim_nick, nick_key, nick, resume, given=given or "", key=key or ""
        )
        if not claim.ok:
            holder = claim.node
            # Held by this node with no session here (a release Redis missed), or by
            # a node whose lease ran out: clean up after it, then take the nick.
            stale = holder == self.node and nick_key not in self.core.registry.by_nick
            if not stale and holder in self.call(self.engine.dead_nodes):
                self._reap(holder)
                stale = True
            if stale:
                claim = self.call(
                    self.engine.claim_nick,
                    nick_key,
                    nick,
                    resume,
                    given=given or "",
                    key=key or "",
                    dead=holder,
                )
            if not claim.ok:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"{nick} is in use")
        elif claim.node not in ("", self.node):
            self._take_over(claim.node, nick_key)
        try:
            self.engine.record_session(nick_key, nick, resume, list(rooms))
        except Unavailable as exc:
            self._went_down(exc)

    def _take_over(self, old_node: str, nick_key: str) -> None:
        # The client came back here (its broker died, or it lost its way to it): its old
        # session leaves its rooms with reason replaced, as on a single broker, and
        # its joins here follow. Only if the old node still holds the member.
        taken = self.call(self.engine.take_session, old_node, nick_key)
        if taken is None:
            return
        old_nick, rooms = taken
        now = time.time()
        leaves = [
            Append(
                room,
                keys.envelope_head(
                    Left(room, old_nick, str(LeaveReason.REPLACED), now, 0).to_wire()
                ),
                "leave",
                member=nick_key,
                only_node=old_node,
            )
            for room in rooms
        ]
        self.call(self.engine.append, leaves)

    def release(self, nick_key: str, resume: str) -> None:
        try:
            if not self.up:
                raise Unavailable("down")
            self.engine.release_nick(nick_key, resume)
            self.engine.forget_session(nick_key)
        except Unavailable as exc:
            self._went_down(exc)
            self.pending_releases.append((nick_key, resume))

    def direct(self, nick_key: str, event: DirectMessage) -> bool:
        return self.call(self.engine.direct, nick_key, pack(event.to_wire())) is not None

    # ------------------------------------------------------------ side channel (the adapter)

    def fileno(self) -> int | None:
        """The Redis subscription's socket, for the adapter's poller (None: not open)."""
        if not self.up:
            return None
        try:
            return self.engine.fileno()
        except Unavailable as exc:
            self._went_down(exc)
            return None

    def ready(self) -> list[Output]:
        """Republish what Redis delivered: room events on the PUB, in seq order per room
        (a gap is filled from the shared history first), direct messages to their session."""
        if not self.up:
            return []
        try:
            deliveries = self.engine.deliveries()
        except Unavailable as exc:
            self._went_down(exc)
            return []
        out: list[Output] = []
        for delivery in deliveries:
            if isinstance(delivery, DirectDelivery):
                session = self.core.registry.by_nick.get(delivery.nick_key)
                if session is not None:
                    out.append(Reply(session.peer, delivery.envelope))
                continue
            self._republish(delivery, out)
        return out

    def _republish(self, delivery: RoomDelivery, out: list[Output]) -> None:
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
        if delivery.op == "topic":
            local = self.core.rooms.rooms.get(room)
            if local is not None:
                local.topic = _topic_of(delivery.envelope)
        local = self.core.rooms.rooms.get(room)
        if local is not None and delivery.seq > local.seq:
            local.seq = delivery.seq

    def tick(self, now: float) -> list[Output]:
        """Renew the lease, send what Redis missed, clean up after dead nodes."""
        clock = self._clock()
        out: list[Output] = []
        # While Redis is failing, probe it once per RETRY_AFTER, not at every tick:
        # a stalled Redis costs a socket timeout per probe.
        if (clock < self._next_renew and not self.failed) or (self.failed and not self.up):
            return out
        self._next_renew = clock + self._renew_every
        try:
            renewal = self.engine.renew()
        except Unavailable as exc:
            self._went_down(exc)
            return out
        if self.failed:
            log.info("Redis is back")
            self.failed = False
            self.down_until = 0.0
            # The other nodes' leases lapsed too while Redis was away: give them a
            # whole lease to renew before any of them counts as dead.
            self._next_reap = clock + self.engine.lease_ms / 1000
            self._resubscribe(out)
        if renewal.epoch_changed:
            # Redis lost its data: every session here registers again, as after a
            # broker restart; what was pending belongs to the lost epoch.
            self.pending.clear()
            self.pending_releases.clear()
        else:
            self._flush_pending()
        if renewal.epoch_changed or renewal.reaped:
            # Or another node cleaned up after this one (its lease had lapsed): its
            # sessions' nicks were freed, so they register again too.
            log.warning(
                "%s: dropping every session",
                "new epoch" if renewal.epoch_changed else "another node cleaned up after us",
            )
            self.store.epoch = self.engine.epoch
            out.extend(self.core.shutdown(now))
            self.last.clear()
            return out
        if renewal.lapsed:
            log.warning("this node's lease had lapsed; renewed before anyone cleaned up")
        if clock >= self._next_reap:
            self._next_reap = clock + self._reap_every
            try:
                for dead in self.engine.dead_nodes():
                    self._reap(dead)
            except Unavailable as exc:
                self._went_down(exc)
        return out

    def _resubscribe(self, out: list[Output]) -> None:
        # The subscription connection may have been lost: subscribe again and fill
        # what was published meanwhile from the shared history.
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

    def _flush_pending(self) -> None:
        try:
            while self.pending:
                self.engine.append(self.pending[:100])
                del self.pending[:100]
            while self.pending_releases:
                nick_key, resume = self.pending_releases[0]
                self.engine.release_nick(nick_key, resume)
                self.engine.forget_session(nick_key)
                self.pending_releases.pop(0)
        except Unavailable as exc:
            self._went_down(exc)

    def _reap(self, dead: str) -> None:
        now = time.time()

        def make_leave(room: str, nick: str) -> bytes:
            return keys.envelope_head(Left(room, nick, str(LeaveReason.TIMEOUT), now, 0).to_wire())

        done = self.call(self.engine.reap, dead, make_leave)
        if done:
            log.info("node %s is gone: %d leaves published for it", dead, len(done))

    def close(self) -> None:
        """After the core's farewells: leave the cluster cleanly (nothing to reap)."""
        self._flush_pending()
        try:
            self.engine.leave_cluster()
        except Unavailable as exc:
            log.warning("could not leave the cluster cleanly: %s", exc)
        self.engine.close()


def _topic_of(envelope: bytes) -> str:
    try:
        text = unpack(envelope).get("text")
    except ProtocolError:
        return ""
    return text if isinstance(text, str) else ""
