"""What the engine's calls take and give: room events to append and their outcomes,
room state, history pages, deliveries, and the one error (:class:`Unavailable`).
Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from zchat.errors import ZchatError


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
class Sent:
    """A direct message published for the node holding its recipient."""

    node: str
    #: That node's subscription received it. False: the node is gone (died, or cut
    #: off from Redis) and the message is lost; its sender must be told.
    delivered: bool


def member_value(node: str, nick: str) -> str:
    return f"{node}\n{nick}"
