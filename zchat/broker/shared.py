"""The seam between the broker's pure core and state shared with other brokers.

A single broker has none (``shared=None``): the core allocates each room's seq,
publishes and answers from its own tables, as it always has. A cluster node
(``zchat.broker.cluster.node``) plugs in here: room events get their seq from
Redis, rosters and history come from Redis, nicks are claimed cluster-wide.
Implementations raise ``ProtocolError`` (``unavailable``, ``nick_taken``) to refuse.
Pure: this module only names the interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from zchat.broker.state import Output, Room
from zchat.protocol.events import DirectMessage, RoomEvent, RoomInfo


class Shared(Protocol):
    def publish(self, room: Room, event: RoomEvent, out: list[Output]) -> tuple[int, bool]:
        """Publish ``event`` (its ``seq`` is ignored); (seq, dup): dup if its say id
        was already published, at seq. A ``leave`` or ``nick`` event is never refused
        (it is sent when Redis is back); other events may be."""

    def info(self, room: Room, ref: str | None) -> RoomInfo:
        """The room as every node sees it: seq, topic, members on all nodes."""

    def history(
        self, room: Room, after: int, before: int | None, limit: int, ref: str | None
    ) -> bytes:
        """The packed ``history`` reply, from the shared history."""

    def claim(
        self,
        nick_key: str,
        nick: str,
        resume: str,
        given: str | None,
        key: str | None,
        rooms: Iterable[str],
    ) -> None:
        """Register ``nick`` cluster-wide for a session (token ``resume``, in ``rooms``);
        ``given`` is the resume token the client presented, ``key`` its CURVE key."""

    def release(self, nick_key: str, resume: str) -> None:
        """The session (or its old nick) ended: free the nick unless it is registered
        elsewhere now. Never refuses: what Redis misses is done when it is back."""

    def direct(self, nick_key: str, event: DirectMessage) -> bool:
        """Send a direct message to a session on another node; False if there is none."""
