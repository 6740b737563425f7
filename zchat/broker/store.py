"""Where room state and history live: the ``Store`` interface, in memory (the default)
and in SQLite (``zchat broker --db PATH``).

SQLite writes are batched: the broker calls :meth:`Store.flush` after each
drained batch, so one commit covers many events. WAL mode keeps readers
(a backup, ``sqlite3`` at the shell) from blocking the broker.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections import OrderedDict, deque
from pathlib import Path
from typing import Final, Protocol


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


class MemoryStore:
    """History in memory: a bounded deque per room, lost on restart."""

    durable = False

    def __init__(self, history: int, epoch: str | None = None, max_owners: int = 100_000) -> None:
        self.epoch = epoch or secrets.token_hex(8)
        self._history = history
        self._events: dict[str, deque[tuple[int, bytes]]] = {}
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._skeletons: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._max_owners = max_owners

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
        self._owners[nick_key] = key
        # Every nick ever claimed would otherwise stay in memory: forget the oldest claims.
        while len(self._owners) > self._max_owners:
            self._owners.popitem(last=False)

    def skeleton_owner(self, skeleton: str) -> tuple[str, str] | None:
        return self._skeletons.get(skeleton)

    def claim_skeleton(self, skeleton: str, nick: str, key: str) -> None:
        self._skeletons.setdefault(skeleton, (nick, key))
        while len(self._skeletons) > self._max_owners:
            self._skeletons.popitem(last=False)

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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0, topic TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL, seq INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (nick TEXT PRIMARY KEY, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owner_skeletons (
    skeleton TEXT PRIMARY KEY, nick TEXT NOT NULL, key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS said (
    nick TEXT NOT NULL, n INTEGER NOT NULL, id TEXT NOT NULL, room TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (nick, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS said_left (nick TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


#: A nick's stored say ids are trimmed to the window every this many ids, not at each one.
SAID_TRIM_EVERY: Final = 16


class SqliteStore:
    durable = True

    def __init__(self, path: Path | str, history: int) -> None:
        # One thread at a time, but not always the one that opened it (a broker
        # built in one thread may serve in another).
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._history = history
        row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            self.epoch = secrets.token_hex(8)
            self._db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = str(row[0])
        self._dirty = False
        self._seqs: dict[str, int] = {}
        #: Last ``said.n`` of each nick registered now (saves a query per say).
        self._said_last: dict[str, int] = {}
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
        self._dirty = True

    def skeleton_owner(self, skeleton: str) -> tuple[str, str] | None:
        row = self._db.execute(
            "SELECT nick, key FROM owner_skeletons WHERE skeleton=?", (skeleton,)
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def claim_skeleton(self, skeleton: str, nick: str, key: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO owner_skeletons VALUES (?, ?, ?)", (skeleton, nick, key)
        )
        self._dirty = True

    def claim_said(self, nick_key: str) -> list[tuple[str, str, int]]:
        rows = self._db.execute(
            "SELECT id, room, seq FROM said WHERE nick=? ORDER BY n", (nick_key,)
        ).fetchall()
        self._db.execute("DELETE FROM said_left WHERE nick=?", (nick_key,))
        self._dirty = True
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def remember_said(self, nick_key: str, id: str, room: str, seq: int, window: int) -> None:
        last = self._said_last.get(nick_key)
        if last is None:
            row = self._db.execute("SELECT MAX(n) FROM said WHERE nick=?", (nick_key,)).fetchone()
            last = int(row[0] or 0)
        n = self._said_last[nick_key] = last + 1
        self._db.execute("INSERT INTO said VALUES (?, ?, ?, ?, ?)", (nick_key, n, id, room, seq))
        if n % SAID_TRIM_EVERY == 0:
            self._db.execute("DELETE FROM said WHERE nick=? AND n<=?", (nick_key, n - window))
        self._dirty = True

    def rename_said(self, old: str, new: str) -> None:
        self._said_last.pop(old, None)
        self._said_last.pop(new, None)
        for table in ("said", "said_left"):
            self._db.execute(f"DELETE FROM {table} WHERE nick=?", (new,))
        self._db.execute("UPDATE said SET nick=? WHERE nick=?", (new, old))
        self._dirty = True

    def release_said(self, nick_key: str, expires: float | None) -> None:
        self._said_last.pop(nick_key, None)
        if expires is None:
            for table in ("said", "said_left"):
                self._db.execute(f"DELETE FROM {table} WHERE nick=?", (nick_key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO said_left VALUES (?, ?)", (nick_key, expires))
        self._dirty = True

    def release_all_said(self, expires: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO said_left SELECT DISTINCT nick, ? FROM said", (expires,)
        )
        self._dirty = True

    def expire_said(self, now: float) -> None:
        gone = self._db.execute(
            "DELETE FROM said WHERE nick IN (SELECT nick FROM said_left WHERE expires<=?)", (now,)
        ).rowcount
        left = self._db.execute("DELETE FROM said_left WHERE expires<=?", (now,)).rowcount
        if gone or left:
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
