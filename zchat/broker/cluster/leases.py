"""The engine's calls per node and per nick: the cluster's epoch, node leases and
the clean-up after a dead node, nick registrations, CURVE owners, and each node's
session records. Part of :class:`~zchat.broker.cluster.engine.Engine` (a mixin);
the room calls (append, history, subscriptions) are in ``engine.py``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import RedisClusterException, RedisError

from zchat.broker.cluster import keys
from zchat.broker.cluster.records import Append, Appended, Unavailable

log = logging.getLogger("zchat.broker.cluster")

#: What redis-py raises when Redis fails; a cluster client's own errors are not RedisErrors.
FAILURES = (RedisError, RedisClusterException)


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
class Claim:
    ok: bool
    #: When ``ok``: the node that held the nick before ("" if it was free); else the holder.
    node: str


class Leases:
    client: Any
    node: str
    epoch: str
    lease_ms: int

    if TYPE_CHECKING:

        def _run(self, fill: Callable[[Any], None]) -> list[Any]: ...

        def _script(
            self, pipe: Any, name: str, keys_: Sequence[str], args: Sequence[Any]
        ) -> None: ...

        def append(self, batch: Sequence[Append]) -> list[Appended]: ...

    # ------------------------------------------------------------ epoch and leases

    def start(self) -> str:
        """Adopt the cluster's epoch (writing a new one if Redis has none) and take a lease."""
        self.renew()
        return self.epoch

    def renew(self) -> Renewal:
        """Renew this node's lease (call at least every third of it) and read the epoch."""
        fresh, commands = self.renewal_commands()

        def fill(pipe: Any) -> None:
            for _, command in commands:
                # redis-py's SET callback passes the old value on (SET ... GET) only
                # when told; the ZADD callback ignores the option.
                pipe.execute_command(*command, get=True)

        return self.renewed(fresh, self._run(fill))

    def renewal_commands(self) -> tuple[str, list[tuple[str, tuple[Any, ...]]]]:
        """A renewal as (key, command) pairs, and the epoch it offers if Redis has none;
        :meth:`renewed` reads the replies."""
        fresh = secrets.token_hex(8)
        lease = keys.node_lease(self.node)
        return fresh, [
            (keys.EPOCH, ("SET", keys.EPOCH, fresh, "NX", "GET")),
            (lease, ("SET", lease, "1", "PX", self.lease_ms, "GET")),
            (keys.NODES, ("ZADD", keys.NODES, "NX", 0, self.node)),
        ]

    def renewed(self, fresh: str, replies: Sequence[Any]) -> Renewal:
        old_epoch, old_lease, added = replies
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
        except FAILURES as exc:
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
        except FAILURES as exc:
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
        except FAILURES as exc:
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
        except FAILURES as exc:
            raise Unavailable(str(exc)) from None
        return value.decode() if isinstance(value, bytes) else None

    def set_owner(self, fold: str, key: str) -> str:
        """Claim ``fold`` for ``key`` unless another key has it; the owner after."""

        def fill(pipe: Any) -> None:
            pipe.set(keys.owner_key(fold), key, nx=True)
            pipe.get(keys.owner_key(fold))

        _, value = self._run(fill)
        return str(value.decode())
