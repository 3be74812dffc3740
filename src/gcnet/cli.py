"""The ``gcnet`` command line: ``gcnet blocks | demo | info | export ...``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a shape like 8x256x56x56, got {text!r}"
        ) from None
    if any(d < 1 for d in dims) or not 3 <= len(dims) <= 5:
        raise argparse.ArgumentTypeError(f"expected N x C x spatial (3 to 5 dims), got {text!r}")
    return dims


def cmd_blocks(args: argparse.Namespace) -> int:
    """The block family on one sample input: parameters, FLOPs, forward time."""
    import torch

    from gcnet.layers import create_block
    from gcnet.tools.complexity import count_flops, count_params
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
    print(f"Block family on input {tuple(shape)} (float32, {torch.get_num_threads()} threads)\n")
    print(f"{'block':<24} {'params':>10} {'GFLOPs':>9} {'fwd ms':>9} {'out == x at init':>17}")
    for name, blk in rows:
        blk.eval()
        with torch.no_grad():
            same = torch.equal(blk(x), x)
            ms = median_time(lambda b=blk: b(x), repeats=args.repeats)
        flops = count_flops(blk, x)
        print(f"{name:<24} {count_params(blk):>10,} {flops / 1e9:>9.4f} {ms:>9.2f} {str(same):>17}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gcnet", description="Global Context Networks in PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("blocks", help="compare the block family on a sample input")
    p.add_argument("--shape", type=_parse_shape, default=(8, 256, 28, 28))
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(fn=cmd_blocks)

    p = sub.add_parser("demo", help="the main demo job")
    p.add_argument("--shape", type=_parse_shape, default=(8, 256, 28, 28))
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(fn=cmd_blocks)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"gcnet {args.command}: error: {e}", file=sys.stderr)
        return 2
