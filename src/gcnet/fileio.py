"""Atomic file writes: a temp file in the target's folder, then a rename, so a reader never
sees a half-written checkpoint, annotation or metrics file (and a crash leaves none)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["atomic_write", "write_json"]


def atomic_write(path: str, write: Callable[[str], object]) -> None:
    """``write(tmp_path)`` then rename onto ``path``; the temp file is removed on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str, obj: Any, indent: int | None = None) -> str:
    """``obj`` as JSON at ``path``, atomically; returns ``path``."""

    def _dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)

    atomic_write(path, _dump)
    return path
