"""``gcnet info``: parameters, FLOPs and the plug-in's overhead over the plain network."""

from __future__ import annotations

import argparse

from ._common import parse_image_shape, parse_model_overrides


def build_model(args: argparse.Namespace, name: str | None = None):
    """``args.model`` (or ``name``) with the ``--set`` options and ``--checkpoint`` weights."""
    from gcnet.models import create_model

    kw = parse_model_overrides(getattr(args, "set", None))
    pretrained = getattr(args, "checkpoint", None) or False
    return create_model(name or args.model, pretrained=pretrained, **kw)


def _plugin_line(model) -> str | None:
    net = next((m for m in model.modules() if getattr(m, "plugin", None) is not None), None)
    if net is None:
        return None
    p = net.plugin
    return (
        f"plug-in: {p.block} {dict(p.kwargs)} at {p.position}, stages {list(p.stages)}"
        + (f", indices {dict(p.indices)}" if p.indices else "")
        + f" ({len(net.context_blocks())} blocks)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from gcnet.tasks import task_for_model

    task = task_for_model(args.model)
    model = build_model(args).eval()
    plain, plain_name = task.plain_model(args.model, lambda n: build_model(args, n),
                                         parse_model_overrides(args.set))  # fmt: skip
    x = torch.randn(1, *args.input)
    c = task.complexity(model, plain, x)
    print(f"model: {args.model}   input: 1x{'x'.join(map(str, args.input))}")
    for line in c["notes"]:
        print(line)
    if plain_name is not None and hasattr(model, "context_blocks"):
        print(f"context blocks: {sorted(model.context_blocks())}; 'plain' = {plain_name}")
    elif plain_name is not None:
        print(f"'plain' = {plain_name}")
    line = _plugin_line(model)
    if line:
        print(line)
    params, flops = c["params"], c["flops"]
    print(f"{'':<12} {'params (M)':>12} {'GFLOPs':>10}")
    print(f"{'model':<12} {params / 1e6:>12.3f} {flops / 1e9:>10.3f}")
    if plain is not None:
        pp, pf = c["plain_params"], c["plain_flops"]
        print(f"{'plain':<12} {pp / 1e6:>12.3f} {pf / 1e9:>10.3f}")
        print(
            f"{'overhead':<12} {(params - pp) / 1e6:>+12.3f} {(flops - pf) / 1e9:>+10.4f}"
            f"   ({100 * (params - pp) / pp:+.2f}% params, {100 * (flops - pf) / pf:+.3f}% FLOPs)"
        )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs and plug-in overhead of a model")
    p.add_argument("model", help="registered model name (gcnet.list_models())")
    p.add_argument("--input", type=parse_image_shape, default=(3, 224, 224), metavar="CxHxW",
                   help="one image's shape (default 3x224x224)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model option, e.g. ratio=0.25")
    p.add_argument("--checkpoint", default=None, help="weights: a checkpoint path, or 'torchvision'")
    p.set_defaults(fn=run)
