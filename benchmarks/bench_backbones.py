"""Backbone benchmark: gc_resnet50 vs our resnet50 vs torchvision's resnet50 vs timm's
gcresnet50t, float32 CPU, ratios measured side by side in one run.

    python benchmarks/bench_backbones.py [--rounds 7] [--batches 1,32] [--train-batches 8,16]
        [--layouts contiguous,channels_last] [--baseline-block FILE] [--compile] [--threads N]
        [--cpu-time] [--blocks-alone]

Inference latency (224x224, contiguous and channels_last) and one training step (forward,
backward, SGD step with momentum). The candidates are timed round-robin (one call of each
per round), and every ratio is the median over rounds of the ratio measured *within* a
round against our plain resnet50, printed with its spread (min..max over rounds), so load
from other processes that hits a whole round cancels. On a shared machine ``--threads 1
--cpu-time`` times the thread's CPU time instead of the wall clock, leaving out the time
other processes hold the core.

``--baseline-block FILE`` adds ``gc_resnet50 (baseline block)``: the same network with its
context blocks replaced by the ``GlobalContextBlock`` of FILE (e.g. an older
``src/gcnet/layers/context.py`` from git), the weights copied: before/after in one run.
``--blocks-alone`` adds the 13 blocks timed alone at their shapes in the network (forward at
batch 1; forward + backward at batch 8 and 16, the "train step" of resnet50 there without
its optimizer step), as a share of resnet50's time in the same rounds.
``--compile`` adds torch.compile'd resnet50 / gc_resnet50 (inductor; slow to compile).

The goal (issue 16; the paper's promise that GC is nearly free): gc_resnet50 within +3% of
resnet50 at batch 1, +2% at batch 32, +5% per training step at batch 8 and 16.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from gcnet import create_model
from gcnet.tools.profiling import (
    load_baseline_block,
    load_baseline_module,
    raise_malloc_thresholds,
    ratio_stats,
    round_robin,
)

BASE = "resnet50 (gcnet)"


def _swap_blocks(model: torch.nn.Module, cls: type) -> torch.nn.Module:
    for name, blk in list(model.context_blocks().items()):
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        new = cls(blk.channels, blk.ratio)
        new.load_state_dict(blk.state_dict())
        new.inplace = blk.inplace
        parent.context_block = new
    return model


def _swap_residual(model: torch.nn.Module, rev: str) -> torch.nn.Module:
    """The residual blocks of commit REV (their forward: how the residual is added) and its
    context blocks, fused in place as that commit's backbone set them."""
    old = load_baseline_module(f"git:{rev}", "src/gcnet/models/resnet.py")
    _swap_blocks(model, load_baseline_block(f"git:{rev}"))
    for m in model.modules():
        for name in ("Bottleneck", "BasicBlock"):
            if type(m).__name__ == name:
                m.__class__ = getattr(old, name)
    for blk in model.context_blocks().values():
        blk.inplace = True
    return model


