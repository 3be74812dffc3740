"""Atomic file writes: a temp file in the target's folder, then a rename, so a reader never
sees a half-written checkpoint, annotation or metrics file (and a crash leaves none)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

__all__ = ["atomic_link", "atomic_write", "load_torch_file", "write_json"]


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


def atomic_link(src: str, path: str) -> bool:
    """Make ``path`` a hard link to the file ``src`` (atomically: a link under a temp name,
    then a rename). A later :func:`atomic_write` of either name replaces that name only, so
    the other keeps its content. False where the file system has no hard links."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-link-{os.getpid()}-{os.path.basename(path)}")
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(src, tmp)
        os.replace(tmp, path)
        return True
    except OSError:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        return False


def write_json(path: str, obj: Any, indent: int | None = None) -> str:
    """``obj`` as JSON at ``path``, atomically; returns ``path``."""

    def _dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)

    atomic_write(path, _dump)
    return path


def load_torch_file(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: a file that holds more than tensors
    and plain containers (a pickle that could run code) is refused with a message that says
    what the file is not and what to do instead; a truncated or foreign file likewise."""
    import pickle

    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        # torch.save writes a zip archive; a bare pickle starts with its PROTO opcode (0x80)
        if zipfile.is_zipfile(path) or head[:1] == b"\x80":
            raise ValueError(
                f"{path} is not a plain checkpoint: it holds Python objects beyond tensors, numbers, "
                "strings and containers, which could run code when loaded, so gcnet does not load it. "
                "If you trust its source, save its state_dict with torch.save (or as .safetensors) "
                "and give that file instead"
            ) from None
        raise ValueError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint ({_first_line(e)})"
        ) from None
    except Exception as e:  # truncated zip archives, foreign files
        raise ValueError(
            f"cannot read checkpoint {path}: truncated or not a PyTorch file ({_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
