"""``gcnet export``: ONNX (dynamic batch and size by default, ``--static`` to fix them) or
TorchScript, with metadata, checked against eager; or (``--format hf``) the Hugging Face Hub
layout of `gcnet.hub`."""

from __future__ import annotations

import argparse

from ._common import SET_HELP, add_model_argument, parse_image_input
from .info import build_model


def _metadata(model, name: str, task, cfg, classes) -> dict:
    """What a deployment needs besides the graph: the model, its task, its class names (a
    trained run's), and how to prepare the input."""
    from gcnet.config import DEFAULTS

    meta = {"model_name": name, "task": task.name}
    if classes is not None:
        meta["classes"] = list(classes)
    norm = getattr(model, "transform", None)  # torchvision's R-CNNs normalise inside the model
    if norm is not None and hasattr(norm, "image_mean"):
        meta.update(mean=[float(v) for v in norm.image_mean], std=[float(v) for v in norm.image_std],
                    preprocessing="RGB / 255 in [0, 1]; the model normalises with mean / std")  # fmt: skip
        if classes is not None:
            meta["labels"] = "label i > 0 is classes[i - 1]; 0 is the background"
    else:
        data = (cfg or DEFAULTS)["data"]
        meta.update(mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]],
                    preprocessing="(RGB / 255 - mean) / std")  # fmt: skip
    return meta


def _axes_line(dynamic: dict) -> str:
    parts = []
    for io, axes in dynamic.items():
        if axes:
            parts.append(f"{io}: " + ", ".join(f"{n} (axis {a})" for a, n in sorted(axes.items())))
    return "dynamic axes: " + ("; ".join(parts) if parts else "none (static)")


def _export_hf(args: argparse.Namespace) -> int:
    """``--format hf``: the Hugging Face Hub layout (``gcnet.hub.save_pretrained``): a run's
    checkpoint with its config, classes and results (the run folder's ``metrics.json``), a
    saved model as it is, or a named model with ``--set`` options."""
    import os

    from gcnet.hub import is_saved, run_metrics, save_pretrained

    if args.input is not None:
        raise ValueError("--input does not apply to --format hf (the preprocessing is the run's, or the "
                         "model's pretrained config)")  # fmt: skip
    model, name, _, trained = build_model(args)
    out = args.output or f"{name}-hf"
    if os.path.isfile(out):
        raise ValueError(f"--output {out}: --format hf writes a folder, and this is a file")
    cfg = classes = metrics = None
    ckpt = getattr(args, "checkpoint", None)
    if trained and not is_saved(ckpt):  # a run's checkpoint: its folder holds its results
        cfg, classes, _ = trained
        metrics = run_metrics(os.path.dirname(os.path.abspath(ckpt)))
    elif trained:  # a saved model: its own config.json
        classes = trained[1]
    save_pretrained(model, out, config=cfg, classes=classes, metrics=metrics)
    files = ", ".join(sorted(f for f in os.listdir(out) if not f.startswith(".")))
    print(f"wrote {out}/ (hf: {files}); load it with gcnet.create_model('local-dir:{out}') or "
          f"--checkpoint {out}; upload it with gcnet.hub.push_to_hub('{out}', 'ORG/NAME')")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    from gcnet.tasks import task_for_model
    from gcnet.tools.export import export_model

    if args.static and args.format != "onnx":
        raise ValueError("--static applies to --format onnx (a TorchScript trace takes any input size)")
    if args.format == "hf":
        return _export_hf(args)
    model, name, shape, trained = build_model(args)
    model.eval()
    if args.input is not None and len(args.input) != len(shape):
        want = "NxCxTxHxW (a clip)" if len(shape) == 5 else "[N]xCxHxW"
        raise ValueError(f"--input {'x'.join(map(str, args.input))}: {name} takes {want}")
    cfg = classes = None
    task = task_for_model(name)
    if trained:  # its config and class names
        cfg, classes, task = trained
    out = args.output or f"{name}.{'onnx' if args.format == 'onnx' else 'pt'}"
    meta = _metadata(model, name, task, cfg, classes)
    report = export_model(model, out, args.format, input_shape=args.input or shape, static=args.static,
                          metadata=meta, input_option="--input")  # fmt: skip
    checks = ", ".join(f"{'x'.join(map(str, s))}: " + ("no match" if d is None else f"{d:.2e}")
                       for s, d in report["checks"])  # fmt: skip
    print(f"wrote {out} ({args.format}); {_axes_line(report['dynamic'])}")
    print(f"parity vs eager, max abs diff: {checks} (tolerance {report['tolerance']:.0e}) -> "
          f"{'OK' if report['ok'] else 'FAILED'}")  # fmt: skip
    return 0 if report["ok"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a model to ONNX (dynamic batch / size) or TorchScript, parity-checked"
    )
    add_model_argument(p)
    p.add_argument("--format", choices=("onnx", "torchscript", "hf"), default="onnx",
                   help="output format; hf: the Hugging Face Hub layout, a folder of model.safetensors, "
                        "config.json and a README.md model card (gcnet.hub.save_pretrained)")  # fmt: skip
    p.add_argument("--output", "-o", default=None,
                   help="output file (default MODEL.onnx / MODEL.pt); --format hf: a folder (default "
                        "MODEL-hf)")  # fmt: skip
    p.add_argument("--input", type=parse_image_input, default=None, metavar="[N]xCxHxW",
                   help="example input for tracing and the parity check (default 1x3x224x224, clips "
                        "1x3x8x224x224, or a run's own size); with --static, the fixed shape")  # fmt: skip
    p.add_argument("--static", action="store_true",
                   help="ONNX: fix every axis at --input's shape (default: batch, height and width, a "
                        "clip's time too, are dynamic; a detector's batch is 1)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--checkpoint", default=None,
                   help="weights: a gcnet run's best.pth / weights.safetensors (builds its own model), "
                        "a saved model (hf-hub:ORG/NAME, local-dir:PATH or its folder), another "
                        "checkpoint path, or 'torchvision'")  # fmt: skip
    p.set_defaults(fn=run)
