"""A broker as one node of a cluster: the :class:`~zchat.broker.shared.Shared` seam
the core calls, backed by Redis, and what the socket adapter polls beside the
ROUTER (the replies to its says and renewals, the subscription's deliveries).

Says go to Redis in one pipeline per drained batch, written without waiting
(``links.py``); their outcomes are read when Redis answers, on a later turn of
the loop. Lease renewals travel the same way. The rarer calls (join, who,
history, nick, dm...) are made from the loop, each bounded by the client's socket
timeout (``TIMEOUT``), once the says sent before them are answered (so no room
event overtakes a say). After a failure the node answers ``unavailable`` at once,
without touching Redis, until a renewal gets through (docs/cluster.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from zchat.broker.cluster import keys
from zchat.broker.cluster.engine import Append, Appended, Engine, Renewal, Unavailable, member_value
from zchat.broker.cluster.link import READ
from zchat.broker.cluster.links import Links, Renewed, SaysDone
from zchat.broker.cluster.relay import Relay
from zchat.broker.shared import Said
from zchat.broker.state import MAX_ROSTER, Output, Room, Session
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
from zchat.protocol.wire import pack, pack_with_raw_array

if TYPE_CHECKING:
    from zchat.broker.core import BrokerCore

log = logging.getLogger("zchat.broker.cluster")

T = TypeVar("T")
P = ParamSpec("P")

#: After Redis failed, how long the node refuses at once before trying again.
RETRY_AFTER = 1.0
#: Says handed to Redis and not yet answered before more are refused ``unavailable``.
MAX_WAITING = 10_000


def _refused(reason: str = "the cluster's store is unavailable") -> ProtocolError:
    return ProtocolError(ErrorCode.UNAVAILABLE, reason)


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
        self.relay = Relay(engine, self._went_down)
        self.links = Links(engine, clock=clock)
        #: Says sent to Redis and not answered yet.
        self.waiting = 0
        #: A renewal was sent and not answered yet.
        self._renewing = False
        #: Leaves and nick changes Redis did not take, sent in order when it is back.
        self.pending: list[Append] = []
        self.pending_releases: list[tuple[str, str]] = []
        #: Says of the batch being drained, sent to Redis together by :meth:`flush`.
        self.batch: list[tuple[Said, Append]] = []
        self.down_until = 0.0
        #: The subscription's socket, as last handed to the loop's poller.
        self._sub_fd: int | None = None
        #: Redis failed since the last successful lease renewal.
        self.failed = False
        lease = engine.lease_ms / 1000
        self._renew_every = lease / 3
        #: While Redis fails: at least once per RETRY_AFTER, and within the lease.
        self._probe_every = min(self._renew_every, RETRY_AFTER)
        self._reap_every = lease / 2
        self._next_reap = clock()
        #: When the loop last sent a renewal (never yet: its first tick sends one).
        self._renewed_at = -math.inf
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
            raise _refused()
        try:
            return fn(*args, **kwargs)
        except Unavailable as exc:
            self._went_down(exc)
            raise _refused() from None

    def _after_says(self) -> None:
        """Wait (bounded) until the says sent before are answered: a room event sent
        from the loop keeps its place after them."""
        if not self.links.wait_idle(self.engine.timeout):
            raise Unavailable("Redis is slow: say batches still waiting")

    def _append_now(self, batch: Sequence[Append]) -> list[Appended]:
        """Append from the loop, after the says sent before are answered: one order."""
        self._after_says()
        return self.engine.append(batch)

    def _went_down(self, exc: Exception) -> None:
        if not self.failed:
            log.warning("node %s: Redis unavailable: %s", self.node, exc)
        self.failed = True
        self.down_until = self._clock() + RETRY_AFTER

    # ------------------------------------------------------------ Shared (the core calls)

    def say(self, session: Session, room: Room, message: Message) -> None:
        if self.failed:
            # Until a renewal gets through: a say refused before (Redis failed or
            # refused it) is not overtaken by a later one.
            raise _refused()
        if self.waiting + len(self.batch) >= MAX_WAITING:
            raise _refused("too many messages waiting for the cluster's store")
        said = Said(session.peer, session.resume, room.name, message.id)
        # The session's nick is folded already: folding it again per say cost more than
        # everything else the loop does for one.
        head = keys.envelope_head(message.to_wire())
        append = Append(room.name, head, "say", member=session.nick_key, say_id=message.id)
        self.batch.append((said, append))

    def flush(self) -> list[Output]:
        """Send the says gathered since the last call to Redis, as one batch."""
        if self.batch:
            self.waiting += len(self.batch)
            self.links.says(self.batch)
            self.batch = []
        return []

    def publish(self, room: Room, event: RoomEvent, out: list[Output]) -> tuple[int, bool]:
        append = self._append_for(room, event)
        if append.op == "join":
            # Subscribed before the first member here is confirmed: nothing is missed.
            self.call(self.relay.subscribe, room.name)
            self._record(append.member, [*self._rooms_of(append.member), room.name])
        try:
            (result,) = self.call(self._append_now, [append])
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
            if not room.members and room.name in self.relay.subscribed:
                self.relay.unsubscribe(room.name)
        if result is None or result.status in ("moved", "skip"):
            return room.seq, False
        room.seq = max(room.seq, result.seq)
        return result.seq, result.status == "dup"

    def _append_for(self, room: Room, event: RoomEvent) -> Append:
        head = keys.envelope_head(event.to_wire())
        # A Message never comes here: says go through say(), in batches.
        match event:
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
        self.call(self._append_now, leaves)

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
        sent = self.call(self.engine.direct, nick_key, pack(event.to_wire()))
        if sent is not None and not sent.delivered:
            # The recipient's node died (or lost Redis) and nobody has cleaned up after
            # it yet: the message would be lost, so its sender is told.
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"{event.to}'s broker is gone; not delivered", to=event.to
            )
        return sent is not None

    # ------------------------------------------------------------ side channel (the adapter)

    def polls(self) -> tuple[tuple[int, int], ...]:
        """What the adapter polls, as (fd, events): the connections of says and
        renewals and, while Redis is up, the subscription's socket."""
        self._sub_fd = self.relay.fileno() if self.up else None
        links = tuple(self.links.polls())
        return links if self._sub_fd is None else (*links, (self._sub_fd, READ))

    @property
    def more(self) -> bool:
        """Deliveries wait, read already, that no descriptor shows: poll without sleeping."""
        return self.relay.more or self.engine.buffered

    def ready(self, events: Mapping[Any, int]) -> list[Output]:
        """The answers to says and renewals, then what Redis delivered (``events``:
        what the loop's poller reported, by fd)."""
        out: list[Output] = []
        for done in self.links.pump(events):
            if isinstance(done, SaysDone):
                self.waiting -= len(done.outcomes)
                if done.failure is not None:
                    self._went_down(Unavailable(done.failure))
                out += self.core.said(done.outcomes, time.time())
            else:
                self._renewed(done, out)
        if self.up and (self._sub_fd in events or self.more):
            out += self.relay.read(self.core)
        return out

    def tick(self, now: float) -> list[Output]:
        """Send a lease renewal when one is due: every third of the lease, and while
        Redis is failing at least once per RETRY_AFTER (the probe).

        The renewal is not held back by the refusal after a failure (``up``): a node
        whose other calls keep failing (its subscription, say) must still renew its
        lease whenever Redis answers, or with a lease under about 1.5 s (heartbeat
        under 0.5 s) it would lapse between probes and be cleaned up after while alive.
        """
        clock = self._clock()
        every = self._probe_every if self.failed else self._renew_every
        if clock >= self._renewed_at + every and not self._renewing:
            self._renewed_at = clock
            self._renewing = True
            self.links.renew()
        return []

    def _renewed(self, done: Renewed, out: list[Output]) -> None:
        """A renewal came back: recover after a failure, notice a lost dataset or a
        clean-up after this node, clean up after dead nodes."""
        self._renewing = False
        if done.renewal is None:
            self._went_down(Unavailable(done.failure or "renewal failed"))
            return
        renewal: Renewal = done.renewal
        clock = self._clock()
        now = time.time()
        if self.failed:
            log.info("node %s: Redis is back", self.node)
            self.failed = False
            self.down_until = 0.0
            # The other nodes' leases lapsed too while Redis was away. Each probes once
            # per RETRY_AFTER, and a probe may still find Redis starting up (loading,
            # a cluster converging): a whole lease after two more probes, before any
            # of them counts as dead (one lease alone let a busy machine reap a live node).
            self._next_reap = clock + self.engine.lease_ms / 1000 + 2 * RETRY_AFTER
            self.relay.resubscribe(out)
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
                "node %s: %s: dropping every session",
                self.node,
                "new epoch" if renewal.epoch_changed else "another node cleaned up after us",
            )
            self.store.epoch = self.engine.epoch
            out.extend(self.core.shutdown(now))
            self.relay.last.clear()
            return
        if renewal.lapsed:
            log.warning(
                "node %s: its lease had lapsed; renewed before anyone cleaned up", self.node
            )
        if clock >= self._next_reap:
            self._next_reap = clock + self._reap_every
            try:
                for dead in self.engine.dead_nodes():
                    self._reap(dead)
            except (Unavailable, ProtocolError) as exc:
                self._went_down(exc)

    def _flush_pending(self) -> None:
        try:
            while self.pending:
                self._append_now(self.pending[:100])
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

        def reap() -> list[Appended]:
            self._after_says()
            return self.engine.reap(dead, make_leave)

        done = self.call(reap)
        if done:
            log.info(
                "node %s: node %s is gone: %d leaves published for it", self.node, dead, len(done)
            )

    def close(self) -> None:
        """After the core's farewells: leave the cluster cleanly (nothing to reap)."""
        self._flush_pending()
        if not self.links.wait_idle(self.engine.timeout):
            log.warning("stopping with says unanswered by Redis")
        self.links.close()
        try:
            self.engine.leave_cluster()
        except Unavailable as exc:
            log.warning("could not leave the cluster cleanly: %s", exc)
        self.engine.close()
