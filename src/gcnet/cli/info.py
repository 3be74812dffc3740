"""``gcnet info``: parameters, FLOPs and the plug-in's overhead over the plain network."""

from __future__ import annotations

import argparse

from ._common import (
    SET_HELP,
    add_model_argument,
    load_trained_if_any,
    model_name,
    parse_image_input,
    parse_model_overrides,
)


def build_model(args: argparse.Namespace, name: str | None = None):
    """(model, name, input shape, trained) for ``info`` / ``export``: the model named by the
    arguments with the ``--set`` options and ``--checkpoint`` weights; a gcnet run's checkpoint
    builds its own model (its classes, its options) and gives its input size, and ``trained``
    is its (config, class names, task), read once; None for any other model."""
    from gcnet.engine.checkpoint import check_checkpoint_model
    from gcnet.models import create_model
    from gcnet.tasks import task_for_model

    ckpt = getattr(args, "checkpoint", None)
    trained = load_trained_if_any(ckpt) if name is None else None
    if trained is not None:
        model, cfg, classes, task = trained
        check_checkpoint_model(ckpt, cfg, model_name(args, required=False))
        if getattr(args, "set", None):
            raise ValueError(
                "--set does not apply to a gcnet run's checkpoint: the checkpoint builds its model"
            )
        return model, cfg["model"]["name"], task.analysis.input_shape(cfg), (cfg, classes, task)
    name = name or model_name(args)
    kw = parse_model_overrides(getattr(args, "set", None))
    return (
        create_model(name, pretrained=ckpt or False, **kw),
        name,
        task_for_model(name).analysis.input_shape(),
        None,
    )


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

    model, name, shape, trained = build_model(args)
    model.eval()
    shape = args.input or shape
    task = task_for_model(name)
    plain, plain_name = None, None
    if not trained:  # a trained model has no trained plain twin to compare with
        overrides = parse_model_overrides(args.set)
        plain, plain_name = task.analysis.plain_model(name, lambda n: build_model(args, n)[0], overrides)
    x = torch.randn(*shape)
    c = task.analysis.complexity(model, plain, x)
    print(f"model: {name}   input: {'x'.join(map(str, shape))}")
    for line in c["notes"]:
        print(line)
    if plain_name is not None and hasattr(model, "context_blocks"):
        print(f"context blocks: {sorted(model.context_blocks())}; 'plain' = {plain_name}")
    elif plain_name is not None:
        print(f"'plain' = {plain_name}")
    line = _plugin_line(model)
    if line:
        print(line)
    # the task counts torch's FLOPs (2 per multiply-add); the paper's unit is multiply-adds
    params, flops = c["params"], c["flops"] / 2
    print("GFLOPs: multiply-adds, the paper's unit (one multiply-add = one FLOP; ResNet-50 at 224 = "
          "4.1 G); x2: torch.utils.flop_counter's count")  # fmt: skip
    print(f"{'':<12} {'params (M)':>12} {'GFLOPs':>10} {'x2':>10}")
    print(f"{'model':<12} {params / 1e6:>12.3f} {flops / 1e9:>10.3f} {2 * flops / 1e9:>10.3f}")
    if plain is not None:
        pp, pf = c["plain_params"], c["plain_flops"] / 2
        print(f"{'plain':<12} {pp / 1e6:>12.3f} {pf / 1e9:>10.3f} {2 * pf / 1e9:>10.3f}")
        print(
            f"{'overhead':<12} {(params - pp) / 1e6:>+12.3f} {(flops - pf) / 1e9:>+10.4f} "
            f"{2 * (flops - pf) / 1e9:>+10.4f}"
            f"   ({100 * (params - pp) / pp:+.2f}% params, {100 * (flops - pf) / pf:+.3f}% FLOPs)"
        )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs and plug-in overhead of a model")
    add_model_argument(p)
    p.add_argument("--input", type=parse_image_input, default=None, metavar="[N]xCxHxW",
                   help="input shape (default 1x3x224x224, clips 1x3x8x224x224; a run's own)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--checkpoint", default=None,
                   help="weights: a gcnet run's best.pth / weights.safetensors (builds its own model), "
                        "a saved model (hf-hub:ORG/NAME, local-dir:PATH or its folder), another "
                        "checkpoint path, or 'torchvision'")  # fmt: skip
    p.set_defaults(fn=run)
