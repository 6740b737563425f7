"""Where room state and history live: the ``Store`` interface, and the in-memory store
(the default). The durable one, ``zchat broker --db PATH``, is
:class:`zchat.broker.sqlite.SqliteStore`.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict, deque
from typing import Protocol

log = logging.getLogger("zchat.broker")


class Store(Protocol):
    """Where room state and history live: memory, or SQLite (:class:`SqliteStore`)."""

    epoch: str
    #: True if what is appended survives a restart (the broker then commits
    #: each batch before sending it).
    durable: bool

    @property
    def unsaved(self) -> int:
        """Events a durable store could not save yet (kept in memory, retried)."""

    def room_state(self, room: str) -> tuple[int, str] | None:
        """(last seq, topic) of a room the store knows, else None."""

    def append(self, room: str, seq: int, envelope: bytes) -> None: ...

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        """The latest ``limit`` envelopes with after < seq < before, oldest first."""

    def set_topic(self, room: str, topic: str) -> None: ...

    def forget(self, room: str) -> None:
        """The room is empty and evicted from memory; keep it only if durable."""

    def owner(self, nick_key: str) -> str | None: ...

    def set_owner(self, nick_key: str, key: str) -> None: ...

    def skeleton_owner(self, skeleton: str) -> tuple[str, str] | None:
        """(nick as claimed, key) of the owned nick with this look-alike skeleton."""

    def claim_skeleton(self, skeleton: str, nick: str, key: str) -> None:
        """Record the skeleton of a nick just claimed (the first claim of a skeleton stays)."""

    def flush(self) -> None: ...

    # The ``say`` ids of each nick, for the dedupe window to outlive a restart. The broker
    # keeps the ids it uses in memory; a durable store keeps a copy.

    def claim_said(self, nick_key: str) -> list[tuple[str, str, int]]:
        """(id, room, seq) remembered for a nick now registered, oldest first; stops expiry."""

    def remember_said(self, nick_key: str, id: str, room: str, seq: int, window: int) -> None:
        """Remember one id, keeping the nick's last ``window``."""

    def rename_said(self, old: str, new: str) -> None: ...

    def release_said(self, nick_key: str, expires: float | None) -> None:
        """The nick left: keep its ids until ``expires``, or forget them now (None)."""

    def release_all_said(self, expires: float) -> None:
        """At start, no nick is registered: the ids of all expire at ``expires``."""

    def expire_said(self, now: float) -> None: ...


#: Nicks one key may own at a time; claiming one more gives up its oldest.
NICKS_PER_KEY = 10


class MemoryStore:
    """History in memory: a bounded deque per room, lost on restart."""

    durable = False
    unsaved = 0

    def __init__(
        self,
        history: int,
        epoch: str | None = None,
        max_owners: int = 100_000,
        nicks_per_key: int = NICKS_PER_KEY,
    ) -> None:
        self.epoch = epoch or secrets.token_hex(8)
        self._history = history
        self._events: dict[str, deque[tuple[int, bytes]]] = {}
        self._owners: dict[str, str] = {}
        #: Each key's claims, oldest first.
        self._claims: dict[str, OrderedDict[str, None]] = {}
        self._skeletons: dict[str, tuple[str, str]] = {}
        self._max_owners = max_owners
        self._nicks_per_key = nicks_per_key

    def room_state(self, room: str) -> tuple[int, str] | None:
        return None

    def append(self, room: str, seq: int, envelope: bytes) -> None:
        events = self._events.get(room)
        if events is None:
            events = self._events[room] = deque(maxlen=self._history)
        events.append((seq, envelope))

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        events = self._events.get(room, ())
        hits = [env for seq, env in events if seq > after and (before is None or seq < before)]
        return hits[-limit:]

    def set_topic(self, room: str, topic: str) -> None:
        pass

    def forget(self, room: str) -> None:
        self._events.pop(room, None)

    def owner(self, nick_key: str) -> str | None:
        return self._owners.get(nick_key)

    def set_owner(self, nick_key: str, key: str) -> None:
        claims = self._claims.setdefault(key, OrderedDict())
        if nick_key not in claims and len(self._owners) >= self._max_owners:
            # Making room would mean forgetting someone else's claim, which lets
            # a key that claims enough nicks take anyone's: the nick stays unowned.
            log.warning(
                "nick claims full (%d): %s is not bound to its key", len(self._owners), nick_key
            )
            return
        self._owners[nick_key] = key
        claims[nick_key] = None
        claims.move_to_end(nick_key)
        # A key past its quota gives up its own oldest claim, never another key's.
        while len(claims) > self._nicks_per_key:
            oldest, _ = claims.popitem(last=False)
            del self._owners[oldest]

    def skeleton_owner(self, skeleton: str) -> tuple[str, str] | None:
        return self._skeletons.get(skeleton)

    def claim_skeleton(self, skeleton: str, nick: str, key: str) -> None:
        # Full, a new skeleton goes unrecorded: evicting one would free someone's look-alike.
        if skeleton in self._skeletons or len(self._skeletons) < self._max_owners:
            self._skeletons.setdefault(skeleton, (nick, key))

    def flush(self) -> None:
        pass

    # Lost on restart anyway: the broker's own tables are the only copy.

    def claim_said(self, nick_key: str) -> list[tuple[str, str, int]]:
        return []

    def remember_said(self, nick_key: str, id: str, room: str, seq: int, window: int) -> None:
        pass

    def rename_said(self, old: str, new: str) -> None:
        pass

    def release_said(self, nick_key: str, expires: float | None) -> None:
        pass

    def release_all_said(self, expires: float) -> None:
        pass

    def expire_said(self, now: float) -> None:
        pass
