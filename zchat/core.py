"""The broker's state machine: sessions, rooms, history and limits.

Pure: no zmq, no clock, no threads. The socket adapter (``zchat.broker``)
hands every inbound frame to :meth:`BrokerCore.receive` with the time it was
received, calls :meth:`BrokerCore.tick` every :attr:`BrokerCore.tick_interval`,
and sends whatever ``Reply``/``Publish`` outputs come back. Tests drive it the
same way, as a conversation in memory.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from zchat.protocol import (
    MAX_FRAME,
    MAX_HISTORY_LIMIT,
    MAX_NICK,
    MAX_ROOM,
    MAX_ROOMS_PER_HELLO,
    MAX_TEXT,
    VERSION,
    Bye,
    Command,
    Dm,
    ErrorCode,
    Hello,
    History,
    Join,
    Leave,
    LeaveReason,
    Nick,
    Ping,
    ProtocolError,
    Say,
    Stats,
    Sync,
    Topic,
    Who,
    decode_command,
    fold,
    pack,
    room_topic,
    sync_topic,
)

log = logging.getLogger("zchat.broker")

#: Roster names sent in a ``welcome`` or ``who``; ``count`` always has the total.
MAX_ROSTER: int = 1000


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``data`` to one peer over the ROUTER."""

    peer: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """Send ``data`` (topic, NUL, envelope) over the PUB."""

    data: bytes


Output = Reply | Publish


@dataclass(slots=True)
class BrokerConfig:
    heartbeat: float = 1.0
    #: Silent heartbeats before a session is dropped with reason ``timeout``.
    liveness: int = 3
    text_limit: int = MAX_TEXT
    history: int = 500
    max_clients: int = 10_000
    max_rooms_per_session: int = MAX_ROOMS_PER_HELLO
    #: Envelopes per second per session (token bucket); 0 turns limiting off.
    rate_limit: float = 20.0
    rate_burst: int = 40
    #: Rejected envelopes (draining at ``rate_limit``/s) before the session is dropped.
    flood_threshold: int = 100
    #: Error replies per second to peers that are not registered, all together.
    unregistered_rate: float = 1000.0
    #: Remembered message ids per nick for dropping resent duplicates.
    dedupe_window: int = 256
    #: How long the ids of a nick that left (not by ``bye``) are kept, in seconds.
    dedupe_ttl: float = 300.0
    #: Empty rooms whose seq, topic and history are kept in memory.
    max_idle_rooms: int = 1000


@dataclass(slots=True)
class Counters:
    envelopes_in: int = 0
    messages: int = 0
    published: int = 0
    replies: int = 0
    registrations: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)


class Store(Protocol):
    """Where room state and history live: memory, or SQLite (``zchat.store``)."""

    epoch: str
    #: True if what is appended survives a restart (the broker then commits
    #: each batch before sending it).
    durable: bool

    def room_state(self, room: str) -> tuple[int, str] | None:
        """(last seq, topic) of a room the store knows, else None."""

    def append(self, room: str, seq: int, envelope: bytes) -> None: ...

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        """The latest ``limit`` envelopes with after < seq < before, oldest first."""

    def set_topic(self, room: str, topic: str) -> None: ...

    def forget(self, room: str) -> None:
        """The room is empty and evicted from memory; keep it only if durable."""

    def owner(self, nick_key: str) -> str | None: ...

    def set_owner(self, nick_key: str, key: str) -> None: ...

    def flush(self) -> None: ...


