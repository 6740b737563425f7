"""What the broker's core keeps: its settings, counters, sessions, rooms, and the
outputs it hands the socket adapter. Pure: no zmq, no clock."""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from zchat.protocol.events import Limits, RoomInfo
from zchat.protocol.names import (
    MAX_FRAME,
    MAX_HISTORY_LIMIT,
    MAX_NICK,
    MAX_ROOM,
    MAX_ROOMS_PER_HELLO,
    MAX_TEXT,
    fold,
    skeleton,
)
from zchat.protocol.wire import room_topic
from zchat.ratelimit import TokenBucket

#: Roster names sent in a ``welcome`` or ``who``; ``count`` always has the total.
MAX_ROSTER: int = 1000
#: Most rooms in a ``list`` reply (the busiest): a bounded reply for any number of rooms.
MAX_LIST: int = 100


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
    #: Seconds between a client's pings. Closed connections are noticed at once (the
    #: adapter's socket monitor), so heartbeats only have to catch frozen peers: a slow
    #: pace keeps 10,000 idle clients cheap (docs/benchmarks.md).
    heartbeat: float = 5.0
    #: Silent heartbeats before a session is dropped with reason ``timeout``.
    liveness: int = 3
    #: Seconds a session is kept after its connection closed (a killed client), before
    #: it leaves with reason ``timeout``: heartbeats only need to catch frozen peers.
    disconnect_grace: float = 0.25
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
    max_idle_rooms: int = 100
    #: A ``history`` reply costs one more token per this many bytes, paid after it
    #: is sent (the bucket may go into debt): what one session can make the broker
    #: queue for it is bounded in bytes per second, not only in replies.
    history_bytes_per_token: int = 65_536
    #: Rooms a ``--db`` file keeps, the least recently written forgotten first.
    db_rooms: int = 10_000
    #: Nicks one CURVE key may own at a time (claiming one more gives up its oldest).
    nicks_per_key: int = 10

    def limits(self) -> Limits:
        """The limits a ``welcome`` announces."""
        return Limits(
            text=self.text_limit,
            frame=MAX_FRAME,
            nick=MAX_NICK,
            room=MAX_ROOM,
            rooms=self.max_rooms_per_session,
            history=min(self.history, MAX_HISTORY_LIMIT),
            rate=self.rate_limit,
            burst=self.rate_burst,
        )


@dataclass(slots=True)
class Counters:
    envelopes_in: int = 0
    messages: int = 0
    published: int = 0
    replies: int = 0
    registrations: int = 0
    duplicates: int = 0
    #: Unregistered pings: health checks and clients probing a restarted broker.
    health_checks: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)


class Room:
    __slots__ = ("members", "name", "seq", "topic", "wire_topic")

    def __init__(self, name: str, seq: int = 0, topic: str = "") -> None:
        self.name = name
        self.wire_topic = room_topic(name)
        self.seq = seq
        self.topic = topic
        self.members: dict[bytes, Session] = {}

    def info(self, ref: str | None = None) -> RoomInfo:
        users = tuple(s.nick for s in list(self.members.values())[:MAX_ROSTER])
        return RoomInfo(self.name, self.seq, self.topic, users, len(self.members), ref)


class Session:
    __slots__ = (
        "bucket",
        "key",
        "last_seen",
        "nick",
        "nick_key",
        "peer",
        "recent",
        "resume",
        "rooms",
        "skeleton",
    )

    def __init__(
        self, peer: bytes, nick: str, key: str | None, resume: str, now: float, bucket: TokenBucket
    ) -> None:
        self.peer = peer
        self.nick = nick
        self.nick_key = fold(nick)
        #: The look-alike key: no two sessions with different nick keys share one.
        self.skeleton = skeleton(nick)
        self.key = key
        self.resume = resume
        self.rooms: dict[str, Room] = {}
        self.last_seen = now
        self.bucket = bucket
        #: say id -> (room, seq) of what it published, for dropping resent copies.
        self.recent: OrderedDict[str, tuple[str, int]] = OrderedDict()
