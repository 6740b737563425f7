"""The seam between the broker's pure core and state shared with other brokers.

A single broker has none (``shared=None``): the core allocates each room's seq,
publishes and answers from its own tables, as it always has. A cluster node
(``zchat.broker.cluster.node``) plugs in here: room events get their seq from
Redis, rosters and history come from Redis, nicks are claimed cluster-wide.
Implementations raise ``ProtocolError`` (``unavailable``, ``nick_taken``) to refuse.

A ``say`` is the one command whose outcome comes back later: the node sends a
drained batch of them to Redis at once, and hands the core each outcome as a
:class:`Said` (``BrokerCore.said``). Pure: this module only names the interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from zchat.broker.state import Output, Room, Session
from zchat.errors import ProtocolError
from zchat.protocol.events import DirectMessage, Message, RoomEvent, RoomInfo


@dataclass(frozen=True, slots=True)
class Said:
    """What became of a ``say`` handed to :meth:`Shared.say`."""

    peer: bytes
    #: The session's resume token: the routing id may carry another session by then.
    resume: str
    room: str
    ref: str | None
    #: The seq it was published at (or, if ``dup``, had been published at before).
    seq: int = 0
    dup: bool = False
    #: Not stored and not published (``unavailable``).
    error: ProtocolError | None = None


class Shared(Protocol):
    def say(self, session: Session, room: Room, message: Message) -> None:
        """Queue ``message`` (its ``seq`` is ignored) to be published; its outcome comes
        back as a :class:`Said`. Raises ``ProtocolError`` (``unavailable``) if it is
        refused at once (Redis down, too much waiting)."""

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
        """Send a direct message to a session on another node; False if no one holds
        the nick. Raises ``ProtocolError`` (``unavailable``) if it cannot be delivered."""
