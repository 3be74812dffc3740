"""Video benchmark (issue 12): the GC, SNL and NL blocks on slow-only ResNet-50 shapes, and
whole slow-only networks (plain, +5 NL, +5 GC, GC in every block of c3-c5) on one clip.
Float32 CPU, inference and training-style (forward + backward) calls. All numbers from one run.

    python benchmarks/bench_video.py [--quick] [--threads 1] [--batch 2] [--rounds 3]
        [--net-input 1x3x8x224x224] [--skip-blocks] [--skip-nets] [--system-malloc] [--cpu-time]

Blocks: at (B, 512, 8, 28, 28) (res3 of an 8-frame 224x224 clip) and (B, 1024, 8, 14, 14)
(res4), B = ``--batch`` (2 by default: the issue's batch 8 takes minutes per NL call on a
2-core CPU; ``--batch 8`` for it). GC r16, SNL, NL (embedded Gaussian, sub-sampled, no scale:
``nl_slowonly_r50``'s), weights non-zero. Time: the blocks' calls timed round-robin, median
of ``--rounds`` rounds (after one warm-up round); ratios vs GC are the median (min..max) of
the per-round ratios. Peak memory: the peak of the live bytes of the tensors each call
allocates (:class:`gcnet.tools.profiling.MemoryTracker`, a TorchDispatchMode: exact for
tensors, allocator and RSS effects left out), the input not counted.

Networks: ``slowonly_r50``, ``nl_slowonly_r50``, ``gc5_slowonly_r50``, ``gc_slowonly_r50``
(400 classes, eval, batch 1): parameters, FLOPs in the paper's unit (one multiply-add = one
FLOP: torch.utils.flop_counter's count halved; convs, matmuls, bmm, i.e. also NL's pairwise
products and GC's pooling; element-wise ops not counted), counted on the meta device, and
forward latency timed round-robin as above, ratios vs plain.

``--cpu-time`` times the calling thread's CPU time (``time.thread_time``, one thread only):
on a machine shared with other jobs it leaves out the time they hold the core.
``--quick``: batch 1, 2 rounds, networks at 1x3x4x112x112 (a smoke run, well under a minute).

glibc's malloc returns large blocks to the OS and page-faults them back on the next
allocation (2-10x noise on 100 MB tensors); unless ``--system-malloc`` is given the script
re-runs itself with its mmap/trim thresholds raised, as ``bench_blocks.py`` does.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from gcnet import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, create_model
from gcnet.tools.complexity import count_flops, count_params
from gcnet.tools.profiling import (
    block_calls,
    median,
    peak_memory,
    raise_malloc_thresholds,
    randomize_,
    ratio_stats,
    round_robin,
)

NETS = {
    "plain": "slowonly_r50",
    "+5 NL": "nl_slowonly_r50",
    "+5 GC r16": "gc5_slowonly_r50",
    "GC r16 c3-c5 (all 13)": "gc_slowonly_r50",
}


def _blocks(c: int) -> dict[str, nn.Module]:
    return {
        "GC r16": GlobalContextBlock(c, 1 / 16),
        "SNL": SimplifiedNonLocalBlock(c),
        "NL (emb. Gaussian, sub-sampled)": NonLocalBlock(c, sub_sample=True, use_scale=False),
    }


def _macs(m: nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-adds of m's forward, counted on the meta device (no compute)."""
    meta = copy.deepcopy(m).to("meta")
    return count_flops(meta, torch.empty(shape, device="meta")) / 2


def _spread(t: dict[str, list[float]], name: str, base: str) -> str:
    if name == base:
        return "1.00x"
    return "{:.2f}x ({:.2f}..{:.2f})".format(*ratio_stats(t, name, base))


