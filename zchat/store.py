"""Durable room state and history in SQLite (``zchat broker --db PATH``).

Writes are batched: the broker calls :meth:`SqliteStore.flush` after each
drained batch, so one commit covers many events. WAL mode keeps readers
(a backup, ``sqlite3`` at the shell) from blocking the broker.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

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
