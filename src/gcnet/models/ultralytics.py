"""Context blocks through Ultralytics' trainer: `keep_context_blocks`, `copy_context_blocks`.

``YOLO.train()`` does not train the module you hold: its trainer builds a new network from the
model's YAML (loading the weights of a ``.pt`` model into it by matching keys), so blocks put
into ``yolo.model`` by `gcnet.add_context_blocks` would be dropped, with their weights.
`keep_context_blocks` registers a callback that puts a copy of them (their weights included)
into the network the trainer builds, before its EMA and optimizer exist; the checkpoints it
saves (``last.pt``, ``best.pt``: the whole pickled module) then hold the blocks, and so does
``yolo.model`` after training::

    yolo = YOLO("yolo11n.pt")
    gcnet.add_context_blocks(yolo.model, after="preset:ultralytics:backbone")
    keep_context_blocks(yolo)
    yolo.train(data="coco8.yaml", epochs=10)

Nothing here imports ``ultralytics``; it uses the ``YOLO`` object it is given.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .plugins import ContextPlug

__all__ = ["copy_context_blocks", "keep_context_blocks"]

_MARK = "_gcnet_keep_context_blocks"


def copy_context_blocks(source: nn.Module, target: nn.Module) -> list[str]:
    """Put a copy of every context block of ``source`` (`gcnet.add_context_blocks`), with its
    weights, after the module of the same name in ``target`` (the same network without the
    blocks, e.g. rebuilt from its config); returns the new blocks' names. Each module must be
    there, of the same class and not already followed by a block, else `ValueError` (and
    nothing is changed)."""
    plugs = [(n, m) for n, m in source.named_modules() if isinstance(m, ContextPlug)]
    modules = dict(target.named_modules())
    plan = []
    for name, plug in plugs:
        mod = modules.get(name)
        if isinstance(mod, ContextPlug):
            raise ValueError(f"copy_context_blocks: {name!r} of the target already has a context block")
        if mod is None or type(mod) is not type(plug.module):
            found = "no such module" if mod is None else f"a {type(mod).__name__}"
            raise ValueError(f"copy_context_blocks: the target has {found} at {name!r}, where the source "
                             f"has a {type(plug.module).__name__} followed by a context block")  # fmt: skip
        ref = next((t for t in (*mod.parameters(), *mod.buffers()) if t.is_floating_point()), None)
        block = copy.deepcopy(plug.context_block)
        if ref is not None:
            block = block.to(device=ref.device, dtype=ref.dtype)
        block.train(mod.training)
        parent, _, attr = name.rpartition(".")
        plan.append((modules[parent], attr, ContextPlug(mod, block, plug.channels, name)))
    for parent, attr, new in plan:
        parent._modules[attr] = new
    return [f"{name}.context_block" for name, _ in plugs]


def keep_context_blocks(yolo: Any) -> None:
    """Make ``yolo.train()`` keep the context blocks of ``yolo.model``.

    ``yolo``: an Ultralytics ``YOLO`` (any ``ultralytics.engine.model.Model``). Registers an
    ``on_pretrain_routine_start`` callback: when ``train()`` creates its trainer, the callback
    wraps the trainer's ``get_model`` so that the network it builds gets a copy of the blocks
    (`copy_context_blocks`) of the weights it starts from (``pretrained=`` / a resumed
    checkpoint, when they have blocks), else of ``yolo.model`` as it is at that call. Call it
    once, after `gcnet.add_context_blocks`; calling it again does nothing. Single-process
    training only (one GPU, or CPU): Ultralytics' multi-GPU workers run no callbacks.
    """
    if not callable(getattr(yolo, "add_callback", None)) or not isinstance(
        getattr(yolo, "model", None), nn.Module
    ):
        raise ValueError(f"keep_context_blocks needs an Ultralytics YOLO object, got {type(yolo).__name__}")
    registered = getattr(yolo, "callbacks", {}).get("on_pretrain_routine_start", [])
    if any(getattr(cb, _MARK, False) for cb in registered):
        return

    def on_pretrain_routine_start(trainer: Any) -> None:
        source = yolo.model  # train() replaces yolo.model only after its trainer exists
        build = trainer.get_model

        def get_model(*args: Any, **kwargs: Any) -> nn.Module:
            model = build(*args, **kwargs)
            weights = kwargs.get("weights")
            has_blocks = isinstance(weights, nn.Module) and any(
                isinstance(m, ContextPlug) for m in weights.modules()
            )
            copy_context_blocks(weights if has_blocks else source, model)
            return model

        trainer.get_model = get_model

    setattr(on_pretrain_routine_start, _MARK, True)
    yolo.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
