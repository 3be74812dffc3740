"""Segmentation heads benchmark: the GCNet head vs the FCN head vs the Non-local head on
ResNet-50-D8 at 512x1024 (batch 1, float32 CPU), ratios measured side by side in one run.

    python benchmarks/bench_seg_heads.py [--repeats 5] [--size 512x1024] [--no-full]

1. The context blocks alone on the head's 512 x 64 x 128 map: GC (r1/4, att, add) vs NL
   (embedded Gaussian, reduction 2): time and peak memory, the precise view of the extra.
2. Heads alone, on the c5 / c4 maps a 512x1024 image gives (2048 x 64 x 128 and
   1024 x 64 x 128): forward time, peak memory of tensors allocated, parameters, FLOPs.
3. The whole model (backbone + decode head + auxiliary head in eval mode, i.e. the decode
   head only) for context: the backbone dominates, so the heads' differences shrink.
The paper's point: the GC head costs a small fraction of the NL head (NL attends 8192 x 8192
positions at this size).
"""

from __future__ import annotations

import argparse

import torch

from gcnet import create_model
from gcnet.tools.complexity import count_flops
from gcnet.tools.profiling import compare_times, peak_memory

NAMES = ("fcn_r50_d8", "gcnet_r50_d8", "nonlocal_r50_d8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="512x1024")
    ap.add_argument("--no-full", action="store_true", help="skip the whole-model timing")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    models = {n: create_model(n).eval() for n in NAMES}
    fh, fw = (h + 7) // 8, (w + 7) // 8
    c4 = torch.randn(1, 1024, fh, fw)
    c5 = torch.randn(1, 2048, fh, fw)
    print(f"threads {torch.get_num_threads()}, input 1x3x{h}x{w}, head input 2048x{fh}x{fw}\n")

    blocks = {"GC r1/4 (gcnet head)": models["gcnet_r50_d8"].decode_head.context_block,
              "NL (nonlocal head)": models["nonlocal_r50_d8"].decode_head.context_block}  # fmt: skip
    y = torch.randn(1, 512, fh, fw)
    with torch.inference_mode():
        bfns = {n: (lambda b=b: b(y)) for n, b in blocks.items()}
        bt = compare_times(bfns, repeats=3 * args.repeats, warmup=2)
        bm = {n: peak_memory(fn) for n, fn in bfns.items()}
    print(f"context blocks alone on 1x512x{fh}x{fw} (forward)")
    print("| block | time (ms) | peak mem (MB) |")
    print("|---|---|---|")
    for n in blocks:
        print(f"| {n} | {bt[n]:.1f} | {bm[n] / 2**20:.1f} |")
    gc_t, nl_t = bt["GC r1/4 (gcnet head)"], bt["NL (nonlocal head)"]
    print(f"GC / NL time: {gc_t / nl_t:.4f}\n")

    heads = {n: m.decode_head for n, m in models.items()}
    with torch.inference_mode():
        fns = {n: (lambda hd=hd: hd([c4, c5])) for n, hd in heads.items()}
        times = compare_times(fns, repeats=args.repeats, warmup=1)
        mem = {n: peak_memory(fn) for n, fn in fns.items()}
    flops = {n: count_flops(hd, [c4, c5]) for n, hd in heads.items()}
    params = {n: sum(p.numel() for p in hd.parameters()) for n, hd in heads.items()}
    base = "fcn_r50_d8"
    print("decode heads alone (forward)")
    print("| head | params (M) | GFLOPs | time (ms) | vs FCN | peak mem (MB) | vs FCN |")
    print("|---|---|---|---|---|---|---|")
    for n in NAMES:
        print(f"| {n.split('_')[0]} | {params[n] / 1e6:.2f} | {flops[n] / 1e9:.1f} | {times[n]:.0f} | "
              f"{times[n] / times[base]:.3f} | {mem[n] / 2**20:.0f} | "
              f"{mem[n] / mem[base]:.2f} |")  # fmt: skip
    gc_extra = times["gcnet_r50_d8"] - times[base]
    nl_extra = times["nonlocal_r50_d8"] - times[base]
    print(f"\nextra time over FCN: GC {gc_extra:.0f} ms, NL {nl_extra:.0f} ms "
          f"(GC/NL = {gc_extra / nl_extra:.3f})")  # fmt: skip

    if not args.no_full:
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            full = compare_times({n: (lambda m=m: m(x)) for n, m in models.items()}, repeats=1, warmup=1)
        print("\nwhole model (backbone + decode head), forward")
        print("| model | params (M) | time (ms) | vs FCN |")
        print("|---|---|---|---|")
        for n, m in models.items():
            p = sum(q.numel() for q in m.parameters())
            print(f"| {n} | {p / 1e6:.2f} | {full[n]:.0f} | {full[n] / full[base]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
