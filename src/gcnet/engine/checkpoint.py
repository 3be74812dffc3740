"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``.

A training checkpoint holds the model, optimizer, scaler and EMA state dicts, the RNG
states (as tensors and plain numbers, so the safe unpickler reads them), epoch, step,
config, class names and the best metric. Weights alone go to safetensors.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gcnet.fileio import atomic_write, load_torch_file

__all__ = [
    "check_checkpoint_model",
    "load_checkpoint",
    "load_model_state",
    "rng_state",
    "save_checkpoint",
    "save_weights",
    "set_rng_state",
]


def save_checkpoint(state: Mapping[str, Any], path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_checkpoint(path: str) -> dict[str, Any]:
    return load_torch_file(path)


def check_checkpoint_model(
    path: str, held: Mapping[str, Any] | None, wanted: str | None, hint: str = ""
) -> None:
    """Refuse a run's checkpoint (``held``: its config) for another model than ``wanted``,
    naming both: a ValueError of one line, never a ``load_state_dict`` dump."""
    if not wanted or not isinstance(held, Mapping):
        return
    name = held.get("model", {}).get("name")
    if name and name != wanted:
        raise ValueError(f"{path} holds a {name} (its config says so), not a {wanted}{hint}")


def load_model_state(model: torch.nn.Module, state: Mapping[str, Any], path: str, name: str) -> None:
    """``model.load_state_dict(state)``; a mismatch is one line that names the file, the
    model and the first differing keys (a run of the same model name with other options)."""
    from gcnet.models.weights import state_mismatch

    why = state_mismatch(model, state)
    if why:
        raise ValueError(f"{path} does not fit the model {name}: {why}; was it written with "
                         "other model.kwargs / model.context or another number of classes?")  # fmt: skip
    model.load_state_dict(state)


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=metadata))


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
