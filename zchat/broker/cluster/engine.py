"""The Redis engine: a room's seq, history, roster and topic, say ids, and the
subscriptions that bring other nodes' events, shared by the brokers of one
cluster (leases, nicks and sessions are in ``leases.py``). Works on one Redis or a
Redis Cluster.

Every call is one network round trip (a pipeline for a batch), and every Redis
failure comes out as :class:`Unavailable`, so the caller can answer its client
with a typed error instead of acknowledging something that was not stored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from zchat.broker.cluster import keys, scripts
from zchat.broker.cluster.leases import FAILURES as _FAILURES
from zchat.broker.cluster.leases import Claim, Leases, Renewal
from zchat.broker.cluster.link import connection_options, server_of
from zchat.broker.cluster.records import (
    Append,
    Appended,
    Delivery,
    DirectDelivery,
    HistoryPage,
    RoomDelivery,
    RoomState,
    Sent,
    Unavailable,
    member_value,
)
from zchat.broker.cluster.subscriber import Subscriber

__all__ = [
    "TIMEOUT",
    "Append",
    "Appended",
    "Claim",
    "DirectDelivery",
    "Engine",
    "HistoryPage",
    "Renewal",
    "RoomDelivery",
    "RoomState",
    "Sent",
    "Unavailable",
    "connect",
    "member_value",
]

log = logging.getLogger("zchat.broker.cluster")

Client = redis.Redis | redis.cluster.RedisCluster

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


#: Longest wait for one Redis reply: what a rare command (join, who, history...)
#: can cost the broker's loop when Redis stalls, once per ``RETRY_AFTER``.
TIMEOUT = 0.5


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def appended(reply: Any) -> Appended:
    """The append script's reply: ``[status, seq, epoch]``."""
    status, seq, room_epoch = reply
    return Appended(status.decode(), int(seq), room_epoch.decode())


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


class Engine(Leases):
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
        #: Where the node's own connections (says, subscription) go, and how.
        self.server = server_of(client)
        #: The client's socket timeout: the longest one call waits.
        timeout = connection_options(client).get("socket_timeout")
        self.timeout = float(timeout) if timeout is not None else TIMEOUT
        self.history = history
        self.lease_ms = int(lease * 1000)
        self.say_ttl_ms = int(say_ttl * 1000)
        #: The scripts by name; Redis names each by the SHA-1 of its source.
        self.scripts = {
            "append": scripts.APPEND,
            "claim": scripts.CLAIM_NICK,
            "release": scripts.RELEASE_NICK,
            "direct": scripts.DIRECT,
        }
        self._sha = {name: _sha1(code) for name, code in self.scripts.items()}
        self._subscription: Subscriber | None = None
        self._channels: set[str] = set()
        self.epoch = ""

    # ------------------------------------------------------------ plumbing

    def _load(self) -> None:
        # On a Redis Cluster, SCRIPT LOAD goes to every primary.
        for source in self.scripts.values():
            self.client.script_load(source)

    def _run(self, fill: Callable[[Any], None]) -> list[Any]:
        """One pipeline round trip; scripts are (re)loaded if Redis lost them."""
        try:
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

    # ------------------------------------------------------------ rooms

    def append(self, batch: Sequence[Append]) -> list[Appended]:
        """Allocate, store and publish every event of ``batch`` in one round trip."""
        if not batch:
            return []
        epoch = self.epoch or secrets.token_hex(8)

        def fill(pipe: Any) -> None:
            for a in batch:
                pipe.execute_command(*self.append_command(a, epoch)[1])

        return [appended(reply) for reply in self._run(fill)]

    def append_command(self, a: Append, epoch: str) -> tuple[str, tuple[Any, ...]]:
        """The key that places ``a`` (a Redis Cluster's slot) and the command that appends it."""
        meta, hist, members = keys.room_keys(a.room)
        said = keys.said_key(a.room, a.member, a.say_id) if a.say_id else meta
        command = (
            "EVALSHA",
            self._sha["append"],
            4,
            meta,
            hist,
            members,
            said,
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
        )
        return meta, command

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

    def _subscriber(self) -> Subscriber:
        if self._subscription is None:
            server = self.server
            host, port = server.address
            if server.cluster:
                # PUBLISH reaches every node of a Redis Cluster: any one will do; this
                # is the one redis-py would pick.
                node = self.client.get_node_from_key(keys.node_channel(self.node))
                host, port = node.host, int(node.port)
            subscription = Subscriber(host, port, auth=server.auth, timeout=self.timeout)
            try:
                subscription.subscribe([keys.node_channel(self.node)])
            except Unavailable:
                subscription.close()
                raise
            self._subscription = subscription
        return self._subscription

    def subscribe(self, rooms: Sequence[str]) -> None:
        """Receive the rooms' events; returns once Redis confirmed the subscription,
        after which nothing published to them is missed."""
        wanted = {keys.room_channel(r) for r in rooms} - self._channels
        try:
            subscription = self._subscriber()
            subscription.subscribe(wanted)
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None
        self._channels.update(wanted)

    def resubscribe(self, rooms: Sequence[str]) -> None:
        """A fresh subscription connection (after Redis was away), to ``rooms``."""
        if self._subscription is not None:
            # The old connection is likely broken already: that is why we are here.
            self._subscription.close()
        self._subscription = None
        self._channels.clear()
        self.subscribe(rooms)

    def fileno(self) -> int | None:
        """The subscription connection's socket, to poll beside the broker's own."""
        try:
            return self._subscriber().fileno()
        except _FAILURES as exc:
            raise Unavailable(str(exc)) from None

    def unsubscribe(self, rooms: Sequence[str]) -> None:
        channels = [keys.room_channel(r) for r in rooms if keys.room_channel(r) in self._channels]
        if not channels or self._subscription is None:
            return
        self._subscription.unsubscribe(channels)
        self._channels.difference_update(channels)

    @property
    def buffered(self) -> bool:
        """Deliveries were read (while a subscription was confirmed) and not handed out."""
        return self._subscription is not None and self._subscription.buffered

    def deliveries(self, limit: int = 1000, timeout: float = 0.0) -> list[Delivery]:
        """What arrived from Redis for this node, in order; waits ``timeout`` for the first."""
        out: list[Delivery] = []
        subscription = self._subscriber()
        try:
            messages = subscription.messages(limit, timeout)
        except Unavailable:
            # A new connection next time (it subscribes again to what it is told).
            subscription.close()
            self._subscription = None
            self._channels.clear()
            raise
        for channel, data in messages:
            delivery = _parse(channel, data)
            if delivery is not None:
                out.append(delivery)
        return out

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self.client.close()


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