def block_table(batch: int, rounds: int, timer=time.perf_counter) -> None:
    print(
        "| shape | block | params | GMACs | fwd ms | fwd vs GC | fwd+bwd ms | fwd+bwd vs GC "
        "| peak MB fwd | peak MB fwd+bwd | mem fwd+bwd vs GC |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c, hw in ((512, 28), (1024, 14)):
        shape = (batch, c, 8, hw, hw)
        x = torch.randn(shape)
        blocks = {k: randomize_(m).eval() for k, m in _blocks(c).items()}
        fns = {}
        for k, m in blocks.items():
            fns[f"{k} fwd"], fns[f"{k} fb"] = block_calls(m, x)
        t = round_robin(fns, rounds, 1, timer)
        mem = {k: peak_memory(f) / 2**20 for k, f in fns.items()}
        gc = "GC r16"
        for k, m in blocks.items():
            print(
                f"| {'x'.join(map(str, shape))} | {k} | {count_params(m) / 1e3:.1f}k "
                f"| {_macs(m, shape) / 1e9:.3f} "
                f"| {median(t[f'{k} fwd']):.1f} | {_spread(t, f'{k} fwd', f'{gc} fwd')} "
                f"| {median(t[f'{k} fb']):.1f} | {_spread(t, f'{k} fb', f'{gc} fb')} "
                f"| {mem[f'{k} fwd']:.1f} | {mem[f'{k} fb']:.1f} | {mem[f'{k} fb'] / mem[f'{gc} fb']:.2f}x |",
                flush=True,
            )


def net_table(shape: tuple[int, ...], rounds: int, timer=time.perf_counter) -> None:
    models = {k: create_model(n).eval() for k, n in NETS.items()}
    for m in models.values():  # the blocks' own weights non-zero; the backbone's init kept
        for block in m.context_blocks().values():
            randomize_(block).eval()
    x = torch.randn(shape)
    fns = {}
    for k, m in models.items():
        fns[k] = lambda m=m: m(x)
    with torch.no_grad():
        t = round_robin(fns, rounds, 1, timer)
    base = models["plain"]
    p0, f0 = count_params(base), _macs(base, shape)
    print("| variant | model | blocks | params (M) | +params | GMACs | +MACs | fwd ms | vs plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, m in models.items():
        p, f = count_params(m), _macs(m, shape)
        print(
            f"| {k} | {NETS[k]} | {len(m.context_blocks())} | {p / 1e6:.3f} | {(p - p0) / 1e6:+.3f}M "
            f"| {f / 1e9:.2f} | {100 * (f - f0) / f0:+.2f}% | {median(t[k]):.0f} "
            f"| {_spread(t, k, 'plain')} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 1, 2 rounds, networks at 1x3x4x112x112")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="block batch (default 2; --quick 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; --quick 2)")
    ap.add_argument("--net-input", default=None, help="network input NxCxTxHxW (default 1x3x8x224x224)")
    ap.add_argument("--skip-blocks", action="store_true")
    ap.add_argument("--skip-nets", action="store_true")
    ap.add_argument("--system-malloc", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="time the thread's CPU time (needs --threads 1)")
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time counts one thread's CPU time: use it with --threads 1")
    timer = time.thread_time if args.cpu_time else time.perf_counter
    if not args.system_malloc:
        raise_malloc_thresholds()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    batch = args.batch or (1 if args.quick else 2)
    rounds = args.rounds or (2 if args.quick else 3)
    net_input = args.net_input or ("1x3x4x112x112" if args.quick else "1x3x8x224x224")
    net_shape = tuple(int(v) for v in net_input.split("x"))
    t0 = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32 CPU, "
        f"malloc: {'system' if args.system_malloc else 'thresholds raised'}, {rounds} rounds, "
        f"{'thread CPU time' if args.cpu_time else 'wall clock'}\n"
    )
    if not args.skip_blocks:
        print(f"### Blocks on slow-only ResNet-50 shapes (batch {batch}; ratios vs GC)\n")
        block_table(batch, rounds, timer)
        print()
    if not args.skip_nets:
        print(f"### Slow-only ResNet-50 networks, input {net_input} (inference; ratios vs plain)\n")
        net_table(net_shape, rounds, timer)
        print()
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
