"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def run_gcnet(
    args: Sequence[str], nproc: int | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m gcnet ARGS`` in a fresh process, or under torchrun (``--standalone``, gloo on
    CPU) with ``nproc`` processes; ``src`` on PYTHONPATH, one thread per process. Asserts it
    exits 0 (the failure message is its output) and returns the finished process."""
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*launcher, "-m", "gcnet", *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def run_gcnet_here(args: Sequence[str]) -> None:
    """``gcnet ARGS`` in this process on one thread (as :func:`run_gcnet`'s processes run),
    without a fresh interpreter's ~6 s of imports; asserts it exits 0."""
    import torch

    from gcnet.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        torch.set_num_threads(threads)


def num_params(model_or_name, **overrides) -> int:
    """Parameters of a module, or of ``gcnet.create_model(name, **overrides)``, counted."""
    if isinstance(model_or_name, str):
        import gcnet

        model_or_name = gcnet.create_model(model_or_name, **overrides)
    return sum(p.numel() for p in model_or_name.parameters())


class SeedGlobalContextBlock(nn.Module):
    """The block of the seed document (shared/seed), re-typed."""

    def __init__(self, in_channels, scale=16):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = self.in_channels // scale
        self.Conv_key = nn.Conv2d(self.in_channels, 1, 1)
        self.SoftMax = nn.Softmax(dim=1)
        self.Conv_value = nn.Sequential(
            nn.Conv2d(self.in_channels, self.out_channels, 1),
            nn.LayerNorm([self.out_channels, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(self.out_channels, self.in_channels, 1),
        )

    def forward(self, x):
        b, c, h, w = x.size()
        key = self.SoftMax(self.Conv_key(x).view(b, 1, -1).permute(0, 2, 1).view(b, -1, 1).contiguous())
        query = x.view(b, c, h * w)
        concate_QK = torch.matmul(query, key)
        concate_QK = concate_QK.view(b, c, 1, 1).contiguous()
        value = self.Conv_value(concate_QK)
        return x + value


# the seed block's modules -> gcnet.GlobalContextBlock's
SEED_GC_KEYS = {
    "Conv_key": "pool.conv_mask",
    "Conv_value.0": "transform_add.conv_in",
    "Conv_value.1": "transform_add.norm",
    "Conv_value.3": "transform_add.conv_out",
}


def seed_gc_to_ours(state_dict, prefix: str = "") -> dict:
    """A seed GC block's state dict -> gcnet.GlobalContextBlock keys (under ``prefix``)."""
    out = {}
    for key, value in state_dict.items():
        mod, leaf = key.rsplit(".", 1)
        out[f"{prefix}{SEED_GC_KEYS[mod]}.{leaf}"] = value
    return out
