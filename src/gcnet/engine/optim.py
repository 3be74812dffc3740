"""Optimizer (no weight decay on norms and biases) and the learning-rate schedule.

The schedule is a pure function of the step, :func:`lr_at`, so resuming needs only the
step count: linear warm-up from ``warmup_factor * lr``, then cosine to ``min_lr``, step
decay at ``milestones`` (epochs), or constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "lr_at", "base_lr", "total_steps"]


def base_lr(cfg: Mapping[str, Any]) -> float:
    """The linear scaling rule: lr * global_batch / ref_batch_size."""
    o = cfg["optim"]
    return float(o["lr"]) * cfg["train"]["batch_size"] / float(o["ref_batch_size"])


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    o = cfg["optim"]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # norms' weights and every bias are 1-D (LayerNorm([P,1,1]) weights are 3-D but norms)
        is_norm = p.ndim <= 1 or ".norm." in name or name.endswith(("norm.weight", "norm.bias"))
        (no_decay if o["no_decay_norm_bias"] and is_norm else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(o["weight_decay"])}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    lr = base_lr(cfg)
    if o["name"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(o["momentum"]), nesterov=bool(o["nesterov"]))
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(o["betas"]))


def total_steps(steps_per_epoch: int, cfg: Mapping[str, Any]) -> int:
    """The run's length in optimizer steps: ``train.max_iters`` or epochs x steps."""
    mi = cfg["train"].get("max_iters")
    return int(mi) if mi else cfg["train"]["epochs"] * steps_per_epoch


def warmup_steps(steps_per_epoch: int, cfg: Mapping[str, Any]) -> int:
    """The warm-up's length in steps: ``sched.warmup_iters``, else ``warmup_epochs`` x steps."""
    s = cfg["sched"]
    return int(s.get("warmup_iters") or 0) or int(round(float(s["warmup_epochs"]) * steps_per_epoch))


def lr_at(step: int, steps_per_epoch: int, cfg: Mapping[str, Any]) -> float:
    s = cfg["sched"]
    lr0 = base_lr(cfg)
    total = total_steps(steps_per_epoch, cfg)
    warm = warmup_steps(steps_per_epoch, cfg)
    if step < warm:
        f = float(s["warmup_factor"])
        return lr0 * (f + (1 - f) * step / warm)
    if s["name"] == "constant":
        return lr0
    if s["name"] == "step":
        epoch = step / steps_per_epoch
        return lr0 * float(s["gamma"]) ** sum(epoch >= m for m in s["milestones"])
    progress = (step - warm) / max(1, total - warm)
    min_lr = float(s["min_lr"])
    if s["name"] == "poly":
        return min_lr + (lr0 - min_lr) * (1 - min(1.0, progress)) ** float(s["power"])
    return min_lr + (lr0 - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
