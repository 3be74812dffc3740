"""Optimizer (no weight decay on norms and biases) and the learning-rate schedule.

The schedule is a pure function of the step, `Schedule`, so resuming needs only the
step count: linear warm-up from ``warmup_factor * lr``, then cosine to ``min_lr``, step
decay at ``milestones`` (epochs), or constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .settings import EngineSettings

__all__ = ["Schedule", "base_lr", "build_optimizer", "lr_at", "total_steps", "warmup_steps"]


def _settings(cfg) -> EngineSettings:
    return cfg if isinstance(cfg, EngineSettings) else EngineSettings.from_config(cfg)


def base_lr(cfg: Mapping[str, Any] | EngineSettings) -> float:
    """The linear scaling rule: lr * global_batch / ref_batch_size."""
    s = _settings(cfg)
    return float(s.optim.lr) * s.train.batch_size / float(s.optim.ref_batch_size)


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any] | EngineSettings) -> torch.optim.Optimizer:
    """SGD or AdamW at `base_lr`, weight decay on everything but norms and biases."""
    s = _settings(cfg)
    o = s.optim
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # norms' weights and every bias are 1-D (LayerNorm([P,1,1]) weights are 3-D but norms)
        is_norm = p.ndim <= 1 or ".norm." in name or name.endswith(("norm.weight", "norm.bias"))
        (no_decay if o.no_decay_norm_bias and is_norm else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(o.weight_decay)}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    lr = base_lr(s)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(o.momentum), nesterov=bool(o.nesterov))
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas))


def total_steps(steps_per_epoch: int, cfg: Mapping[str, Any] | EngineSettings) -> int:
    """The run's length in optimizer steps: ``train.max_iters`` or epochs x steps."""
    t = _settings(cfg).train
    return int(t.max_iters) if t.max_iters else t.epochs * steps_per_epoch


def warmup_steps(steps_per_epoch: int, cfg: Mapping[str, Any] | EngineSettings) -> int:
    """The warm-up's length in steps: ``sched.warmup_iters``, else ``warmup_epochs`` x steps."""
    s = _settings(cfg).sched
    return int(s.warmup_iters or 0) or int(round(float(s.warmup_epochs) * steps_per_epoch))


@dataclass(frozen=True)
class Schedule:
    """The learning rate as a function of the step, built once per run (see the module
    docstring): `lr`."""

    lr0: float
    name: str
    steps_per_epoch: int
    total: int
    warmup: int
    warmup_factor: float
    milestones: tuple[float, ...]
    gamma: float
    min_lr: float
    power: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | EngineSettings, steps_per_epoch: int) -> Schedule:
        s = _settings(cfg)
        sc = s.sched
        return cls(base_lr(s), sc.name, steps_per_epoch, total_steps(steps_per_epoch, s),
                   warmup_steps(steps_per_epoch, s), float(sc.warmup_factor), tuple(sc.milestones),
                   float(sc.gamma), float(sc.min_lr), float(sc.power))  # fmt: skip

    def lr(self, step: int) -> float:
        if step < self.warmup:
            f = self.warmup_factor
            return self.lr0 * (f + (1 - f) * step / self.warmup)
        if self.name == "constant":
            return self.lr0
        if self.name == "step":
            epoch = step / self.steps_per_epoch
            return self.lr0 * self.gamma ** sum(epoch >= m for m in self.milestones)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.name == "poly":
            return self.min_lr + (self.lr0 - self.min_lr) * (1 - min(1.0, progress)) ** self.power
        return self.min_lr + (self.lr0 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lr_at(step: int, steps_per_epoch: int, cfg: Mapping[str, Any] | EngineSettings) -> float:
    """The learning rate at ``step`` (``Schedule.from_config(cfg, steps_per_epoch).lr(step)``;
    the loop builds its `Schedule` once)."""
    return Schedule.from_config(cfg, steps_per_epoch).lr(step)
