"""Where room state and history live: the ``Store`` interface, in memory (the default)
and in SQLite (``zchat broker --db PATH``).

SQLite writes are batched: the broker calls :meth:`Store.flush` after each
drained batch, so one commit covers many events. WAL mode keeps readers
(a backup, ``sqlite3`` at the shell) from blocking the broker.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections import OrderedDict, deque
from pathlib import Path
from typing import Protocol

log = logging.getLogger("zchat.broker")


class Store(Protocol):
    """Where room state and history live: memory, or SQLite (:class:`SqliteStore`)."""

    epoch: str
    #: True if what is appended survives a restart (the broker then commits
    #: each batch before sending it).
    durable: bool

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

    def flush(self) -> None: ...


#: Nicks one key may own at a time; claiming one more gives up its oldest.
NICKS_PER_KEY = 10


class MemoryStore:
    """History in memory: a bounded deque per room, lost on restart."""

    durable = False

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

    def flush(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0, topic TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL, seq INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (nick TEXT PRIMARY KEY, key TEXT NOT NULL);
"""


class SqliteStore:
    durable = True

    def __init__(self, path: Path | str, history: int, nicks_per_key: int = NICKS_PER_KEY) -> None:
        # One thread at a time, but not always the one that opened it (a broker
        # built in one thread may serve in another).
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._history = history
        self._nicks_per_key = nicks_per_key
        row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            self.epoch = secrets.token_hex(8)
            self._db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = str(row[0])
        self._dirty = False
        self._seqs: dict[str, int] = {}
        self._db.execute("BEGIN")

    def room_state(self, room: str) -> tuple[int, str] | None:
        row = self._db.execute("SELECT seq, topic FROM rooms WHERE room=?", (room,)).fetchone()
        pending = self._seqs.get(room)
        if row is None:
            return (pending, "") if pending is not None else None
        return (pending if pending is not None else int(row[0]), str(row[1]))

    def append(self, room: str, seq: int, envelope: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO events VALUES (?, ?, ?)", (room, seq, envelope))
        self._seqs[room] = seq
        self._dirty = True

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT envelope FROM events WHERE room=? AND seq>? AND seq<?"
            " ORDER BY seq DESC LIMIT ?",
            (room, after, before if before is not None else 2**62, limit),
        ).fetchall()
        return [bytes(r[0]) for r in reversed(rows)]

    def set_topic(self, room: str, topic: str) -> None:
        self._db.execute(
            "INSERT INTO rooms (room, topic) VALUES (?, ?) "
            "ON CONFLICT(room) DO UPDATE SET topic=excluded.topic",
            (room, topic),
        )
        self._dirty = True

    def forget(self, room: str) -> None:
        pass  # durable: the room is read back from disk when it is used again

    def owner(self, nick_key: str) -> str | None:
        row = self._db.execute("SELECT key FROM owners WHERE nick=?", (nick_key,)).fetchone()
        return str(row[0]) if row else None

    def set_owner(self, nick_key: str, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?)", (nick_key, key))
        # A key past its quota gives up its own oldest claims (rowids grow with
        # each insert), never another key's: no key can evict someone's nick.
        self._db.execute(
            "DELETE FROM owners WHERE key=? AND rowid NOT IN"
            " (SELECT rowid FROM owners WHERE key=? ORDER BY rowid DESC LIMIT ?)",
            (key, key, self._nicks_per_key),
        )
        self._dirty = True

    def flush(self) -> None:
        """Commit the batch: room seqs, and history trimmed to the last ``history`` events."""
        if not self._dirty:
            return
        for room, seq in self._seqs.items():
            self._db.execute(
                "INSERT INTO rooms (room, seq) VALUES (?, ?) "
                "ON CONFLICT(room) DO UPDATE SET seq=excluded.seq",
                (room, seq),
            )
            self._db.execute(
                "DELETE FROM events WHERE room=? AND seq<=?", (room, seq - self._history)
            )
        self._seqs.clear()
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._dirty = False

    def close(self) -> None:
        self.flush()
        self._db.execute("COMMIT")
        self._db.close()
