"""Log set-up shared by every command: text, or one JSON object per line."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

from zchat.errors import UsageError


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``; raises :class:`UsageError` for an unknown level or format."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(f"unknown log level {level!r}")
    if log_format not in ("text", "json"):
        raise UsageError(f"unknown log format {log_format!r}: text or json")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=numeric, handlers=[handler])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, message (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii keeps hostile text (escape sequences in nicks) inert in a terminal.
        return json.dumps(entry, ensure_ascii=True, default=str)
