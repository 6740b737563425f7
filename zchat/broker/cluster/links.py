"""A cluster node's says and lease renewals, sent to Redis from the broker's loop.

The says of a drained batch go out as one write per Redis server (a pipeline);
their replies are read when the server's socket, polled beside the ROUTER,
becomes readable. Nothing waits: a batch's outcome is collected by :meth:`Links.pump`
on a later turn of the loop. A say Redis refused, or whose link failed, comes
back ``unavailable`` with the reason; the node then refuses says until a lease
renewal gets through, so a later say cannot overtake a refused one.

On a Redis Cluster each room's keys live in one slot (hash tags): a say goes to
the primary that holds its room's slot, so one room's says keep their order. A
failure refreshes the slot map before the next command.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import hiredis

from zchat.broker.cluster.engine import Engine, Renewal, Unavailable
from zchat.broker.cluster.leases import FAILURES
from zchat.broker.cluster.link import WRITE, Link, Replies
from zchat.broker.cluster.records import Append
from zchat.broker.shared import Said
from zchat.errors import ProtocolError
from zchat.protocol.names import ErrorCode

#: Keys whose server is remembered (a Redis Cluster): rooms and lease keys.
_ROUTES = 10_000


@dataclass(frozen=True, slots=True)
class SaysDone:
    outcomes: list[Said]
    #: Why Redis refused the batch (its outcomes carry ``unavailable``), or None.
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Renewed:
    renewal: Renewal | None
    failure: str | None = None


Done = SaysDone | Renewed


def refused() -> ProtocolError:
    return ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")


class Links:
    """The node's connections for says and renewals: one per Redis server used."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float]) -> None:
        self.engine = engine
        self._clock = clock
        self._server = engine.server
        self._cluster = self._server.cluster
        setup: list[tuple[Any, ...]] = []
        if self._server.auth is not None:
            setup.append(self._server.auth)
        if self._server.db:
            setup.append(("SELECT", self._server.db))
        setup += [("SCRIPT", "LOAD", source) for source in engine.scripts.values()]
        self._setup = setup
        self._links: dict[tuple[str, int], Link] = {}
        self._routes: dict[str, Link] = {}
        #: Outcomes collected since the last :meth:`pump`.
        self._done: list[Done] = []
        #: Redis refused a command (not a lost link): start every link afresh.
        self._restart = False
        #: A Redis Cluster's slot map may be out of date (a command failed).
        self._stale = False

    # ------------------------------------------------------------ the loop's side

    def polls(self) -> list[tuple[int, int]]:
        """(fd, events) for the loop's poller."""
        out = []
        for link in self._links.values():
            fd = link.fileno()
            if fd is not None:
                out.append((fd, link.events))
        return out

    def pump(self, events: Mapping[Any, int]) -> list[Done]:
        """Write where the poller found room, read what arrived, fail what timed out;
        the outcomes. ``events``: what the loop's poller reported, by fd."""
        for link in list(self._links.values()):
            happened = events.get(link.fileno(), 0)
            if happened:
                link.handle(happened)
            link.check()
        if self._restart:
            self._restart = False
            for link in self._links.values():
                link.fail("restarted after Redis refused a command")
        done, self._done = self._done, []
        return done

    @property
    def busy(self) -> bool:
        return any(link.busy for link in self._links.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every reply owed has come (their outcomes wait for :meth:`pump`);
        False after ``timeout``."""
        deadline = self._clock() + timeout
        while self.busy:
            left = deadline - self._clock()
            if left <= 0:
                return False
            poller = select.poll()
            for fd, events in self.polls():
                poller.register(fd, select.POLLIN | (select.POLLOUT if events & WRITE else 0))
            poller.poll(left * 1000)
            for link in list(self._links.values()):
                link.write()
                link.read()
        return True

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._routes.clear()

    # ------------------------------------------------------------ commands

    def says(self, batch: Sequence[tuple[Said, Append]]) -> None:
        """Append ``batch``'s says; a :class:`SaysDone` follows from :meth:`pump`."""
        replies = Replies(len(batch), lambda r: self._says_done(batch, r))
        self._send([self.engine.append_command(a, self.engine.epoch) for _, a in batch], replies)

    def renew(self) -> None:
        """Renew the node's lease; a :class:`Renewed` follows from :meth:`pump`."""
        fresh, commands = self.engine.renewal_commands()
        self._send(commands, Replies(len(commands), lambda r: self._renewed(fresh, r)))

    def _send(self, commands: Sequence[tuple[str, Sequence[Any]]], replies: Replies) -> None:
        try:
            if self._stale:
                self._routes.clear()
                self.engine.client.nodes_manager.initialize()
                self._stale = False
            routed = [(self._link_for(key), command) for key, command in commands]
        except (*FAILURES, OSError) as exc:
            lost = Unavailable(f"no route to the Redis Cluster's slots: {exc}")
            for index in range(len(commands)):
                replies.put(index, lost)
            return
        used: dict[int, Link] = {}
        for index, (link, command) in enumerate(routed):
            link.send(command, replies, index)
            used[id(link)] = link
        for link in used.values():
            link.write()

    def _link_for(self, key: str) -> Link:
        if not self._cluster:
            address = self._server.address
        else:
            link = self._routes.get(key)
            if link is not None:
                return link
            node = self.engine.client.get_node_from_key(key)
            address = (node.host, int(node.port))
        link = self._links.get(address)
        if link is None:
            host, port = address
            timeout = self.engine.timeout
            link = Link(host, port, setup=self._setup, timeout=timeout, clock=self._clock)
            self._links[address] = link
        if self._cluster:
            if len(self._routes) >= _ROUTES:
                self._routes.clear()
            self._routes[key] = link
        return link

    # ------------------------------------------------------------ replies

    def _failed(self, reply: Exception) -> str:
        if isinstance(reply, hiredis.ReplyError):
            # NOSCRIPT (a SCRIPT FLUSH), MOVED (a resharding), OOM...: new connections
            # load the scripts again and a fresh slot map routes them.
            self._restart = True
        self._stale = self._cluster
        return str(reply)

    def _says_done(self, batch: Sequence[tuple[Said, Append]], replies: Replies) -> None:
        outcomes: list[Said] = []
        failure: str | None = None
        for (said, _), reply in zip(batch, replies.values, strict=True):
            if isinstance(reply, Exception):
                failure = failure or self._failed(reply)
                outcomes.append(replace(said, error=refused()))
            else:
                status, seq, _ = reply
                # Built directly: dataclasses.replace costs more than the rest of this loop.
                outcomes.append(
                    Said(said.peer, said.resume, said.room, said.ref, int(seq), status == b"dup")
                )
        self._done.append(SaysDone(outcomes, failure))

    def _renewed(self, fresh: str, replies: Replies) -> None:
        for reply in replies.values:
            if isinstance(reply, Exception):
                self._done.append(Renewed(None, self._failed(reply)))
                return
        self._done.append(Renewed(self.engine.renewed(fresh, replies.values)))
