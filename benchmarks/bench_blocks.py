"""Block benchmark: our GC block vs timm's GlobalContext vs mmcv's ContextBlock, and our
GC vs NL vs SNL vs SE, at ResNet stage shapes. Float32 CPU. All numbers from one run.

    python benchmarks/bench_blocks.py [--repeats 10] [--shapes 8x256x56x56,...] [--threads N]
        [--baseline-block FILE | git:REV] [--no-peers] [--skip-family] [--cpu-time]
    python benchmarks/bench_blocks.py --light [--batches 1,32] [--repeats 5]

``--light``: every block of the registry (the light global-context family) at ResNet-50's
c3-c5 shapes (512x28x28, 1024x14x14, 2048x7x7), batch 1 and 32, forward and
forward+backward, as ratios to GC (r16, add) and, where timm implements the block, to timm's
module of the same configuration (ours built from it with `gcnet.convert.block_from_timm`,
so both have the same weights); all candidates of one shape timed round-robin.

Prints markdown tables: forward and forward+backward time (median, ms), peak memory of the
tensors each call allocates (MB), ratios against timm (median of per-round ratios, the
candidates and ``x.clone()`` timed round-robin), and the memory-traffic bounds, from the copy
time t_copy of x (1 read + 1 write) measured in the same rounds:

- forward: 2 reads + 1 write of x = 1.5 t_copy (a fused kernel pools in one read with an
  online softmax, then writes x + shift in a second);
- forward + backward: the forward's 3 passes + 4 for the backward = 3.5 t_copy. The backward
  must read dy once for the shift's gradient (a sum over positions) before anything else
  depends on it, then one pass that reads x and dy and writes grad x: alpha's and W_k's
  gradients fold into that pass because the softmax backward's <alpha, dalpha> equals
  g . context, known without reading x.

"overhead us" is the time above the bound (the fixed per-call cost at 14x14 and 7x7).
``--baseline-block FILE`` adds a row for the ``GlobalContextBlock`` of FILE (e.g. an older
``src/gcnet/layers/context.py`` from git): before/after in one run.

glibc's malloc returns every large block to the OS and page-faults it back on the next
allocation, which adds 2-10x noise to CPU timings of 25 MB tensors. Unless
``--system-malloc`` is given, the script re-runs itself with glibc's mmap/trim thresholds
raised (what a long-running training process sees after warm-up, or with jemalloc/tcmalloc).
"""

from __future__ import annotations

import argparse
import time

import torch

from gcnet import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation
from gcnet.tools.profiling import (
    block_calls,
    load_baseline_block,
    median,
    median_time,
    peak_memory,
    raise_malloc_thresholds,
    randomize_,
    ratio_stats,
    round_robin,
)

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]


def _peers(c: int, baseline: type | None = None, others: bool = True) -> dict[str, torch.nn.Module]:
    peers: dict[str, torch.nn.Module] = {"gcnet": GlobalContextBlock(c, 1 / 16)}
    if baseline is not None:
        peers["gcnet (baseline)"] = baseline(c, 1 / 16)
    if not others:
        return peers
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
    fwd, fwd_bwd = block_calls(randomize_(m), x)
    return {
        "fwd": median_time(fwd, repeats),
        "fb": median_time(fwd_bwd, repeats),
        "mem_f": peak_memory(fwd) / 2**20,
        "mem_fb": peak_memory(fwd_bwd) / 2**20,
    }


