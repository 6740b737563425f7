"""The README's shell blocks, pasted in order into one fresh shell, work.

The blocks run in a temporary directory by one ``bash -e``, with real processes;
``.venv/bin/zchat`` there is ``tests/readme_zchat.py``, the real command with
brokers on kernel-chosen ports (the README's fixed ones may be taken on a
shared machine). Installing is the one step not run: this test's own
environment stands in for the ``.venv`` the first block makes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q ."
#: Blocks not run here, each with where it is checked instead.
ELSEWHERE = {
    "docker compose": "tests/test_compose.py runs the compose file's services",
    "python -m pytest": "the test suite itself",
    "python -m benchmarks": "benchmarks/, not a test",
}
WRITTEN_PORT = re.compile(r"tcp://[^:/\s]+:(\d+)")


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)


def runnable() -> list[str]:
    blocks = []
    for block in sh_blocks():
        if not any(marker in block for marker in ELSEWHERE):
            blocks.append(block)
    return blocks


def commands(block: str) -> list[list[str]]:
    """Each command line of a block (continuations joined, comments dropped) as words."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_every_block_is_run_or_checked_elsewhere() -> None:
    blocks = sh_blocks()
    skipped = [m for m in ELSEWHERE if any(m in block for block in blocks)]
    assert skipped == list(ELSEWHERE), "a marker no longer matches: update ELSEWHERE"
    assert len(runnable()) == len(blocks) - len(ELSEWHERE)


def test_blocks_call_the_installed_command_by_its_path() -> None:
    # A fresh shell has no activated venv: a bare `zchat` is "command not found".
    for block in runnable():
        for words in commands(block):
            for i, word in enumerate(words):
                if word == "zchat" and (i == 0 or words[i - 1] in {"&&", "||", ";", "&"}):
                    pytest.fail(f"bare zchat in {' '.join(words)!r}")


def test_no_nick_is_used_twice_on_one_broker() -> None:
    # The first block's client may still be open when the next blocks are pasted.
    nicks: dict[str, list[str]] = defaultdict(list)
    for block in runnable():
        for words in commands(block):
            if "zchat" not in " ".join(words) or "--nick" not in words:
                continue
            nick = words[words.index("--nick") + 1]
            port = "5555"
            if "--router" in words:
                found = WRITTEN_PORT.search(words[words.index("--router") + 1])
                assert found is not None
                port = found.group(1)
            nicks[port].append(nick.casefold())
    for port, used in nicks.items():
        assert len(used) == len(set(used)), f"port {port}: {used}"


@pytest.mark.timeout(120)
def test_readme_blocks_run_in_order_in_one_shell(tmp_path: Path) -> None:
    blocks = runnable()
    assert blocks[0].startswith(INSTALL), "the first block installs"
    script = "\n".join([blocks[0].replace(INSTALL, ": installed", 1), *blocks[1:]])
    (tmp_path / "readme.sh").write_text(script, encoding="utf-8")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    shim = venv_bin / "zchat"
    shim.write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
        f'{shlex.quote(str(ROOT / "tests" / "readme_zchat.py"))} "$@"\n'
    )
    shim.chmod(0o755)
    records = tmp_path / "endpoints"
    records.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZCHAT_")}
    env.update(
        README_ENDPOINTS=str(records),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    # Files, not pipes: the background processes keep their copy of stdout open.
    with (tmp_path / "out").open("w") as stdout, (tmp_path / "err").open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-e", "readme.sh"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=90)
        finally:
            # The brokers and the answering bot stay in the background, as in a shell.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    out = (tmp_path / "out").read_text()
    err = (tmp_path / "err").read_text()
    said = f"stdout:\n{out}\nstderr:\n{err}"
    assert proc.returncode == 0, said
    assert out.count("connected as Batman") == 2, said  # the plain broker, then CURVE
    assert re.search(r"<Alfred> Robin: \d{4}-\d\d-\d\d", out), said  # !time answered
    assert "healthy" in out.splitlines(), said
    assert "broker listening" in (tmp_path / "broker.log").read_text()
    assert "CURVE on" in (tmp_path / "curve-broker.log").read_text()
    assert not re.search("Traceback|command not found", out + err), said
