"""What several commands share: argument types, ``--set`` parsing, loading a trained
checkpoint, and the sharded validation loader."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "parse_shape",
    "parse_image_shape",
    "parse_model_overrides",
    "load_trained",
    "val_loader",
    "default_eval_dir",
]


def parse_shape(text: str) -> tuple[int, ...]:
    """``8x256x56x56`` -> (8, 256, 56, 56): N x C x spatial, 3 to 5 dims."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 8x256x56x56, got {text!r}") from None
    if any(d < 1 for d in dims) or not 3 <= len(dims) <= 5:
        raise argparse.ArgumentTypeError(f"expected N x C x spatial (3 to 5 dims), got {text!r}")
    return dims


def parse_image_shape(text: str) -> tuple[int, ...]:
    """``3x224x224`` -> (3, 224, 224)."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}") from None
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}")
    return dims


def parse_model_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["ratio=0.25", "stages=c4"]`` -> {"ratio": 0.25, "stages": "c4"} (YAML values)."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_trained(checkpoint: str, use_ema: bool = True):
    """(model in eval mode, config, class names, task) from a gcnet training checkpoint;
    the EMA weights when the run kept them."""
    from gcnet.engine.checkpoint import load_checkpoint
    from gcnet.tasks import task_of

    ck = load_checkpoint(checkpoint)
    if not isinstance(ck, Mapping) or "config" not in ck or "model" not in ck:
        raise ValueError(f"{checkpoint} is not a gcnet training checkpoint (no config/model entries)")
    cfg, classes = ck["config"], ck["classes"]
    task = task_of(cfg)
    model = task.build_model(cfg, len(classes), pretrained=False)
    state = ck["model"]
    if use_ema and ck.get("ema"):
        state = {k[len("module.") :]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    model.load_state_dict(state)
    return model.eval(), cfg, list(classes), task


def val_loader(task, cfg: Mapping[str, Any], classes, rank: int, world: int):
    """(dataset, loader) of the config's val split, each DDP rank taking its share; the data
    must have the checkpoint's classes."""
    from torch.utils.data import DataLoader

    from gcnet.data.samplers import ShardSampler

    ds, ds_classes = task.build_data(cfg, "val")
    if len(ds_classes) != len(classes):
        raise ValueError(f"the data has {len(ds_classes)} classes, the checkpoint {len(classes)}")
    per_rank = cfg["train"]["batch_size"] // world
    loader = DataLoader(ds, batch_size=task.val_batch_size(cfg, per_rank), collate_fn=task.collate_fn,
                        num_workers=cfg["data"]["num_workers"],
                        sampler=ShardSampler(len(ds), world, rank))  # fmt: skip
    return ds, loader


def default_eval_dir(checkpoint: str) -> str:
    """``<the checkpoint's folder>/eval``."""
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "eval")