def _peer_table(
    shapes, repeats: int, baseline: type | None, timer=time.perf_counter, others: bool = True
) -> None:
    vs_base = " | fwd vs baseline (spread) | fwd+bwd vs baseline (spread)" if baseline is not None else ""
    print(
        "| shape | copy x ms | impl | fwd ms | fwd/bound | fwd overhead us | fwd vs timm (spread) "
        "| fwd+bwd ms | fwd+bwd/bound | fwd+bwd overhead us | fwd+bwd vs timm (spread) "
        f"| peak MB fwd | peak MB fwd+bwd{vs_base} |"
    )
    print(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if baseline is not None else "")
    )
    for shape in shapes:
        x = torch.randn(shape)
        peers = {k: randomize_(m) for k, m in _peers(shape[1], baseline, others).items()}
        fns = {"copy": lambda: x.clone()}  # noqa: B023
        for k, m in peers.items():
            fns[f"{k} fwd"], fns[f"{k} fb"] = block_calls(m, x)
        t = round_robin(fns, repeats, 3, timer, shuffle=True)  # no fixed predecessor (cache)
        copy = median(t["copy"])
        bf, bfb = 1.5 * copy, 3.5 * copy
        for k in peers:
            f, fb = median(t[f"{k} fwd"]), median(t[f"{k} fb"])
            vs = "-", "-"
            if "timm" in peers:
                vs = tuple(
                    "{:.2f}x ({:.2f}..{:.2f})".format(*ratio_stats(t, f"{k} {p}", f"timm {p}"))
                    for p in ("fwd", "fb")
                )
            base = ""
            if baseline is not None:  # per-round ratios against the baseline block, same rounds
                base = "".join(
                    " {:.3f} ({:.3f}..{:.3f}) |".format(*ratio_stats(t, f"{k} {p}", f"gcnet (baseline) {p}"))
                    for p in ("fwd", "fb")
                )
            fwd_m, fb_m = block_calls(peers[k], x)
            sh = "x".join(map(str, shape))
            print(
                f"| {sh} | {copy:.2f} | {k} | {f:.2f} | {f / bf:.2f} | {(f - bf) * 1e3:.0f} "
                f"| {vs[0]} | {fb:.2f} | {fb / bfb:.2f} | {(fb - bfb) * 1e3:.0f} | {vs[1]} "
                f"| {peak_memory(fwd_m) / 2**20:.1f} | {peak_memory(fb_m) / 2**20:.1f} |{base}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--system-malloc", action="store_true")
    ap.add_argument("--skip-family", action="store_true")
    ap.add_argument(
        "--baseline-block", default=None, metavar="FILE", help="a context.py, or git:REV for that commit's"
    )
    ap.add_argument(
        "--no-peers", action="store_true", help="leave out timm and mmcv (ours and the baseline only)"
    )
    ap.add_argument("--cpu-time", action="store_true", help="time the thread's CPU time (needs --threads 1)")
    ap.add_argument("--light", action="store_true", help="only the light family vs GC and timm (c3-c5)")
    ap.add_argument("--batches", default="1,32", help="--light: batch sizes")
    args = ap.parse_args()
    if not args.system_malloc:
        raise_malloc_thresholds()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU, "
        f"malloc: {'system' if args.system_malloc else 'thresholds raised'}\n"
    )
    if args.light:
        _light_table([int(b) for b in args.batches.split(",")], args.repeats)
        return

    print("### GC block vs peers (r16, att pooling, add fusion)\n")
    baseline = load_baseline_block(args.baseline_block) if args.baseline_block else None
    if args.cpu_time and torch.get_num_threads() != 1:
        ap.error("--cpu-time counts one thread's CPU time: use it with --threads 1")
    timer = time.thread_time if args.cpu_time else time.perf_counter
    _peer_table(shapes, args.repeats, baseline, timer, not args.no_peers)
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


# our registry name -> how timm builds the same block (create_attn name, or a callable)
_TIMM_NAMES = {"se": "se", "ese": "ese", "eca": "eca", "ecam": "ecam", "ceca": "ceca", "ge": "ge",
               "gc": "gca", "cbam": "cbam", "lcbam": "lcbam", "coord": "coord", "scoord": "scoord",
               "ela": "ela", "strip": "strip", "grn": "grn"}  # fmt: skip
LIGHT_SHAPES = [(512, 28, 28), (1024, 14, 14), (2048, 7, 7)]


def _timm_block(name: str, c: int):
    from timm.layers import create_attn
    from timm.layers.grn import GlobalResponseNorm

    if name == "grn":
        return GlobalResponseNorm(c, channels_last=False)
    # timm 1.0.31's GatherExcite raises on its MLP path (its default): the parameter-free gather
    return create_attn(_TIMM_NAMES[name], c, **({"use_mlp": False} if name == "ge" else {}))


def _light_candidates(c: int) -> dict[str, tuple[torch.nn.Module, torch.nn.Module | None]]:
    """{name: (ours, timm's or None)}; ours converted from timm's where timm has the block."""
    from gcnet.convert import block_from_timm
    from gcnet.layers import create_block, list_blocks

    out = {}
    for name in list_blocks():
        if name == "nl":  # not a light block: quadratic in positions
            continue
        if name in _TIMM_NAMES:
            theirs = randomize_(_timm_block(name, c)).eval()
            out[name] = (block_from_timm(theirs).eval(), theirs)
        else:
            out[name] = (randomize_(create_block(name, c)).eval(), None)
    return out


def _light_table(batches: list[int], repeats: int) -> None:
    print("\n### The light family at ResNet-50's c3-c5 (ratios: median of per-round ratios)\n")
    print(
        "| shape | block | fwd ms | fwd vs GC | fwd vs timm | fwd+bwd ms | fwd+bwd vs GC | fwd+bwd vs timm |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c, h, w in LIGHT_SHAPES:
        cands = _light_candidates(c)
        for n in batches:
            x = torch.randn(n, c, h, w)
            fns = {}
            for name, (ours, theirs) in cands.items():
                fns[f"{name} fwd"], fns[f"{name} fb"] = block_calls(ours, x)
                if theirs is not None:
                    fns[f"timm {name} fwd"], fns[f"timm {name} fb"] = block_calls(theirs, x)
            t = round_robin(fns, repeats, 2, shuffle=True)
            for name, (_, theirs) in cands.items():
                cells = []
                for p in ("fwd", "fb"):
                    me = f"{name} {p}"
                    vs_timm = "-" if theirs is None else f"{ratio_stats(t, me, f'timm {name} {p}')[0]:.2f}x"
                    cells += [f"{median(t[me]):.3f}", f"{ratio_stats(t, me, f'gc {p}')[0]:.2f}x", vs_timm]
                print(f"| {n}x{c}x{h}x{w} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
