"""The broker's session table: who is registered, by connection and by nick, and what
outlives a session for a while (its rate bucket, its message ids). Pure: no zmq, no clock."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from zchat.broker.state import BrokerConfig, Session
from zchat.broker.store import Store
from zchat.protocol.names import LeaveReason, skeleton
from zchat.ratelimit import TokenBucket

#: say id -> (room, seq) of what it published.
RecentIds = OrderedDict[str, tuple[str, int]]


class Sessions:
    def __init__(self, config: BrokerConfig, store: Store, now: float) -> None:
        self.config = config
        self.store = store
        # Whoever was registered when a durable broker stopped is not now.
        store.release_all_said(now + config.dedupe_ttl)
        # Ordered by last activity, so expiry only looks at the front.
        self.by_peer: OrderedDict[bytes, Session] = OrderedDict()
        self.by_nick: dict[str, Session] = {}
        #: Sessions by the skeleton of their nick (UTS #39), for refusing look-alikes.
        self.by_skeleton: dict[str, Session] = {}
        #: Message ids of nicks that left without ``bye``, until they expire.
        self.orphan_ids: OrderedDict[str, tuple[float, RecentIds]] = OrderedDict()
        # Rate buckets of ended sessions, by key (or peer without CURVE), so that
        # bye and hello again does not start a flooder over with a full bucket.
        self.buckets: OrderedDict[str | bytes, TokenBucket] = OrderedDict()
        #: Sessions whose connection closed: peer -> when they leave, soonest first.
        self.closing: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self.by_peer)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.by_peer.values()))

    def seen(self, peer: bytes, now: float) -> Session | None:
        """The peer's session, marked alive at ``now`` (any envelope shows life)."""
        session = self.by_peer.get(peer)
        if session is not None:
            session.last_seen = now
            self.by_peer.move_to_end(peer)
        return session

    def silent_since(self, deadline: float) -> Iterator[Session]:
        """Sessions silent since ``deadline``, oldest first (safe to drop while iterating)."""
        while self.by_peer:
            session = next(iter(self.by_peer.values()))
            if session.last_seen >= deadline:
                return
            yield session

    def closed(self, peer: bytes, due: float) -> None:
        """The peer's connection closed: its session leaves at ``due`` (grace is constant,
        so insertion order is due order)."""
        if peer in self.by_peer and peer not in self.closing:
            self.closing[peer] = due

    def closed_by(self, now: float) -> Iterator[Session]:
        """Sessions whose connection closed and whose grace is over (safe to drop meanwhile)."""
        while self.closing:
            peer, due = next(iter(self.closing.items()))
            if due > now:
                return
            del self.closing[peer]
            session = self.by_peer.get(peer)
            if session is not None:
                yield session

    def expire_ids(self, now: float) -> None:
        while self.orphan_ids:
            _, (expires, _) = next(iter(self.orphan_ids.items()))
            if expires > now:
                return
            self.orphan_ids.popitem(last=False)
        self.store.expire_said(now)

    def remember(self, session: Session, id: str, room: str, seq: int) -> None:
        """``session`` published ``id`` as ``seq`` in ``room``: a resend is a duplicate."""
        window = self.config.dedupe_window
        session.recent[id] = (room, seq)
        if len(session.recent) > window:
            session.recent.popitem(last=False)
        self.store.remember_said(session.nick_key, id, room, seq, window)

    def look_alike(self, nick: str, nick_key: str) -> Session | None:
        """The session of another nick that ``nick`` looks like, if any."""
        holder = self.by_skeleton.get(skeleton(nick))
        return holder if holder is not None and holder.nick_key != nick_key else None

    def old_bucket(self, ident: str | bytes) -> TokenBucket | None:
        return self.buckets.get(ident)

    def add(self, session: Session, ident: str | bytes) -> None:
        self.buckets.pop(ident, None)
        orphan = self.orphan_ids.pop(session.nick_key, None)
        stored = self.store.claim_said(session.nick_key)
        if orphan is not None:
            session.recent = orphan[1]
        else:
            session.recent.update((id, (room, seq)) for id, room, seq in stored)
            while len(session.recent) > self.config.dedupe_window:
                session.recent.popitem(last=False)
        self.by_peer[session.peer] = session
        self.by_nick[session.nick_key] = session
        self.by_skeleton[session.skeleton] = session

    def rename(self, session: Session, nick: str, nick_key: str) -> None:
        del self.by_nick[session.nick_key]
        del self.by_skeleton[session.skeleton]
        self.store.rename_said(session.nick_key, nick_key)
        session.nick = nick
        session.nick_key = nick_key
        session.skeleton = skeleton(nick)
        self.by_nick[nick_key] = session
        self.by_skeleton[session.skeleton] = session

    def remove(self, session: Session, reason: LeaveReason, now: float) -> None:
        """Forget ``session``; keep its bucket, and its ids if it may come back and resend."""
        cfg = self.config
        del self.by_peer[session.peer]
        del self.by_nick[session.nick_key]
        self.closing.pop(session.peer, None)
        del self.by_skeleton[session.skeleton]
        if cfg.rate_limit > 0:
            ident = session.key if session.key is not None else session.peer
            self.buckets[ident] = session.bucket
            self.buckets.move_to_end(ident)
            while len(self.buckets) > cfg.max_clients:
                self.buckets.popitem(last=False)
        if reason is not LeaveReason.QUIT and session.recent:
            self.orphan_ids[session.nick_key] = (now + cfg.dedupe_ttl, session.recent)
            while len(self.orphan_ids) > cfg.max_clients:
                self.orphan_ids.popitem(last=False)
            self.store.release_said(session.nick_key, now + cfg.dedupe_ttl)
        else:
            self.store.release_said(session.nick_key, None)
