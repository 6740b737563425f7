"""The broker's state machine: sessions, rooms, history and limits.

Pure: no zmq, no clock, no threads. The socket adapter (``zchat.broker.adapter``)
hands every inbound frame to :meth:`BrokerCore.receive` with the time it was
received, calls :meth:`BrokerCore.tick` every :attr:`BrokerCore.tick_interval`,
and sends whatever ``Reply``/``Publish`` outputs come back. Tests drive it the
same way, as a conversation in memory.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from zchat.broker.inflight import InFlight, InOrder
from zchat.broker.registration import Registration
from zchat.broker.rooms import Rooms
from zchat.broker.sessions import Sessions
from zchat.broker.shared import Shared
from zchat.broker.state import (
    MAX_LIST,
    BrokerConfig,
    Counters,
    Output,
    Publish,
    Reply,
    Room,
    Session,
)
from zchat.broker.store import MemoryStore, Store
from zchat.broker.views import Views
from zchat.errors import ProtocolError
from zchat.protocol.commands import (
    Bye,
    Command,
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
    Sync,
    Topic,
    Who,
    decode_command,
    to_wire,
)
from zchat.protocol.events import (
    Ack,
    DirectMessage,
    ErrorReply,
    Event,
    Message,
    Pong,
    RoomList,
    RoomSummary,
    StatsReply,
    SyncSeen,
    TopicSet,
)
from zchat.protocol.names import (
    MAX_ID,
    ErrorCode,
    LeaveReason,
    fold,
    skeleton,
)
from zchat.protocol.wire import msg_envelope, pack, sync_topic, unpack
from zchat.ratelimit import TokenBucket

__all__ = ["BrokerConfig", "BrokerCore", "Counters", "MemoryStore", "Output", "Publish", "Reply"]

log = logging.getLogger("zchat.broker")

_FREE = (Ping, Bye)
#: A ``ping`` without an id, byte for byte as every client sends it, and its answer.
_PING = pack(to_wire(Ping()))
_PONG = pack(Pong().to_wire())
#: How a ``say`` packed type-first begins after its map header: fixstr "type", fixstr "say".
_SAY_START = b"\xa4type\xa3say"


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class BrokerCore(Registration, InOrder, Views):
    """Everything the broker knows and decides, fed one frame at a time."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        store: Store | None = None,
        now: float = 0.0,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(12),
        fast_path: bool = True,
        shared: Shared | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.store: Store = store or MemoryStore(
            self.config.history, nicks_per_key=self.config.nicks_per_key
        )
        self.counters = Counters()
        #: Counters kept outside the core (the ZAP handler's refusals), merged into
        #: ``snapshot``; set by whoever runs the broker.
        self.extra_stats: Callable[[], dict[str, int]] | None = None
        #: The other brokers of a cluster (docs/cluster.md), or None for a single broker.
        self.shared = shared
        self.rooms = Rooms(self.store, self.counters, self.config.max_idle_rooms, shared)
        self._new_token = new_token
        #: Off only to compare against the full path (tests/test_fastpath.py), and on a
        #: cluster node, where a command must not overtake its session's says in flight:
        #: every command goes through the dispatcher, which keeps that order.
        self._fast_path = fast_path and shared is None
        #: A cluster node's says waiting for Redis, and what waits behind them.
        self.in_flight = InFlight()
        self._now = now
        self.registry = Sessions(self.config, self.store, now)
        # Loads the confusables table (about 0.3 s) now rather than in the first hello.
        skeleton("warm")
        rate = self.config.unregistered_rate
        self._unregistered_bucket = TokenBucket(rate, rate, now)
        self._handlers: dict[type, Callable[[Session, Any, float, list[Output]], None]] = {
            Say: self._say,
            Ping: self._ping,
            Bye: self._bye,
            Sync: self._sync,
            Join: self._join,
            Leave: self._leave,
            Who: self._who,
            Topic: self._topic,
            Nick: self._nick,
            Dm: self._dm,
            History: self._history,
            Stats: self._stats,
            List: self._list,
            Hello: self._hello_again,
        }
        self._run_now = dict(self._handlers)
        if shared is not None:
            self._handlers = {kind: self._in_order(run) for kind, run in self._run_now.items()}

    # ------------------------------------------------------------ entry points

    @property
    def epoch(self) -> str:
        return self.store.epoch

    def receive(
        self, peer: bytes, frame: bytes, now: float, *, frames: int = 1, key: str | None = None
    ) -> list[Output]:
        """Handle one inbound message (``frames`` frames after the routing id)."""
        now = self._clock(now)
        out: list[Output] = []
        self.counters.envelopes_in += 1
        session = self.registry.seen(peer, now)
        if session is not None and session.key != key:
            self._stale(session, now, out)
            session = None
        if self._fast_path and session is not None and frames == 1:
            # Most of what a busy broker reads: answered without building a command.
            if frame == _PING:
                self.counters.replies += 1
                return [Reply(peer, _PONG)]
            if frame[1:10] == _SAY_START and self._fast_say(session, frame, now, out):
                return out
        command: Command | None = None
        try:
            if frames != 1:
                raise ProtocolError(
                    ErrorCode.BAD_ENVELOPE, f"expected 1 frame per envelope, got {frames}"
                )
            command = decode_command(frame, self.config.text_limit)
            if session is None:
                self._unregistered(peer, command, key, now, out)
            else:
                if not isinstance(command, _FREE) and not self._take_token(
                    session, now, out, command.id
                ):
                    return out
                self._handlers[type(command)](session, command, now, out)
        except ProtocolError as exc:
            if session is not None and command is None and not self._take_token(session, now, out):
                return out
            ref = command.id if command is not None else exc.ref
            # An unregistered ping is a health check or a client probing a restarted
            # broker: expected, so neither an error nor worth a warning.
            self._error(peer, session, exc, ref, now, out, health_check=isinstance(command, Ping))
        return out

    def tick(self, now: float, *, caught_up: float | None = None) -> list[Output]:
        """Expire silent sessions and stale dedupe ids.

        ``caught_up``: the latest time by which the broker had read everything
        that had arrived (default ``now``). Silence is measured up to it, so time
        the broker spent busy, with heartbeats waiting unread, counts against no one.
        """
        now = self._clock(now)
        out: list[Output] = []
        read_until = now if caught_up is None else min(now, caught_up)
        deadline = read_until - self.config.heartbeat * self.config.liveness
        for session in self.registry.silent_since(deadline):
            self._drop(session, LeaveReason.TIMEOUT, None, now, out)
        for session in self.registry.closed_by(now):
            self._drop(session, LeaveReason.TIMEOUT, None, now, out)
        self.registry.expire_ids(now)
        return out

    def disconnected(self, peer: bytes, now: float) -> list[Output]:
        """The peer's connection closed (the adapter saw it): its session leaves after
        ``disconnect_grace``, without waiting for heartbeats to stop."""
        now = self._clock(now)
        self.registry.closed(peer, now + self.config.disconnect_grace)
        if self.config.disconnect_grace <= 0:
            return self.tick(now)
        return []

    @property
    def tick_interval(self) -> float:
        """How often ``tick`` should run: a quarter heartbeat bounds the timeout's error,
        and the disconnect grace bounds how late a closed connection's leave comes."""
        return min(self.config.heartbeat / 4, max(self.config.disconnect_grace, 0.05))

    def shutdown(self, now: float) -> list[Output]:
        """Every session leaves with reason ``shutdown``; call before closing."""
        now = self._clock(now)
        out: list[Output] = []
        for session in self.registry:
            self._drop(session, LeaveReason.SHUTDOWN, None, now, out)
        self.store.flush()
        return out

    # ------------------------------------------------------------ plumbing

    def _clock(self, now: float) -> float:
        # A wall clock stepped backwards must not resurrect or reorder anything.
        if now > self._now:
            self._now = now
        return self._now

    def _reply(self, peer: bytes, event: Event, out: list[Output]) -> None:
        self.counters.replies += 1
        out.append(Reply(peer, pack(event.to_wire())))

    def _error(
        self,
        peer: bytes,
        session: Session | None,
        exc: ProtocolError,
        ref: str | None,
        now: float,
        out: list[Output],
        *,
        health_check: bool = False,
    ) -> None:
        if health_check:
            self.counters.health_checks += 1
        else:
            self.counters.errors[exc.code] += 1
        count = self.counters.errors[exc.code]
        # A flood of garbage must not become a flood of log lines: log the first
        # few of each code, then every power of two.
        if health_check:
            log.debug("%s from peer %s: %s", exc.code, peer.hex()[:16], exc.reason)
        elif count <= 10 or count & (count - 1) == 0:
            who = session.nick if session is not None else f"peer {peer.hex()[:16]}"
            log.warning("%s from %s: %s (%d so far)", exc.code, who, exc.reason, count)
        if session is None and not self._unregistered_bucket.take(now):
            self.counters.drops["error_rate"] += 1
            return
        self._reply(peer, ErrorReply(str(exc.code), exc.reason, exc.data, ref), out)

    def _take_token(
        self, session: Session, now: float, out: list[Output], ref: str | None = None
    ) -> bool:
        """Charge one envelope to the session's bucket; False if it is refused."""
        bucket = session.bucket
        if bucket.take(now):
            return True
        self.counters.errors[ErrorCode.RATE_LIMITED] += 1
        rate = bucket.rate
        if bucket.penalty > self.config.flood_threshold:
            data = {"limit": rate, "scope": "envelope", "dropped": True}
            flood = ErrorReply(ErrorCode.RATE_LIMITED, "dropped for flooding", data, ref)
            self._reply(session.peer, flood, out)
            self._drop(session, LeaveReason.FLOOD, None, now, out)
        elif bucket.penalty <= self.config.rate_burst:
            # Past that, the flooder is not reading its errors either: save the bytes.
            reason = f"more than {rate:g} envelopes per second"
            data = {"limit": rate, "scope": "envelope"}
            self._reply(session.peer, ErrorReply(ErrorCode.RATE_LIMITED, reason, data, ref), out)
        else:
            self.counters.drops["rate_limited"] += 1
        return False

    # ------------------------------------------------------------ commands (registration.py
    # has hello, nick and the end of a session)

    def _say(self, session: Session, say: Say, now: float, out: list[Output]) -> None:
        room = self.rooms.member_room(session, say.room)
        self._publish_say(session, room, say.text, say.action, say.id, now, out)

    def _fast_say(self, session: Session, frame: bytes, now: float, out: list[Output]) -> bool:
        """Handle a plainly valid ``say`` as the full path would, without a ``Say``;
        False (nothing done) for anything else, which the full path then handles.

        The room must be one the session is in, spelled canonically, so no name rule
        runs here; tests/test_fastpath.py checks both paths give the same bytes.
        """
        try:
            env = unpack(frame)
        except ProtocolError:
            return False
        room_name, text, ref = env.get("room"), env.get("text"), env.get("id")
        action = env.get("action", False)
        if type(room_name) is not str or type(text) is not str or type(action) is not bool:
            return False
        room = session.rooms.get(room_name)
        if room is None or not text or _utf8_len(text) > self.config.text_limit:
            return False
        if ref is not None and (type(ref) is not str or _utf8_len(ref) > MAX_ID):
            return False
        if self._take_token(session, now, out, ref):
            try:
                self._publish_say(session, room, text, action, ref, now, out)
            except ProtocolError as exc:
                # As the full path answers a command that failed (a cluster without Redis).
                self._error(session.peer, session, exc, ref, now, out)
        return True

    def _publish_say(
        self,
        session: Session,
        room: Room,
        text: str,
        action: bool,
        ref: str | None,
        now: float,
        out: list[Output],
    ) -> None:
        if ref is not None:
            seen = session.recent.get(ref)
            if seen is not None:
                self.counters.duplicates += 1
                self._reply(session.peer, Ack(ref, seen[0], seen[1], dup=True), out)
                return
        if self.shared is None:
            seq = room.seq + 1
            wire = msg_envelope(room.name, session.nick, text, now, seq, action, ref)
            self.rooms.publish_packed(room, pack(wire), out)
        else:
            # Its outcome comes back with its batch's (``said``).
            message = Message(room.name, session.nick, text, now, room.seq + 1, action, ref)
            self.shared.say(session, room, message)
            self.in_flight.sent(session.peer)
            return
        self.counters.messages += 1
        if ref is not None:
            self.registry.remember(session, ref, room.name, seq)

    def _ping(self, session: Session, ping: Ping, now: float, out: list[Output]) -> None:
        self._reply(session.peer, Pong(ping.id), out)

    def _bye(self, session: Session, bye: Bye, now: float, out: list[Output]) -> None:
        self._drop(session, LeaveReason.QUIT, bye.reason, now, out)

    def _sync_publish(self, sync: Sync, out: list[Output]) -> None:
        seen = SyncSeen(sync.token, sync.id)
        out.append(Publish(sync_topic(sync.token) + pack(seen.to_wire())))

    def _sync(self, session: Session, sync: Sync, now: float, out: list[Output]) -> None:
        self._sync_publish(sync, out)

    def _join(self, session: Session, join: Join, now: float, out: list[Output]) -> None:
        room = session.rooms.get(join.room)
        if room is None:
            limit = self.config.max_rooms_per_session
            if len(session.rooms) >= limit:
                raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"at most {limit} rooms", limit=limit)
            room = self.rooms.enter(session, join.room, now, out)
        self._reply(session.peer, self.rooms.info(room, join.id), out)

    def _leave(self, session: Session, leave: Leave, now: float, out: list[Output]) -> None:
        room = self.rooms.member_room(session, leave.room)
        self.rooms.exit(session, room, LeaveReason.PART, leave.reason, now, out)

    def _who(self, session: Session, who: Who, now: float, out: list[Output]) -> None:
        self._reply(session.peer, self.rooms.info(self.rooms.peek(who.room), who.id), out)

    def _topic(self, session: Session, topic: Topic, now: float, out: list[Output]) -> None:
        room = self.rooms.member_room(session, topic.room)
        event = TopicSet(room.name, session.nick, topic.text, now, room.seq + 1)
        self.rooms.publish(room, event, out)
        room.topic = topic.text
        self.store.set_topic(room.name, topic.text)

    def _dm(self, session: Session, dm: Dm, now: float, out: list[Output]) -> None:
        to_key = fold(dm.to)
        target = self.registry.by_nick.get(to_key)
        event = DirectMessage(
            session.nick, target.nick if target else dm.to, dm.text, now, dm.action
        )
        if target is None:
            # In a cluster the recipient may be on another broker.
            if self.shared is None or not self.shared.direct(to_key, event):
                raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"no one is called {dm.to}", to=dm.to)
        elif target is not session:
            self._reply(target.peer, event, out)
        self.counters.messages += 1
        self._reply(session.peer, replace(event, re=dm.id), out)

    def _history(self, session: Session, history: History, now: float, out: list[Output]) -> None:
        room = self.rooms.member_room(session, history.room)
        data = self.rooms.history(
            room, history.after, history.before, history.limit, self.epoch, history.id
        )
        self.counters.replies += 1
        out.append(Reply(session.peer, data))
        if session.bucket.rate > 0:
            session.bucket.tokens -= len(data) // self.config.history_bytes_per_token

    def _list(self, session: Session, command: List, now: float, out: list[Output]) -> None:
        occupied = [r for r in self.rooms.rooms.values() if r.members]
        busiest = heapq.nsmallest(MAX_LIST, occupied, key=lambda r: (-len(r.members), r.name))
        rooms = tuple(RoomSummary(r.name, len(r.members), r.topic) for r in busiest)
        self._reply(session.peer, RoomList(rooms, len(occupied), command.id), out)

    def _stats(self, session: Session, stats: Stats, now: float, out: list[Output]) -> None:
        self._reply(session.peer, StatsReply(self.snapshot(), stats.id), out)
