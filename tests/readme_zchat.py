"""Stands in for ``.venv/bin/zchat`` while tests/test_readme.py runs the README's blocks.

It runs the real command, with two changes so that no fixed port is needed: a
broker binds ports of the kernel's choosing (port 0) and records, under the
directory ``README_ENDPOINTS`` names, which endpoints it got for the router
port the README wrote; any other command waits for that record and talks to
those endpoints instead of the ones written.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

LISTENING = re.compile(r"broker listening: router (\S+), pub (\S+),")
WRITTEN_PORT = re.compile(r"tcp://[^:/\s]+:(\d+)$")
DEFAULT_PORT = "5555"
WAIT = 30.0


def written_port(args: list[str]) -> str:
    """The router port the README means: the last --router given, else the default."""
    port = DEFAULT_PORT
    for flag, value in itertools.pairwise(args):
        if flag == "--router" and (found := WRITTEN_PORT.search(value)):
            port = found.group(1)
    return port


def without_endpoints(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in {"--router", "--pub"}:
            skip = True
        else:
            out.append(arg)
    return out


def main() -> int:
    records = Path(os.environ.pop("README_ENDPOINTS"))
    args = sys.argv[1:]
    real = [sys.executable, "-m", "zchat"]
    command = args[0] if args else ""
    if command == "broker":
        record = records / written_port(args)
        bind = ["--router", "tcp://127.0.0.1:0", "--pub", "tcp://127.0.0.1:0"]
        proc = subprocess.Popen([*real, *without_endpoints(args), *bind], stderr=subprocess.PIPE)
        assert proc.stderr is not None
        for raw in proc.stderr:
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            if found := LISTENING.search(raw.decode(errors="replace")):
                partial = record.with_suffix(".partial")
                partial.write_text(f"{found.group(1)} {found.group(2)}")
                partial.rename(record)
        return proc.wait()
    if command == "web":
        # The page's port too is the kernel's choice (8080 may be taken here).
        args = [*args, "--listen", "127.0.0.1:0"]
    if command in {"client", "bot", "ping", "stats", "web"}:
        record = records / written_port(args)
        deadline = time.monotonic() + WAIT
        while not record.exists():
            if time.monotonic() > deadline:
                print(f"readme_zchat: no broker for port {record.name}", file=sys.stderr)
                return 99
            time.sleep(0.05)
        router, pub = record.read_text().split()
        os.environ["ZCHAT_ROUTER"] = router
        os.environ["ZCHAT_PUB"] = pub
        args = without_endpoints(args)
    return subprocess.call([*real, *args])


if __name__ == "__main__":
    sys.exit(main())
