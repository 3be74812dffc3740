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


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], object]) -> None:
    """``write(tmp_path)`` then rename onto ``path``; the temp file is removed on failure.
    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), not
    the temp file's private 0600, so colleagues on a shared server can read a run's files."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_link(src: str, path: str) -> bool:
    """Make ``path`` a hard link to the file ``src`` (atomically: a link under a temp name,
    then a rename). A later `atomic_write` of either name replaces that name only, so
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
    except pickle.UnpicklingError:
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
        raise ValueError(f"cannot read checkpoint {path}: {_what_it_is(path)}") from None
    except Exception:  # truncated zip archives, foreign files
        raise ValueError(f"cannot read checkpoint {path}: {_what_it_is(path)}") from None


def _what_it_is(path: str) -> str:
    """Why a file is no checkpoint, in our words (torch's own text advises
    ``weights_only=False``, which is exactly what a file of unknown origin must not get)."""
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        return "a zip archive that torch.load cannot read (truncated, or not written by torch.save)"
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        return f"truncated ({size} bytes; the zip archive torch.save writes has no end)"
    return (f"not a PyTorch checkpoint ({size} bytes, starting {head!r}); expected a file written by "
            "torch.save (.pth / .pt) or a .safetensors file")  # fmt: skip