class MemoryStore:
    """History in memory: a bounded deque per room, lost on restart."""

    durable = False

    def __init__(self, history: int, epoch: str | None = None, max_owners: int = 100_000) -> None:
        self.epoch = epoch or secrets.token_hex(8)
        self._history = history
        self._events: dict[str, deque[tuple[int, bytes]]] = {}
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._max_owners = max_owners

    def room_state(self, room: str) -> tuple[int, str] | None:
        return None

    def append(self, room: str, seq: int, envelope: bytes) -> None:
        events = self._events.get(room)
        if events is None:
            events = self._events[room] = deque(maxlen=self._history)
        events.append((seq, envelope))

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        events = self._events.get(room, ())
        hits = [env for seq, env in events if seq > after and (before is None or seq < before)]
        return hits[-limit:]

    def set_topic(self, room: str, topic: str) -> None:
        pass

    def forget(self, room: str) -> None:
        self._events.pop(room, None)

    def owner(self, nick_key: str) -> str | None:
        return self._owners.get(nick_key)

    def set_owner(self, nick_key: str, key: str) -> None:
        self._owners[nick_key] = key
        # Every nick ever claimed would otherwise stay in memory: forget the oldest claims.
        while len(self._owners) > self._max_owners:
            self._owners.popitem(last=False)

    def flush(self) -> None:
        pass


class Room:
    __slots__ = ("members", "name", "seq", "topic", "wire_topic")

    def __init__(self, name: str, seq: int = 0, topic: str = "") -> None:
        self.name = name
        self.wire_topic = room_topic(name)
        self.seq = seq
        self.topic = topic
        self.members: dict[bytes, Session] = {}

    def info(self) -> dict[str, Any]:
        users = [s.nick for s in list(self.members.values())[:MAX_ROSTER]]
        return {"seq": self.seq, "topic": self.topic, "users": users, "count": len(self.members)}


class Session:
    __slots__ = (
        "key",
        "last_seen",
        "nick",
        "nick_key",
        "peer",
        "penalty",
        "recent",
        "refilled",
        "resume",
        "rooms",
        "tokens",
    )

    def __init__(
        self, peer: bytes, nick: str, key: str | None, resume: str, now: float, burst: int
    ) -> None:
        self.peer = peer
        self.nick = nick
        self.nick_key = fold(nick)
        self.key = key
        self.resume = resume
        self.rooms: dict[str, Room] = {}
        self.last_seen = now
        self.tokens = float(burst)
        self.penalty = 0.0
        self.refilled = now
        self.recent: OrderedDict[str, tuple[str, int]] = OrderedDict()


_FREE = (Ping, Bye)


