"""Block benchmark: our GC block vs timm's GlobalContext vs mmcv's ContextBlock, and our
GC vs NL vs SNL vs SE, at ResNet stage shapes. Float32 CPU. All numbers from one run.

    python benchmarks/bench_blocks.py [--repeats 10] [--shapes 8x256x56x56,...] [--threads N]

Prints markdown tables: forward and forward+backward time (median, ms), peak memory of the
tensors each call allocates (MB), ratios against timm measured side by side, and the memory
traffic bound of the forward (2 reads + 1 write of x at the measured copy bandwidth).

glibc's malloc returns every large block to the OS and page-faults it back on the next
allocation, which adds 2-10x noise to CPU timings of 25 MB tensors. Unless
``--system-malloc`` is given, the script re-runs itself with glibc's mmap/trim thresholds
raised (what a long-running training process sees after warm-up, or with jemalloc/tcmalloc).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from gcnet import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation
from gcnet.tools.profiling import median_time, peak_memory

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "17179869184", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def _peers(c: int) -> dict[str, torch.nn.Module]:
    peers: dict[str, torch.nn.Module] = {"gcnet": GlobalContextBlock(c, 1 / 16)}
    try:
        from timm.layers import GlobalContext

        peers["timm"] = GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16)
    except ImportError:
        print("(timm not installed: its column is skipped)")
    try:
        from mmcv.cnn.bricks import ContextBlock

        peers["mmcv"] = ContextBlock(c, 1 / 16)
    except ImportError:
        print("(mmcv-lite not installed: its column is skipped)")
    return peers


def _family(c: int) -> dict[str, torch.nn.Module]:
    return {
        "GC r16": GlobalContextBlock(c, 1 / 16),
        "SNL": SimplifiedNonLocalBlock(c),
        "SE r16": SqueezeExcitation(c, 1 / 16),
        "NL": NonLocalBlock(c),
    }


def _measure(m: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    # non-zero weights everywhere, so no branch is skipped or trivially cheap
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.01)
    xg = x.clone().requires_grad_()
    gy = torch.randn_like(x)
    params = [xg, *m.parameters()]

    def fwd():
        with torch.no_grad():
            return m(x)

    def fwd_bwd():
        return torch.autograd.grad(m(xg), params, gy)

    return {
        "fwd": median_time(fwd, repeats),
        "fb": median_time(fwd_bwd, repeats),
        "mem_f": peak_memory(fwd) / 2**20,
        "mem_fb": peak_memory(fwd_bwd) / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--system-malloc", action="store_true")
    ap.add_argument("--skip-family", action="store_true")
    args = ap.parse_args()
    if not args.system_malloc and any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
        f"malloc: {'system' if args.system_malloc else 'thresholds raised'}\n"
    )

    print("### GC block vs peers (r16, att pooling, add fusion)\n")
    print(
        "| shape | copy x ms | bound ms | impl | fwd ms | fwd/bound | fwd vs timm "
        "| fwd+bwd ms | fwd+bwd vs timm | peak MB fwd | peak MB fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        x = torch.randn(shape)
        copy = median_time(lambda: x.clone(), 20, warmup=5, stat="min")  # noqa: B023
        bound = 1.5 * copy  # copy = 1 read + 1 write; bound = 2 reads + 1 write
        res = {k: _measure(m, x, args.repeats) for k, m in _peers(shape[1]).items()}
        ref = res.get("timm")
        for name, r in res.items():
            vs_f = f"{r['fwd'] / ref['fwd']:.2f}x" if ref else "-"
            vs_fb = f"{r['fb'] / ref['fb']:.2f}x" if ref else "-"
            print(
                f"| {'x'.join(map(str, shape))} | {copy:.2f} | {bound:.2f} | {name} "
                f"| {r['fwd']:.2f} | {r['fwd'] / bound:.1f} | {vs_f} | {r['fb']:.2f} | {vs_fb} "
                f"| {r['mem_f']:.1f} | {r['mem_fb']:.1f} |",
                flush=True,
            )
    if args.skip_family:
        return
    print("\n### The family: GC vs SNL vs SE vs NL (ours; ratios vs GC)\n")
    print(
        "| shape | block | params | fwd ms | fwd vs GC | fwd+bwd ms | fwd+bwd vs GC "
        "| peak MB fwd | peak MB fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        x = torch.randn(shape)
        res = {}
        for name, m in _family(shape[1]).items():
            res[name] = (
                _measure(m, x, max(3, args.repeats // 2)),
                sum(p.numel() for p in m.parameters()),
            )
        g = res["GC r16"][0]
        for name, (r, n) in res.items():
            print(
                f"| {'x'.join(map(str, shape))} | {name} | {n / 1e3:.1f}k | {r['fwd']:.2f} "
                f"| {r['fwd'] / g['fwd']:.2f}x | {r['fb']:.2f} | {r['fb'] / g['fb']:.2f}x "
                f"| {r['mem_f']:.1f} | {r['mem_fb']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
