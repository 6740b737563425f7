"""The install: a wheel built where a C compiler works runs the hot modules compiled; one
built without (``CC=/bin/false``) or with ``ZCHAT_PURE=1`` is pure Python and works the same.
At run time ``ZCHAT_PURE=1`` chooses the Python sources, and so do edited sources.

The wheels are built without build isolation (no network: hatchling, mypy and setuptools
come from the dev install) and unpacked, not installed, next to a copy of nothing else:
the checkout is not on their path."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import zchat.broker.core
from zchat import native

ROOT = Path(__file__).resolve().parent.parent
#: This run was asked for the pure path (CI's second run).
PURE = os.environ.get(native.PURE_ENV, "0") not in ("", "0")
#: The wheels are the same in both runs: they are built in the compiled run only.
builds = pytest.mark.skipif(PURE, reason="the install is the same for both runs: built once")
#: A say through the broker's core: the bytes it publishes are the same on both paths.
CONVERSATION = """
import json, zchat
from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig
from zchat.protocol import pack
core = BrokerCore(BrokerConfig(), now=1.0, new_token=lambda: "t")
core.receive(b"p", pack({"type": "hello", "v": 1, "nick": "ann", "rooms": ["lobby"]}), 1.0)
out = core.receive(b"p", pack({"type": "say", "room": "lobby", "text": "hi", "id": "m1"}), 2.0)
print(json.dumps({
    "path": zchat.native.describe(),
    "from": zchat.broker.core.__file__,
    "out": [o.data.hex() for o in out],
}))
"""


def build(tmp_path: Path, **env: str) -> Path:
    """Build a wheel of the checkout into ``tmp_path`` and unpack it; the unpacked root."""
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-cache-dir", "-q", "-w", str(wheels), str(ROOT)]
    done = subprocess.run(
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (site / "wheel-name").write_text(wheel.name)
    return site


def run_from(site: Path, **env: str) -> dict[str, object]:
    """The conversation above, importing zchat from ``site``, not from the checkout."""
    code = f"import sys; sys.path.insert(0, {str(site)!r})\n{CONVERSATION}"
    done = subprocess.run(
        [sys.executable, "-I", "-c", code],
        env={**os.environ, **env},
        cwd=site,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def reference() -> list[str]:
    """What this process's zchat (the dev install) publishes for the conversation."""
    done = subprocess.run(
        [sys.executable, "-c", CONVERSATION], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: list[str] = json.loads(done.stdout)["out"]
    return out


@builds
@pytest.mark.timeout(600)
def test_a_wheel_built_with_a_compiler_runs_compiled(tmp_path: Path, reference: list[str]) -> None:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler here")
    site = build(tmp_path)
    assert not (site / "wheel-name").read_text().endswith("-py3-none-any.whl")
    compiled = sorted(p.name.split(".")[0] for p in (site / "zchat").rglob("*.so"))
    recorded = json.loads((site / "zchat" / "_compiled.json").read_text())["modules"]
    assert compiled == sorted(["hot__mypyc", *(m.rsplit(".", 1)[1] for m in recorded)])
    ran = run_from(site)
    assert ran["path"] == f"compiled (mypyc, {len(recorded)} modules)"
    assert str(ran["from"]).startswith(str(site))
    assert str(ran["from"]).endswith(".so")
    assert ran["out"] == reference
    pure = run_from(site, ZCHAT_PURE="1")
    assert pure["path"] == "pure Python (ZCHAT_PURE is set)"
    assert str(pure["from"]).endswith("core.py")
    assert pure["out"] == reference
    # An edited source (an editable install's checkout): its stale compiled twin must not run.
    with (site / "zchat" / "ratelimit.py").open("a") as source:
        source.write("# edited\n")
    edited = run_from(site)
    why = "sources changed since compiled: zchat.ratelimit; reinstall"
    assert edited["path"] == f"pure Python ({why})"
    assert str(edited["from"]).endswith("core.py")
    assert edited["out"] == reference


@builds
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"CC": "/bin/false"}, "no compiler"),
        ({"ZCHAT_PURE": "1"}, "pure asked for"),
    ],
)
def test_a_wheel_built_without_a_compiler_is_pure_and_works(
    tmp_path: Path, reference: list[str], env: dict[str, str], why: str
) -> None:
    site = build(tmp_path, **env)
    assert (site / "wheel-name").read_text().endswith("-py3-none-any.whl"), why
    assert list((site / "zchat").rglob("*.so")) == []
    assert not (site / "zchat" / "_compiled.json").exists()
    ran = run_from(site)
    assert ran["path"] == "pure Python (not compiled at install)"
    assert str(ran["from"]).startswith(str(site))
    assert str(ran["from"]).endswith("core.py")
    assert ran["out"] == reference


def test_this_process_runs_the_path_it_was_asked_for() -> None:
    """CI runs the suite twice: as installed (compiled), and with ZCHAT_PURE=1."""
    origin = zchat.broker.core.__file__ or ""
    if not native.MANIFEST.exists():
        pytest.skip("this install was not compiled: one path only")
    recorded = set(json.loads(native.MANIFEST.read_text())["modules"])
    if PURE:
        assert origin.endswith(".py")
        assert native.describe() == "pure Python (ZCHAT_PURE is set)"
        assert native.compiled() == ()
    else:
        # All the recorded modules or none (they call each other natively).
        assert set(native.compiled()) == recorded
        assert origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        assert native.describe() == f"compiled (mypyc, {len(recorded)} modules)"
