"""SyncBatchNorm that works on any device, CPU (gloo) included.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, and DDP refuses CPU modules that contain
it. This BatchNorm (same state-dict layout) computes the global batch statistics with one
differentiable all-reduce of (sum, sum of squares, count) in float64, and is a plain
BatchNorm outside training or outside a process group. Used by the backbones'
``norm="syncbn"``; `convert_sync_batchnorm` picks torch's fused version on CUDA.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def _sync(self) -> bool:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group or dist.group.WORLD) > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._sync():
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        local = torch.tensor([x.numel() // c], dtype=torch.float64)
        stats = torch.cat([x.sum(dims, dtype=torch.float64), (x.double() ** 2).sum(dims), local])
        stats = all_reduce(stats, group=self.process_group or dist.group.WORLD)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * scale.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, process_group=None, device_type: str = "cpu") -> nn.Module:
    """Every ``BatchNorm*d`` -> a synchronised one, weights kept: torch's fused
    ``nn.SyncBatchNorm`` for CUDA, `SyncBatchNorm` for anything else."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return _convert(module, process_group)


def _convert(module: nn.Module, process_group=None) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (SyncBatchNorm, nn.SyncBatchNorm)
    ):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group)  # fmt: skip
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert(child, process_group))
    return out
