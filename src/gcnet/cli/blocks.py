"""``gcnet blocks``: the block family on one sample input."""

from __future__ import annotations

import argparse

from ._common import parse_shape


def _rows(c: int) -> list[tuple[str, str, object]]:
    """(label, registry name, block): the paper's GC variants, then every other registered
    block with its defaults."""
    from gcnet.layers import create_block, list_blocks

    rows = [
        ("GC r16 (att, add)", "gc", create_block("gc", c, ratio=1 / 16)),
        ("GC r4 (att, add)", "gc", create_block("gc", c, ratio=1 / 4)),
        ("GC r16 (att, add+mul)", "gc", create_block("gc", c, fusion=("add", "mul"))),
        ("GC r16 (avg, add)", "gc", create_block("gc", c, pooling="avg")),
        ("SNL", "snl", create_block("snl", c)),
        ("SE r16 (avg, mul)", "se", create_block("se", c)),
        ("NL (embedded gaussian)", "nl", create_block("nl", c)),
        ("NL (sub-sampled)", "nl", create_block("nl", c, sub_sample=True)),
    ]
    for name in list_blocks():
        if name not in ("gc", "snl", "se", "nl"):
            rows.append((name, name, create_block(name, c)))
    return rows


def run(args: argparse.Namespace) -> int:
    """Parameters, FLOPs, forward time and identity-at-init of every block on one input."""
    import torch

    from gcnet.layers.registry import block_info
    from gcnet.tools.complexity import PAPER_UNIT, count_macs, count_params
    from gcnet.tools.profiling import median_time

    torch.manual_seed(0)
    shape = args.shape
    x = torch.randn(shape)
    c, rank = shape[1], len(shape) - 2
    dims = "x".join(map(str, shape[2:]))
    print(f"Block family on input {tuple(shape)}: N={shape[0]}, C={c}, {rank}D {dims} "
          f"(float32, {torch.get_num_threads()} threads); GFLOPs: {PAPER_UNIT}\n")  # fmt: skip
    print(f"{'block':<24} {'fusion':<7} {'params':>10} {'GFLOPs':>9} {'fwd ms':>9} {'out == x at init':>17}")
    for label, name, blk in _rows(c):
        info = block_info(name)
        own = getattr(blk, "fusion", None)  # a GC-framework block states its own (add, mul)
        fusion = "+".join(own) if isinstance(own, tuple) else (info.fusion if info else "?")[:7]
        if info is not None and rank not in info.dims:
            print(f"{label:<24} {fusion:<7} {'':>10} {'':>9} {'':>9} {f'n/a ({rank}D input)':>17}")
            continue
        blk.eval()
        with torch.no_grad():
            same = torch.equal(blk(x), x)
            ms = median_time(lambda b=blk: b(x), repeats=args.repeats)
        gflops, params = count_macs(blk, x) / 1e9, count_params(blk)
        print(f"{label:<24} {fusion:<7} {params:>10,} {gflops:>9.4f} {ms:>9.2f} {str(same):>17}")
    print("\nout == x at init: True for add fusion with a zero last layer (and GRN / GCT with zero gates): "
          "such a block inserted into a pretrained network keeps its outputs. Scale fusion (x * gate) "
          "cannot start as the identity.")  # fmt: skip
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("blocks", help="compare the block family on a sample input")
    p.add_argument("--input", "--shape", dest="shape", type=parse_shape, default=(8, 256, 28, 28),
                   metavar="NxCxHxW", help="input shape: N x C x 1-3 spatial sizes, N always given "
                   "(8x64x100 is a 1D input; default 8x256x28x28)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes per block (median)")
    p.set_defaults(fn=run)
