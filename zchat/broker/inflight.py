"""A session's commands that wait behind its says in flight (cluster mode). Pure.

On a cluster node a ``say`` is published when Redis has run the batch it came in,
so its outcome comes back later (``BrokerCore.said``). A session's later commands
must not overtake it: a later ``say`` may follow it into the same or the next
batch (one connection to Redis keeps their order); anything else waits here, in
arrival order, until the session has nothing in flight. Its rate-limit token was
paid on arrival.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from zchat.broker.sessions import Sessions
from zchat.broker.shared import Said
from zchat.broker.state import Counters, Output, Session
from zchat.errors import ProtocolError
from zchat.protocol.commands import Command, Say
from zchat.protocol.events import Ack, Event


class InFlight:
    def __init__(self) -> None:
        #: Says sent to Redis and not yet answered, per routing id.
        self.says: dict[bytes, int] = {}
        #: Commands that arrived after them, in order.
        self.held: dict[bytes, deque[Command]] = {}

    def __len__(self) -> int:
        return sum(self.says.values())

    def must_wait(self, peer: bytes, command: Command) -> bool:
        if peer in self.held:
            return True
        return peer in self.says and not isinstance(command, Say)

    def hold(self, peer: bytes, command: Command) -> None:
        self.held.setdefault(peer, deque()).append(command)

    def sent(self, peer: bytes) -> None:
        self.says[peer] = self.says.get(peer, 0) + 1

    def done(self, peer: bytes) -> bool:
        """One say of ``peer`` was answered; True if nothing of it is in flight now."""
        left = self.says.get(peer, 0) - 1
        if left > 0:
            self.says[peer] = left
            return False
        self.says.pop(peer, None)
        return True

    def next(self, peer: bytes) -> Command | None:
        """The first held command of ``peer`` if it may run now (removed), else None."""
        held = self.held.get(peer)
        if not held or (peer in self.says and not isinstance(held[0], Say)):
            return None
        command = held.popleft()
        if not held:
            del self.held[peer]
        return command

    def forget(self, peer: bytes) -> None:
        """The session ended: what it had in flight is answered to no one."""
        self.says.pop(peer, None)
        self.held.pop(peer, None)


class InOrder:
    """Mixin of :class:`~zchat.broker.core.BrokerCore` on a cluster node: each command
    of a session runs after its says in flight, and their outcomes are answered."""

    registry: Sessions
    counters: Counters
    in_flight: InFlight
    _run_now: dict[type, Callable[[Session, Any, float, list[Output]], None]]

    if TYPE_CHECKING:

        def _clock(self, now: float) -> float: ...

        def _reply(self, peer: bytes, event: Event, out: list[Output]) -> None: ...

        def _error(
            self,
            peer: bytes,
            session: Session | None,
            exc: ProtocolError,
            ref: str | None,
            now: float,
            out: list[Output],
        ) -> None: ...

    def said(self, outcomes: Iterable[Said], now: float) -> list[Output]:
        """A cluster node's says came back from Redis: answer a refusal or a resent
        copy (a published one is confirmed by its ``msg``), then run what waited."""
        now = self._clock(now)
        out: list[Output] = []
        for said in outcomes:
            session = self.registry.by_peer.get(said.peer)
            if session is None or session.resume != said.resume:
                continue  # the session ended meanwhile: no one to answer
            if said.error is not None:
                self._error(session.peer, session, said.error, said.ref, now, out)
            else:
                room = session.rooms.get(said.room)
                if room is not None and said.seq > room.seq:
                    room.seq = said.seq
                if said.dup:
                    # Published before, through this broker or another of the cluster.
                    assert said.ref is not None
                    self.counters.duplicates += 1
                    self._reply(session.peer, Ack(said.ref, said.room, said.seq, dup=True), out)
                else:
                    self.counters.messages += 1
                if said.ref is not None:
                    self.registry.remember(session, said.ref, said.room, said.seq)
            if self.in_flight.done(session.peer):
                self._release(session, now, out)
        return out

    def _in_order(
        self, run: Callable[[Session, Any, float, list[Output]], None]
    ) -> Callable[[Session, Any, float, list[Output]], None]:
        def in_order(session: Session, command: Command, now: float, out: list[Output]) -> None:
            if self.in_flight.must_wait(session.peer, command):
                self.in_flight.hold(session.peer, command)
            else:
                run(session, command, now, out)

        return in_order

    def _release(self, session: Session, now: float, out: list[Output]) -> None:
        """Run the commands that waited behind the session's says, until one is a say
        that is in flight in its turn (or the session ends)."""
        while (command := self.in_flight.next(session.peer)) is not None:
            try:
                self._run_now[type(command)](session, command, now, out)
            except ProtocolError as exc:
                self._error(session.peer, session, exc, command.id, now, out)
