"""``gcnet blocks``: the block family on one sample input."""

from __future__ import annotations

import argparse

from ._common import parse_shape


def run(args: argparse.Namespace) -> int:
    """Parameters, FLOPs, forward time and identity-at-init of every block on one input."""
    import torch

    from gcnet.layers import create_block
    from gcnet.tools.complexity import PAPER_UNIT, count_macs, count_params
    from gcnet.tools.profiling import median_time

    torch.manual_seed(0)
    shape = args.shape
    x = torch.randn(shape)
    c = shape[1]
    rows = [
        ("GC r16 (att, add)", create_block("gc", c, ratio=1 / 16)),
        ("GC r4 (att, add)", create_block("gc", c, ratio=1 / 4)),
        ("GC r16 (att, add+mul)", create_block("gc", c, fusion=("add", "mul"))),
        ("GC r16 (avg, add)", create_block("gc", c, pooling="avg")),
        ("SNL", create_block("snl", c)),
        ("SE r16 (avg, mul)", create_block("se", c)),
        ("NL (embedded gaussian)", create_block("nl", c)),
        ("NL (sub-sampled)", create_block("nl", c, sub_sample=True)),
    ]
    dims = "x".join(map(str, shape[2:]))
    print(f"Block family on input {tuple(shape)}: N={shape[0]}, C={c}, {len(shape) - 2}D {dims} "
          f"(float32, {torch.get_num_threads()} threads); GFLOPs: {PAPER_UNIT}\n")  # fmt: skip
    print(f"{'block':<24} {'params':>10} {'GFLOPs':>9} {'fwd ms':>9} {'out == x at init':>17}")
    for name, blk in rows:
        blk.eval()
        with torch.no_grad():
            same = torch.equal(blk(x), x)
            ms = median_time(lambda b=blk: b(x), repeats=args.repeats)
        flops = count_macs(blk, x)
        print(f"{name:<24} {count_params(blk):>10,} {flops / 1e9:>9.4f} {ms:>9.2f} {str(same):>17}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("blocks", help="compare the block family on a sample input")
    p.add_argument("--input", "--shape", dest="shape", type=parse_shape, default=(8, 256, 28, 28),
                   metavar="NxCxHxW", help="input shape: N x C x 1-3 spatial sizes, N always given "
                   "(8x64x100 is a 1D input; default 8x256x28x28)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes per block (median)")
    p.set_defaults(fn=run)
