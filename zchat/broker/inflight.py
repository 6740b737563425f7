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

from zchat.protocol.commands import Command, Say


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
