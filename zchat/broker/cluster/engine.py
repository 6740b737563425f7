"""The Redis engine: a room's seq, history, roster and topic, say ids, nick
registrations and CURVE owners, node leases and the clean-up after a dead node,
all shared by the brokers of one cluster. Works on one Redis or a Redis Cluster.

Every call is one network round trip (a pipeline for a batch), and every Redis
failure comes out as :class:`Unavailable`, so the caller can answer its client
with a typed error instead of acknowledging something that was not stored.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry

from zchat.broker.cluster import keys, scripts
from zchat.errors import ZchatError

log = logging.getLogger("zchat.broker.cluster")

Client = redis.Redis | redis.cluster.RedisCluster

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


#: What redis-py raises when Redis fails; a cluster client's own errors are not RedisErrors.
_FAILURES = (RedisError, RedisClusterException)


class Unavailable(ZchatError):
    """Redis did not answer (down, slow past the socket timeout, or refusing)."""


@dataclass(frozen=True, slots=True)
class Append:
    """One event for a room: Redis gives it the next seq, stores and publishes it.

    ``op`` says what else changes with it: ``join``/``leave`` the roster entry
    ``member`` (a nick fold; ``value`` is the entry), ``nick`` renames ``member`` to
    ``new_member``, ``topic`` sets the topic to ``value``; ``say`` and ``event``
    change nothing else. A ``leave`` with ``only_node`` happens only if that node
    still holds the member (the clean-up after a dead node).
    """

    room: str
    head: bytes
    op: str
    member: str = ""
    value: str = ""
    say_id: str | None = None
    only_node: str = ""
    new_member: str = ""


@dataclass(frozen=True, slots=True)
class Appended:
    #: ``ok``, ``dup`` (the say id was published before, at ``seq``), ``moved``
    #: (a join re-pointed the roster, nothing published) or ``skip`` (nothing to do).
    status: str
    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class RoomState:
    epoch: str | None
    seq: int
    topic: str
    nicks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    epoch: str | None
    top: int
    envelopes: list[bytes]


@dataclass(frozen=True, slots=True)
class RoomDelivery:
    """An event some node appended, as every subscribed node receives it."""

    room: str
    seq: int
    op: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class DirectDelivery:
    """A direct message for a session on this node."""

    nick_key: str
    envelope: bytes


Delivery = RoomDelivery | DirectDelivery


@dataclass(frozen=True, slots=True)
class Renewal:
    #: Redis lost its data (restarted without persistence, flushed, failed over to an
    #: empty replica): every room starts over in a new epoch, as after a broker restart.
    epoch_changed: bool
    #: This node's lease ran out before it was renewed (another node may clean up
    #: after it, if it sees that first).
    lapsed: bool
    #: Another node cleaned up after this one (published its sessions' leaves and
    #: freed their nicks): its sessions must register again.
    reaped: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """A direct message published for the node holding its recipient."""

    node: str
    #: That node's subscription received it. False: the node is gone (died, or cut
    #: off from Redis) and the message is lost; its sender must be told.
    delivered: bool


@dataclass(frozen=True, slots=True)
class Claim:
    ok: bool
    #: When ``ok``: the node that held the nick before ("" if it was free); else the holder.
    node: str


def member_value(node: str, nick: str) -> str:
    return f"{node}\n{nick}"


#: Longest wait for one Redis reply: what a rare command (join, who, history...)
#: can cost the broker's loop when Redis stalls, once per ``RETRY_AFTER``.
TIMEOUT = 0.5


def connect(url: str, *, timeout: float = TIMEOUT) -> Client:
    """A client for ``redis://HOST:PORT/DB``: a cluster client if the server is in a cluster."""
    # No retries inside redis-py (its default is 10, with backoff): the broker's loop
    # must not wait; a failed call is answered unavailable and the node probes again.
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    single = redis.Redis.from_url(url, **options)
    try:
        info = single.info("cluster")
    except _FAILURES as exc:
        single.close()
        raise Unavailable(f"no Redis at {url}: {exc}") from None
    if not info.get("cluster_enabled"):
        return single
    single.close()
    try:
        return redis.cluster.RedisCluster.from_url(url, **options)
    except _FAILURES as exc:
        raise Unavailable(f"no Redis Cluster at {url}: {exc}") from None


