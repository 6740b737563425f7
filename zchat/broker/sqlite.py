"""The durable ``Store`` behind ``zchat broker --db PATH``: room state, history, nick
claims and ``say`` ids in SQLite.

Writes are batched: the broker calls :meth:`SqliteStore.flush` after each drained
batch, so one commit covers many events, and a commit that fails waits in memory
and is retried. WAL mode keeps readers (a backup, ``sqlite3`` at the shell) from
blocking the broker; a lock file keeps a second broker off the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from zchat.broker.store import NICKS_PER_KEY
from zchat.errors import StartError

log = logging.getLogger("zchat.broker")


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
SAID_TRIM_EVERY = 16
#: Say-id writes waiting for a commit while commits fail: past it the oldest are dropped
#: (ids only make resends idempotent; history and seqs are what must not be lost).
MAX_PENDING_SAID = 100_000


#: Rooms a ``--db`` file keeps (each with at most ``--history`` events).
MAX_ROOMS_ON_DISK = 10_000


class StoreInUse(StartError):
    """Another broker holds the database: two would overwrite each other's history."""


class SqliteStore:
    """History on disk. Writes wait in memory until :meth:`flush` commits them in
    one transaction; a commit that fails (a full disk, a lock held by another
    program) leaves them waiting, served from memory, and is retried a second
    later: the broker keeps serving and says what is not saved."""

    durable = True

    #: Seconds between retries of a failed commit (given a ``clock``).
    RETRY = 1.0

    def __init__(
        self,
        path: Path | str,
        history: int,
        nicks_per_key: int = NICKS_PER_KEY,
        *,
        busy_timeout: float = 0.1,
        clock: Callable[[], float] | None = None,
        max_rooms: int = MAX_ROOMS_ON_DISK,
    ) -> None:
        self._lock = _lock(Path(str(path) + ".lock"), path)
        # One thread at a time, but not always the one that opened it (a broker
        # built in one thread may serve in another). A short busy timeout: a
        # lock held elsewhere must cost the broker's loop little; the batch waits.
        try:
            self._db = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(rooms)")}
            if "used" not in columns:  # a database from before the total bound
                self._db.execute("ALTER TABLE rooms ADD COLUMN used INTEGER NOT NULL DEFAULT 0")
            self._generation = int(
                self._db.execute("SELECT coalesce(max(used), 0) FROM rooms").fetchone()[0]
            )
            row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                self.epoch = secrets.token_hex(8)
                self._db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
            else:
                self.epoch = str(row[0])
        except BaseException:
            self._lock.close()
            raise
        self._history = history
        self._nicks_per_key = nicks_per_key
        self._max_rooms = max_rooms
        self._clock = clock
        self._seqs: dict[str, int] = {}
        self._events: dict[str, deque[tuple[int, bytes]]] = {}
        self._topics: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._skeletons: dict[str, tuple[str, str]] = {}
        #: Writes of say ids and their expiry, in order, for the next commit.
        self._said_ops: deque[tuple[str, tuple[object, ...]]] = deque(maxlen=MAX_PENDING_SAID)
        #: Last ``said.n`` of each nick registered now (saves a query per say).
        self._said_last: dict[str, int] = {}
        #: Why the last commit failed; None while commits succeed.
        self.failing: str | None = None
        self._retry_at = 0.0
        self._failures = 0

    @property
    def unsaved(self) -> int:
        """Events waiting in memory for a commit (0 unless commits fail)."""
        return sum(len(events) for events in self._events.values())

    def room_state(self, room: str) -> tuple[int, str] | None:
        row = self._read("SELECT seq, topic FROM rooms WHERE room=?", (room,))
        pending = self._seqs.get(room)
        topic = self._topics.get(room, str(row[0][1]) if row else "")
        if not row:
            if pending is None and room not in self._topics:
                return None
            return (pending or 0, topic)
        return (pending if pending is not None else int(row[0][0]), topic)

    def append(self, room: str, seq: int, envelope: bytes) -> None:
        events = self._events.get(room)
        if events is None:
            # Older than the last ``history`` would be trimmed at commit anyway:
            # what waits for a commit is bounded per room, however long it fails.
            events = self._events[room] = deque(maxlen=self._history)
        events.append((seq, envelope))
        self._seqs[room] = seq

    def fetch(self, room: str, after: int, before: int | None, limit: int) -> list[bytes]:
        end = before if before is not None else 2**62
        rows = self._read(
            "SELECT seq, envelope FROM events WHERE room=? AND seq>? AND seq<?"
            " ORDER BY seq DESC LIMIT ?",
            (room, after, end, limit),
        )
        found = {int(seq): bytes(env) for seq, env in rows}
        for seq, env in self._events.get(room, ()):
            if after < seq < end:
                found[seq] = env
        return [found[seq] for seq in sorted(found)[-limit:]]

    def set_topic(self, room: str, topic: str) -> None:
        self._topics[room] = topic

    def forget(self, room: str) -> None:
        pass  # durable: the room is read back from disk when it is used again

    def owner(self, nick_key: str) -> str | None:
        pending = self._owners.get(nick_key)
        if pending is not None:
            return pending
        row = self._read("SELECT key FROM owners WHERE nick=?", (nick_key,))
        return str(row[0][0]) if row else None

    def set_owner(self, nick_key: str, key: str) -> None:
        self._owners[nick_key] = key

    def skeleton_owner(self, skeleton: str) -> tuple[str, str] | None:
        pending = self._skeletons.get(skeleton)
        if pending is not None:
            return pending
        row = self._read("SELECT nick, key FROM owner_skeletons WHERE skeleton=?", (skeleton,))
        return (str(row[0][0]), str(row[0][1])) if row else None

    def claim_skeleton(self, skeleton: str, nick: str, key: str) -> None:
        self._skeletons.setdefault(skeleton, (nick, key))

    def claim_said(self, nick_key: str) -> list[tuple[str, str, int]]:
        # What waits for a commit is older than this claim and must be read with it.
        self.flush()
        rows = self._read("SELECT id, room, seq FROM said WHERE nick=? ORDER BY n", (nick_key,))
        self._said_ops.append(("DELETE FROM said_left WHERE nick=?", (nick_key,)))
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def remember_said(self, nick_key: str, id: str, room: str, seq: int, window: int) -> None:
        last = self._said_last.get(nick_key)
        if last is None:
            row = self._read("SELECT MAX(n) FROM said WHERE nick=?", (nick_key,))
            last = int(row[0][0] or 0) if row else 0
        n = self._said_last[nick_key] = last + 1
        ops = self._said_ops
        ops.append(
            ("INSERT OR REPLACE INTO said VALUES (?, ?, ?, ?, ?)", (nick_key, n, id, room, seq))
        )
        if n % SAID_TRIM_EVERY == 0:
            ops.append(("DELETE FROM said WHERE nick=? AND n<=?", (nick_key, n - window)))

    def rename_said(self, old: str, new: str) -> None:
        self._said_last.pop(old, None)
        self._said_last.pop(new, None)
        for table in ("said", "said_left"):
            self._said_ops.append((f"DELETE FROM {table} WHERE nick=?", (new,)))
        self._said_ops.append(("UPDATE said SET nick=? WHERE nick=?", (new, old)))

    def release_said(self, nick_key: str, expires: float | None) -> None:
        self._said_last.pop(nick_key, None)
        if expires is None:
            for table in ("said", "said_left"):
                self._said_ops.append((f"DELETE FROM {table} WHERE nick=?", (nick_key,)))
        else:
            self._said_ops.append(
                ("INSERT OR REPLACE INTO said_left VALUES (?, ?)", (nick_key, expires))
            )

    def release_all_said(self, expires: float) -> None:
        self._said_ops.append(
            ("INSERT OR IGNORE INTO said_left SELECT DISTINCT nick, ? FROM said", (expires,))
        )

    def expire_said(self, now: float) -> None:
        self._said_ops.append(
            ("DELETE FROM said WHERE nick IN (SELECT nick FROM said_left WHERE expires<=?)", (now,))
        )
        self._said_ops.append(("DELETE FROM said_left WHERE expires<=?", (now,)))

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            return []

    def flush(self) -> None:
        """Commit what waits: events, room seqs and topics, nick claims; history
        trimmed to the last ``history`` events of each room. Never raises."""
        waiting = self._events, self._seqs, self._topics, self._owners, self._skeletons
        if not any(waiting) and not self._said_ops:
            return
        if self.failing is not None and self._now() < self._retry_at:
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for room, events in self._events.items():
                db.executemany(
                    "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                    [(room, seq, env) for seq, env in events],
                )
            for room, seq in self._seqs.items():
                db.execute(
                    "INSERT INTO rooms (room, seq) VALUES (?, ?) "
                    "ON CONFLICT(room) DO UPDATE SET seq=excluded.seq",
                    (room, seq),
                )
                db.execute(
                    "DELETE FROM events WHERE room=? AND seq<=?", (room, seq - self._history)
                )
            for room, topic in self._topics.items():
                db.execute(
                    "INSERT INTO rooms (room, topic) VALUES (?, ?) "
                    "ON CONFLICT(room) DO UPDATE SET topic=excluded.topic",
                    (room, topic),
                )
            self._generation += 1
            for room in {*self._seqs, *self._topics}:
                db.execute("UPDATE rooms SET used=? WHERE room=?", (self._generation, room))
            # The file is bounded in total too: past ``max_rooms`` rooms, those
            # written least recently go, with their history.
            excess = db.execute("SELECT count(*) FROM rooms").fetchone()[0] - self._max_rooms
            if excess > 0:
                db.execute(
                    "DELETE FROM events WHERE room IN"
                    " (SELECT room FROM rooms ORDER BY used LIMIT ?)",
                    (excess,),
                )
                db.execute(
                    "DELETE FROM rooms WHERE room IN"
                    " (SELECT room FROM rooms ORDER BY used LIMIT ?)",
                    (excess,),
                )
            for nick_key, key in self._owners.items():
                db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?)", (nick_key, key))
                # A key past its quota gives up its own oldest claims (rowids grow
                # with each insert), never another key's: no key evicts someone's nick.
                db.execute(
                    "DELETE FROM owners WHERE key=? AND rowid NOT IN"
                    " (SELECT rowid FROM owners WHERE key=? ORDER BY rowid DESC LIMIT ?)",
                    (key, key, self._nicks_per_key),
                )
            db.executemany(
                "INSERT OR IGNORE INTO owner_skeletons VALUES (?, ?, ?)",
                [(skeleton, nick, key) for skeleton, (nick, key) in self._skeletons.items()],
            )
            for sql, args in self._said_ops:
                db.execute(sql, args)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._failed(exc)
            return
        self._events.clear()
        self._seqs.clear()
        self._topics.clear()
        self._owners.clear()
        self._skeletons.clear()
        self._said_ops.clear()
        if self.failing is not None:
            log.warning("database writable again: history is saved again (%s before)", self.failing)
            self.failing = None
            self._failures = 0

    def _now(self) -> float:
        # Without a clock (tests), every flush retries.
        return self._clock() if self._clock is not None else float("inf")

    def _failed(self, exc: sqlite3.Error) -> None:
        self._failures += 1
        self._retry_at = self._now() + self.RETRY
        count = self._failures
        if self.failing is None or count & (count - 1) == 0:
            log.error(
                "database write failed (%s): history is kept in memory only, %d events"
                " not saved; retrying every %gs (%d failures)",
                exc,
                self.unsaved,
                self.RETRY,
                count,
            )
        self.failing = str(exc)

    def close(self) -> None:
        self._retry_at = 0.0
        self.flush()
        if self.failing is not None:
            log.error("closing with %d events not saved: %s", self.unsaved, self.failing)
        self._db.close()
        self._lock.close()


def _lock(lock_path: Path, db: Path | str) -> IO[bytes]:
    """Hold an exclusive lock next to the database for the store's life."""
    handle = open(lock_path, "ab")  # noqa: SIM115 -- held open until close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreInUse(
            f"{db} is in use by another broker (it holds {lock_path}); stop it first"
        ) from None
    return handle
