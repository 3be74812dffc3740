"""Gradient checkpointing (``model.set_grad_checkpointing(True)``): peak training memory and
time of a training step (forward + backward), plain vs checkpointed, CPU.

    python benchmarks/bench_grad_checkpointing.py [--batch 8] [--size 160] [--clip 8x112] [--repeats 3]

Peak memory is :class:`gcnet.tools.profiling.MemoryTracker`'s: the live bytes of every
tensor created during the step (activations kept for backward, gradients, recomputation),
weights excluded (they exist before the step). The models train in train mode (batch
statistics); every residual block is one checkpoint (non-reentrant).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from gcnet import create_model
from gcnet.tools.profiling import MemoryTracker, median_time, raise_malloc_thresholds


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def measure(name: str, shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).train()
    x = torch.randn(shape)
    y = torch.randint(0, 10, (shape[0],))
    row: dict[str, float] = {}
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        train_step(model, x, y)  # warm-up; gradients allocated once outside the tracker
        model.zero_grad(set_to_none=True)
        with MemoryTracker() as tracker:
            train_step(model, x, y)
        key = "ckpt" if ckpt else "plain"
        row[f"{key}_mb"] = tracker.peak / 2**20
        row[f"{key}_ms"] = median_time(lambda: train_step(model, x, y), repeats=repeats, warmup=1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=160, help="image side (2D)")
    ap.add_argument("--clip", default="8x112", help="frames x side (3D)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="resnet50,slowonly_r50")
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args()
    if not args.system_malloc:
        raise_malloc_thresholds()
    frames, side = (int(v) for v in args.clip.split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, batch {args.batch}, "
          f"train mode, forward + backward, median of {args.repeats}\n")  # fmt: skip
    print("| model | input | plain peak MB | checkpointed peak MB | memory ratio | plain ms | checkpointed "
          "ms | time ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        video = "slowonly" in name
        shape = (args.batch, 3, frames, side, side) if video else (args.batch, 3, args.size, args.size)
        r = measure(name, shape, args.repeats)
        print(f"| {name} | {'x'.join(map(str, shape))} | {r['plain_mb']:.0f} | {r['ckpt_mb']:.0f} | "
              f"{r['ckpt_mb'] / r['plain_mb']:.3f} | {r['plain_ms']:.0f} | {r['ckpt_ms']:.0f} | "
              f"{r['ckpt_ms'] / r['plain_ms']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