class Engine:
    """One node's view of the shared state. Not thread-safe: one thread calls it."""

    def __init__(
        self,
        client: Client,
        node: str,
        *,
        history: int = 500,
        lease: float = 5.0,
        say_ttl: float = 300.0,
    ) -> None:
        if not _NODE_ID.fullmatch(node):
            raise ValueError(f"a node id is 1-64 of A-Z a-z 0-9 _ . - (got {node!r})")
        # redis-py's reply types are unions of everything a command could return:
        # the replies are checked where they are read instead.
        self.client: Any = client
        self.node = node
        #: The client's socket timeout: the longest one call waits.
        self.timeout: float = _timeout_of(client)
        self.history = history
        self.lease_ms = int(lease * 1000)
        self.say_ttl_ms = int(say_ttl * 1000)
        self._sources = {
            "append": scripts.APPEND,
            "claim": scripts.CLAIM_NICK,
            "release": scripts.RELEASE_NICK,
            "direct": scripts.DIRECT,
        }
        self._sha: dict[str, str] = {}
        self._pubsub: Any = None
        self._channels: set[str] = set()
        self._early: list[dict[str, Any]] = []
        self.epoch = ""

    def twin(self) -> Engine:
        """Another engine for this node on the same client, for another thread (an
        engine is not thread-safe; redis-py's clients are)."""
        twin = Engine(
            self.client,
            self.node,
            history=self.history,
            lease=self.lease_ms / 1000,
            say_ttl=self.say_ttl_ms / 1000,
        )
        twin.epoch = self.epoch
        return twin

    # ------------------------------------------------------------ plumbing

    def _load(self) -> None:
        # On a Redis Cluster, SCRIPT LOAD goes to every primary.
        for name, source in self._sources.items():
            self._sha[name] = str(self.client.script_load(source))

    def _run(self, fill: Callable[[Any], None]) -> list[Any]:
        """One pipeline round trip; scripts are (re)loaded if Redis lost them."""
        try:
            if not self._sha:
                self._load()
            for attempt in (1, 2):
                pipe = self.client.pipeline(transaction=False)
                fill(pipe)
                try:
                    return list(pipe.execute())
                except NoScriptError:
                    # Redis restarted (or SCRIPT FLUSH): load and run the batch once more.
                    # Scripts that did run were not NOSCRIPT; only a fully failed batch
                    # is retried, so nothing runs twice.
                    if attempt == 2:
                        raise
                    self._load()
        except _FAILURES as exc:
            raise Unavailable(str(exc) or type(exc).__name__) from None
        raise AssertionError("unreachable")

    def _script(self, pipe: Any, name: str, keys_: Sequence[str], args: Sequence[Any]) -> None:
        # As a raw command: the cluster pipeline blocks its evalsha method but routes
        # EVALSHA by its keys all the same.
        pipe.execute_command("EVALSHA", self._sha[name], len(keys_), *keys_, *args)

    # ------------------------------------------------------------ epoch and leases

    def start(self) -> str:
        """Adopt the cluster's epoch (writing a new one if Redis has none) and take a lease."""
        self.renew()
        return self.epoch

    def renew(self) -> Renewal:
        """Renew this node's lease (call at least every third of it) and read the epoch."""
        fresh = secrets.token_hex(8)

        def fill(pipe: Any) -> None:
            pipe.set(keys.EPOCH, fresh, nx=True, get=True)
            pipe.set(keys.node_lease(self.node), "1", px=self.lease_ms, get=True)
            pipe.zadd(keys.NODES, {self.node: 0}, nx=True)

        old_epoch, old_lease, added = self._run(fill)
        epoch = old_epoch.decode() if isinstance(old_epoch, bytes) else fresh
        first = not self.epoch
        renewal = Renewal(
            epoch_changed=not first and epoch != self.epoch,
            lapsed=not first and old_lease is None,
            reaped=not first and bool(added),
        )
        self.epoch = epoch
        return renewal

    def leave_cluster(self) -> None:
        """A clean stop: no lease, no session records, nothing left to reap."""

        def fill(pipe: Any) -> None:
            pipe.delete(keys.node_lease(self.node))
            pipe.delete(keys.node_sessions(self.node))
            pipe.zrem(keys.NODES, self.node)

        self._run(fill)

    def dead_nodes(self) -> list[str]:
        """Nodes that were seen and whose lease has run out."""
        try:
            nodes = [n.decode() for n in self.client.zrange(keys.NODES, 0, -1)]
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        others = [n for n in nodes if n != self.node]
        if not others:
            return []

        def fill(pipe: Any) -> None:
            for node in others:
                pipe.exists(keys.node_lease(node))

        alive = self._run(fill)
        return [node for node, up in zip(others, alive, strict=True) if not up]

    def reap(self, dead: str, make_leave: Callable[[str, str], bytes]) -> list[Appended]:
        """Clean up after a dead node, if this node wins the claim: one ``leave``
        (built by ``make_leave(room, nick)``) per session and room that did not come
        back elsewhere, and its nicks freed. Returns what was appended ([] if another
        node has the claim)."""
        try:
            won = self.client.set(keys.node_reap(dead), self.node, nx=True, px=self.lease_ms)
            if not won:
                return []
            if self.client.exists(keys.node_lease(dead)):
                # It renewed its lease since it was found dead: it is alive after all.
                self.client.delete(keys.node_reap(dead))
                return []
            records = self.client.hgetall(keys.node_sessions(dead))
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        appends: list[Append] = []
        releases: list[tuple[str, str]] = []
        for fold_b, packed in records.items():
            nick, resume, rooms = msgpack.unpackb(packed)
            fold = fold_b.decode()
            for room in rooms:
                appends.append(
                    Append(room, make_leave(room, nick), "leave", member=fold, only_node=dead)
                )
            releases.append((fold, resume))
        done = self.append(appends)

        def fill(pipe: Any) -> None:
            for fold, resume in releases:
                self._script(pipe, "release", [keys.nick_key(fold)], [dead, resume])
            pipe.delete(keys.node_sessions(dead))
            pipe.zrem(keys.NODES, dead)
            # Done: another run finds nothing left to do (every step is conditional).
            pipe.delete(keys.node_reap(dead))

        self._run(fill)
        log.info("reaped node %s: %d sessions", dead, len(releases))
        return [a for a in done if a.status == "ok"]

    # ------------------------------------------------------------ sessions and nicks

    def claim_nick(
        self, fold: str, nick: str, resume: str, *, given: str = "", key: str = "", dead: str = ""
    ) -> Claim:
        def fill(pipe: Any) -> None:
            args = [self.node, nick, resume, given, key, dead]
            self._script(pipe, "claim", [keys.nick_key(fold)], args)

        ((status, node),) = self._run(fill)
        return Claim(status == b"ok", node.decode())

    def release_nick(self, fold: str, resume: str) -> bool:
        def fill(pipe: Any) -> None:
            self._script(pipe, "release", [keys.nick_key(fold)], [self.node, resume])

        (freed,) = self._run(fill)
        return bool(freed)

    def holder(self, fold: str) -> str | None:
        """The node a nick is registered on, or None."""
        try:
            node = self.client.hget(keys.nick_key(fold), "node")
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        return node.decode() if isinstance(node, bytes) else None

    def record_session(self, fold: str, nick: str, resume: str, rooms: Sequence[str]) -> None:
        """What the clean-up needs if this node dies: the session's nick, token and rooms."""
        packed = msgpack.packb([nick, resume, list(rooms)])
        self._run(lambda pipe: pipe.hset(keys.node_sessions(self.node), fold, packed))

    def take_session(self, node: str, fold: str) -> tuple[str, list[str]] | None:
        """Remove another node's record of a session (taken over here): (nick, rooms)."""

        def fill(pipe: Any) -> None:
            pipe.hget(keys.node_sessions(node), fold)
            pipe.hdel(keys.node_sessions(node), fold)

        packed, _ = self._run(fill)
        if packed is None:
            return None
        nick, _, rooms = msgpack.unpackb(packed)
        return str(nick), [str(r) for r in rooms]

    def forget_session(self, fold: str) -> None:
        self._run(lambda pipe: pipe.hdel(keys.node_sessions(self.node), fold))

    def owner(self, fold: str) -> str | None:
        try:
            value = self.client.get(keys.owner_key(fold))
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        return value.decode() if isinstance(value, bytes) else None

    def set_owner(self, fold: str, key: str) -> str:
        """Claim ``fold`` for ``key`` unless another key has it; the owner after."""

        def fill(pipe: Any) -> None:
            pipe.set(keys.owner_key(fold), key, nx=True)
            pipe.get(keys.owner_key(fold))

        _, value = self._run(fill)
        return str(value.decode())

    # ------------------------------------------------------------ rooms

    def append(self, batch: Sequence[Append]) -> list[Appended]:
        """Allocate, store and publish every event of ``batch`` in one round trip."""
        if not batch:
            return []
        epoch = self.epoch or secrets.token_hex(8)

        def fill(pipe: Any) -> None:
            for a in batch:
                meta, hist, members = keys.room_keys(a.room)
                said = keys.said_key(a.room, a.member, a.say_id) if a.say_id else meta
                args = [
                    a.head,
                    epoch,
                    self.history,
                    a.op,
                    a.member,
                    a.value,
                    self.say_ttl_ms,
                    keys.room_channel(a.room),
                    a.only_node,
                    a.new_member,
                    "1" if a.say_id else "",
                ]
                self._script(pipe, "append", [meta, hist, members, said], args)

        return [
            Appended(status.decode(), int(seq), room_epoch.decode())
            for status, seq, room_epoch in self._run(fill)
        ]

    def room(self, room: str) -> RoomState:
        meta, _, members = keys.room_keys(room)

        def fill(pipe: Any) -> None:
            pipe.hmget(meta, "epoch", "top", "topic")
            pipe.hvals(members)

        (epoch, top, topic), values = self._run(fill)
        nicks = tuple(v.decode().partition("\n")[2] for v in values)
        return RoomState(
            epoch.decode() if epoch else None,
            int(top or 0),
            topic.decode() if topic else "",
            nicks,
        )

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> HistoryPage:
        """The latest ``limit`` envelopes with after < seq < before, oldest first."""
        meta, hist, _ = keys.room_keys(room)
        high = "+" if before is None else f"{before - 1}-0"
        empty = limit <= 0 or (before is not None and before <= after + 1)

        def fill(pipe: Any) -> None:
            pipe.hmget(meta, "epoch", "top")
            if not empty:
                pipe.xrevrange(hist, max=high, min=f"{after + 1}-0", count=limit)

        replies = self._run(fill)
        epoch, top = replies[0]
        entries = [] if empty else replies[1]
        envelopes = [fields[b"e"] for _, fields in reversed(entries)]
        return HistoryPage(epoch.decode() if epoch else None, int(top or 0), envelopes)

    def direct(self, fold: str, envelope: bytes) -> Sent | None:
        """Send a direct message to the node holding ``fold`` (None: no one holds it).
        Two round trips: the holder, then the publication on its channel."""
        holder = self.holder(fold)
        if holder is None:
            return None
        payload = fold.encode() + b"\n" + envelope

        def fill(pipe: Any) -> None:
            lease = keys.node_lease(holder)
            self._script(pipe, "direct", [lease], [keys.node_channel(holder), payload])

        (reached,) = self._run(fill)
        return Sent(holder, int(reached) > 0)

    # ------------------------------------------------------------ subscriptions

    def _subscriber(self) -> Any:
        if self._pubsub is None:
            self._pubsub = self.client.pubsub()
            self._pubsub.subscribe(keys.node_channel(self.node))
            self._await_confirmations(self._pubsub, {keys.node_channel(self.node)})
        return self._pubsub

    def subscribe(self, rooms: Sequence[str]) -> None:
        """Receive the rooms' events; returns once Redis confirmed the subscription,
        after which nothing published to them is missed."""
        wanted = {keys.room_channel(r) for r in rooms} - self._channels
        try:
            pubsub = self._subscriber()
            if wanted:
                pubsub.subscribe(*wanted)
                self._channels.update(wanted)
                self._await_confirmations(pubsub, set(wanted))
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None

    def _await_confirmations(self, pubsub: Any, channels: set[str]) -> None:
        # Messages that arrive before the last confirmation are kept, in order.
        while channels:
            message = pubsub.get_message(timeout=self.lease_ms / 1000)
            if message is None:
                raise Unavailable("no subscription confirmation from Redis")
            if message["type"] == "subscribe":
                channels.discard(message["channel"].decode())
            elif message["type"] == "message":
                self._early.append(message)

    def resubscribe(self, rooms: Sequence[str]) -> None:
        """A fresh subscription connection (after Redis was away), to ``rooms``."""
        if self._pubsub is not None:
            # The old connection is likely broken already: that is why we are here.
            with contextlib.suppress(*_FAILURES):
                self._pubsub.close()
        self._pubsub = None
        self._channels.clear()
        self._early.clear()
        self.subscribe(rooms)

    def fileno(self) -> int | None:
        """The subscription connection's socket, to poll beside the broker's own."""
        try:
            pubsub = self._subscriber()
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        sock = getattr(getattr(pubsub, "connection", None), "_sock", None)
        return sock.fileno() if sock is not None else None

    def unsubscribe(self, rooms: Sequence[str]) -> None:
        channels = [keys.room_channel(r) for r in rooms if keys.room_channel(r) in self._channels]
        if not channels or self._pubsub is None:
            return
        try:
            self._pubsub.unsubscribe(*channels)
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        self._channels.difference_update(channels)

    def deliveries(self, limit: int = 1000, timeout: float = 0.0) -> list[Delivery]:
        """What arrived from Redis for this node, in order; waits ``timeout`` for the first."""
        out: list[Delivery] = []
        try:
            pubsub = self._subscriber()
            while len(out) < limit:
                if self._early:
                    message = self._early.pop(0)
                else:
                    message = pubsub.get_message(timeout=timeout if not out else 0.0)
                if message is None:
                    break
                if message.get("type") != "message":
                    continue
                delivery = _parse(message["channel"], message["data"])
                if delivery is not None:
                    out.append(delivery)
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        return out

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        self.client.close()


def _timeout_of(client: Client) -> float:
    if isinstance(client, redis.cluster.RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    timeout = kwargs.get("socket_timeout")
    return float(timeout) if timeout is not None else TIMEOUT


def _parse(channel: bytes, data: bytes) -> Delivery | None:
    name = channel.decode()
    room = keys.channel_room(name)
    if room is not None:
        seq, op, envelope = data.split(b":", 2)
        return RoomDelivery(room, int(seq), op.decode(), envelope)
    if name.endswith("}:dm"):
        fold, _, envelope = data.partition(b"\n")
        return DirectDelivery(fold.decode(), envelope)
    log.warning("message on an unknown channel %r", name[:80])
    return None