class BrokerCore:
    """Everything the broker knows and decides, fed one frame at a time."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        store: Store | None = None,
        now: float = 0.0,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self.config = config or BrokerConfig()
        self.store: Store = store or MemoryStore(self.config.history)
        self.counters = Counters()
        self._new_token = new_token
        self._now = now
        # Ordered by last activity, so expiry only looks at the front.
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._nicks: dict[str, Session] = {}
        self._rooms: dict[str, Room] = {}
        self._idle_rooms: OrderedDict[str, None] = OrderedDict()
        self._orphan_ids: OrderedDict[str, tuple[float, OrderedDict[str, tuple[str, int]]]] = (
            OrderedDict()
        )
        self._unreg_tokens = self.config.unregistered_rate
        self._unreg_refilled = now
        # Rate buckets of ended sessions, by key (or peer without CURVE), so that
        # bye and hello again does not start a flooder over with a full bucket.
        self._buckets: OrderedDict[str | bytes, tuple[float, float, float]] = OrderedDict()
        self._handlers: dict[type, Callable[[Session, Any, float, list[Output]], None]] = {
            Say: self._say,
            Ping: self._ping,
            Bye: self._bye,
            Sync: self._sync,
            Join: self._join_cmd,
            Leave: self._leave_cmd,
            Who: self._who,
            Topic: self._topic,
            Nick: self._nick,
            Dm: self._dm,
            History: self._history,
            Stats: self._stats,
            Hello: self._hello_again,
        }

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
        session = self._sessions.get(peer)
        if session is not None:
            # Any envelope, even a bad one, shows the peer is alive.
            session.last_seen = now
            self._sessions.move_to_end(peer)
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
            # broker: expected, so not worth a warning.
            self._error(peer, session, exc, ref, now, out, quiet=isinstance(command, Ping))
        return out

    def tick(self, now: float) -> list[Output]:
        """Expire silent sessions and stale dedupe ids."""
        now = self._clock(now)
        out: list[Output] = []
        deadline = now - self.config.heartbeat * self.config.liveness
        while self._sessions:
            session = next(iter(self._sessions.values()))
            if session.last_seen >= deadline:
                break
            self._drop(session, LeaveReason.TIMEOUT, None, now, out)
        while self._orphan_ids:
            nick_key, (expires, _) = next(iter(self._orphan_ids.items()))
            if expires > now:
                break
            del self._orphan_ids[nick_key]
        return out

    @property
    def tick_interval(self) -> float:
        """How often ``tick`` should run: a quarter heartbeat bounds the timeout's error."""
        return self.config.heartbeat / 4

    def shutdown(self, now: float) -> list[Output]:
        """Every session leaves with reason ``shutdown``; call before closing."""
        now = self._clock(now)
        out: list[Output] = []
        for session in list(self._sessions.values()):
            self._drop(session, LeaveReason.SHUTDOWN, None, now, out)
        self.store.flush()
        return out

    # ------------------------------------------------------------ read-only views

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def nick_of(self, peer: bytes) -> str | None:
        session = self._sessions.get(peer)
        return session.nick if session else None

    def roster(self, room: str) -> list[str]:
        found = self._rooms.get(room)
        return [s.nick for s in found.members.values()] if found else []

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges, as sent in a ``stats`` reply."""
        c = self.counters
        return {
            "epoch": self.epoch,
            "sessions": len(self._sessions),
            "rooms": sum(1 for r in self._rooms.values() if r.members),
            "envelopes_in": c.envelopes_in,
            "messages": c.messages,
            "published": c.published,
            "replies": c.replies,
            "registrations": c.registrations,
            "duplicates": c.duplicates,
            "errors": dict(c.errors),
            "drops": dict(c.drops),
            "leaves": dict(c.leaves),
        }

    def check_invariants(self) -> None:
        """Raise AssertionError if the tables disagree (used by property tests)."""
        assert len(self._nicks) == len(self._sessions)
        for peer, session in self._sessions.items():
            assert session.peer == peer
            assert self._nicks[session.nick_key] is session
            assert len(session.rooms) <= self.config.max_rooms_per_session
            for name, room in session.rooms.items():
                assert self._rooms[name] is room
                assert room.members[peer] is session
        for name, room in self._rooms.items():
            for peer in room.members:
                assert name in self._sessions[peer].rooms
            assert (name in self._idle_rooms) == (not room.members)

    # ------------------------------------------------------------ plumbing

    def _clock(self, now: float) -> float:
        # A wall clock stepped backwards must not resurrect or reorder anything.
        if now > self._now:
            self._now = now
        return self._now

    def _reply(self, peer: bytes, envelope: dict[str, Any], out: list[Output]) -> None:
        self.counters.replies += 1
        out.append(Reply(peer, pack(envelope)))

    def _publish(self, room: Room, envelope: dict[str, Any], out: list[Output]) -> None:
        room.seq += 1
        envelope["seq"] = room.seq
        data = pack(envelope)
        self.store.append(room.name, room.seq, data)
        self.counters.published += 1
        out.append(Publish(room.wire_topic + data))

    def _error(
        self,
        peer: bytes,
        session: Session | None,
        exc: ProtocolError,
        ref: str | None,
        now: float,
        out: list[Output],
        *,
        quiet: bool = False,
    ) -> None:
        self.counters.errors[exc.code] += 1
        count = self.counters.errors[exc.code]
        # A flood of garbage must not become a flood of log lines: log the first
        # few of each code, then every power of two.
        if quiet:
            log.debug("%s from peer %s: %s", exc.code, peer.hex()[:16], exc.reason)
        elif count <= 10 or count & (count - 1) == 0:
            who = session.nick if session is not None else f"peer {peer.hex()[:16]}"
            log.warning("%s from %s: %s (%d so far)", exc.code, who, exc.reason, count)
        if session is None and not self._unregistered_allowance(now):
            self.counters.drops["error_rate"] += 1
            return
        envelope: dict[str, Any] = {"type": "error", "code": str(exc.code), "reason": exc.reason}
        envelope.update(exc.data)
        if ref is not None:
            envelope["re"] = ref
        self._reply(peer, envelope, out)

    def _unregistered_allowance(self, now: float) -> bool:
        rate = self.config.unregistered_rate
        self._unreg_tokens = min(rate, self._unreg_tokens + (now - self._unreg_refilled) * rate)
        self._unreg_refilled = now
        if self._unreg_tokens < 1:
            return False
        self._unreg_tokens -= 1
        return True

    def _refill(
        self, tokens: float, penalty: float, refilled: float, now: float
    ) -> tuple[float, float]:
        """A bucket's (tokens, penalty) at ``now``: both move back at ``rate_limit`` per second."""
        elapsed = now - refilled
        rate = self.config.rate_limit
        return (
            min(float(self.config.rate_burst), tokens + elapsed * rate),
            max(0.0, penalty - elapsed * rate),
        )

    def _take_token(
        self, session: Session, now: float, out: list[Output], ref: str | None = None
    ) -> bool:
        """Charge one envelope to the session's bucket; False if it is refused."""
        rate = self.config.rate_limit
        if rate <= 0:
            return True
        session.tokens, session.penalty = self._refill(
            session.tokens, session.penalty, session.refilled, now
        )
        session.refilled = now
        if session.tokens >= 1:
            session.tokens -= 1
            return True
        session.penalty += 1
        self.counters.errors[ErrorCode.RATE_LIMITED] += 1
        if session.penalty > self.config.flood_threshold:
            self._reply(
                session.peer,
                {"type": "error", "code": "rate_limited", "reason": "dropped for flooding"},
                out,
            )
            self._drop(session, LeaveReason.FLOOD, None, now, out)
        elif session.penalty <= self.config.rate_burst:
            # Past that, the flooder is not reading its errors either: save the bytes.
            envelope: dict[str, Any] = {
                "type": "error",
                "code": "rate_limited",
                "reason": f"more than {rate:g} envelopes per second",
                "limit": rate,
            }
            if ref is not None:
                envelope["re"] = ref
            self._reply(session.peer, envelope, out)
        else:
            self.counters.drops["rate_limited"] += 1
        return False

    # ------------------------------------------------------------ registration

    def _unregistered(
        self, peer: bytes, command: Command, key: str | None, now: float, out: list[Output]
    ) -> None:
        if isinstance(command, Hello):
            self._register(peer, command, key, now, out)
        elif isinstance(command, Sync):
            if self._unregistered_allowance(now):
                self._sync_publish(command, out)
            else:
                self.counters.drops["sync_rate"] += 1
        elif isinstance(command, Stats):
            if self._unregistered_allowance(now):
                self._stats(None, command, now, out, peer)
            else:
                self.counters.drops["stats_rate"] += 1
        elif isinstance(command, Bye):
            self.counters.drops["bye_unregistered"] += 1
        else:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "send hello first")

    def _register(
        self, peer: bytes, hello: Hello, key: str | None, now: float, out: list[Output]
    ) -> None:
        cfg = self.config
        if len(hello.rooms) > cfg.max_rooms_per_session:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"at most {cfg.max_rooms_per_session} rooms",
                limit=cfg.max_rooms_per_session,
            )
        nick_key = fold(hello.nick)
        owner = self.store.owner(nick_key)
        if owner is not None and owner != key:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"{hello.nick} belongs to another key")
        current = self._nicks.get(nick_key)
        if current is not None:
            same_owner = key is not None and current.key == key
            # As bytes: compare_digest raises TypeError on non-ASCII str.
            same_client = hello.resume is not None and secrets.compare_digest(
                hello.resume.encode(), current.resume.encode()
            )
            if not (same_owner or same_client):
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"{hello.nick} is in use")
        elif len(self._sessions) >= cfg.max_clients:
            raise ProtocolError(ErrorCode.FULL, "the broker is full", limit=cfg.max_clients)
        ident = key if key is not None else peer
        bucket = self._buckets.get(ident)
        if current is not None:
            bucket = (current.tokens, current.penalty, current.refilled)
        tokens, penalty = float(cfg.rate_burst), 0.0
        if bucket is not None and cfg.rate_limit > 0:
            # Coming back soon after a session ended: charge the joins it publishes
            # (up to a whole burst), so bye and hello again is no way around the limit.
            tokens, penalty = self._refill(*bucket, now)
            cost = min(1 + len(hello.rooms), cfg.rate_burst)
            if tokens < cost:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "registering too often", limit=cfg.rate_limit
                )
            tokens -= cost
        if current is not None:
            # Tell the old connection, if it is still there, so that it does not
            # register again and take the nick back, and so on for ever.
            self._reply(
                current.peer,
                {
                    "type": "error",
                    "code": str(ErrorCode.REPLACED),
                    "reason": f"{current.nick} was registered again from another connection",
                },
                out,
            )
            self._drop(current, LeaveReason.REPLACED, None, now, out)
        session = Session(peer, hello.nick, key, self._new_token(), now, cfg.rate_burst)
        session.tokens, session.penalty = tokens, penalty
        self._buckets.pop(ident, None)
        orphan = self._orphan_ids.pop(nick_key, None)
        if orphan is not None:
            session.recent = orphan[1]
        if key is not None and owner is None:
            self.store.set_owner(nick_key, key)
        self._sessions[peer] = session
        self._nicks[nick_key] = session
        self.counters.registrations += 1
        log.info("%s registered (rooms: %s)", session.nick, ", ".join(hello.rooms) or "none")
        for name in hello.rooms:
            self._enter(session, name, now, out)
        self._welcome(session, hello.id, out)

    def _welcome(self, session: Session, ref: str | None, out: list[Output]) -> None:
        cfg = self.config
        envelope: dict[str, Any] = {
            "type": "welcome",
            "v": VERSION,
            "nick": session.nick,
            "heartbeat": cfg.heartbeat,
            "epoch": self.epoch,
            "session": session.resume,
            "rooms": {name: room.info() for name, room in session.rooms.items()},
            "limits": {
                "text": cfg.text_limit,
                "frame": MAX_FRAME,
                "nick": MAX_NICK,
                "room": MAX_ROOM,
                "rooms": cfg.max_rooms_per_session,
                "history": min(cfg.history, MAX_HISTORY_LIMIT),
                "rate": cfg.rate_limit,
                "burst": cfg.rate_burst,
            },
        }
        if ref is not None:
            envelope["re"] = ref
        self._reply(session.peer, envelope, out)

    def _hello_again(self, session: Session, hello: Hello, now: float, out: list[Output]) -> None:
        # A client that thought the broker was gone (it was only slow) says hello
        # again on the same connection: welcome it to the session it still has.
        if fold(hello.nick) != session.nick_key:
            raise ProtocolError(
                ErrorCode.ALREADY_REGISTERED, f"already registered as {session.nick}"
            )
        self._welcome(session, hello.id, out)

    def _drop(
        self,
        session: Session,
        reason: LeaveReason,
        message: str | None,
        now: float,
        out: list[Output],
    ) -> None:
        for room in list(session.rooms.values()):
            self._exit(session, room, reason, message, now, out)
        del self._sessions[session.peer]
        del self._nicks[session.nick_key]
        self.counters.leaves[reason] += 1
        if self.config.rate_limit > 0:
            ident = session.key if session.key is not None else session.peer
            self._buckets[ident] = (session.tokens, session.penalty, session.refilled)
            self._buckets.move_to_end(ident)
            while len(self._buckets) > self.config.max_clients:
                self._buckets.popitem(last=False)
        log.info("%s left (%s)", session.nick, reason)
        if reason is not LeaveReason.QUIT and session.recent:
            # The client may come back and resend what it thinks was lost.
            self._orphan_ids[session.nick_key] = (now + self.config.dedupe_ttl, session.recent)
            while len(self._orphan_ids) > self.config.max_clients:
                self._orphan_ids.popitem(last=False)

    # ------------------------------------------------------------ rooms

    def _room(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            state = self.store.room_state(name)
            room = Room(name, *state) if state else Room(name)
            self._rooms[name] = room
        self._idle_rooms.pop(name, None)
        return room

    def _enter(self, session: Session, name: str, now: float, out: list[Output]) -> Room:
        room = self._room(name)
        room.members[session.peer] = session
        session.rooms[name] = room
        self._publish(room, {"type": "join", "room": name, "nick": session.nick, "ts": now}, out)
        return room

    def _exit(
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
        envelope: dict[str, Any] = {
            "type": "leave",
            "room": room.name,
            "nick": session.nick,
            "reason": str(reason),
            "ts": now,
        }
        if message:
            envelope["message"] = message
        self._publish(room, envelope, out)
        if not room.members:
            self._idle_rooms[room.name] = None
            while len(self._idle_rooms) > self.config.max_idle_rooms:
                evicted, _ = self._idle_rooms.popitem(last=False)
                del self._rooms[evicted]
                self.store.forget(evicted)

    def _member_room(self, session: Session, name: str) -> Room:
        room = session.rooms.get(name)
        if room is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"not in room {name}", room=name)
        return room

    # ------------------------------------------------------------ commands

    def _say(self, session: Session, say: Say, now: float, out: list[Output]) -> None:
        room = self._member_room(session, say.room)
        if say.id is not None:
            seen = session.recent.get(say.id)
            if seen is not None:
                self.counters.duplicates += 1
                self._reply(
                    session.peer,
                    {"type": "ack", "re": say.id, "room": seen[0], "seq": seen[1], "dup": True},
                    out,
                )
                return
        envelope: dict[str, Any] = {
            "type": "msg",
            "room": room.name,
            "nick": session.nick,
            "text": say.text,
            "ts": now,
        }
        if say.action:
            envelope["action"] = True
        if say.id is not None:
            envelope["id"] = say.id
        self.counters.messages += 1
        self._publish(room, envelope, out)
        if say.id is not None:
            session.recent[say.id] = (room.name, room.seq)
            if len(session.recent) > self.config.dedupe_window:
                session.recent.popitem(last=False)

    def _ping(self, session: Session, ping: Ping, now: float, out: list[Output]) -> None:
        envelope: dict[str, Any] = {"type": "pong"}
        if ping.id is not None:
            envelope["re"] = ping.id
        self._reply(session.peer, envelope, out)

    def _bye(self, session: Session, bye: Bye, now: float, out: list[Output]) -> None:
        self._drop(session, LeaveReason.QUIT, bye.reason, now, out)

    def _sync_publish(self, sync: Sync, out: list[Output]) -> None:
        envelope: dict[str, Any] = {"type": "sync", "token": sync.token}
        if sync.id is not None:
            envelope["re"] = sync.id
        out.append(Publish(sync_topic(sync.token) + pack(envelope)))

    def _sync(self, session: Session, sync: Sync, now: float, out: list[Output]) -> None:
        self._sync_publish(sync, out)

    def _join_cmd(self, session: Session, join: Join, now: float, out: list[Output]) -> None:
        room = session.rooms.get(join.room)
        if room is None:
            limit = self.config.max_rooms_per_session
            if len(session.rooms) >= limit:
                raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, f"at most {limit} rooms", limit=limit)
            room = self._enter(session, join.room, now, out)
        self._room_reply(session.peer, room, join.id, out)

    def _leave_cmd(self, session: Session, leave: Leave, now: float, out: list[Output]) -> None:
        room = self._member_room(session, leave.room)
        self._exit(session, room, LeaveReason.PART, leave.reason, now, out)

    def _room_reply(self, peer: bytes, room: Room, ref: str | None, out: list[Output]) -> None:
        envelope: dict[str, Any] = {"type": "who", "room": room.name, **room.info()}
        if ref is not None:
            envelope["re"] = ref
        self._reply(peer, envelope, out)

    def _who(self, session: Session, who: Who, now: float, out: list[Output]) -> None:
        room = self._rooms.get(who.room)
        if room is None:
            # Not in memory (empty, or evicted): a durable store may still know it.
            state = self.store.room_state(who.room)
            room = Room(who.room, *state) if state else Room(who.room)
        self._room_reply(session.peer, room, who.id, out)

    def _topic(self, session: Session, topic: Topic, now: float, out: list[Output]) -> None:
        room = self._member_room(session, topic.room)
        room.topic = topic.text
        self.store.set_topic(room.name, topic.text)
        self._publish(
            room,
            {
                "type": "topic",
                "room": room.name,
                "nick": session.nick,
                "text": topic.text,
                "ts": now,
            },
            out,
        )

    def _nick(self, session: Session, nick: Nick, now: float, out: list[Output]) -> None:
        new_key = fold(nick.nick)
        holder = self._nicks.get(new_key)
        if holder is not None and holder is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"{nick.nick} is in use")
        owner = self.store.owner(new_key)
        if owner is not None and owner != session.key:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"{nick.nick} belongs to another key")
        old = session.nick
        if nick.nick == old:
            self._reply(session.peer, self._nick_reply(old, now, nick.id), out)
            return
        del self._nicks[session.nick_key]
        session.nick = nick.nick
        session.nick_key = new_key
        self._nicks[new_key] = session
        if session.key is not None and owner is None:
            self.store.set_owner(new_key, session.key)
        for room in session.rooms.values():
            self._publish(
                room,
                {"type": "nick", "room": room.name, "old": old, "new": nick.nick, "ts": now},
                out,
            )
        self._reply(session.peer, self._nick_reply(old, now, nick.id, nick.nick), out)

    @staticmethod
    def _nick_reply(
        old: str, now: float, ref: str | None, new: str | None = None
    ) -> dict[str, Any]:
        envelope: dict[str, Any] = {"type": "nick", "old": old, "new": new or old, "ts": now}
        if ref is not None:
            envelope["re"] = ref
        return envelope

    def _dm(self, session: Session, dm: Dm, now: float, out: list[Output]) -> None:
        target = self._nicks.get(fold(dm.to))
        if target is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"no one is called {dm.to}", to=dm.to)
        envelope: dict[str, Any] = {
            "type": "dm",
            "nick": session.nick,
            "to": target.nick,
            "text": dm.text,
            "ts": now,
        }
        if dm.action:
            envelope["action"] = True
        self.counters.messages += 1
        if target is not session:
            self._reply(target.peer, envelope, out)
        if dm.id is not None:
            envelope["re"] = dm.id
        self._reply(session.peer, envelope, out)

    def _history(self, session: Session, history: History, now: float, out: list[Output]) -> None:
        room = self._member_room(session, history.room)
        before = history.before if history.before is not None else room.seq + 1
        events = self.store.fetch(room.name, history.after, before, history.limit)
        wanted = max(0, min(before, room.seq + 1) - history.after - 1)
        header: dict[str, Any] = {
            "type": "history",
            "room": room.name,
            "after": history.after,
            "before": before,
            "epoch": self.epoch,
            "missing": max(0, wanted - len(events)),
        }
        if history.id is not None:
            header["re"] = history.id
        self.counters.replies += 1
        out.append(Reply(session.peer, _pack_with_raw_array(header, "events", events)))

    def _stats(
        self,
        session: Session | None,
        stats: Stats,
        now: float,
        out: list[Output],
        peer: bytes | None = None,
    ) -> None:
        target = session.peer if session is not None else peer
        assert target is not None
        envelope: dict[str, Any] = {"type": "stats", **self.snapshot()}
        if stats.id is not None:
            envelope["re"] = stats.id
        self._reply(target, envelope, out)


def _pack_with_raw_array(header: dict[str, Any], key: str, items: Iterable[bytes]) -> bytes:
    """Pack ``header`` plus ``key``: an array of already-packed envelopes, without re-decoding."""
    packer = msgpack.Packer(use_bin_type=True)
    items = list(items)
    parts = [packer.pack_map_header(len(header) + 1)]
    for name, value in header.items():
        parts.append(packer.pack(name))
        parts.append(packer.pack(value))
    parts.append(packer.pack(key))
    parts.append(packer.pack_array_header(len(items)))
    parts.extend(items)
    return b"".join(parts)
