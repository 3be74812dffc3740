"""Backbone benchmark: gc_resnet50 vs our resnet50 vs torchvision's resnet50 vs timm's
gcresnet50t, float32 CPU, ratios measured side by side in one run.

    python benchmarks/bench_backbones.py [--repeats 5] [--batches 1,32] [--train-batch 16]

Inference latency (batch 1 and 32, 224x224, contiguous and channels_last) and one training
step (forward, backward, SGD step; batch 16). Ratios are against our plain resnet50. The
candidates are timed round-robin (one call of each per round; the median per candidate),
so drifts of the machine fall on all of them alike.
The goal (the paper's promise that GC is nearly free): gc_resnet50 within 3% of resnet50
in inference and 8% in training; our resnet50 no slower than torchvision's.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision

from gcnet import create_model
from gcnet.tools.profiling import compare_times

_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "17179869184", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def _models() -> dict[str, torch.nn.Module]:
    models = {
        "resnet50 (gcnet)": create_model("resnet50"),
        "gc_resnet50 (gcnet)": create_model("gc_resnet50"),
        "resnet50 (torchvision)": torchvision.models.resnet50(),
    }
    try:
        import timm

        models["gcresnet50t (timm)"] = timm.create_model("gcresnet50t")
    except ImportError:
        print("(timm not installed: gcresnet50t skipped)")
    # non-zero plug-in weights: a zero-initialised block must not get a cheaper path
    with torch.no_grad():
        for m in models.values():
            for name, p in m.named_parameters():
                if "context_block" in name or "attn" in name:
                    p.normal_(0, 0.01)
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args()
    if not args.system_malloc and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})
    torch.manual_seed(0)
    models = _models()
    base = "resnet50 (gcnet)"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
        f"{args.size}x{args.size}, median of {args.repeats}\n"
    )
    print("| model | params (M) | setting | ms | vs resnet50 (gcnet) |")
    print("|---|---|---|---|---|")
    for bs in [int(b) for b in args.batches.split(",")]:
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(bs, 3, args.size, args.size).to(memory_format=fmt)
            for m in models.values():
                m.eval().to(memory_format=fmt)
            with torch.inference_mode():
                times = compare_times(
                    {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}, args.repeats, 2
                )
            for name, t in times.items():
                n = sum(p.numel() for p in models[name].parameters()) / 1e6
                print(
                    f"| {name} | {n:.2f} | inference b{bs} {layout} | {t:.1f} | {t / times[base]:.3f} |",
                    flush=True,
                )
    x = torch.randn(args.train_batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.train_batch,))
    steps = {}
    for name, m in models.items():
        m = m.train().to(memory_format=torch.contiguous_format)
        opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

        steps[name] = step
    times = compare_times(steps, args.repeats, warmup=1)
    for name, t in times.items():
        n = sum(p.numel() for p in models[name].parameters()) / 1e6
        print(
            f"| {name} | {n:.2f} | train step b{args.train_batch} | {t:.1f} | {t / times[base]:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
