"""What the broker's core shows without changing anything: counts, the ``stats``
snapshot, and the consistency check the property tests run. Part of
:class:`~zchat.broker.core.BrokerCore` (a mixin). Pure: no zmq, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zchat.broker.rooms import Rooms
from zchat.broker.sessions import Sessions
from zchat.broker.state import BrokerConfig, Counters
from zchat.broker.store import Store
from zchat.protocol.names import skeleton


class Views:
    config: BrokerConfig
    store: Store
    counters: Counters
    rooms: Rooms
    registry: Sessions
    #: Counters kept outside the core (the ZAP handler's refusals), merged into
    #: ``snapshot``; set by whoever runs the broker.
    extra_stats: Callable[[], dict[str, int]] | None

    if TYPE_CHECKING:

        @property
        def epoch(self) -> str: ...

    @property
    def sessions(self) -> int:
        return len(self.registry)

    def nick_of(self, peer: bytes) -> str | None:
        session = self.registry.by_peer.get(peer)
        return session.nick if session else None

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges, as sent in a ``stats`` reply."""
        c = self.counters
        return {
            "epoch": self.epoch,
            "sessions": len(self.registry),
            "rooms": sum(1 for r in self.rooms.rooms.values() if r.members),
            "envelopes_in": c.envelopes_in,
            "messages": c.messages,
            "published": c.published,
            "replies": c.replies,
            "registrations": c.registrations,
            "duplicates": c.duplicates,
            "health_checks": c.health_checks,
            "errors": dict(c.errors),
            "drops": dict(c.drops),
            "leaves": dict(c.leaves),
            "unsaved": self.store.unsaved,
            **(self.extra_stats() if self.extra_stats is not None else {}),
        }

    def check_invariants(self) -> None:
        """Raise AssertionError if the tables disagree (used by property tests)."""
        sessions = self.registry.by_peer
        assert len(self.registry.by_nick) == len(sessions)
        assert set(self.registry.closing) <= set(sessions)
        assert len(self.registry.by_skeleton) == len(sessions)
        for peer, session in sessions.items():
            assert session.peer == peer
            assert self.registry.by_nick[session.nick_key] is session
            assert self.registry.by_skeleton[session.skeleton] is session
            assert session.skeleton == skeleton(session.nick)
            assert len(session.rooms) <= self.config.max_rooms_per_session
            for name, room in session.rooms.items():
                assert self.rooms.rooms[name] is room
                assert room.members[peer] is session
        for name, room in self.rooms.rooms.items():
            for peer in room.members:
                assert name in sessions[peer].rooms
            assert (name in self.rooms.idle) == (not room.members)
