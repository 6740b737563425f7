"""Registration: ``hello`` (a new session, a takeover, a hello again), the
welcome, a nick change, and the end of a session. Part of :class:`BrokerCore`
(a mixin: the core's tables are its own). Pure: no zmq, no clock.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zchat.broker.inflight import InFlight
from zchat.broker.rooms import Rooms
from zchat.broker.sessions import Sessions
from zchat.broker.shared import Shared
from zchat.broker.state import BrokerConfig, Counters, Output, Room, Session
from zchat.broker.store import Store
from zchat.errors import ProtocolError
from zchat.protocol.commands import Bye, Command, Hello, Nick, Stats, Sync
from zchat.protocol.events import ErrorReply, Event, NickChanged, StatsReply, Welcome
from zchat.protocol.names import ErrorCode, LeaveReason, fold, skeleton
from zchat.ratelimit import TokenBucket

log = logging.getLogger("zchat.broker")


class Registration:
    config: BrokerConfig
    store: Store
    counters: Counters
    shared: Shared | None
    rooms: Rooms
    registry: Sessions
    in_flight: InFlight
    _new_token: Callable[[], str]
    _unregistered_bucket: TokenBucket

    if TYPE_CHECKING:

        @property
        def epoch(self) -> str: ...

        def snapshot(self) -> dict[str, Any]: ...

        def _reply(self, peer: bytes, event: Event, out: list[Output]) -> None: ...

        def _sync_publish(self, sync: Sync, out: list[Output]) -> None: ...

    def _unregistered(
        self, peer: bytes, command: Command, key: str | None, now: float, out: list[Output]
    ) -> None:
        if isinstance(command, Hello):
            self._register(peer, command, key, now, out)
        elif isinstance(command, Sync):
            if self._unregistered_bucket.take(now):
                self._sync_publish(command, out)
            else:
                self.counters.drops["sync_rate"] += 1
        elif isinstance(command, Stats):
            if self._unregistered_bucket.take(now):
                self._reply(peer, StatsReply(self.snapshot(), command.id), out)
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
        current = self.registry.by_nick.get(nick_key)
        if current is not None:
            same_owner = key is not None and current.key == key
            # As bytes: compare_digest raises TypeError on non-ASCII str.
            same_client = hello.resume is not None and secrets.compare_digest(
                hello.resume.encode(), current.resume.encode()
            )
            if not (same_owner or same_client):
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"{hello.nick} is in use")
        self._refuse_look_alike(hello.nick, nick_key, current, key)
        if current is None and len(self.registry) >= cfg.max_clients:
            raise ProtocolError(ErrorCode.FULL, "the broker is full", limit=cfg.max_clients)
        ident = key if key is not None else peer
        bucket = current.bucket if current is not None else self.registry.old_bucket(ident)
        if bucket is not None and cfg.rate_limit > 0:
            # Coming back soon after a session ended: charge the joins it publishes
            # (up to a whole burst), so bye and hello again is no way around the limit.
            bucket.refill(now)
            cost = min(1 + len(hello.rooms), cfg.rate_burst)
            if bucket.tokens < cost:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    "registering too often",
                    limit=cfg.rate_limit,
                    scope="registration",
                )
            bucket.tokens -= cost
        else:
            bucket = TokenBucket(cfg.rate_limit, cfg.rate_burst, now)
        resume = self._new_token()
        if self.shared is not None:
            # Before the old session is dropped: a refusal here leaves everything as it was.
            self.shared.claim(nick_key, hello.nick, resume, hello.resume, key, ())
        if current is not None:
            # Tell the old connection, if it is still there, so that it does not
            # register again and take the nick back, and so on for ever.
            reason = f"{current.nick} was registered again from another connection"
            self._reply(current.peer, ErrorReply(ErrorCode.REPLACED, reason), out)
            self._drop(current, LeaveReason.REPLACED, None, now, out)
        session = Session(peer, hello.nick, key, resume, now, bucket)
        if key is not None and owner is None:
            self.store.set_owner(nick_key, key)
            self.store.claim_skeleton(skeleton(hello.nick), hello.nick, key)
        self.registry.add(session, ident)
        self.counters.registrations += 1
        log.info("%s registered (rooms: %s)", session.nick, ", ".join(hello.rooms) or "none")
        try:
            for name in hello.rooms:
                self.rooms.enter(session, name, now, out)
        except ProtocolError:
            # A cluster node that lost Redis: no half-registered session stays behind.
            self._drop(session, LeaveReason.QUIT, None, now, out)
            raise
        self._welcome(session, hello.id, out)

    def _refuse_look_alike(
        self, nick: str, nick_key: str, replacing: Session | None, key: str | None
    ) -> None:
        similar = self.registry.look_alike(nick, nick_key)
        if similar is not None and similar is not replacing:
            raise ProtocolError(
                ErrorCode.NICK_TAKEN, f"{nick} looks like {similar.nick}", similar_to=similar.nick
            )
        owned = self.store.skeleton_owner(skeleton(nick))
        if owned is not None and owned[1] != key and fold(owned[0]) != nick_key:
            raise ProtocolError(
                ErrorCode.NICK_TAKEN,
                f"{nick} looks like {owned[0]}, which belongs to another key",
                similar_to=owned[0],
            )

    def _welcome(self, session: Session, ref: str | None, out: list[Output]) -> None:
        cfg = self.config
        rooms = tuple(self.rooms.info(room) for room in session.rooms.values())
        welcome = Welcome(
            session.nick, cfg.heartbeat, self.epoch, session.resume, rooms, cfg.limits(), ref
        )
        self._reply(session.peer, welcome, out)

    def _hello_again(self, session: Session, hello: Hello, now: float, out: list[Output]) -> None:
        # A client that thought the broker was gone (it was only slow) says hello
        # again on the same connection: welcome it to the session it still has.
        if fold(hello.nick) != session.nick_key:
            raise ProtocolError(
                ErrorCode.ALREADY_REGISTERED, f"already registered as {session.nick}"
            )
        self._welcome(session, hello.id, out)

    def _stale(self, session: Session, now: float, out: list[Output]) -> None:
        # Another key on this routing id: libzmq gives an id to one connection at
        # a time, so the session's own connection is gone. The newcomer is a
        # stranger; it must never act as (or be sent what is meant for) the session.
        log.warning("%s: another key presented its routing id; session ended", session.nick)
        self.counters.drops["key_mismatch"] += 1
        self._drop(session, LeaveReason.TIMEOUT, None, now, out)

    def _drop(
        self,
        session: Session,
        reason: LeaveReason,
        message: str | None,
        now: float,
        out: list[Output],
    ) -> None:
        for room in list(session.rooms.values()):
            self.rooms.exit(session, room, reason, message, now, out)
        # The client may come back and resend what it thinks was lost: ids stay a while.
        self.registry.remove(session, reason, now)
        self.in_flight.forget(session.peer)
        if self.shared is not None:
            self.shared.release(session.nick_key, session.resume)
        self.counters.leaves[reason] += 1
        log.info("%s left (%s)", session.nick, reason)

    def _nick(self, session: Session, nick: Nick, now: float, out: list[Output]) -> None:
        new_key = fold(nick.nick)
        holder = self.registry.by_nick.get(new_key)
        if holder is not None and holder is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"{nick.nick} is in use")
        self._refuse_look_alike(nick.nick, new_key, session, session.key)
        owner = self.store.owner(new_key)
        if owner is not None and owner != session.key:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"{nick.nick} belongs to another key")
        old = session.nick
        if nick.nick == old:
            self._reply(session.peer, NickChanged(old, old, now, re=nick.id), out)
            return
        old_key = session.nick_key
        if self.shared is not None and new_key != old_key:
            self.shared.claim(new_key, nick.nick, session.resume, None, session.key, session.rooms)
        self.registry.rename(session, nick.nick, new_key)
        if session.key is not None and owner is None:
            self.store.set_owner(new_key, session.key)
            self.store.claim_skeleton(skeleton(nick.nick), nick.nick, session.key)
        room: Room
        for room in session.rooms.values():
            event = NickChanged(old, nick.nick, now, room.name, room.seq + 1)
            self.rooms.publish(room, event, out)
        if self.shared is not None and new_key != old_key:
            self.shared.release(old_key, session.resume)
        self._reply(session.peer, NickChanged(old, nick.nick, now, re=nick.id), out)
