"""Which path runs: the hot modules as compiled by mypyc at install time, or their Python.

A normal install compiles the broker's hot modules (hatch_build.py) and records
them, with a hash of each source, in ``_compiled.json`` beside this file. Where no
compiler was found, or ``ZCHAT_PURE=1`` was set at install time, nothing is
recorded and everything runs as Python. At run time the Python sources are used
instead of the compiled modules when

- ``ZCHAT_PURE`` is set to anything but ``0`` (one install serves both paths: CI
  runs the suite twice, the benchmarks measure both), or
- any recorded source changed since it was compiled (an editable install whose
  files were edited: the stale compiled code would silently shadow the edit).

The modules of one build call each other natively, so it is all of them or none.
The choice is made once, when this module is imported (first thing in
``zchat/__init__.py``, before any of them is); :func:`describe` says which path runs
(``zchat --version``, the broker's start line).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: Written by hatch_build.py: {"modules": {name: sha256 of the source it compiled}}.
MANIFEST = Path(__file__).with_name("_compiled.json")
#: Set (not to "0") to run the Python sources although compiled modules are installed.
PURE_ENV = "ZCHAT_PURE"

_why_pure: str | None = None
_recorded: dict[str, str] = {}


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules' ``.py`` files, passing over the compiled ones beside them
    (the default finder tries extension modules first)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names or path is None:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.isfile(source):
                # A ``.py`` location gets the source loader.
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def _source(name: str) -> Path:
    return Path(__file__).parent.parent.joinpath(*name.split(".")).with_suffix(".py")


def _changed(modules: dict[str, str]) -> list[str]:
    changed = []
    for name, digest in modules.items():
        try:
            current = hashlib.sha256(_source(name).read_bytes()).hexdigest()
        except OSError:
            current = None
        if current != digest:
            changed.append(name)
    return changed


def _setup() -> None:
    """Decide the path, before any compiled module is imported."""
    global _why_pure, _recorded
    try:
        manifest = json.loads(MANIFEST.read_text())
        _recorded = dict(manifest["modules"])
    except (OSError, ValueError, KeyError, TypeError):
        _why_pure = "not compiled at install"
        return
    if os.environ.get(PURE_ENV, "0") not in ("", "0"):
        _why_pure = f"{PURE_ENV} is set"
    elif changed := _changed(_recorded):
        _why_pure = f"sources changed since compiled: {', '.join(changed)}; reinstall"
    if _why_pure is not None:
        sys.meta_path.insert(0, _SourcesFirst(list(_recorded)))


def compiled() -> tuple[str, ...]:
    """The zchat modules this process runs (or will run) compiled: () on the pure path."""
    found = []
    for name in _recorded:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            found.append(name)
    return tuple(found)


def describe() -> str:
    """One line: ``compiled (mypyc, 7 modules)`` or ``pure Python (why)``."""
    modules = compiled()
    if modules:
        return f"compiled (mypyc, {len(modules)} modules)"
    return f"pure Python ({_why_pure or 'no compiled module found'})"


_setup()
