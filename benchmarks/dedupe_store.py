"""The cost of keeping ``say`` ids in a ``--db`` store: the broker core alone, one nick
saying 20,000 messages with ids, committed every 100, with and without the stored ids.

Run: ``python -m benchmarks.dedupe_store``. Prints microseconds per ``say``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from zchat.broker.core import BrokerCore
from zchat.broker.sqlite import SqliteStore
from zchat.broker.state import BrokerConfig
from zchat.protocol import pack

SAYS = 20_000


class _NoSaidStore(SqliteStore):
    def remember_said(self, nick_key: str, id: str, room: str, seq: int, window: int) -> None:
        pass


def per_say(store_type: type[SqliteStore]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = store_type(Path(tmp) / "chat.db", 500)
        core = BrokerCore(BrokerConfig(rate_limit=0), store=store, now=1.0)
        hello = {"type": "hello", "v": 1, "nick": "Ann", "rooms": ["lobby"]}
        core.receive(b"a", pack(hello), 1.0)
        frames = [
            pack({"type": "say", "room": "lobby", "text": "hello", "id": f"x-{n}"})
            for n in range(SAYS)
        ]
        started = time.perf_counter()
        for n, frame in enumerate(frames):
            core.receive(b"a", frame, 2.0)
            if n % 100 == 99:
                store.flush()
        store.flush()
        elapsed = time.perf_counter() - started
        store.close()
    return elapsed / SAYS * 1e6


def main() -> None:
    for _ in range(3):
        with_ids, without = per_say(SqliteStore), per_say(_NoSaidStore)
        print(f"say with id, --db: {with_ids:.1f} us; without stored ids: {without:.1f} us")


if __name__ == "__main__":
    main()