def _models(
    baseline_block: str | None, compile_: bool, baseline_rev: str | None = None
) -> dict[str, torch.nn.Module]:
    models = {
        BASE: create_model("resnet50"),
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
    if baseline_block:
        gc = create_model("gc_resnet50")
        gc.load_state_dict(models["gc_resnet50 (gcnet)"].state_dict())
        models["gc_resnet50 (baseline block)"] = _swap_blocks(gc, load_baseline_block(baseline_block))
    if baseline_rev:
        gc = create_model("gc_resnet50")
        gc.load_state_dict(models["gc_resnet50 (gcnet)"].state_dict())
        models[f"gc_resnet50 ({baseline_rev})"] = _swap_residual(gc, baseline_rev)
        plain = create_model("resnet50")
        plain.load_state_dict(models[BASE].state_dict())
        models[f"resnet50 ({baseline_rev})"] = _swap_residual(plain, baseline_rev)
    if compile_:
        for k in (BASE, "gc_resnet50 (gcnet)"):
            models[k.replace("(gcnet)", "(compiled)")] = torch.compile(models[k])
    return models


def _row(name: str, models, times, setting: str) -> str:
    n = sum(p.numel() for p in models[name].parameters()) / 1e6
    med = sorted(times[name])[len(times[name]) // 2]
    r, lo, hi = ratio_stats(times, name, BASE)
    return f"| {name} | {n:.2f} | {setting} | {med:.1f} | {r:.3f} | {lo:.3f}..{hi:.3f} |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", "--repeats", type=int, default=7, dest="rounds")
    ap.add_argument("--batches", default="1,32", help="inference batch sizes ('' for none)")
    ap.add_argument("--train-batches", default="8,16", help="training-step batch sizes ('' for none)")
    ap.add_argument("--layouts", default="contiguous,channels_last")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--baseline-block", default=None, metavar="FILE")
    ap.add_argument(
        "--baseline-rev",
        default=None,
        metavar="REV",
        help="add resnet50 / gc_resnet50 with commit REV's residual blocks and context blocks",
    )
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--blocks-alone", action="store_true", help="also time the 13 blocks alone")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true", help="time the thread's CPU time (needs --threads 1)")
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args(argv)
    if not args.system_malloc:
        raise_malloc_thresholds()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and torch.get_num_threads() != 1:
        ap.error("--cpu-time counts one thread's CPU time: use it with --threads 1")
    timer = time.thread_time if args.cpu_time else time.perf_counter
    torch.manual_seed(0)
    models = _models(args.baseline_block, args.compile, args.baseline_rev)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
        f"{args.size}x{args.size}, {args.rounds} rounds (ratio = median of per-round ratios), "
        f"{'thread CPU time' if args.cpu_time else 'wall time'}\n"
    )
    print("| model | params (M) | setting | median ms | vs resnet50 (gcnet) | spread over rounds |")
    print("|---|---|---|---|---|---|")
    layouts = [s for s in args.layouts.split(",") if s]
    for bs in [int(b) for b in args.batches.split(",") if b]:
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            x = torch.randn(bs, 3, args.size, args.size).to(memory_format=fmt)
            for m in models.values():
                m.eval().to(memory_format=fmt)
            with torch.inference_mode():
                fns = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
                times = round_robin(fns, args.rounds, 2, timer, shuffle=True)
            for name in models:
                print(_row(name, models, times, f"inference b{bs} {layout}"), flush=True)
    for bs in [int(b) for b in args.train_batches.split(",") if b]:
        x = torch.randn(bs, 3, args.size, args.size)
        y = torch.randint(0, 1000, (bs,))
        steps = {}
        for name, m in models.items():
            m = m.train().to(memory_format=torch.contiguous_format)
            opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

            def step(m=m, opt=opt, x=x, y=y):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(m(x), y).backward()
                opt.step()

            steps[name] = step
        times = round_robin(steps, args.rounds, 1, timer)
        for name in models:
            print(_row(name, models, times, f"train step b{bs}"), flush=True)
    if args.blocks_alone:
        _blocks_alone(models, args, timer)


def _block_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every context block of ``model`` in one forward of x (eval, no grad)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        blk.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0].detach().clone()))
        for n, blk in model.context_blocks().items()
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def _blocks_alone(models, args, timer) -> None:
    """The 13 blocks alone at their shapes in the network, as a share of resnet50's time."""
    gcs = {k: m for k, m in models.items() if k.startswith("gc_resnet50")}
    print("\n| blocks alone (13, at their network shapes) | setting | median ms | share of resnet50 |")
    print("|---|---|---|---|")
    plain = models[BASE]
    for setting, bs in [("inference b1", 1)] + [(f"train step b{b}", b) for b in (8, 16)]:
        x = torch.randn(bs, 3, args.size, args.size)
        inputs = _block_inputs(next(iter(gcs.values())), x)
        fns = {}
        if setting.startswith("inference"):
            plain.eval()

            def base_fn(x=x):
                with torch.inference_mode():
                    plain(x)

            for k, m in gcs.items():
                blocks = [(m.get_submodule(n), t) for n, t in inputs.items()]

                def fwd(blocks=blocks):  # out of place (the network adds in place: slightly cheaper)
                    with torch.inference_mode():
                        for b, t in blocks:
                            b.inplace = False
                            b(t)
                            b.inplace = True

                fns[k] = fwd
        else:
            plain.train()
            y = torch.randint(0, 1000, (bs,))

            def base_fn(x=x, y=y):
                plain.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(plain(x), y).backward()

            for k, m in gcs.items():
                blocks = []
                for n, t in inputs.items():
                    b = m.get_submodule(n)
                    xg = t.clone().requires_grad_()
                    blocks.append((b, xg, [xg, *b.parameters()], torch.randn_like(t)))

                def fwd_bwd(blocks=blocks):
                    for b, xg, params, gy in blocks:
                        torch.autograd.grad(b(xg), params, gy)

                fns[k] = fwd_bwd
        times = round_robin({BASE: base_fn, **fns}, args.rounds, 1, timer)
        for k in fns:
            r, lo, hi = ratio_stats(times, k, BASE)
            med = sorted(times[k])[len(times[k]) // 2]
            print(
                f"| {k} | {setting} (fwd{'' if 'inf' in setting else ' + bwd'}) | {med:.1f} "
                f"| {100 * r:.2f}% ({100 * lo:.2f}..{100 * hi:.2f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
