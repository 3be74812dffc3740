"""Where does gc_resnet50 spend its extra time over resnet50? torch.profiler, side by side.

    python benchmarks/profile_backbones.py [--rounds 3] [--train-batch 8] [--top 15]
        [--channels-last] [--baseline-block FILE] [--threads N]

Profiles a batch-1 inference forward and one SGD training step (forward, backward,
optimizer step) of both networks, alternating the two within each round (so drifts of the
machine fall on both alike), and prints per-op self-CPU time averaged over the rounds: the
rows of the largest differences (gc - plain), the op-event counts, and the time inside the GC
blocks' forwards (a record_function range around each block). Float32 CPU, 224x224,
plug-in weights non-zero.
``--baseline-block FILE`` profiles gc_resnet50 with the ``GlobalContextBlock`` of FILE (an
older ``src/gcnet/layers/context.py``), to compare before / after.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from gcnet import create_model
from gcnet.tools.profiling import raise_malloc_thresholds


def _models(baseline: str | None) -> dict[str, torch.nn.Module]:
    models = {"resnet50": create_model("resnet50"), "gc_resnet50": create_model("gc_resnet50")}
    with torch.no_grad():
        for m in models.values():
            for name, p in m.named_parameters():
                if "context_block" in name:
                    p.normal_(0, 0.01)
    if baseline:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_backbones import _swap_blocks

        from gcnet.tools.profiling import load_baseline_block

        _swap_blocks(models["gc_resnet50"], load_baseline_block(baseline))
    return models


def _tag_blocks(model: torch.nn.Module) -> None:
    """Wrap every context block's forward in a record_function range."""
    for name, m in model.named_modules():
        if name.endswith("context_block"):
            fwd = m.forward

            def wrapped(x, fwd=fwd):
                with torch.profiler.record_function("GC_BLOCK"):
                    return fwd(x)

            m.forward = wrapped


def _profile(fn) -> tuple[dict[str, tuple[float, int]], float]:
    """{op: (self-CPU ms, calls)} of one call of fn, and the ms inside the GC_BLOCK ranges."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    table = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in events}
    return table, sum(e.cpu_time_total for e in events if e.key == "GC_BLOCK") / 1e3


def _rounds(fns: dict, rounds: int) -> tuple[dict[str, dict[str, tuple[float, int]]], float]:
    """Profile every fn once per round, alternating; per-op ms averaged over the rounds."""
    acc = {k: collections.Counter() for k in fns}
    calls: dict[str, dict[str, int]] = {k: {} for k in fns}
    blocks = 0.0
    for _ in range(rounds):
        for k, fn in fns.items():
            table, bl = _profile(fn)
            acc[k].update({op: v[0] for op, v in table.items()})
            calls[k].update({op: v[1] for op, v in table.items()})
            blocks += bl / rounds if k == "gc_resnet50" else 0.0
    return {k: {op: (acc[k][op] / rounds, calls[k][op]) for op in calls[k]} for k in fns}, blocks


def _report(title: str, prof: dict[str, dict[str, tuple[float, int]]], blocks: float, top: int) -> None:
    a, b = prof["resnet50"], prof["gc_resnet50"]
    ta = sum(v[0] for v in a.values())
    tb = sum(v[0] for v in b.values())
    ca = sum(v[1] for v in a.values())
    cb = sum(v[1] for v in b.values())
    print(f"\n### {title}\n")
    print(
        f"self-CPU total: resnet50 {ta:.1f} ms, gc_resnet50 {tb:.1f} ms (+{tb - ta:.1f} ms, "
        f"{100 * (tb / ta - 1):+.1f}%); op calls {ca} -> {cb} (+{cb - ca}); inside the GC blocks' "
        f"forward ranges: {blocks:.1f} ms\n"
    )
    print("| op | resnet50 ms | gc_resnet50 ms | delta ms | calls | calls gc |")
    print("|---|---|---|---|---|---|")
    keys = set(a) | set(b)
    keys.discard("GC_BLOCK")
    rows = sorted(keys, key=lambda k: -abs(b.get(k, (0, 0))[0] - a.get(k, (0, 0))[0]))
    for k in rows[:top]:
        (ma, na), (mb, nb) = a.get(k, (0.0, 0)), b.get(k, (0.0, 0))
        print(f"| {k} | {ma:.2f} | {mb:.2f} | {mb - ma:+.2f} | {na} | {nb} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--baseline-block", default=None, metavar="FILE")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    raise_malloc_thresholds()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = _models(args.baseline_block)
    _tag_blocks(models["gc_resnet50"])
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, {fmt}")

    x1 = torch.randn(1, 3, 224, 224).to(memory_format=fmt)
    for m in models.values():
        m.eval().to(memory_format=fmt)
    with torch.inference_mode():
        for m in models.values():
            m(x1)  # warm-up
        prof, blocks = _rounds({k: (lambda m=m: m(x1)) for k, m in models.items()}, args.rounds)
    _report("inference, batch 1", prof, blocks, args.top)

    x = torch.randn(args.train_batch, 3, 224, 224).to(memory_format=fmt)
    y = torch.randint(0, 1000, (args.train_batch,))
    steps = {}
    for k, m in models.items():
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

        step()  # warm-up (momentum buffers, allocator)
        steps[k] = step
    prof, blocks = _rounds(steps, args.rounds)
    _report(f"training step, batch {args.train_batch}", prof, blocks, args.top)


if __name__ == "__main__":
    main()
