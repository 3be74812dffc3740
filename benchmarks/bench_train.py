"""Training throughput: gc_resnet50 vs resnet50 with the same pipeline, CPU, float32 and
bf16 autocast, ratios measured side by side in one run.

    python benchmarks/bench_train.py [--steps 4] [--batch 16] [--size 224] [--workers 2]

Two input pipelines: synthetic tensors (compute only), and real JPEG decoding from an
ImageFolder the script writes to a temporary folder (gcnet's train transforms: random
resized crop + flip, DataLoader with the default worker count). The loader alone is timed
too, to show whether data loading is the bottleneck.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from gcnet import create_model
from gcnet.config import load_config
from gcnet.data import build_classification_data, collate_skip_bad
from gcnet.tools.profiling import raise_malloc_thresholds
from gcnet.utils.device import autocast_ctx


def write_jpegs(root: str, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = os.path.join(root, split, f"class{c:02d}")
            os.makedirs(d, exist_ok=True)
            for i in range(n // classes if split == "train" else 1):
                arr = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
                arr = np.ascontiguousarray(np.repeat(np.repeat(arr[::4, ::4], 4, 0), 4, 1)[:300, :400])
                Image.fromarray(arr).save(os.path.join(d, f"{i}.jpg"), quality=90)


def images_per_s(model, batches, steps: int, amp: str) -> float:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dev = torch.device("cpu")

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with autocast_ctx(dev, amp):
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()

    it = iter(batches)
    x, y, _ = next(it)
    step(x, y)  # warm-up
    n, t0 = 0, time.perf_counter()
    for x, y, _ in itertools.islice(it, steps):
        step(x, y)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=None, help="default: the config's data.num_workers")
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args()
    if not args.system_malloc:
        raise_malloc_thresholds()
    torch.manual_seed(0)
    n_images = args.batch * (args.steps + 2)
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, max(n_images, 20))
        sets = [f"data.root={root}", "data.dataset=imagefolder", f"data.image_size={args.size}",
                "data.augment.random_resized_crop=true"]  # fmt: skip
        if args.workers is not None:
            sets.append(f"data.num_workers={args.workers}")
        cfg = load_config(None, sets)
        ds, _ = build_classification_data(cfg, "train")
        workers = cfg["data"]["num_workers"]

        def jpeg_loader():
            return DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                              collate_fn=collate_skip_bad, drop_last=True)  # fmt: skip

        t0, n = time.perf_counter(), 0
        for x, _, _ in jpeg_loader():
            n += x.shape[0]
        loader_rate = n / (time.perf_counter() - t0)
        synth = [(torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,)), 0)]
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, batch {args.batch}, "
            f"{args.size}x{args.size}, {args.steps} timed steps; JPEG loader alone: {loader_rate:.1f} img/s "
            f"with {workers} workers\n"
        )
        print("| pipeline | precision | resnet50 img/s | gc_resnet50 img/s | gc / plain |")
        print("|---|---|---|---|---|")
        for pipeline in ("synthetic tensors", "JPEG ImageFolder"):
            for amp in ("none", "bf16"):
                rates = {}
                for name in ("resnet50", "gc_resnet50"):
                    torch.manual_seed(0)
                    model = create_model(name, num_classes=10)
                    batches = itertools.cycle(synth) if pipeline == "synthetic tensors" else jpeg_loader()
                    rates[name] = images_per_s(model, batches, args.steps, amp)
                prec = "float32" if amp == "none" else "bf16 autocast"
                print(
                    f"| {pipeline} | {prec} | {rates['resnet50']:.2f} | {rates['gc_resnet50']:.2f} "
                    f"| {rates['gc_resnet50'] / rates['resnet50']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
