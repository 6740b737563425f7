"""Build hook: the broker's hot modules compiled with mypyc, or pure Python where that fails.

hatchling runs it for every wheel, editable or not (``[tool.hatch.build.targets.wheel.
hooks.custom]`` in pyproject.toml). It copies ``zchat/`` to a temporary directory and
compiles ``HOT`` there with mypyc and the C compiler setuptools finds (``CC``), so
the checkout is only written to by an editable install, which needs the compiled
modules beside the sources. Any failure (no compiler, no Python headers, a mypyc
error) is reported and the wheel is built pure: ``pip install .`` works everywhere.
``ZCHAT_PURE=1`` at install time asks for the pure wheel. What was compiled is
recorded in ``zchat/_compiled.json`` for ``zchat.native``, which picks the path at
run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The modules compiled, chosen by measurement (docs/benchmarks.md, "Compiled"): what a
#: ``say`` and a ``ping`` run through, from the frame to the outputs. The event and
#: command classes stay Python: the fast path builds neither, and clients subclass them;
#: so does the store (the cluster's store subclasses ``MemoryStore``), and so do
#: ``BrokerCore``'s mixins (mypyc compiles no class with several bases).
HOT = (
    "zchat/ratelimit.py",
    "zchat/protocol/names.py",
    "zchat/protocol/wire.py",
    "zchat/broker/state.py",
    "zchat/broker/sessions.py",
    "zchat/broker/rooms.py",
    "zchat/broker/core.py",
)
#: The library every compiled module shares (``zchat/hot__mypyc.*.so``).
GROUP = "zchat.hot"
MANIFEST = "zchat/_compiled.json"
PURE_ENV = "ZCHAT_PURE"

_SETUP = """\
from mypyc.build import mypycify
from setuptools import setup

setup(
    name="zchat-hot",
    ext_modules=mypycify(
        ["--ignore-missing-imports", *{modules!r}], opt_level="3", group_name={group!r}
    ),
)
"""


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _artifacts(root: Path) -> list[Path]:
    """What an editable build left in the checkout."""
    found = [p for p in (root / "zchat").rglob("*.so") if p.is_file()]
    return [*found, *([root / MANIFEST] if (root / MANIFEST).exists() else [])]


def compile_hot(root: Path, work: Path) -> dict[str, Path]:
    """Compile ``HOT`` from a copy of ``root/zchat`` in ``work``: {path in the wheel: file}.

    Raises ``RuntimeError`` with the compiler's output if anything fails.
    """
    source = work / "src"
    shutil.copytree(
        root / "zchat", source / "zchat", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    (source / "setup.py").write_text(_SETUP.format(modules=list(HOT), group=GROUP))
    lib = work / "lib"
    command = [sys.executable, "setup.py", "build_ext", "--build-lib", str(lib)]
    command += ["--build-temp", str(work / "tmp")]
    done = subprocess.run(
        command, cwd=source, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if done.returncode != 0:
        # The last line says what failed (the compiler's error, or a missing compiler).
        lines = done.stdout.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(lines[-1][-500:])
    built = {p.relative_to(lib).as_posix(): p for p in lib.rglob("*.so")}
    expected = {_module(path) for path in HOT}
    got = {name.split(".", 1)[0].replace("/", ".") for name in built}
    if not expected <= got:
        raise RuntimeError(f"mypyc built {sorted(got)}, not {sorted(expected)}")
    manifest = work / "_compiled.json"
    # The copy that was compiled, not the checkout: a file saved meanwhile shows as changed.
    modules = {_module(p): hashlib.sha256((source / p).read_bytes()).hexdigest() for p in HOT}
    manifest.write_text(json.dumps({"modules": modules}, indent=1) + "\n")
    built[MANIFEST] = manifest
    return built


class CompileHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        editable = version == "editable"
        if editable:
            # Whatever an earlier editable build compiled is stale or unwanted now.
            for path in _artifacts(root):
                path.unlink()
        if os.environ.get(PURE_ENV, "0") not in ("", "0"):
            self.app.display_info(f"zchat: {PURE_ENV} is set, building pure Python")
            return
        self._work = Path(tempfile.mkdtemp(prefix="zchat-mypyc-"))
        try:
            built = compile_hot(root, self._work)
        except Exception as exc:
            self.app.display_warning(
                f"zchat: the hot modules were not compiled, installing pure Python ({exc})"
            )
            return
        if editable:
            for relative, path in built.items():
                shutil.copy2(path, root / relative)
        else:
            build_data["force_include"].update({str(p): r for r, p in built.items()})
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"zchat: compiled {len(HOT)} hot modules with mypyc")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
