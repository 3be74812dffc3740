"""The ``gcnet`` command line: ``gcnet blocks | demo | info | export ...``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 8x256x56x56, got {text!r}") from None
    if any(d < 1 for d in dims) or not 3 <= len(dims) <= 5:
        raise argparse.ArgumentTypeError(f"expected N x C x spatial (3 to 5 dims), got {text!r}")
    return dims


def _parse_image_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}") from None
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}")
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


def _parse_overrides(items: list[str] | None) -> dict:
    """``["ratio=0.25", "stages=c4"]`` -> {"ratio": 0.25, "stages": "c4"} (YAML values)."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _build_model(args: argparse.Namespace, **extra):
    from gcnet.models import create_model

    kw = {**_parse_overrides(getattr(args, "set", None)), **extra}
    return create_model(args.model, pretrained=getattr(args, "checkpoint", None) or False, **kw)


def cmd_info(args: argparse.Namespace) -> int:
    """Parameters, FLOPs and the plug-in's overhead over the plain network."""
    import torch

    from gcnet.tools.complexity import count_flops, count_params

    model = _build_model(args).eval()
    x = torch.randn(1, *args.input)
    plain = None
    if model.plugin is not None:  # the same network without the plug-ins
        from gcnet.models import ResNet, model_config

        cfg = model_config(args.model, **_parse_overrides(args.set))
        cfg.pop("_arch")
        plain = ResNet(**{**cfg, "plugin": None}).eval()
    params, flops = count_params(model), count_flops(model, x)
    print(f"model: {args.model}   input: 1x{'x'.join(map(str, args.input))}")
    if model.plugin is not None:
        p = model.plugin
        print(
            f"plug-in: {p.block} {dict(p.kwargs)} at {p.position}, stages {list(p.stages)}"
            + (f", indices {dict(p.indices)}" if p.indices else "")
            + f" ({len(model.context_blocks())} blocks)"
        )
    print(f"{'':<12} {'params (M)':>12} {'GFLOPs':>10}")
    print(f"{'model':<12} {params / 1e6:>12.3f} {flops / 1e9:>10.3f}")
    if plain is not None:
        pp, pf = count_params(plain), count_flops(plain, x)
        print(f"{'plain':<12} {pp / 1e6:>12.3f} {pf / 1e9:>10.3f}")
        print(
            f"{'overhead':<12} {(params - pp) / 1e6:>+12.3f} {(flops - pf) / 1e9:>+10.4f}"
            f"   ({100 * (params - pp) / pp:+.2f}% params, {100 * (flops - pf) / pf:+.3f}% FLOPs)"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gcnet.tools.export import export_model

    model = _build_model(args).eval()
    out = args.output or f"{args.model}.{'onnx' if args.format == 'onnx' else 'pt'}"
    report = export_model(model, out, args.format, input_shape=args.input)
    print(
        f"wrote {out} ({args.format}); parity vs eager: max abs diff {report['max_abs_diff']:.2e}"
        f" (tolerance {report['tolerance']:.0e}) -> {'OK' if report['ok'] else 'FAILED'}"
    )
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gcnet", description="Global Context Networks in PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("blocks", help="compare the block family on a sample input")
    p.add_argument("--shape", type=_parse_shape, default=(8, 256, 28, 28))
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(fn=cmd_blocks)

    p = sub.add_parser("info", help="parameters, FLOPs and plug-in overhead of a model")
    p.add_argument("model")
    p.add_argument("--input", type=_parse_image_shape, default=(3, 224, 224))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    p.add_argument("--checkpoint", default=None)
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("export", help="export a model to ONNX or TorchScript, parity-checked")
    p.add_argument("model")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--input", type=_parse_shape, default=(1, 3, 224, 224))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    p.add_argument("--checkpoint", default=None, help="weights (path, or 'torchvision')")
    p.set_defaults(fn=cmd_export)

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
