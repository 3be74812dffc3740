"""``gcnet export``: ONNX or TorchScript, checked against eager."""

from __future__ import annotations

import argparse

from ._common import SET_HELP, add_model_argument, parse_image_input
from .info import build_model


def run(args: argparse.Namespace) -> int:
    from gcnet.tools.export import export_model

    model, name, shape, _ = build_model(args)
    model.eval()
    out = args.output or f"{name}.{'onnx' if args.format == 'onnx' else 'pt'}"
    report = export_model(model, out, args.format, input_shape=args.input or shape)
    print(
        f"wrote {out} ({args.format}); parity vs eager: max abs diff {report['max_abs_diff']:.2e}"
        f" (tolerance {report['tolerance']:.0e}) -> {'OK' if report['ok'] else 'FAILED'}"
    )
    return 0 if report["ok"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or TorchScript, parity-checked")
    add_model_argument(p)
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="output format")
    p.add_argument("--output", "-o", default=None, help="output file (default MODEL.onnx / MODEL.pt)")
    p.add_argument("--input", type=parse_image_input, default=None, metavar="[N]xCxHxW",
                   help="example input for tracing and the parity check (default 1x3x224x224, or a "
                        "run's own image size)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--checkpoint", default=None,
                   help="weights: a gcnet run's best.pth / weights.safetensors (builds its own model), "
                        "another checkpoint path, or 'torchvision'")  # fmt: skip
    p.set_defaults(fn=run)
